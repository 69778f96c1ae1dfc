"""``kgexplain kp`` as a library call: :func:`run_kp` counts knowledge points per layer, image and class, for one
model or a series of checkpoints."""

from __future__ import annotations

import glob
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgexplain.data.base import Framed, ImageSource, sha256_file
from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.distributed import join
from kgexplain.errors import UsageError
from kgexplain.jobs.common import (
    JobResult,
    check_writable,
    checkpoint_label,
    count,
    data_label,
    device_name,
    framed,
    load_models,
    opened,
    workspace_of,
)
from kgexplain.knowledge_points.analyse import Analysis, KPConfig, analyse
from kgexplain.knowledge_points.figures import plot_counts, write_plots
from kgexplain.knowledge_points.kappa import KappaTables
from kgexplain.models.registry import ModelHandle
from kgexplain.persist.kp import kp_record, kp_rows, layer_metrics
from kgexplain.persist.shared import layer_and_image_rows, metric_rows, write_shared
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, StoreSpec
from kgexplain.store import ids as I
from kgexplain.store.base import now
from kgexplain.tables import natural_key
from kgexplain.workspace import job_output_folder
from kgexplain.zoo import training_series

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")  # what a folder given to --checkpoints is read for


def checkpoint_series(model: str, checkpoints: str) -> tuple[str, ...]:
    """A comma-separated list of weights (specs or paths, in training order); ``epochs`` expands to the toy net's
    shipped per-epoch checkpoints (the last is the shipped final net), a folder to its checkpoint files and a
    pattern (``run/epoch*.pt``) to its matches, in natural order (epoch2 before epoch10), a file with the same
    bytes as an earlier one left out (``zoo train``'s ``toynet.pt``, a copy of its last epoch)."""
    out: list[str] = []
    for item in (x.strip() for x in checkpoints.split(",")):
        if not item:
            continue
        if item == "epochs":
            if model != "toynet":
                raise UsageError("--checkpoints epochs names the toy net's shipped checkpoints", hint="list PATHs")
            out += [str(p) for p in training_series()]
        elif Path(item).expanduser().is_dir() or glob.has_magic(item):
            out += _checkpoint_files(item)
        else:
            out.append(item)
    if not out:
        raise UsageError("--checkpoints is empty", hint="e.g. --checkpoints epochs or --checkpoints a.pt,b.pt")
    return tuple(out)


def _checkpoint_files(item: str) -> list[str]:
    """The checkpoint files of a folder, or a pattern's matches, in natural order, each content once."""
    folder = Path(item).expanduser()
    if folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
        what = f"no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) in the folder {item}"
    else:
        files = [Path(p) for p in glob.glob(str(folder)) if Path(p).is_file()]
        what = f"no file matches {item}"
    if not files:
        raise UsageError(what, hint="--checkpoints takes files, folders or patterns, comma-separated, in order")
    seen: set[str] = set()
    out = []
    for path in sorted(files, key=lambda p: natural_key(p.name)):
        digest = sha256_file(path)
        if digest not in seen:
            seen.add(digest)
            out.append(str(path))
    return out


@dataclass(frozen=True)
class KnowledgePointsConfig:
    """What to analyse. Several ``weights`` (a series of checkpoints, in training order) give one run each and the
    curves through training. ``data`` defaults to 200 synthetic animals; ``truth`` is ``label`` (reliable = points
    to the image's labelled class) or ``predicted`` (to the model's prediction, for unlabelled data)."""

    model: str | ModelHandle = "toynet"  # an architecture name, or your own network (ModelHandle.from_module)
    weights: tuple[str | None, ...] = ()  # default: the model's own weights
    trust_checkpoint: bool = False
    layers: tuple[str, ...] = ()  # default: the model's paper layers
    sample_layer: str | None = None  # default: the last conv layer
    data: DataSpec = field(default_factory=lambda: DataSpec(n=200, categories=ANIMALS))
    analysis: KPConfig = field(default_factory=KPConfig)
    truth: str = "label"
    batch_size: int = 64
    out: str = "kgexplain-kp"  # plots per checkpoint, counts.png, checkpoints.png
    device: str = "auto"


