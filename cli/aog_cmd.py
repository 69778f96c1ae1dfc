"""``kgexplain aog learn`` and ``kgexplain localize``: semantic parts from three examples."""

from __future__ import annotations

from pathlib import Path

import click

from kgexplain.data.spec import DataSpec
from kgexplain.errors import UsageError
from kgexplain.jobs import LearnConfig, LocalizeConfig, run_learn, run_localize

from .context import progress_of
from .options import JobOptions, job_options
from .output import emit_result


@click.group("aog")
def aog_group() -> None:
    """And-Or graphs of semantic parts, learnt from a few annotated examples."""


@aog_group.command("learn")
@click.option("--part", required=True, help="The part's keypoint name in the annotations (head, tail, ...).")
@click.option(
    "--examples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Annotations JSON (or COCO file); the first K images with the part annotated are the examples. Templates "
    "grow on --unlabelled, else on the build's own images, else on this file's. Default: the build's own ground truth.",
)
@click.option("--cub", type=click.Path(file_okay=False), default=None, help="Or a CUB-200-2011 folder.")
@click.option("--k", type=click.IntRange(min=1), default=3, help="Annotated examples (templates).")
@click.option("--seed", type=int, default=None, help="Draw the K examples at random with this seed.")
@click.option("--category", default=None, help="Category name of the part (default: the examples' label).")
@click.option("--run", default=None, help="The build to learn on (default: the latest; see `kgexplain runs`).")
@click.option("--unlabelled", type=click.Path(file_okay=False), default=None, help="A folder of unlabelled images.")
@job_options
@click.pass_context
def learn_command(
    ctx: click.Context,
    part: str,
    examples: str | None,
    cub: str | None,
    k: int,
    seed: int | None,
    category: str | None,
    run: str | None,
    unlabelled: str | None,
    job: JobOptions,
) -> None:
    """Learn PART's And-Or graph from K annotated examples and store it (Part -> Template -> USES -> Pattern).

    Re-learning the same part on the same build replaces it.
    """
    if examples and cub:
        raise UsageError("give --examples or --cub, not both")
    config = LearnConfig(
        part=part,
        examples=DataSpec(annotations=examples, cub=cub) if examples or cub else None,
        k=k,
        seed=seed,
        category=category,
        run=run,
        unlabelled=DataSpec(images=unlabelled) if unlabelled else None,
        device=job.device,
    )
    emit_result(run_learn(config, job.store, progress_of(ctx)), job.fmt)


@click.command("localize")
@click.argument("images", nargs=-1, type=click.Path())
@click.option(
    "--part", required=True, help="A part learnt with `kgexplain aog learn`, or several, comma-separated (head,tail)."
)
@click.option(
    "--whole",
    is_flag=True,
    default=False,
    help="Search the whole image for the object even when --annotations gives its box.",
)
@click.option(
    "--annotations",
    type=click.Path(dir_okay=False),
    default=None,
    help="Localise the images of an annotations JSON instead (object boxes are used to crop, as in the build).",
)
@click.option(
    "--cub",
    type=click.Path(file_okay=False),
    default=None,
    help="Or localise the images of a CUB-200-2011 folder (cropped to their boxes), e.g. its test split.",
)
@click.option("--cub-class", "cub_classes", multiple=True, metavar="ID|NAME", help="With --cub: class(es); repeatable.")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="all", help="With --cub: the split.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --annotations or --cub: the first N.")
@click.option("--category", default=None, help="When the part is learnt for several categories.")
@click.option("--run", default=None, help="The build (default: the latest).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write an overlay PNG per image here.")
@click.option(
    "--record",
    is_flag=True,
    help="Store the localisations as a run (kind localize), so the browser's image pages show them; without it "
    "localize only reads the store.",
)
@job_options
@click.pass_context
def localize_command(
    ctx: click.Context,
    images: tuple[str, ...],
    part: str,
    whole: bool,
    annotations: str | None,
    cub: str | None,
    cub_classes: tuple[str, ...],
    split: str,
    limit: int | None,
    category: str | None,
    run: str | None,
    out: str | None,
    record: bool,
    job: JobOptions,
) -> None:
    """Find PART on new images (files or a folder): JSON or a table of (image, part, found, confidence, x, y, box,
    score, template, flipped, object_box) in the images' pixels.

    \b
    Image files are searched whole: the object's box is estimated from the graph's top layer, the image is cropped
    to it (as the build cropped its images) and the part is found in that frame. With --annotations (or --cub) the
    object boxes crop the images. Every part learnt for the category decides the object's facing (flipped), which
    its parts share. found is false when the score is below the threshold calibrated at learning time on held-out
    and background images (README "Parts"); confidence is the calibrated probability that the part is there.
    """
    if sum(map(bool, (images, annotations, cub))) != 1:
        raise UsageError("give image files, a folder, --annotations FILE or --cub DIR (one of them)")
    if (cub_classes or split != "all") and not cub:
        raise UsageError("--cub-class and --split go with --cub")
    if limit and not (annotations or cub):
        raise UsageError("--limit goes with --annotations or --cub", hint="name the image files you want")
    folders = [p for p in images if Path(p).is_dir()]
    if folders and len(images) > 1:
        raise UsageError(f"{folders[0]} is a folder", hint="give one folder, or image files")
    if folders:
        data = DataSpec(images=folders[0])
    else:
        data = DataSpec(
            files=images, annotations=annotations, cub=cub, cub_classes=cub_classes, split=split, limit=limit
        )
    config = LocalizeConfig(
        part=part,
        images=data,
        category=category,
        run=run,
        out=out,
        device=job.device,
        whole=True if whole else None,
        record=record,
    )
    emit_result(run_localize(config, job.store, progress_of(ctx)), job.fmt)
