"""``kgexplain features``: extract and cache feature maps without mining."""

from __future__ import annotations

import click

from kgexplain.data.base import Framing
from kgexplain.data.select import open_source
from kgexplain.features import extract_features
from kgexplain.features.extract import default_framing
from kgexplain.models import load_model
from kgexplain.workspace import Workspace

from .context import progress_of
from .options import data_options, device_option, model_options, output_options, store_option
from .output import emit_object


@click.command("features")
@model_options()
@click.option("--layers", default=None, metavar="L1,L2,...", help="Layers (default: the model's paper layers).")
@click.option(
    "--relu",
    type=click.Choice(["pre", "post"]),
    default="pre",
    show_default=True,
    help="Feature maps before or after the nonlinearity.",
)
@data_options
@click.option("--n", type=click.IntRange(min=1), default=None, help="Synthetic set size (with --data synth).")
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic set seed.")
@store_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--no-amp", is_flag=True, help="Full precision on the GPU.")
@output_options
@click.pass_context
def features_command(
    ctx: click.Context,
    model_name: str,
    weights: str | None,
    trust_checkpoint: bool,
    layers: str | None,
    relu: str,
    data_kind: str | None,
    images: str | None,
    annotations: str | None,
    cub: str | None,
    cub_classes: tuple[str, ...],
    split: str,
    labels: tuple[str, ...],
    limit: int | None,
    crop: str | None,
    n: int | None,
    seed: int,
    store: str | None,
    device: str,
    batch_size: int | None,
    no_amp: bool,
    fmt: str,
) -> None:
    """Extract feature maps of a model's layers into the store's cache (float16 shards)."""
    ws = Workspace.resolve(store).ensure()
    source = open_source(
        images=images,
        annotations=annotations,
        cub=cub,
        synth=data_kind == "synth",
        data_dir=ws.data,
        n=n,
        seed=seed,
        labels=labels,
        cub_classes=cub_classes,
        split=split,
        limit=limit,
    )
    handle = load_model(model_name, weights, trust_checkpoint=trust_checkpoint)
    base = default_framing(handle, source)
    result = extract_features(
        handle,
        source,
        [x.strip() for x in layers.split(",")] if layers else None,
        framing=Framing(base.size, crop or base.crop),
        relu=relu,
        device=device,
        batch_size=batch_size,
        cache_dir=ws.cache,
        amp=not no_amp,
        progress=progress_of(ctx),
    )
    out = {
        "source": source.name,
        "images": result.report.to_dict(),
        "seconds": round(result.seconds, 2),
        "layers": {
            k: {"shape": list(v.shape), "cache": str(v.directory), "from_cache": result.from_cache[k]}
            for k, v in result.features.items()
        },
    }
    text = "\n".join(
        [result.report.summary()]
        + [
            f"  {k}: {tuple(v.shape)} -> {v.directory}{' (cached)' if result.from_cache[k] else ''}"
            for k, v in result.features.items()
        ]
    )
    emit_object(out, fmt, text)


COMMANDS = [features_command]
