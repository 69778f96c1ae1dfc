"""``kgexplain features``: extract and cache feature maps without mining."""

from __future__ import annotations

import click

from kgexplain.data.spec import DataSpec
from kgexplain.features import extract_features
from kgexplain.models import load_model
from kgexplain.store import StoreSpec

from .context import progress_of
from .options import data_options, device_option, layers_option, model_options, output_options, store_options
from .output import emit_object


@click.command("features")
@model_options()
@layers_option()
@click.option(
    "--relu",
    type=click.Choice(["pre", "post"]),
    default="pre",
    help="Feature maps before or after the nonlinearity.",
)
@data_options(n_help="Synthetic set size (with --data synth).")
@store_options
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
    layers: tuple[str, ...],
    relu: str,
    data: DataSpec,
    store: StoreSpec,
    device: str,
    batch_size: int | None,
    no_amp: bool,
    fmt: str,
) -> None:
    """Extract feature maps of a model's layers into the store's cache (float16 shards)."""
    progress = progress_of(ctx)
    ws = store.workspace().ensure()
    source = data.open(ws, progress)
    handle = load_model(model_name, weights, trust_checkpoint=trust_checkpoint)
    result = extract_features(
        handle,
        source,
        layers or None,
        framing=data.framing(handle.input_size, source),
        relu=relu,
        device=device,
        batch_size=batch_size,
        cache_dir=ws.cache,
        amp=not no_amp,
        progress=progress,
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