@dataclass
class KPRun:
    """One model's (checkpoint's) analysis and the run it is stored as."""

    checkpoint: str
    run: str
    analysis: Analysis
    class_names: list[str]
    files: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        corr = self.analysis.corr["corr_norm_entropy"]
        return [
            {"checkpoint": self.checkpoint, **r.summary(), "corr_norm_entropy": round(corr, 4)}
            for r in self.analysis.layers.values()
        ]


@dataclass
class KnowledgePointsResult(JobResult):
    runs: list[KPRun]
    plots: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per checkpoint and layer."""
        return [row for r in self.runs for row in r.summary()]

    def to_json(self) -> Any:
        return self.rows()


def truth_of(frames: Sequence[Framed], class_names: Sequence[str] | None, mode: str) -> np.ndarray | None:
    """True class index per image (-1 unknown); None for ``mode="predicted"`` (filled from the logits later)."""
    if mode == "predicted":
        return None
    if mode != "label":
        raise UsageError(f"bad truth {mode!r}", hint="use label or predicted")
    if not class_names:
        raise UsageError(
            "the model has no class names, so image labels cannot be matched to its outputs",
            hint="use --truth predicted (reliability against the model's own prediction), or save the checkpoint "
            'as {"state_dict": ..., "meta": {"class_names": [...]}}, or from Python pass class_names= to '
            "ModelHandle.from_module (README: Models, weights and layers)",
        )
    index = {c: i for i, c in enumerate(class_names)}
    truth = np.array([index.get(f.label or "", -1) for f in frames], np.int64)
    if (truth < 0).all():
        raise UsageError(
            "no image label names one of the model's classes",
            hint="give data labelled with the model's class names, or use --truth predicted",
        )
    return truth


def run_kp(
    config: KnowledgePointsConfig | None = None,
    store: GraphStore | StoreSpec | None = None,
    progress: Progress | None = None,
) -> KnowledgePointsResult:
    """Fit the sample embedding, each sample's regional importance and a regional projection per layer; count the
    knowledge points and the reliable ones; store a run per checkpoint (KnowledgePoint nodes, Metric rows) and write
    the plots to ``out``.

    Example::

        from kgexplain import KnowledgePointsConfig, StoreSpec, run_kp

        res = run_kp(KnowledgePointsConfig(layers=("conv3_2", "conv5_2")), StoreSpec("my-store"))
        for row in res.rows():
            print(row["checkpoint"], row["layer"], row["kp"], row["reliable_ratio"])
    """
    cfg = config or KnowledgePointsConfig()
    cfg.data.check()
    also = [cfg.sample_layer] if cfg.sample_layer else []
    handles, layers = load_models(cfg.model, cfg.weights, cfg.trust_checkpoint, cfg.layers, also)
    device = device_name(cfg.device)
    group = join(device)
    if not group.main:
        progress = None  # rank 0 reports for the job
    store = store or StoreSpec()
    # first: a folder that cannot be made stops the job; one it made is removed again if it fails before writing
    with job_output_folder(cfg.out, make=group.main) as out_dir:
        ws = workspace_of(store)
        # rank 0 writes the synthetic set (when needed) before the others read it
        source = group.main_first(lambda: cfg.data.open(ws, progress), "opening the data")
        frames = framed(cfg.data, source, cfg.data.framing(handles[0][1].input_size, source, "none"), progress)
        if len(frames) < 2:
            raise UsageError("knowledge points need at least 2 images")
        truths = [truth_of(frames, h.class_names, cfg.truth) for _, h in handles]
        kappa = group.main_first(  # rank 0 computes the tables (when not cached) before the others read them
            lambda: KappaTables.load(
                cfg.analysis.sample_kappa0, cfg.analysis.regional_kappa0, cache=ws.ensure().cache / "kappa"
            ),
            "the kappa tables",
        )
        runs = []
        check_writable(store, group, progress)  # opened again to write each run
        for (weights, handle), truth in zip(handles, truths, strict=True):
            label = checkpoint_label(weights)
            handle.to(device)
            t0, started = time.perf_counter(), now()
            say(
                progress,
                f"{handle.name} ({label}): {count(len(frames), 'image')} x {count(len(layers), 'layer')}"
                f"{group.on_ranks()} ...",
            )
            images = np.stack([f.image for f in frames])
            a = analyse(
                handle, images, truth, layers, kappa, cfg.analysis, cfg.sample_layer, device, cfg.batch_size,
                progress, group,
            )  # fmt: skip
            classes = int(a.collected.logits.shape[1])
            if cfg.analysis.tau < 1 / classes:
                say(
                    progress,
                    f"note: with {classes} classes max_c p(c|h) is at least 1/{classes} = {1 / classes:.2f}, above tau "
                    f"= {cfg.analysis.tau:g}, so every region counts as a knowledge point; pass --tau above "
                    f"{1 / classes:.2f} for counts that mean something",
                )
            known = np.unique(a.truth[a.truth >= 0])
            if len(known) == 1:
                whose = "predicted" if cfg.truth == "predicted" else "labelled"
                say(
                    progress,
                    f"note: every image is {whose} class {_class_name(handle, int(known[0]))}, so a knowledge point is "
                    "reliable whenever it points to that class: the reliable ratio says nothing about the model here; "
                    "give images of several classes",
                )
            if not group.main:  # not rank 0: nothing to write
                continue
            with opened(store, write=True, progress=progress) as db:  # only to write: others may write meanwhile
                run = _store(db, handle, label, source, frames, layers, a, cfg, started)
            folder = out_dir / label if len(handles) > 1 else out_dir
            folder.mkdir(parents=True, exist_ok=True)
            run.files = write_plots(run.analysis, label, run.class_names, frames, folder)
            runs.append(run)
            say(progress, f"stored run {run.run} in {time.perf_counter() - t0:.1f} s")
        plots = []
        if group.main:
            plots = plot_counts([(r.checkpoint, r.analysis) for r in runs], out_dir)
            say(progress, f"plots in {out_dir}/ ({', '.join(p.name for p in plots)})")
        group.barrier("the end of the knowledge points")
        return KnowledgePointsResult(runs, [str(p) for p in plots])


def _class_name(handle: ModelHandle, index: int) -> str:
    """A class's name where the model has names, else its output index."""
    names = handle.class_names or []
    return repr(names[index]) if index < len(names) else str(index)


