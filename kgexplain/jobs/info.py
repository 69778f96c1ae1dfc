"""``kgexplain info`` and ``kgexplain decoders train`` as library calls: :func:`run_info` measures per-pixel
information discarding (SID, and RU with trained decoders) and the concentration, for one model or several
checkpoints; :func:`run_decoders` trains the decoders RU needs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgexplain.data.base import Framed, Framing, ImageSource
from kgexplain.data.images import load_mask_file
from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.distributed import join
from kgexplain.errors import UsageError
from kgexplain.information.decoder import DecoderConfig, decoder_info, load_decoder, train_decoders
from kgexplain.information.measure import Measurement, measure, object_mask
from kgexplain.information.sid import SIDConfig
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
from kgexplain.models.registry import ModelHandle
from kgexplain.persist.info import info_metrics, info_record
from kgexplain.persist.shared import layer_and_image_rows, metric_rows, write_shared
from kgexplain.plots import curves, heat_overlay
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, StoreSpec
from kgexplain.store import ids as I
from kgexplain.store.base import now
from kgexplain.workspace import job_output_folder

# held-out PSNR below which a decoder barely reconstructs at all (the toy net's deepest, conv5_2, reaches 15.6 dB
# after 30 epochs: deep layers discard information, so a low figure there is partly the layer's, not the decoder's)
POOR_DECODER_DB = 12.0


@dataclass(frozen=True)
class InfoConfig:
    """What to measure. ``data`` is image files (one row per image and layer) or a data set (a summary row per
    layer; default: 24 synthetic animals, objects only); ``masks`` are object masks for image files, in order.
    Several ``weights`` (models or checkpoints) give one run and one curve each."""

    model: str | ModelHandle = "toynet"  # an architecture name, or your own network (ModelHandle.from_module)
    weights: tuple[str | None, ...] = ()  # imagenet | none | shipped | PATH each; default: the model's own
    trust_checkpoint: bool = False
    layers: tuple[str, ...] = ()  # default: the model's paper layers
    data: DataSpec = field(default_factory=lambda: DataSpec(n=24, categories=ANIMALS))
    masks: tuple[str, ...] = ()
    ru: bool = False  # also reconstruction uncertainty (needs trained decoders)
    sid: SIDConfig = field(default_factory=SIDConfig)
    batch_size: int = 2  # images per fit
    out: str = "kgexplain-info"  # maps (.npy), overlays (.png) and curves.png
    device: str = "auto"


@dataclass
class InfoRun:
    """One model's (checkpoint's) measurement and the run it is stored as."""

    weights: str
    run: str
    measurement: Measurement
    image_names: list[str]
    files: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"weights": self.weights, "image": self.image_names[r.image], **r.row()} for r in self.measurement.records
        ]

    def summary(self) -> list[dict[str, Any]]:
        return [{"weights": self.weights, **row} for row in self.measurement.summary()]


@dataclass
class InfoResult(JobResult):
    runs: list[InfoRun]
    per_image: bool  # image files: a row per image and layer; a data set: a summary row per layer
    curves: str = ""

    def rows(self) -> list[dict[str, Any]]:
        return [row for r in self.runs for row in (r.rows() if self.per_image else r.summary())]

    def to_json(self) -> Any:
        return self.rows()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "image"


def run_info(
    config: InfoConfig | None = None, store: GraphStore | StoreSpec | None = None, progress: Progress | None = None
) -> InfoResult:
    """Per-pixel SID (and RU) maps and the concentration per image and layer, stored as one run per weights
    (Metric nodes linked to the Image and Layer, the maps as artifacts); maps, overlays and curves in ``out``.

    Example::

        from kgexplain import DataSpec, InfoConfig, StoreSpec, run_info

        res = run_info(InfoConfig(data=DataSpec(files=("bird.png",)), layers=("conv5_2",)), StoreSpec("my-store"))
        print(res.rows()[0]["sid"], res.rows()[0]["concentration"])
    """
    cfg = config or InfoConfig()
    per_image = bool(cfg.data.files)
    if cfg.masks and not per_image:
        raise UsageError("--mask goes with IMAGE files", hint="data sets bring their own masks or boxes")
    if cfg.masks and len(cfg.masks) != len(cfg.data.files):
        raise UsageError(
            f"{len(cfg.masks)} --mask for {len(cfg.data.files)} images", hint="pass one --mask per IMAGE, in order"
        )
    cfg.data.check()
    device = device_name(cfg.device)
    handles, layers = load_models(cfg.model, cfg.weights, cfg.trust_checkpoint, cfg.layers)
    group = join(device)
    if not group.main:
        progress = None  # rank 0 reports for the job
    store = store or StoreSpec()
    # first: a folder that cannot be made stops the job; one it made is removed again if it fails before writing
    with job_output_folder(cfg.out, make=group.main) as out_dir:
        ws = workspace_of(store)
        # rank 0 writes the synthetic set (when needed) before the others read it
        source = group.main_first(lambda: cfg.data.open(ws, progress), "opening the data")
        size = handles[0][1].input_size
        framing = Framing(size, "none") if per_image else cfg.data.framing(size, source, default_crop="none")
        frames = framed(cfg.data, source, framing, progress)
        masks = [load_mask_file(p, framing.size) for p in cfg.masks] if cfg.masks else None
        objects = masks if masks is not None else [object_mask(f) for f in frames]  # what the concentration measures
        decoders = [{n: load_decoder(ws.cache, h, n, device) for n in layers} if cfg.ru else None for _, h in handles]
        for (weights, h), decoder in zip(handles, decoders, strict=True):
            for n in decoder or {}:
                quality = (decoder_info(ws.cache, h, n) or {}).get("psnr")
                if quality is not None and quality < POOR_DECODER_DB:
                    say(
                        progress,
                        f"note: the {n} decoder ({checkpoint_label(weights)}) reconstructs held-out images at "
                        f"{quality:.1f} dB PSNR, under {POOR_DECODER_DB:g} dB: RU measured with it reflects the "
                        "decoder as much as the layer (the toy net's, 30 epochs: 27 / 22 / 18 / 16 dB at conv2_2 / "
                        "conv3_2 / conv4_2 / conv5_2; train it longer or on more images: kgexplain decoders train "
                        "--epochs N)",
                    )
        ws.ensure()
        runs = []
        check_writable(store, group, progress)  # opened again to write each run
        for (weights, handle), decoder in zip(handles, decoders, strict=True):
            label = weights or "default"
            folder = out_dir / checkpoint_label(weights) if len(handles) > 1 else out_dir
            handle.to(device)
            say(
                progress,
                f"{handle.name} ({label}): {count(len(frames), 'image')} x {count(len(layers), 'layer')}"
                f"{group.on_ranks()} ...",
            )
            started = now()
            m = measure(handle, frames, layers, cfg.sid, decoder, objects, cfg.batch_size, device, progress, group)
            if not group.main:  # not rank 0: nothing to write
                runs.append(InfoRun(label, "", m, [f.id for f in frames]))
                continue
            with opened(store, write=True, progress=progress) as db:  # only to write: others may write meanwhile
                run = _store(db, handle, label, source, frames, layers, cfg, m, masks, framing, started)
            files = _write_maps(m, frames, folder, objects, whole=framing.crop == "none")
            runs.append(InfoRun(label, run, m, [f.id for f in frames], files))
            say(
                progress,
                f"stored run {run}: {len(m.records)} maps in {m.seconds:.1f} s "
                f"({m.seconds / max(1, len(m.records)):.2f} s per map)",
            )
        curve = ""
        if group.main:
            curve = str(plot_curves(runs, out_dir / "curves.png"))
            say(progress, f"maps and overlays in {out_dir}/, curves in {curve}")
        group.barrier("the end of the measurement")
        return InfoResult(runs, per_image, curve)


def _store(
    store: GraphStore,
    handle: ModelHandle,
    label: str,
    source: ImageSource,
    frames: Sequence[Framed],
    layers: Sequence[str],
    cfg: InfoConfig,
    m: Measurement,
    masks: Sequence[np.ndarray] | None,
    framing: Framing,
    started: str | None = None,
) -> str:
    """Store one measurement as a run; returns its id."""
    size = frames[0].image.shape[0]
    model_id, image_ids, shared_nodes, shared_rels = layer_and_image_rows(
        handle, layers, source, [f.index for f in frames], size, store.artifacts.root
    )
    determinants = {
        "layers": list(layers),
        "sid": cfg.sid.to_dict(),
        "ru": cfg.ru,
        "data": source.fingerprint(),
        "masks": [None if mk is None else int(mk.sum()) for mk in (masks or [])],
    }
    run = I.run_id("info", handle.name, data_label(source.name), [model_id, determinants])
    metrics = info_metrics(m, model_id, image_ids, label, cfg.sid.grid_for(size), store.artifacts)
    nodes, rels = metric_rows(run, metrics)
    write_shared(store, shared_nodes, shared_rels)
    # how the images were framed (the browser draws a whole-image map at the image's aspect); not in the run id
    record = info_record(run, model_id, source.name, {**determinants, "framing": framing.describe()}, label, m)
    store.write_run(replace(record, started=started), nodes, rels)
    return run


def _write_maps(
    m: Measurement,
    frames: Sequence[Framed],
    out: Path,
    objects: Sequence[np.ndarray | None],
    whole: bool = False,
) -> list[str]:
    """Each map as ``.npy`` (pixel entropies in nats) and as a heat-map overlay PNG with a colour bar, the outline
    of the image's object (``objects``: the masks the concentration used, None for none) and a title with the map's
    mean and concentration; ``whole`` (each image was resized whole to the square input): drawn at the image's own
    aspect."""
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{i:04d}-{_slug(Path(f.id).stem)}" for i, f in enumerate(frames)]
    files: list[str] = []
    for r in m.records:
        mask = objects[r.image]
        for kind, arr, mean, conc in (
            ("sid", r.sid_map, r.sid, r.concentration),
            ("ru", r.ru_map, r.ru, r.ru_concentration),
        ):
            if arr is None:
                continue
            # Not with_suffix: a layer name may hold a dot (blocks.5, features.6), which it would cut off.
            stem = f"{names[r.image]}-{r.layer.replace('.', '_')}-{kind}"
            npy, png = out / f"{stem}.npy", out / f"{stem}.png"
            np.save(npy, arr)
            title = f"{Path(frames[r.image].id).name} · {r.layer} · {kind.upper()} mean {mean:.3f}"
            if conc is not None and not math.isnan(conc):
                title += f", concentration {conc:.3f}"
            label = f"pixel {kind.upper()} (nats): blue kept, red discarded"
            aspect = frames[r.image].source_size if whole else None
            heat_overlay(frames[r.image].image, arr, png, mask=mask, title=title, label=label, aspect=aspect)
            files += [str(npy), str(png)]
    return files


def plot_curves(runs: Sequence[InfoRun], path: Path) -> Path:
    """SID (RU, concentration) per layer, one line per model/checkpoint."""
    layers = runs[0].measurement.layers
    keys = ["sid", "concentration"] + (["ru"] if any(r.measurement.records[0].ru is not None for r in runs) else [])
    series: dict[str, dict[str, list[float | None]]] = {k: {} for k in keys}
    for res in runs:
        by_layer = {row["layer"]: row for row in res.measurement.summary()}
        for k in keys:
            series[k][res.weights] = [by_layer[n].get(k) for n in layers]  # type: ignore[misc]
    return curves(series, layers, path, title="per-pixel information discarding (nats), mean over images")


@dataclass(frozen=True)
class DecodersConfig:
    """Which decoders to train (one per layer, MSE to the image), on which images (default: 400 synthetic
    animals of seed 1)."""

    model: str | ModelHandle = "toynet"  # an architecture name, or your own network (ModelHandle.from_module)
    weights: str | None = None
    trust_checkpoint: bool = False
    layers: tuple[str, ...] = ()
    data: DataSpec = field(default_factory=lambda: DataSpec(n=400, seed=1, categories=ANIMALS))
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    device: str = "auto"


@dataclass
class DecodersResult(JobResult):
    decoders: list[dict[str, Any]]  # per layer: final MSE, training images, file

    def rows(self) -> list[dict[str, Any]]:
        return self.decoders

    def to_json(self) -> Any:
        return self.decoders


def run_decoders(
    config: DecodersConfig | None = None, store: GraphStore | StoreSpec | None = None, progress: Progress | None = None
) -> DecodersResult:
    """Train one decoder per layer and cache it in the store's workspace (re-training replaces it). No graph rows
    are written, so a :class:`StoreSpec` is not even opened (a build can write to the store meanwhile).

    Example::

        from kgexplain import DecodersConfig, StoreSpec, run_decoders

        run_decoders(DecodersConfig(layers=("conv3_2", "conv5_2")), StoreSpec("my-store"))
    """
    cfg = config or DecodersConfig()
    cfg.data.check()
    [(_, handle)], layers = load_models(cfg.model, (cfg.weights,), cfg.trust_checkpoint, cfg.layers)
    device = device_name(cfg.device)
    handle.to(device)
    ws = workspace_of(store or StoreSpec())
    source = cfg.data.open(ws)
    ws.ensure()
    framing = cfg.data.framing(handle.input_size, source, default_crop="none")
    rows = train_decoders(handle, layers, source, framing, ws.cache, cfg.decoder, device, progress=progress)
    return DecodersResult(rows)
