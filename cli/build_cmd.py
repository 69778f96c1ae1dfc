"""``kgexplain build``: the main job."""

from __future__ import annotations

import click

from kgexplain.data.synth import ANIMALS
from kgexplain.pipeline import BuildConfig, build

from .main import progress_enabled, status
from .options import data_options, device_option, model_options, output_options, store_option
from .output import emit_object


@click.command("build")
@model_options()
@click.option("--layers", default=None, metavar="L1,L2,...", help="Layers to mine (default: the model's paper layers).")
@data_options
@click.option(
    "--negatives",
    type=click.Path(),
    default=None,
    metavar="DIR",
    help="Background images for feature normalisation (user data).",
)
@click.option(
    "--category",
    type=click.Choice(ANIMALS),
    default="bird",
    show_default=True,
    help="Synthetic workload: the category to explain.",
)
@click.option(
    "--n",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Synthetic workload: images of the category (and as many background images).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic workload seed.")
@store_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass.")
@output_options
@click.pass_context
def build_command(
    ctx: click.Context,
    model_name: str,
    weights: str | None,
    trust_checkpoint: bool,
    layers: str | None,
    data_kind: str | None,
    images: str | None,
    annotations: str | None,
    cub: str | None,
    cub_classes: tuple[str, ...],
    split: str,
    labels: tuple[str, ...],
    limit: int | None,
    crop: str | None,
    negatives: str | None,
    category: str,
    n: int,
    seed: int,
    store: str | None,
    device: str,
    batch_size: int | None,
    fmt: str,
) -> None:
    """Build the knowledge store for a model and a set of images.

    With no arguments: the offline reference workload (synthetic images, the shipped toy net, ./kgexplain-store).
    Stages so far: generate or open the images, load the model, extract and cache the features of its layers.
    """
    cfg = BuildConfig(
        model=model_name,
        weights=weights,
        trust_checkpoint=trust_checkpoint,
        layers=[x.strip() for x in layers.split(",") if x.strip()] if layers else None,
        images=images,
        annotations=annotations,
        cub=cub,
        cub_classes=cub_classes,
        split=split,
        labels=labels,
        limit=limit,
        crop=crop,
        negatives=negatives,
        category=category,
        n=n,
        seed=seed,
        store=store,
        device=device,
        batch_size=batch_size,
        progress=progress_enabled(ctx),
    )
    result = build(cfg, log=lambda m: status(ctx, m))
    s = result.summary()
    lines = [
        f"store {s['store']}: model {s['model']} ({s['weights']}), data {s['data']}",
        f"images: {result.extraction.report.summary()}",
    ]
    if result.negative_extraction:
        lines.append(f"negatives: {result.negative_extraction.report.summary()}")
    for name, info in s["layers"].items():
        c, h, w = info["shape"]
        lines.append(
            f"  {name:10s} {c:4d} x {h}x{w}  stride {info['stride']:g}  rf {info['rf']:g} px  "
            f"{info['megabytes']:.1f} MB{'  (cached)' if info['from_cache'] else ''}"
        )
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    emit_object(s, fmt, "\n".join(lines))


COMMANDS = [build_command]