def _store(
    store: GraphStore,
    handle: ModelHandle,
    checkpoint: str,
    source: ImageSource,
    frames: Sequence[Framed],
    layers: Sequence[str],
    a: Analysis,
    cfg: KnowledgePointsConfig,
    started: str | None = None,
) -> KPRun:
    """Store one checkpoint's analysis as a run."""
    names = list(handle.class_names or []) or [str(c) for c in range(a.collected.logits.shape[1])]

    model_id, image_ids, shared_nodes, shared_rels = layer_and_image_rows(
        handle, layers, source, [f.index for f in frames], frames[0].image.shape[0], store.artifacts.root
    )
    determinants = {
        "layers": list(layers),
        "sample_layer": cfg.sample_layer,
        "truth": cfg.truth,
        "config": cfg.analysis.to_dict(),
        "data": source.fingerprint(),
    }
    run = I.run_id("kp", handle.name, data_label(source.name), [model_id, determinants])
    kp_table, kp_rels = kp_rows(run, checkpoint, model_id, a, frames, image_ids, names)
    nodes, rels = metric_rows(run, layer_metrics(checkpoint, model_id, a))
    nodes["KnowledgePoint"] = kp_table
    rels.update(kp_rels)
    write_shared(store, shared_nodes, shared_rels)
    result = KPRun(checkpoint, run, a, names)
    stats = {"summary": result.summary(), "corr": a.corr, "seconds": round(a.seconds, 2), "images": len(frames)}
    record = replace(kp_record(run, model_id, source.name, determinants, checkpoint, stats), started=started)
    store.write_run(record, nodes, rels)
    return result
