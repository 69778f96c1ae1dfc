"""An image folder, optionally with one sub-folder per class (the sub-folder name is the label)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image

from kgexplain.data.base import ImageSource, Record, files_fingerprint, sha256_file
from kgexplain.data.images import IMAGE_EXTENSIONS, MIN_SIDE, load_rgb
from kgexplain.errors import DataError


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (sorted; hidden ones left out). Linked folders are followed, as torchvision's
    ImageFolder follows them (a class folder is often a link to where the images are), each real folder once, so
    a link back up the tree cannot loop. A link whose target is gone is listed too, so that it is counted as a
    missing file rather than vanish without a word."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # in order: the first path to a folder is kept
        for name in files:
            p = Path(folder) / name
            if (
                not name.startswith(".")
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and (p.is_file() or (p.is_symlink() and not p.exists()))
            ):
                found.append(p)
    return sorted(found)


# folder names that say nothing of the data: a source named after one of them also names the folder above it
GENERIC_FOLDERS = ("images", "image", "imgs", "img", "pictures", "photos", "jpegimages")
SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")


def folder_name(root: Path) -> str:
    """``my-birds`` for ``my-birds/``; ``my-birds/images`` for ``my-birds/images/`` (and ``.`` in it), where the
    folder's own name says nothing of the data."""
    full = root.resolve()
    if full.name.lower() in GENERIC_FOLDERS + SPLIT_FOLDERS and full.parent.name:
        return f"{full.parent.name}/{full.name}"
    return full.name or str(full)


class ImageFolder(ImageSource):
    """Every image under ``root`` (recursively, sorted); images in ``root/CLASS/...`` get the label ``CLASS``."""

    def __init__(self, root: str | Path, min_side: int = MIN_SIDE) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"image folder not found: {self.root}", hint="check the path passed to --images")
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder", hint="pass a folder of images, or --annotations FILE")
        self.paths = list_images(self.root)
        if not self.paths:
            raise DataError(
                f"no images found in {self.root}",
                hint=f"looked for {', '.join(IMAGE_EXTENSIONS)} files (sub-folders included)",
            )
        self.min_side = min_side
        self.name = f"folder:{folder_name(self.root)}"

    def __len__(self) -> int:
        return len(self.paths)

    def record(self, index: int) -> Record:
        p = self.paths[index]
        rel = p.relative_to(self.root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        return Record(id=rel.as_posix(), path=p, label=label)

    def load_image(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index], self.min_side)

    def fingerprint(self) -> str:
        return files_fingerprint("folder", self.paths, base=self.root)


class ImageFiles(ImageSource):
    """Images named one by one (``kgexplain localize a.jpg b.png``); a missing file is an error up front."""

    def __init__(self, paths: list[str | Path], min_side: int = MIN_SIDE) -> None:
        self.paths = [Path(p).expanduser() for p in paths]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise DataError(f"image not found: {missing[0]}", hint="check the path (and that it is a file)")
        listing = next((p for p in self.paths if p.suffix.lower() == ".json"), None)
        if listing is not None:  # `localize --part head my-birds/annotations.json`
            raise DataError(
                f"{listing} is a JSON file, not an image", hint=f"pass an annotations file as --annotations {listing}"
            )
        seen: dict[Path, Path] = {}
        for p in self.paths:
            first = seen.setdefault(p.resolve(), p)
            if first is not p:
                also = "" if str(first) == str(p) else f" (also as {first})"
                raise DataError(f"image {p} is named twice{also}", hint="give each image once")
        self.min_side = min_side
        self.name = "files"

    def __len__(self) -> int:
        return len(self.paths)

    def record(self, index: int) -> Record:
        return Record(id=str(self.paths[index]), path=self.paths[index])

    def load_image(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index], self.min_side)

    def fingerprint(self) -> str:
        """The files' names and contents, in order: the same images give the same runs from any folder, and
        rewritten files (``data synth`` again) keep their ids. Files named one by one are few; hashing them is cheap
        beside decoding them."""
        h = hashlib.sha256(b"files-content")
        for p in self.paths:
            h.update(f"{p.name}|{sha256_file(p)}\n".encode())
        return h.hexdigest()[:32]
