"""``kgexplain info`` (SID / RU / concentration maps) and ``kgexplain decoders`` (the RU decoders)."""

from __future__ import annotations

from dataclasses import replace

import click

from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.information.decoder import ARCHS, DecoderConfig, decoder_info
from kgexplain.information.sid import SIDConfig
from kgexplain.jobs import DecodersConfig, InfoConfig, run_decoders, run_info
from kgexplain.models import load_model
from kgexplain.store import StoreSpec

from .context import progress_of
from .options import (
    JobOptions,
    ModelOption,
    data_options,
    job_options,
    layers_option,
    model_options,
    nproc_option,
    output_options,
    store_options,
)
from .output import emit_result, emit_rows


@click.command("info")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False), metavar="[IMAGE]...")
@model_options(
    multiple_weights=True,
    weights_help="Weights; repeat to compare models or checkpoints (one curve each). Default: imagenet (toynet: "
    "shipped).",
)
@layers_option()
@click.option("--ru", is_flag=True, help="Also reconstruction uncertainty (needs `kgexplain decoders train`).")
@click.option(
    "--mask",
    "masks",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Object mask per IMAGE (same order; non-zero = object) for the concentration.",
)
@data_options(n=24, categories=ANIMALS)
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=SIDConfig.alpha)
@click.option("--grid", type=click.IntRange(min=1), default=None, help="Noise blocks per side (default: 14 px each).")
@click.option("--steps", type=click.IntRange(min=1), default=SIDConfig.steps)
@click.option("--samples", type=click.IntRange(min=1), default=SIDConfig.samples)
@click.option("--noise-seed", type=int, default=0, help="Seed of the noise (maps are deterministic).")
@click.option(
    "--delta",
    type=click.Choice(["images", "image"]),
    default="images",
    help="delta_f^2 averaged over the images measured together (the paper), or per image.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=2, help="Images per fit.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="kgexplain-info",
    help="Folder for the maps (.npy), overlays (.png) and the layer curves (curves.png).",
)
@job_options
@nproc_option
@click.pass_context
def info_command(
    ctx: click.Context,
    paths: tuple[str, ...],
    model: ModelOption,
    layers: tuple[str, ...],
    ru: bool,
    masks: tuple[str, ...],
    data: DataSpec,
    alpha: float,
    grid: int | None,
    steps: int,
    samples: int,
    noise_seed: int,
    delta: str,
    batch_size: int,
    out: str,
    job: JobOptions,
) -> None:
    """How much input information each layer discards: per-pixel SID (and RU) maps and the concentration.

    With IMAGE files: one row per image and layer. Without: over a data set (default: the synthetic reference
    workload, objects only) with a summary row per layer. Results are stored as a run (`kgexplain runs`):
    Metric nodes per image and layer linked to the Image and Layer, the maps as artifacts.
    """
    config = InfoConfig(
        model=model.name,
        weights=model.weights,
        trust_checkpoint=model.trust_checkpoint,
        layers=layers,
        data=replace(data, files=paths),
        masks=masks,
        ru=ru,
        sid=SIDConfig(alpha=alpha, grid=grid, steps=steps, samples=samples, seed=noise_seed, delta=delta),
        batch_size=batch_size,
        out=out,
        device=job.device,
    )
    emit_result(run_info(config, job.store, progress_of(ctx)), job.fmt)


@click.group("decoders")
def decoders_group() -> None:
    """The decoders that reconstruct images from a layer's features, for RU (`kgexplain info --ru`)."""


@decoders_group.command("train")
@model_options(weights_help="Weights (as for `info`).")
@layers_option()
@data_options(n=400, seed=1, categories=ANIMALS, n_help="Synthetic training images.")
@click.option("--epochs", type=click.IntRange(min=1), default=DecoderConfig.epochs)
@click.option("--batch-size", type=click.IntRange(min=1), default=DecoderConfig.batch_size)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DecoderConfig.lr)
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    default=DecoderConfig.arch,
    show_default=True,
    help="subpixel: residual blocks at the layer's resolution and a sub-pixel convolution to the image; paper: the "
    "paper's six residual blocks upsampling with transposed convolutions (README: Information discarding).",
)
@job_options
@click.pass_context
def train_command(
    ctx: click.Context,
    model: ModelOption,
    layers: tuple[str, ...],
    data: DataSpec,
    epochs: int,
    batch_size: int,
    lr: float,
    arch: str,
    job: JobOptions,
) -> None:
    """Train one decoder per layer (MSE to the image) and cache it in the store's artifacts; re-training replaces."""
    config = DecodersConfig(
        model=model.name,
        weights=model.single,
        trust_checkpoint=model.trust_checkpoint,
        layers=layers,
        data=data,
        decoder=DecoderConfig(epochs=epochs, batch_size=batch_size, lr=lr, arch=arch),
        device=job.device,
    )
    emit_result(run_decoders(config, job.store, progress_of(ctx)), job.fmt)


@decoders_group.command("list")
@model_options(weights_help="Weights (as for `info`).")
@store_options
@output_options
def list_command(model: ModelOption, store: StoreSpec, fmt: str) -> None:
    """The trained decoders of a model: layer, training images, final MSE, PSNR (dB) on held-out images."""
    cache = store.workspace().cache
    handle = load_model(model.name, model.single, trust_checkpoint=model.trust_checkpoint)
    rows = []
    for layer in handle.layers:
        info = decoder_info(cache, handle, layer)
        if info:
            db = None if info["psnr"] is None else round(info["psnr"], 2)
            rows.append(
                {"layer": layer, "arch": info["arch"], "mse": round(info["mse"], 5), "psnr_db": db,
                 "images": info["images"], "held_out": info["held_out"], "path": info["path"]}
            )  # fmt: skip
    emit_rows(rows, fmt)
