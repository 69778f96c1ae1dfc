"""``kgexplain kp``: knowledge points per layer (and per checkpoint) with vMF projections."""

from __future__ import annotations

import click

from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.errors import UsageError
from kgexplain.jobs import KnowledgePointsConfig, checkpoint_series, run_kp
from kgexplain.knowledge_points.analyse import KPConfig
from kgexplain.knowledge_points.importance import ImportanceConfig
from kgexplain.knowledge_points.regional import RegionalConfig
from kgexplain.knowledge_points.sample import SampleConfig

from .context import progress_of
from .options import JobOptions, ModelOption, data_options, job_options, layers_option, model_options, nproc_option
from .output import emit_result


@click.command("kp")
@model_options(weights_help="Weights (one model).")
@click.option(
    "--checkpoints",
    default=None,
    metavar="epochs|W1,W2,...",
    help="Analyse a series of checkpoints (weights specs or PATHs, in training order); 'epochs' = the toy net's "
    "shipped per-epoch checkpoints (the last is the shipped final net); a folder or a quoted pattern "
    "('run/epoch*.pt') = its checkpoint files in natural order (epoch2 before epoch10), copies left out.",
)
@layers_option()
@click.option(
    "--sample-layer", default=None, metavar="LAYER", help="Layer whose pooled feature is the sample feature f "
    "(default: the last conv layer; the paper uses the feature before the last fully-connected layer)."
)  # fmt: skip
@data_options(n=200, n_min=2, categories=ANIMALS)
@click.option("--tau", type=click.FloatRange(0, 1), default=KPConfig.tau,
              help="A region is a knowledge point when max_c p(c|h) > tau.")  # fmt: skip
@click.option("--grid", type=click.IntRange(min=1), default=None,
              help="Regions per side (default: the sample layer's map side).")  # fmt: skip
@click.option("--dim", type=click.IntRange(min=2), default=3, help="Embedding dimension d'.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=SampleConfig.temperature,
              help="The sample embedding mimics softmax(logits / T); 4 as the authors' code, 1: the model's own "
              "posterior.")  # fmt: skip
@click.option("--alpha", type=click.FloatRange(min=0), default=RegionalConfig.alpha,
              help="Weight of the alignment loss.")  # fmt: skip
@click.option("--others", type=click.IntRange(min=1), default=ImportanceConfig.others,
              help="Samples each sample is compared with (P(x2|x1)).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=RegionalConfig.epochs,
              help="Epochs of the regional projection.")  # fmt: skip
@click.option(
    "--truth",
    type=click.Choice(["label", "predicted"]),
    default="label",
    help="Reliable = points to the image's labelled class, or to the model's prediction (unlabelled data).",
)
@click.option("--fit-seed", type=int, default=0, help="Seed of the projections.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--out", type=click.Path(file_okay=False), default="kgexplain-kp",
              help="Folder for the plots (per checkpoint) and counts.png.")  # fmt: skip
@job_options
@nproc_option
@click.pass_context
def kp_command(
    ctx: click.Context,
    model: ModelOption,
    checkpoints: str | None,
    layers: tuple[str, ...],
    sample_layer: str | None,
    data: DataSpec,
    tau: float,
    grid: int | None,
    dim: int,
    temperature: float,
    alpha: float,
    others: int,
    epochs: int,
    truth: str,
    fit_seed: int,
    batch_size: int,
    out: str,
    job: JobOptions,
) -> None:
    """Knowledge points: regions whose features are discriminative enough, per layer, image and class.

    Fits the sample embedding g = M f (vMF mixture over the classes), each sample's regional importance, and a
    regional projection h = Lambda f(r) per layer; a region is a knowledge point when max_c p(c|h) > tau, reliable
    when that class is the true one. Default data: the synthetic reference workload. Stored as a run per checkpoint:
    KnowledgePoint nodes (KP_IN a Layer, KP_ON an Image) and Metric rows; prints one summary row per layer.
    """
    if checkpoints and model.weights:
        raise UsageError("give --weights or --checkpoints, not both")
    config = KnowledgePointsConfig(
        model=model.name,
        weights=checkpoint_series(model.name, checkpoints) if checkpoints else model.weights,
        trust_checkpoint=model.trust_checkpoint,
        layers=layers,
        sample_layer=sample_layer,
        data=data,
        analysis=KPConfig(
            tau=tau,
            grid=grid,
            sample=SampleConfig(dim=dim, temperature=temperature, seed=fit_seed),
            importance=ImportanceConfig(others=others, seed=fit_seed),
            regional=RegionalConfig(dim=dim, alpha=alpha, epochs=epochs, seed=fit_seed),
        ),
        truth=truth,
        batch_size=batch_size,
        out=out,
        device=job.device,
    )
    emit_result(run_kp(config, job.store, progress_of(ctx)), job.fmt)
