"""``kgexplain features``: extract and cache feature maps without mining."""

from __future__ import annotations

import click

from kgexplain.data.spec import DataSpec
from kgexplain.features import extract_features
from kgexplain.models import load_model

from .context import progress_of
from .options import JobOptions, ModelOption, data_options, job_options, layers_option, model_options
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
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--no-amp", is_flag=True, help="Full precision on the GPU.")
@job_options
@click.pass_context
def features_command(
    ctx: click.Context,
    model: ModelOption,
    layers: tuple[str, ...],
    relu: str,
    data: DataSpec,
    batch_size: int | None,
    no_amp: bool,
    job: JobOptions,
) -> None:
    """Extract feature maps of a model's layers into the store's cache (float16 shards)."""
    progress = progress_of(ctx)
    ws = job.store.workspace()
    source = data.open(ws, progress)
    ws.ensure()
    handle = load_model(model.name, model.single, trust_checkpoint=model.trust_checkpoint)
    result = extract_features(
        handle,
        source,
        layers or None,
        framing=data.framing(handle.input_size, source),
        relu=relu,
        device=job.device,
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
    emit_object(out, job.fmt, text)
