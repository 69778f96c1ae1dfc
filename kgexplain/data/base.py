"""Data sources and the framing that turns a source image into a model input.

A source (:class:`ImageSource`) lists :class:`Record` objects, metadata only, and decodes an image on demand.
:class:`Framing` crops (optionally to the object box) and resizes to the model's input, mapping the ground truth
with the same affine transform, so keypoints, boxes and masks stay aligned with the pixels.

Conventions: boxes are ``(x0, y0, x1, y1)`` in pixel-*edge* coordinates (width = x1 - x0); keypoints are in
pixel-*index* coordinates (the centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kgexplain.data.images import LoadReport, header_size, load_mask, reason_of
from kgexplain.errors import ImageDecodeError
from kgexplain.progress import Progress, task

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass
class Record:
    """One image of a source, without its pixels."""

    id: str
    path: Path | None = None
    label: str | None = None
    box: Box | None = None
    keypoints: dict[str, Point] = field(default_factory=dict)
    mask_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class ImageSource(ABC):
    """A sequence of records whose images can be decoded one at a time."""

    name: str = "images"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def record(self, index: int) -> Record: ...

    @abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The RGB image; raises ImageDecodeError for unusable files."""

    def image_size(self, index: int) -> tuple[int, int]:
        """(w, h) of an image; reads only the file header when there is a file."""
        rec = self.record(index)
        if rec.path is not None:
            try:
                return header_size(rec.path)
            except (OSError, ValueError, SyntaxError):
                pass
        return self.load_image(index).size

    def load_mask(self, index: int, size: tuple[int, int]) -> np.ndarray | None:
        rec = self.record(index)
        return load_mask(rec.mask_path, size) if rec.mask_path else None

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the images (or their annotations) change; used in cache keys."""

    def labels(self) -> list[str]:
        return sorted({r.label for r in self.records() if r.label is not None})

    def records(self) -> list[Record]:
        return [self.record(i) for i in range(len(self))]

    def describe(self) -> str:
        return f"{self.name} ({len(self)} images)"

    def check(self, progress: Progress | None = None) -> LoadReport:
        """Decode every image and count what would be used and what skipped, and why."""
        return self.usable(progress)[1]

    def usable(self, progress: Progress | None = None) -> tuple[list[int], LoadReport]:
        """The indices of the images that decode, and the count of what would be used and what skipped, and why."""
        report, keep = LoadReport(total=len(self)), []
        with task(progress, "check", len(self), "img") as advance:
            for i in range(len(self)):
                try:
                    self.load_image(i)
                    report.loaded += 1
                    keep.append(i)
                except ImageDecodeError as e:
                    report.add_skip(self.record(i).id, reason_of(e))
                advance(1)
        return keep, report


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (remembered while its size and modification time stay the same)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_fingerprint(
    kind: str, paths: list[Path], extra: Any = None, base: Path | None = None, mtime: bool = True
) -> str:
    """Hash of (path relative to ``base``, size, mtime) of every file plus ``extra``: cheap and changes with the
    content. Relative paths let a data set copied elsewhere with its times (``cp -a``, ``rsync -a``) keep its runs'
    ids; ``mtime=False`` for files whose content their parameters fix (the synthetic set, written anew in every
    store), so that the same parameters give the same ids anywhere."""
    h = hashlib.sha256(kind.encode())
    for p in paths:
        name = p.relative_to(base).as_posix() if base is not None and p.is_relative_to(base) else str(p)
        try:
            st = p.stat()
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns if mtime else ''}\n".encode())
        except OSError:
            h.update(f"{name}|missing\n".encode())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Affine:
    """Axis-aligned map from source pixel-index coordinates to framed ones: x' = ax * x + bx."""

    ax: float
    bx: float
    ay: float
    by: float

    def point(self, x: float, y: float) -> Point:
        return self.ax * x + self.bx, self.ay * y + self.by

    def inverse_point(self, x: float, y: float) -> Point:
        return (x - self.bx) / self.ax, (y - self.by) / self.ay

    def box(self, box: Box) -> Box:
        # Edges: an edge coordinate e is the pixel-index coordinate e - 0.5.
        x0, y0 = self.point(box[0] - 0.5, box[1] - 0.5)
        x1, y1 = self.point(box[2] - 0.5, box[3] - 0.5)
        return x0 + 0.5, y0 + 0.5, x1 + 0.5, y1 + 0.5

    def inverse_box(self, box: Box) -> Box:
        x0, y0 = self.inverse_point(box[0] - 0.5, box[1] - 0.5)
        x1, y1 = self.inverse_point(box[2] - 0.5, box[3] - 0.5)
        return x0 + 0.5, y0 + 0.5, x1 + 0.5, y1 + 0.5


