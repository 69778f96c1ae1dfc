"""``kgexplain build``: the main job."""

from __future__ import annotations

import click

from kgexplain.data.spec import DataSpec
from kgexplain.data.synth import ANIMALS
from kgexplain.jobs import BuildConfig, run_build

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
from .output import emit_result


@click.command("build")
@model_options()
@layers_option("Layers to mine, bottom to top (default: the paper's layers for the model).")
@data_options(sized=False)
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
    help="Synthetic workload: the category to explain.",
)
@click.option(
    "--n",
    type=click.IntRange(min=2),
    default=300,
    help="Synthetic workload: images of the category (and as many background images).",
)
@click.option("--seed", type=int, default=0, help="Synthetic workload seed.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="EM iterations per layer (default 20).")
@click.option("--parents", type=click.IntRange(min=1), default=None, help="Parents per pattern, M (default 15).")
@click.option(
    "--em-images",
    type=click.IntRange(min=0),
    default=None,
    help="EM iterates on a seeded sample of this many images, then one pass infers on all (default 100; "
    "0: EM on every image, as the paper; slower, see README 'Explanatory graphs').",
)
@click.option(
    "--em-batch",
    type=click.IntRange(min=0),
    default=None,
    help="Stepwise EM: each iteration's E-step on this many of the EM images, statistics averaged with decaying "
    "steps, on layers whose window holds 25 cells or more, when there are more EM images, the last 6 iterations "
    "on every EM image (default 25; "
    "0: every EM image in every iteration, as before version eg-4; see README 'Explanatory graphs').",
)
@click.option(
    "--em-update",
    type=click.Choice(["stepwise", "incremental"]),
    default=None,
    help="With --em-batch: statistics as a decaying running average (stepwise, the default), or each EM image's "
    "latest statistics summed (incremental; every EM image in the first iteration).",
)
@click.option(
    "--facing",
    type=click.Choice(["as-is", "latent"]),
    default="as-is",
    help="latent: each image is mined as it is or mirrored, whichever the graph explains better, choosing again "
    "after each of --facing-rounds re-minings (the object's facing as a latent variable; about rounds + 1 times "
    "the mining; one process only; see README 'Explanatory graphs').",
)
@click.option("--facing-rounds", type=click.IntRange(min=1), default=3, help="Rounds of choosing with --facing latent.")
@click.option("--patches", type=click.IntRange(min=0), default=5, help="Top patches stored per pattern (0: none).")
@click.option(
    "--top-inferences",
    type=click.IntRange(min=1),
    default=10,
    help="Best images per pattern stored as FIRES_ON relationships.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass.")
@job_options
@nproc_option
@click.pass_context
def build_command(
    ctx: click.Context,
    model: ModelOption,
    layers: tuple[str, ...],
    data: DataSpec,
    negatives: str | None,
    category: str,
    n: int,
    seed: int,
    iterations: int | None,
    parents: int | None,
    em_images: int | None,
    em_batch: int | None,
    em_update: str | None,
    facing: str,
    facing_rounds: int,
    patches: int,
    top_inferences: int,
    batch_size: int | None,
    job: JobOptions,
) -> None:
    """Mine an explanatory graph for a model and a set of images, and store it.

    \b
    With no arguments: the offline reference workload (synthetic images, the shipped toy net, ./kgexplain-store).
    Stages: images -> features (cached) -> top-down EM per layer -> pattern inference -> top patches and contact
    sheets -> location stability (where head/back/tail keypoints exist) -> one run in the store.
    Re-running the same build changes nothing; an interrupted build finishes when run again.
    """
    config = BuildConfig(
        model=model.name,
        weights=model.single,
        trust_checkpoint=model.trust_checkpoint,
        layers=layers,
        data=data,
        negatives=DataSpec(images=negatives) if negatives else None,
        category=category,
        n=n,
        seed=seed,
        iterations=iterations,
        parents=parents,
        em_images=em_images,
        em_batch=em_batch,
        em_update=em_update,
        facing=facing,
        facing_rounds=facing_rounds,
        patches=patches,
        top_inferences=top_inferences,
        device=job.device,
        batch_size=batch_size,
    )
    emit_result(run_build(config, job.store, progress_of(ctx)), job.fmt)
