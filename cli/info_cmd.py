"""``kgexplain info`` (SID / RU / concentration maps) and ``kgexplain decoders`` (the RU decoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kgexplain.data.base import Framing
from kgexplain.data.folder import ImageFiles
from kgexplain.data.select import open_source
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.devices import resolve_device
from kgexplain.errors import UsageError
from kgexplain.features.extract import default_framing
from kgexplain.information.decoder import DecoderConfig, decoder_info, train_decoders
from kgexplain.information.run import frames_of, info_run, load_mask_file, plot_curves
from kgexplain.information.sid import SIDConfig
from kgexplain.models import load_model
from kgexplain.models.registry import ARCHITECTURES
from kgexplain.workspace import Workspace

from .context import progress_of, status
from .options import data_options, device_option, output_options, store_options
from .output import emit_rows
from .store_cmd import _store_opts, open_from


def _layers(handle_layers: tuple[str, ...], layers: str | None) -> list[str]:
    chosen = [x.strip() for x in layers.split(",") if x.strip()] if layers else list(handle_layers)
    if not chosen:
        raise UsageError("no layers given", hint="pass --layers L1,L2 (see `kgexplain layers MODEL`)")
    return chosen


DATA_KEYS = ("images", "annotations", "cub", "cub_classes", "split", "labels", "limit")


def _pop_data(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the data-source options (``data_options``) out of a command's keyword arguments."""
    return {k: kwargs.pop(k) for k in DATA_KEYS}


def _source(ws: Workspace, opts: dict[str, Any], n: int, seed: int) -> Any:
    given = any(opts[k] for k in ("images", "annotations", "cub"))
    return open_source(
        images=opts["images"],
        annotations=opts["annotations"],
        cub=opts["cub"],
        synth=not given,
        data_dir=ws.data,
        n=None if given else n,
        seed=seed,
        categories=None if given else list(ANIMALS),
        labels=opts["labels"] or None,
        cub_classes=opts["cub_classes"],
        split=opts["split"],
        limit=opts["limit"],
    )


model_choice = click.option(
    "--model",
    "model_name",
    type=click.Choice(sorted(ARCHITECTURES)),
    default="toynet",
    show_default=True,
    help="Architecture (see `kgexplain models`).",
)
trust_option = click.option("--trust-checkpoint", is_flag=True, help="Allow checkpoints that pickle Python objects.")


@click.command("info")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False), metavar="[IMAGE]...")
@model_choice
@click.option(
    "--weights",
    multiple=True,
    metavar="imagenet|none|shipped|PATH",
    help="Weights; repeat to compare models or checkpoints (one curve each). Default: imagenet (toynet: shipped).",
)
@trust_option
@click.option("--layers", default=None, metavar="L1,L2,...", help="Layers (default: the model's paper layers).")
@click.option("--ru", is_flag=True, help="Also reconstruction uncertainty (needs `kgexplain decoders train`).")
@click.option(
    "--mask",
    "masks",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Object mask per IMAGE (same order; non-zero = object) for the concentration.",
)
@data_options
@click.option("--n", type=click.IntRange(min=1), default=24, show_default=True, help="Synthetic images (default data).")
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic set seed.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=SIDConfig.alpha, show_default=True)
@click.option("--grid", type=click.IntRange(min=1), default=None, help="Noise blocks per side (default: 14 px each).")
@click.option("--steps", type=click.IntRange(min=1), default=SIDConfig.steps, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=SIDConfig.samples, show_default=True)
@click.option(
    "--noise-seed", type=int, default=0, show_default=True, help="Seed of the noise (maps are deterministic)."
)
@click.option(
    "--delta",
    type=click.Choice(["images", "image"]),
    default="images",
    show_default=True,
    help="delta_f^2 averaged over the images measured together (the paper), or per image.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True, help="Images per fit.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="kgexplain-info",
    show_default=True,
    help="Folder for the maps (.npy), overlays (.png) and the layer curves (curves.png).",
)
@device_option
@store_options
@output_options
@click.pass_context
def info_command(
    ctx: click.Context,
    paths: tuple[str, ...],
    model_name: str,
    weights: tuple[str, ...],
    trust_checkpoint: bool,
    layers: str | None,
    ru: bool,
    masks: tuple[str, ...],
    n: int,
    seed: int,
    alpha: float,
    grid: int | None,
    steps: int,
    samples: int,
    noise_seed: int,
    delta: str,
    batch_size: int,
    out: str,
    device: str,
    fmt: str,
    **kwargs: Any,
) -> None:
    """How much input information each layer discards: per-pixel SID (and RU) maps and the concentration.

    With IMAGE files: one row per image and layer. Without: over a data set (default: the synthetic reference
    workload, objects only) with a summary row per layer. Results are stored as a run (`kgexplain runs`):
    Metric nodes per image and layer linked to the Image and Layer, the maps as artifacts.
    """
    sopts = _store_opts(kwargs)
    data = _pop_data(kwargs)
    crop = kwargs.pop("crop")
    kwargs.pop("data_kind")
    if paths and any(data[k] for k in ("images", "annotations", "cub")):
        raise UsageError("give IMAGE files or a data set (--images/--annotations/--cub), not both")
    if masks and not paths:
        raise UsageError("--mask goes with IMAGE files", hint="data sets bring their own masks or boxes")
    if masks and len(masks) != len(paths):
        raise UsageError(f"{len(masks)} --mask for {len(paths)} images", hint="pass one --mask per IMAGE, in order")
    dev = resolve_device(device)
    ws = Workspace.resolve(sopts["store"], sopts["artifacts"]).ensure()
    handles = [
        (w or "default", load_model(model_name, w, trust_checkpoint=trust_checkpoint)) for w in weights or [None]
    ]
    first = handles[0][1]
    chosen = _layers(first.default_layers, layers)
    for name in chosen:
        first.layer(name)  # unknown layer names fail here, before any work
    source = ImageFiles(list(paths)) if paths else _source(ws, data, n, seed)
    base = default_framing(first, source)
    framing = Framing(base.size, "none" if paths else (crop or "none"))
    frames = frames_of(source, framing)
    mask_arrays = [load_mask_file(p, framing.size) for p in masks] if masks else None
    cfg = SIDConfig(alpha=alpha, grid=grid, steps=steps, samples=samples, seed=noise_seed, delta=delta)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with open_from(sopts, read_only=False) as store:
        store.ensure_writable()
        for label, handle in handles:
            handle.to(dev)
            status(ctx, f"{handle.name} ({label}): {len(frames)} images x {len(chosen)} layers ...")
            res = info_run(
                store,
                handle,
                label,
                source,
                frames,
                chosen,
                cfg,
                ru=ru,
                decoder_cache=ws.cache,
                masks=mask_arrays,
                batch=batch_size,
                device=dev,
                out=out_dir / _safe(label) if len(handles) > 1 else out_dir,
                progress=progress_of(ctx),
            )
            results.append(res)
            m = res.measurement
            status(
                ctx,
                f"stored run {res.run}: {len(m.records)} maps in {m.seconds:.1f} s "
                f"({m.seconds / max(1, len(m.records)):.2f} s per map)",
            )
    curve = plot_curves(results, out_dir / "curves.png")
    status(ctx, f"maps and overlays in {out_dir}/, curves in {curve}")
    if paths:
        emit_rows([row for r in results for row in r.rows()], fmt)
    else:
        emit_rows([row for r in results for row in r.summary()], fmt)