def region_affine(region: Box, out_w: int, out_h: int) -> Affine:
    """The map that resizes ``region`` (pixel edges) to an ``out_w`` x ``out_h`` image."""
    x0, y0, x1, y1 = region
    ax = out_w / (x1 - x0)
    ay = out_h / (y1 - y0)
    return Affine(ax, (0.5 - x0) * ax - 0.5, ay, (0.5 - y0) * ay - 0.5)


@dataclass
class Framed:
    """A model-ready image with its ground truth in the framed coordinates."""

    index: int
    id: str
    image: np.ndarray  # (H, W, 3) uint8
    affine: Affine  # source pixel -> framed pixel
    source_size: tuple[int, int]  # (w, h) of the decoded source image
    label: str | None
    box: Box | None
    keypoints: dict[str, Point]
    mask: np.ndarray | None


@dataclass(frozen=True)
class Framing:
    """Resize to ``size`` x ``size`` (aspect not kept, as the papers do); ``crop="box"`` crops to the object box
    first, enlarged by ``margin`` of its size on each side."""

    size: int
    crop: str = "none"  # "none" | "box"
    margin: float = 0.0

    def describe(self) -> str:
        return f"resize{self.size}-crop_{self.crop}-margin{self.margin:g}"

    @staticmethod
    def described_crop(description: object) -> str | None:
        """The crop (``"none"`` or ``"box"``) that a :meth:`describe` text (a run's stored framing) names; None
        when there is none (a run stored before its framing was)."""
        for crop in ("none", "box"):
            if f"-crop_{crop}-" in str(description):
                return crop
        return None

    def region(self, rec: Record, w: int, h: int) -> Box:
        if self.crop == "box" and rec.box is not None:
            x0, y0, x1, y1 = rec.box
            mx, my = (x1 - x0) * self.margin, (y1 - y0) * self.margin
            return max(0.0, x0 - mx), max(0.0, y0 - my), min(float(w), x1 + mx), min(float(h), y1 + my)
        return 0.0, 0.0, float(w), float(h)

    def keypoints(self, source: ImageSource, index: int) -> dict[str, Point]:
        """The record's keypoints in framed coordinates, without decoding the pixels."""
        rec = source.record(index)
        w, h = source.image_size(index)
        affine = region_affine(self.region(rec, w, h), self.size, self.size)
        return {k: affine.point(*p) for k, p in rec.keypoints.items()}

    def apply_all(self, source: ImageSource) -> list[Framed]:
        """Every image of ``source`` framed; an unreadable one fails before any is used (images named one by one)."""
        return [self.apply(source, i) for i in range(len(source))]

    def apply_usable(self, source: ImageSource) -> tuple[list[Framed], LoadReport]:
        """The images of ``source`` that decode, framed, and how the others went (a data set: never fatal)."""
        frames, report = [], LoadReport(total=len(source))
        for i in range(len(source)):
            try:
                frames.append(self.apply(source, i))
                report.loaded += 1
            except ImageDecodeError as e:
                report.add_skip(source.record(i).id, reason_of(e))
        return frames, report

    def apply(
        self,
        source: ImageSource,
        index: int,
        with_mask: bool = True,
        region: Box | None = None,
        image: Image.Image | None = None,
    ) -> Framed:
        """Image ``index`` framed: cropped to ``region`` (source pixels; default: this framing's region for the
        record) and resized to ``size``, with its ground truth and mask in framed coordinates. ``image``: the
        source image, already loaded (for several framings of one image)."""
        rec = source.record(index)
        img = image if image is not None else source.load_image(index)
        w, h = img.size
        region = region if region is not None else self.region(rec, w, h)
        affine = region_affine(region, self.size, self.size)
        if region != (0.0, 0.0, float(w), float(h)) or (w, h) != (self.size, self.size):
            out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=region)
        else:
            out = img
        keypoints = {k: affine.point(*p) for k, p in rec.keypoints.items()}
        box = affine.box(rec.box) if rec.box is not None else None
        mask = None
        if with_mask and rec.mask_path is not None:
            full = source.load_mask(index, (w, h))
            if full is not None:
                m = Image.fromarray(full.astype(np.uint8) * 255)
                mask = np.asarray(m.resize((self.size, self.size), Image.Resampling.NEAREST, box=region)) > 127
        elif with_mask:
            mask = source_mask_array(source, index, region, self.size)
        return Framed(index, rec.id, np.asarray(out, np.uint8), affine, (w, h), rec.label, box, keypoints, mask)


def source_mask_array(source: ImageSource, index: int, region: Box, size: int) -> np.ndarray | None:
    """Masks that a source holds in memory (the synthetic source) rather than in files."""
    getter = getattr(source, "mask_array", None)
    if getter is None:
        return None
    full = getter(index)
    if full is None:
        return None
    m = Image.fromarray(full.astype(np.uint8) * 255)
    return np.asarray(m.resize((size, size), Image.Resampling.NEAREST, box=region)) > 127
