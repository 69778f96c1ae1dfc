"""A view on part of a source: some labels, or explicit indices."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from kgexplain.data.base import ImageSource, Record
from kgexplain.errors import DataError, UsageError

if TYPE_CHECKING:  # the data layer runs without torch (the command line's read commands load no torch)
    from kgexplain.distributed import Group


class Subset(ImageSource):
    def __init__(self, source: ImageSource, indices: Sequence[int], name: str | None = None) -> None:
        self.source = source
        self.indices = [int(i) for i in indices]
        self.name = name or f"{source.name}[{len(self.indices)}]"
        if not self.indices:
            raise DataError(f"the selection from {source.name} is empty")

    @classmethod
    def by_label(cls, source: ImageSource, labels: Sequence[str], limit: int | None = None) -> Subset:
        wanted = set(labels)
        idx = [i for i in range(len(source)) if source.record(i).label in wanted]
        if not idx:
            have = ", ".join(source.labels()) or "none"
            raise DataError(f"no images labelled {', '.join(labels)} in {source.name}", hint=f"labels present: {have}")
        return cls(source, idx[:limit] if limit else idx, f"{source.name}[{'+'.join(labels)}]")

    @classmethod
    def excluding_label(cls, source: ImageSource, labels: Sequence[str]) -> Subset:
        unwanted = set(labels)
        return cls(
            source,
            [i for i in range(len(source)) if source.record(i).label not in unwanted],
            f"{source.name}[-{'+'.join(labels)}]",
        )

    def __len__(self) -> int:
        return len(self.indices)

    def record(self, index: int) -> Record:
        return self.source.record(self.indices[index])

    def load_image(self, index: int) -> Image.Image:
        return self.source.load_image(self.indices[index])

    def load_mask(self, index: int, size: tuple[int, int]) -> np.ndarray | None:
        return self.source.load_mask(self.indices[index], size)

    def image_size(self, index: int) -> tuple[int, int]:
        return self.source.image_size(self.indices[index])

    def mask_array(self, index: int) -> np.ndarray | None:
        getter = getattr(self.source, "mask_array", None)
        return getter(self.indices[index]) if getter else None

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.source.fingerprint().encode())
        h.update(np.asarray(self.indices, np.int64).tobytes())
        return h.hexdigest()[:32]

    @property
    def preferred_crop(self) -> str:
        return str(getattr(self.source, "preferred_crop", "none"))


def shard(source: ImageSource, group: Group) -> Subset | None:
    """This rank's contiguous block of ``source`` in a distributed job (None for one process: all of it)."""
    if group.world < 2:
        return None
    if len(source) < group.world:
        raise UsageError(
            f"{source.name} has {len(source)} images, fewer than the {group.world} ranks",
            hint="start fewer processes (--nproc, torchrun --nproc-per-node)",
        )
    return Subset(source, group.block(len(source)), f"{source.name}#rank{group.rank}of{group.world}")