def _safe(label: str) -> str:
    return Path(label).stem if "/" in label or "\\" in label else label


@click.group("decoders")
def decoders_group() -> None:
    """The decoders that reconstruct images from a layer's features, for RU (`kgexplain info --ru`)."""


@decoders_group.command("train")
@model_choice
@click.option("--weights", default=None, metavar="imagenet|none|shipped|PATH", help="Weights (as for `info`).")
@trust_option
@click.option("--layers", default=None, metavar="L1,L2,...", help="Layers (default: the model's paper layers).")
@data_options
@click.option("--n", type=click.IntRange(min=1), default=400, show_default=True, help="Synthetic training images.")
@click.option("--seed", type=int, default=1, show_default=True, help="Synthetic set seed.")
@click.option("--epochs", type=click.IntRange(min=1), default=DecoderConfig.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DecoderConfig.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DecoderConfig.lr, show_default=True)
@device_option
@store_options
@output_options
@click.pass_context
def train_command(
    ctx: click.Context,
    model_name: str,
    weights: str | None,
    trust_checkpoint: bool,
    layers: str | None,
    n: int,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str,
    fmt: str,
    **kwargs: Any,
) -> None:
    """Train one decoder per layer (MSE to the image) and cache it in the store's artifacts; re-training replaces."""
    sopts = _store_opts(kwargs)
    data = _pop_data(kwargs)
    crop = kwargs.pop("crop")
    ws = Workspace.resolve(sopts["store"], sopts["artifacts"]).ensure()
    handle = load_model(model_name, weights, trust_checkpoint=trust_checkpoint)
    chosen = _layers(handle.default_layers, layers)
    for name in chosen:
        handle.layer(name)
    dev = resolve_device(device)
    handle.to(dev)
    source = _source(ws, data, n, seed)
    base = default_framing(handle, source)
    framing = Framing(base.size, crop or "none")
    cfg = DecoderConfig(epochs=epochs, batch_size=batch_size, lr=lr)
    rows = train_decoders(handle, chosen, source, framing, ws.cache, cfg, dev, progress=progress_of(ctx))
    emit_rows(rows, fmt)


@decoders_group.command("list")
@model_choice
@click.option("--weights", default=None, metavar="imagenet|none|shipped|PATH")
@trust_option
@store_options
@output_options
def list_command(model_name: str, weights: str | None, trust_checkpoint: bool, fmt: str, **kwargs: Any) -> None:
    """The trained decoders of a model: layer, training data, final MSE."""
    sopts = _store_opts(kwargs)
    ws = Workspace.resolve(sopts["store"], sopts["artifacts"])
    handle = load_model(model_name, weights, trust_checkpoint=trust_checkpoint)
    rows = []
    for layer in handle.layers:
        info = decoder_info(ws.cache, handle, layer)
        if info:
            rows.append({"layer": layer, "mse": round(info["mse"], 5), "images": info["images"], "path": info["path"]})
    emit_rows(rows, fmt)


COMMANDS = [info_command, decoders_group]
