"""Choose a data source from the few things a user names: a folder, an annotations file, CUB, or ``synth``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kgexplain.data.annotations import AnnotatedImages
from kgexplain.data.base import ImageSource
from kgexplain.data.cub import CubDataset
from kgexplain.data.folder import ImageFolder
from kgexplain.data.subset import Subset
from kgexplain.data.synth.dataset import check_categories, write_synth
from kgexplain.errors import UsageError
from kgexplain.progress import Progress


def synth_folder(data_dir: Path, n: int, seed: int, size: int, categories: Sequence[str]) -> Path:
    return data_dir / f"synth-s{seed}-n{n}-{size}px-{'+'.join(categories)}"


def open_source(
    *,
    images: str | Path | None = None,
    annotations: str | Path | None = None,
    cub: str | Path | None = None,
    synth: bool = False,
    data_dir: Path | None = None,
    n: int | None = None,
    seed: int = 0,
    size: int = 128,
    categories: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    cub_classes: Sequence[str] | None = None,
    split: str = "all",
    limit: int | None = None,
    progress: Progress | None = None,
) -> ImageSource:
    """Open exactly one source; ``synth`` writes the synthetic set into ``data_dir`` (reused when present)."""
    chosen = [
        name
        for name, v in (("--images", images), ("--annotations", annotations), ("--cub", cub), ("--data synth", synth))
        if v
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one data source, not {' and '.join(chosen)}")
    source: ImageSource
    if images:
        source = ImageFolder(images)
    elif annotations:
        source = AnnotatedImages(annotations)
    elif cub:
        source = CubDataset(cub, classes=list(cub_classes) if cub_classes else None, split=split)
    else:
        if data_dir is None:
            raise UsageError("the synthetic data set needs a folder to be written to")
        cats = check_categories(categories)
        count = n or 700
        source = write_synth(
            synth_folder(data_dir, count, seed, size, cats), count, seed, size, cats, progress=progress
        )
    if labels:
        source = Subset.by_label(source, list(labels), limit)
    elif limit:
        source = Subset(source, range(min(limit, len(source))), f"{source.name}[:{limit}]")
    return source
