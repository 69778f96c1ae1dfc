"""What a user names as "the data": :class:`DataSpec`, one source with its selection and its framing, and the one
place where a source is opened.

A spec is plain data; ``spec.open(workspace)`` opens the source (the synthetic reference set is written into the
workspace's data folder the first time, and reused after), ``spec.framing(input_size, source)`` says how each image
becomes a model input.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from kgexplain.data.annotations import ANNOTATIONS_FILE, AnnotatedImages
from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.cub import CubDataset
from kgexplain.data.folder import ImageFiles, ImageFolder
from kgexplain.data.subset import Subset
from kgexplain.data.synth.dataset import check_categories, write_synth
from kgexplain.errors import UsageError
from kgexplain.progress import Progress, say
from kgexplain.workspace import Workspace

SYNTH_N = 700  # images of the synthetic set when a command does not say otherwise


def synth_folder(data_dir: Path, n: int, seed: int, size: int, categories: Sequence[str]) -> Path:
    return data_dir / f"synth-s{seed}-n{n}-{size}px-{'+'.join(categories)}"


@dataclass(frozen=True)
class DataSpec:
    """One data source: ``files`` (images named one by one), ``images`` (a folder; sub-folders are labels),
    ``annotations`` (an annotations JSON), ``cub`` (a CUB-200-2011 folder), or, when none is given, the synthetic
    reference set (``n`` images of ``categories``, all by default, background included, from ``seed``).

    ``labels`` keeps the images with these labels, ``limit`` the first N; ``crop`` is ``"box"`` (crop to the object
    box before resizing), ``"none"``, or ``None`` for the source's own preference (box for CUB).

    Example::

        source = DataSpec(images="photos/", limit=50).open()
        framing = DataSpec(cub="CUB_200_2011", cub_classes=("Laysan",)).framing(224, source)
    """

    files: tuple[str, ...] = ()
    images: str | None = None
    annotations: str | None = None
    cub: str | None = None
    cub_classes: tuple[str, ...] = ()
    split: str = "all"
    labels: tuple[str, ...] = ()
    limit: int | None = None
    crop: str | None = None
    synth: bool = False  # the synthetic set asked for by name (``--data synth``): an error beside another source
    n: int = SYNTH_N
    seed: int = 0
    size: int = 128
    categories: tuple[str, ...] | None = None

    def _given(self) -> list[str]:
        named = (
            ("IMAGE files", self.files),
            ("--images", self.images),
            ("--annotations", self.annotations),
            ("--cub", self.cub),
            ("--data synth", self.synth),
        )
        return [name for name, value in named if value]

    @property
    def synthetic(self) -> bool:
        """True when this spec means the synthetic reference set."""
        return not (self.files or self.images or self.annotations or self.cub)

    def to_record(self) -> dict[str, object]:
        """This spec as JSON-ready fields, its paths made absolute, so that another command in another folder can
        open the same source again (:meth:`from_record`); fields at their defaults are left out."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name == "files":
                value = [str(Path(p).expanduser().absolute()) for p in value]
            elif f.name in ("images", "annotations", "cub"):
                value = str(Path(value).expanduser().absolute())
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> DataSpec:
        """The spec :meth:`to_record` wrote."""
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]

    def check(self) -> DataSpec:
        """Fail on contradictions (two sources), before anything is opened."""
        given = self._given()
        if len(given) > 1:
            raise UsageError(f"choose one data source, not {' and '.join(given)}")
        if self.crop not in (None, "none", "box"):
            raise UsageError(f"bad crop {self.crop!r}", hint="use none or box")
        return self

    def open(self, workspace: Workspace | str | Path | None = None, progress: Progress | None = None) -> ImageSource:
        """Open the source. The synthetic set is written to the data folder of ``workspace`` (a store's workspace,
        or a folder given as a path), and reused when it is there."""
        self.check()
        source: ImageSource
        if self.files:
            source = ImageFiles(list(self.files))
        elif self.images:
            source = ImageFolder(self.images)
            if (source.root / ANNOTATIONS_FILE).is_file():  # a `data synth` folder, or one annotated by hand
                say(
                    progress,
                    f"{source.root} holds {ANNOTATIONS_FILE}; --images takes every image under it as it is (a masks "
                    f"folder too); --annotations {shlex.quote(str(source.root / ANNOTATIONS_FILE))} uses its boxes, "
                    "parts and masks",
                )
        elif self.annotations:
            source = AnnotatedImages(self.annotations)
        elif self.cub:
            cub = CubDataset(self.cub, classes=list(self.cub_classes) or None, split=self.split)
            if cub.dropped_small:
                say(
                    progress,
                    f"CUB: {cub.dropped_small} of {cub.dropped_small + len(cub)} selected images left out, their "
                    f"object box under {cub.min_box:g} px (as the authors' code)",
                )
            source = cub
        else:
            if workspace is None:
                raise UsageError("the synthetic data set needs a folder to be written to")
            data_dir = workspace.data if isinstance(workspace, Workspace) else Path(workspace)
            cats = check_categories(self.categories)
            folder = synth_folder(data_dir, self.n, self.seed, self.size, cats)
            source = write_synth(folder, self.n, self.seed, self.size, cats, progress=progress)
        if self.labels:
            source = Subset.by_label(source, list(self.labels), self.limit)
        elif self.limit:
            source = Subset(source, range(min(self.limit, len(source))), f"{source.name}[:{self.limit}]")
        return source

    def framing(self, input_size: int, source: ImageSource, default_crop: str | None = None) -> Framing:
        """Resize to ``input_size``, cropped as ``crop`` says; without it as ``default_crop``, else as the source
        prefers (box for CUB)."""
        crop = self.crop or default_crop or str(getattr(source, "preferred_crop", "none"))
        if self.crop == "box" and not any(source.record(i).box is not None for i in range(len(source))):
            raise UsageError(
                f"--crop box, but no image of {source.name} has an object box",
                hint='boxes come from --annotations FILE ("box" per image) or --cub; leave --crop out for whole images',
            )
        return Framing(input_size, crop)
