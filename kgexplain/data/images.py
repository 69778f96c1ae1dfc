"""Decoding images robustly: every file becomes an RGB image or a skip with a reason, never a crash.

Grayscale, palette, CMYK and 16-bit images are converted to RGB; images with transparency are composited
over a neutral grey (the ImageNet mean colour), so transparent regions do not look like strong black or white
edges to a CNN. Corrupt or truncated files, files that are not images, images with a side shorter than
``min_side`` and images Pillow refuses as decompression bombs (over 179 M pixels; Pillow's warning above 89 M
pixels is not an error: cameras take such photos) raise :class:`ImageDecodeError` with a short ``reason`` that
callers count.
An image is read as viewers show it: a camera's EXIF orientation is applied (a phone's portrait photo is stored
sideways with a tag that turns it upright; browsers, annotation tools and Hugging Face's loaders turn it, torchvision's
do not), so annotations, results and overlays all refer to the upright image.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kgexplain.errors import DataError, ImageDecodeError

HEIF_EXTENSIONS = (".heic", ".heif")  # phones' photos (iPhones' default), read through pillow-heif
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".avif", ".jp2",
    *HEIF_EXTENSIONS,
)  # fmt: skip
MIN_SIDE = 16
BACKDROP = (124, 116, 104)  # ImageNet mean colour

# Pillow warns above 89 M pixels and refuses above twice that. Photos of 108 M pixels (phone cameras) are used
# wherever kgexplain opens them (decoding, header sizes, patches, reports); a file past the refusal is too large.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def open_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """``Image.open`` of ``path`` (or of its bytes ``data``, already read), with HEIC / HEIF files readable
    (pillow-heif's opener, registered the first time one is opened: importing it costs 0.2 s). libheif applies a
    HEIF photo's rotation itself and resets its EXIF orientation, so such a photo opens upright."""
    if str(path).lower().endswith(HEIF_EXTENSIONS):
        register_heif()
    return Image.open(io.BytesIO(data) if data is not None else path)


def register_heif() -> None:
    """Let Pillow open HEIC / HEIF (a no-op after the first call, or where pillow-heif is not installed: such
    files are then skipped as not an image)."""
    global _HEIF
    if _HEIF is None:
        try:
            from pillow_heif import register_heif_opener  # lazy: 0.2 s, only for HEIF files

            register_heif_opener()
            _HEIF = True
        except ImportError:
            _HEIF = False


_HEIF: bool | None = None
ORIENTATION = 0x0112  # the EXIF orientation tag: 1 upright, 2-4 mirrored or turned half, 5-8 turned a quarter


def orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1 when it has none, or one that cannot be read)."""
    try:
        value = int(img.getexif().get(ORIENTATION, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1
    return value if 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """The image as viewers show it: its EXIF orientation applied (and cleared), or the image itself."""
    return img if orientation(img) == 1 else ImageOps.exif_transpose(img)


def header_size(path: str | Path) -> tuple[int, int]:
    """(w, h) of the upright image from the file's header (no decoding); raises OSError / ValueError."""
    with open_image(path) as img:
        w, h = img.size
        return (h, w) if orientation(img) >= 5 else (w, h)


def known_size(path: Path, sizes: dict[Path, tuple[int, int] | None]) -> tuple[int, int] | None:
    """:func:`header_size`, or None when the header cannot be read (the image is skipped and counted later), read
    once per file into ``sizes`` (a photo listed once per object is opened once)."""
    if path not in sizes:
        try:
            sizes[path] = header_size(path)
        except (OSError, ValueError, SyntaxError):
            sizes[path] = None
    return sizes[path]


def _error(path: Path | str, reason: str, detail: str) -> ImageDecodeError:
    err = ImageDecodeError(f"cannot use image {path}: {detail}")
    err.reason = reason  # type: ignore[attr-defined]
    return err


def reason_of(error: ImageDecodeError) -> str:
    return str(getattr(error, "reason", "unreadable"))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited over a grey backdrop)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr8 = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*BACKDROP, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, min_side: int = MIN_SIDE) -> Image.Image:
    """Open and fully decode ``path`` as RGB, or raise :class:`ImageDecodeError` (with ``.reason``)."""
    path = Path(path)
    if not path.exists():
        raise _error(path, "missing", "file not found")
    try:
        with open_image(path) as img:
            if min(img.size) < min_side:
                raise _error(path, "too_small", f"{img.size[0]}x{img.size[1]} px is below {min_side} px")
            img.load()  # full decode: truncated files fail here
            return to_rgb(upright(img))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise _error(path, "too_large", str(e)) from e
    except UnidentifiedImageError as e:
        raise _error(path, "not_an_image", "not a recognised image format") from e
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise _error(path, reason, str(e)) from e
    except (ValueError, SyntaxError, MemoryError) as e:
        raise _error(path, "corrupt", str(e)) from e


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A foreground mask image as a boolean array (non-zero = object), optionally resized to ``size`` (w, h)."""
    try:
        with open_image(path) as img:
            m = upright(img).convert("L")
            if size is not None and m.size != size:
                m = m.resize(size, Image.Resampling.NEAREST)
            return np.asarray(m) > 0
    except (OSError, ValueError) as e:
        raise _error(path, "bad_mask", f"mask unreadable: {e}") from e


@dataclass
class LoadReport:
    """How many images were used and why the others were skipped."""

    total: int = 0
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one example id

    def add_skip(self, item_id: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, item_id)

    def merge(self, other: LoadReport) -> None:
        self.total += other.total
        self.loaded += other.loaded
        self.skipped.update(other.skipped)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)

    @classmethod
    def combined(cls, parts: Iterable[LoadReport]) -> LoadReport:
        """One report for several (a distributed job's ranks)."""
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.loaded} of {self.total} images used"
        if self.skipped:
            parts = ", ".join(
                f"{n} {reason.replace('_', ' ')} (e.g. {self.examples[reason]})"
                for reason, n in sorted(self.skipped.items())
            )
            text += f"; skipped {self.n_skipped}: {parts}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "loaded": self.loaded, "skipped": dict(self.skipped)}


def load_mask_file(path: str | Path, size: int) -> np.ndarray:
    """A mask image given by the user (non-zero = object), resized to ``size`` x ``size`` (the model input)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"mask file not found: {p}", hint="pass one --mask per image, in the same order")
    try:
        with open_image(p) as im:  # turned upright as its image is (a mask saved by the same camera app)
            m = np.asarray(upright(im).convert("L").resize((size, size), Image.Resampling.NEAREST))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read mask {p}: {e}", hint="masks are image files (PNG), non-zero = object") from e
    return m > 0
