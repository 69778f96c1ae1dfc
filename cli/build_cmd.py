"""``kgexplain build``: the main job."""

from __future__ import annotations

from typing import Any

import click

from kgexplain.data.synth import ANIMALS
from kgexplain.pipeline import BuildConfig, build

from .context import progress_of
from .options import data_options, device_option, model_options, output_options, store_options
from .output import emit_object


@click.command("build")
@model_options()
@click.option(
    "--layers",
    default=None,
    metavar="L1,L2,...",
    help="Layers to mine, bottom to top (default: the paper's layers for the model).",
)
@data_options
@click.option(
    "--negatives",
    type=click.Path(),
    default=None,
    metavar="DIR",
    help="Background images that normalise the features (default for user data: the images' own statistics).",
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
    type=click.IntRange(min=2),
    default=300,
    show_default=True,
    help="Synthetic workload: images of the category (and as many background images).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic workload seed.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="EM iterations per layer (default 20).")
@click.option("--parents", type=click.IntRange(min=1), default=None, help="Parents per pattern, M (default 15).")
@click.option(
    "--patches",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Top patches stored per pattern (0: none).",
)
@click.option(
    "--top-inferences",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Best images per pattern stored as FIRES_ON relationships.",
)
@store_options
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
    iterations: int | None,
    parents: int | None,
    patches: int,
    top_inferences: int,
    device: str,
    batch_size: int | None,
    fmt: str,
    **store: Any,
) -> None:
    """Mine an explanatory graph for a model and a set of images, and store it.

    \b
    With no arguments: the offline reference workload (synthetic images, the shipped toy net, ./kgexplain-store).
    Stages: images -> features (cached) -> top-down EM per layer -> pattern inference -> top patches and contact
    sheets -> location stability (where head/back/tail keypoints exist) -> one run in the store.
    Re-running the same build changes nothing; an interrupted build finishes when run again.
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
        iterations=iterations,
        parents=parents,
        patches=patches,
        top_inferences=top_inferences,
        device=device,
        batch_size=batch_size,
        **store,
    )
    result = build(cfg, progress=progress_of(ctx))
    s = result.summary()
    lines = [
        f"run {s['run']} in {s['store']} ({'mined' if s['mined'] else 'graph from cache'})",
        f"model {s['model']} ({s['weights']}); images: {result.extraction.report.summary()}",
    ]
    for name, info in s["layers"].items():
        c, h, w = info["shape"]
        lines.append(
            f"  {name:10s} {c:4d} filters {h}x{w}  {info['patterns']:6d} patterns "
            f"{info['parent_edges']:7d} parent edges"
        )
    if s["stability"]:
        st = s["stability"]
        lines.append(
            f"location stability (lower is better): patterns {st['patterns']:.4f}, raw filter peaks "
            f"{st['raw_filter']:.4f}, random {st['random']:.4f}; ratio {st['ratio']:.2f}"
        )
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    lines.append("next: kgexplain patterns --top 5 | kgexplain show PATTERN | kgexplain stats")
    emit_object(s, fmt, "\n".join(lines))


COMMANDS = [build_command]
