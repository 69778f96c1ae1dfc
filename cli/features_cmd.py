"""``kgexplain features``: extract and cache feature maps without mining."""

from __future__ import annotations

import click

from kgexplain.data.images import LoadReport
from kgexplain.data.spec import DataSpec
from kgexplain.data.subset import shard
from kgexplain.distributed import join
from kgexplain.features import extract_features
from kgexplain.jobs.common import device_name
from kgexplain.models import load_model

from .context import progress_of
from .options import (
    JobOptions,
    ModelOption,
    data_options,
    job_options,
    layers_option,
    model_options,
    nproc_option,
)
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
@nproc_option
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
    """Extract feature maps of a model's layers into the store's cache (float16 shards).

    \b
    With --nproc N (or under torchrun) each rank extracts its block of the images into a cache entry of its own,
    the one a distributed build with as many ranks reads."""
    progress = progress_of(ctx)
    handle = load_model(model.name, model.single, trust_checkpoint=model.trust_checkpoint)
    group = join(device_name(job.device))
    if not group.main:
        progress = None
    ws = job.store.workspace()
    # rank 0 writes the synthetic set (when needed) before the others read it
    source = group.main_first(lambda: data.open(ws, progress), "opening the data")
    framing = data.framing(handle.input_size, source)
    ws.ensure()
    mine = shard(source, group)
    result = extract_features(
        handle,
        mine or source,
        layers or None,
        framing=framing,
        relu=relu,
        device=job.device,
        batch_size=batch_size,
        cache_dir=ws.cache,
        amp=not no_amp,
        progress=progress,
    )
    report = LoadReport.combined(group.objects(result.report, "features"))  # every rank's, as one
    caches = group.objects({k: str(v.directory) for k, v in result.features.items()}, "features")
    seconds = max(group.objects(result.seconds, "features"))
    out = {
        "source": source.name,
        "images": report.to_dict(),
        "seconds": round(seconds, 2),
        "layers": {
            k: {
                "shape": list(v.shape),
                "cache": caches[0][k] if len(caches) == 1 else [c[k] for c in caches],
                "from_cache": result.from_cache[k],
            }
            for k, v in result.features.items()
        },
    }
    text = "\n".join(
        [report.summary() + group.on_ranks()]
        + [
            f"  {k}: {tuple(v.shape)} -> {', '.join(c[k] for c in caches)}{' (cached)' if result.from_cache[k] else ''}"
            for k, v in result.features.items()
        ]
    )
    emit_object(out, job.fmt, text)
