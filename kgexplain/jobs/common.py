"""What the jobs share: the result protocol, opening the store late (waiting while another process writes it),
models and layers by name."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kgexplain.data.base import Framed, Framing, ImageSource
from kgexplain.data.folder import GENERIC_FOLDERS, SPLIT_FOLDERS
from kgexplain.data.images import LoadReport
from kgexplain.data.spec import DataSpec
from kgexplain.data.subset import Subset
from kgexplain.devices import resolve_device
from kgexplain.distributed import Group
from kgexplain.errors import DataError, StoreBusy, UsageError
from kgexplain.models.registry import ModelHandle, resolve_model
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, StoreSpec
from kgexplain.store.spec import store_wait
from kgexplain.tables import table
from kgexplain.workspace import Workspace


class JobResult:
    """What every job returns: typed fields for Python users, and three views the CLI prints."""

    def to_json(self) -> Any:
        """What ``--json`` prints."""
        raise NotImplementedError

    def rows(self) -> list[dict[str, Any]]:
        """What the table and ``--csv`` print; by default the JSON object's plain values as one row."""
        obj = self.to_json()
        return [{k: v for k, v in obj.items() if not isinstance(v, (dict, list))}]

    def columns(self) -> list[str] | None:
        """The table's columns, in order (None: the rows' keys)."""
        return None

    def text(self) -> str:
        """What a person reads: a summary, or by default the rows as the CLI's table."""
        return table(self.rows(), self.columns())


@contextlib.contextmanager
def opened(store: GraphStore | StoreSpec, write: bool, progress: Progress | None = None) -> Iterator[GraphStore]:
    """The store to work on. A :class:`StoreSpec` is opened here and closed at the end, so a job can make its cheap
    checks first and a mistake never creates or locks a store; an open store is used as it is (its owner closes it).
    With ``write`` the store is initialised when new, and must be writable; an embedded store that another process
    is writing is waited for (``store_wait``), with a status line."""
    if isinstance(store, StoreSpec):
        with store.open_for_writing(progress) if write else store.open(read_only=True) as db:
            if write:
                db.ensure_writable()
            yield db
        return
    if write:
        store.ensure_writable()
    yield store


def check_writable(store: GraphStore | StoreSpec, group: Group, progress: Progress | None) -> None:
    """Before a long job (on rank 0): that the store opens for writing (made when new; Neo4j reachable, the
    credentials right), so a mistake stops it before the work. The job opens it again to write its results, so
    another process may write meanwhile: one that is writing now is said, not an error."""
    if not group.main:
        return
    if not isinstance(store, StoreSpec):
        store.ensure_writable()
        return
    store_wait()  # a wrong $KGEXPLAIN_STORE_WAIT is said now, not when the results are to be written
    try:
        db = store.open(read_only=False)
    except StoreBusy as e:
        say(progress, f"{e.message}: this job will write its results when it is free")
        return
    with db:
        db.ensure_writable()


def framed(data: DataSpec, source: ImageSource, framing: Framing, progress: Progress | None) -> list[Framed]:
    """The images to work on, decoded before anything is measured or written: image files named one by one must
    all decode; a data set's unusable images are skipped and counted (never fatal), as the build does."""
    if data.files:
        return framing.apply_all(source)
    frames, report = framing.apply_usable(source)
    _skipped(source, report, progress)
    return frames


def usable_images(data: DataSpec, source: ImageSource, progress: Progress | None) -> ImageSource:
    """``source`` without the images that do not decode, by the rule of :func:`framed` (for jobs that frame each
    image later)."""
    if data.files:
        for i in range(len(source)):
            source.load_image(i)
        return source
    keep, report = source.usable()
    _skipped(source, report, progress)
    return source if len(keep) == len(source) else Subset(source, keep)


def _skipped(source: ImageSource, report: LoadReport, progress: Progress | None) -> None:
    """Say what a data set's unusable images were; none usable is an error."""
    if report.skipped:
        say(progress, f"images: {report.summary()}")
    if not report.loaded:
        raise DataError(
            f"no usable image in {source.name}", hint=f"{report.summary()}; `kgexplain data check` lists them"
        )


def data_label(source_name: str) -> str:
    """The readable part of a run id for a data source: a folder's name (``folder:my-birds``), its parent's where
    the name says nothing (``my-birds/images`` -> ``my-birds``, ``birds/train`` -> ``birds-train``), an
    annotations file's stem, or its folder's name where the stem says nothing (``annotations:my-birds/annotations.json``
    -> ``my-birds``), with a subset's ``[...]`` kept."""
    kind, _, rest = source_name.partition(":") if ":" in source_name else ("", "", source_name)
    suffix = ""
    if rest.endswith("]") and "[" in rest:
        rest, suffix = rest[: rest.index("[")], rest[rest.index("[") :]
    path = Path(rest)
    if kind != "annotations":
        name, parent = path.name, path.parent.name
        if parent and name.lower() in GENERIC_FOLDERS:
            return parent + suffix
        if parent and name.lower() in SPLIT_FOLDERS:
            return f"{parent}-{name}{suffix}"
        return name + suffix
    return (path.parent.name if path.stem.lower() in ("annotations", "annotation", "labels") else path.stem) + suffix


def count(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def workspace_of(store: GraphStore | StoreSpec) -> Workspace:
    """The store's workspace (data sets, caches), without opening a :class:`StoreSpec`'s database."""
    return store.workspace() if isinstance(store, StoreSpec) else store.workspace


def device_name(device: str) -> str:
    """``auto`` / ``cuda:N`` / ``cpu`` -> the device to run on, checked ("cpu" or e.g. "cuda:0")."""
    dev = resolve_device(device)
    return "cpu" if dev.type == "cpu" else str(dev)


def checkpoint_label(weights: str | None) -> str:
    """How a model's weights are named in results, run metrics and output folders: a file's stem, else the spec."""
    if weights is None:
        return "default"
    return Path(weights).stem if "/" in weights or "\\" in weights else weights


def load_models(
    model: str | ModelHandle,
    weights: Sequence[str | None],
    trust_checkpoint: bool,
    layers: Sequence[str],
    also: Sequence[str] = (),
) -> tuple[list[tuple[str | None, ModelHandle]], list[str]]:
    """(weights spec, handle) per weights spec (none given: the model's default weights; a :class:`ModelHandle`
    carries its own), in order, and the layers to work on (:func:`chosen_layers`). Everything is loaded and checked
    before any work starts, so a missing checkpoint or a wrong layer name fails first."""
    specs = list(weights) or [None]
    handles = [(w, resolve_model(model, w, trust_checkpoint=trust_checkpoint)) for w in specs]
    return handles, chosen_layers(handles[0][1], layers, also)


def chosen_layers(handle: ModelHandle, layers: Sequence[str], also: Sequence[str] = ()) -> list[str]:
    """``layers`` (default: the model's paper layers), each checked against the model with ``also``."""
    chosen = list(layers) or list(handle.default_layers)
    if not chosen:
        raise UsageError("no layers given", hint="pass --layers L1,L2 (see `kgexplain layers MODEL`)")
    for name in [*chosen, *also]:
        handle.layer(name)  # unknown layer names fail here, before any work
    return chosen
