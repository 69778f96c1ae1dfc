"""A view on a source with some images mirrored left to right, their boxes, keypoints and masks with them."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from kgexplain.data.base import ImageSource, Record


class Mirrored(ImageSource):
    """``source`` with the images where ``flip`` is True mirrored (all of them when ``flip`` is None). Boxes are
    pixel edges (x -> w - x), keypoints pixel indices (x -> w - 1 - x), as everywhere in ``kgexplain.data``."""

    def __init__(self, source: ImageSource, flip: np.ndarray | None = None) -> None:
        self.source = source
        self.flip = np.ones(len(source), bool) if flip is None else np.asarray(flip, bool)
        if self.flip.shape != (len(source),):
            raise ValueError(f"flip has {self.flip.shape} entries for {len(source)} images")
        self.name = f"{source.name}[mirrored {int(self.flip.sum())}]"

    def __len__(self) -> int:
        return len(self.source)

    def record(self, index: int) -> Record:
        rec = self.source.record(index)
        if not self.flip[index]:
            return rec
        w = self.source.image_size(index)[0]
        box = None if rec.box is None else (w - rec.box[2], rec.box[1], w - rec.box[0], rec.box[3])
        points = {k: (w - 1 - x, y) for k, (x, y) in rec.keypoints.items()}
        return replace(rec, box=box, keypoints=points, meta={**rec.meta, "mirrored": True})

    def load_image(self, index: int) -> Image.Image:
        img = self.source.load_image(index)
        return ImageOps.mirror(img) if self.flip[index] else img

    def image_size(self, index: int) -> tuple[int, int]:
        return self.source.image_size(index)

    def load_mask(self, index: int, size: tuple[int, int]) -> np.ndarray | None:
        mask = self.source.load_mask(index, size)
        return mask[:, ::-1].copy() if mask is not None and self.flip[index] else mask

    def mask_array(self, index: int) -> np.ndarray | None:
        getter: Any = getattr(self.source, "mask_array", None)
        mask = getter(index) if getter else None
        return mask[:, ::-1].copy() if mask is not None and self.flip[index] else mask

    def fingerprint(self) -> str:
        flips = hashlib.sha256(np.packbits(self.flip).tobytes()).hexdigest()[:16]
        return f"{self.source.fingerprint()}+mirrored:{flips}"
