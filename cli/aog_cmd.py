"""``kgexplain aog learn`` and ``kgexplain localize``: semantic parts from three examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kgexplain.aog import service
from kgexplain.aog.overlay import overlay
from kgexplain.data.folder import ImageFiles
from kgexplain.data.select import open_source
from kgexplain.devices import resolve_device
from kgexplain.errors import UsageError

from .context import progress_of, status
from .options import device_option, output_options, store_options
from .output import emit_object, emit_rows
from .store_cmd import _store_opts, open_from


def _device(device: str) -> str:
    dev = resolve_device(device)
    return "cpu" if dev.type == "cpu" else str(dev)


@click.group("aog")
def aog_group() -> None:
    """And-Or graphs of semantic parts, learnt from a few annotated examples."""


@aog_group.command("learn")
@click.option("--part", required=True, help="The part's keypoint name in the annotations (head, tail, ...).")
@click.option(
    "--examples",
    type=click.Path(dir_okay=False),
    default=None,
    help="Annotations JSON; the first K images with the part annotated are the examples, and all its images "
    "are unlabelled images to grow on. Default: the build's own synthetic ground truth.",
)
@click.option("--cub", type=click.Path(file_okay=False), default=None, help="Or a CUB-200-2011 folder.")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="Annotated examples (templates).")
@click.option("--seed", type=int, default=None, help="Draw the K examples at random with this seed.")
@click.option("--category", default=None, help="Category name of the part (default: the examples' label).")
@click.option("--run", default=None, help="The build to learn on (default: the latest; see `kgexplain runs`).")
@click.option("--unlabelled", type=click.Path(file_okay=False), default=None, help="A folder of unlabelled images.")
@device_option
@store_options
@output_options
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
    device: str,
    fmt: str,
    **kwargs: Any,
) -> None:
    """Learn PART's And-Or graph from K annotated examples and store it (Part -> Template -> USES -> Pattern).

    Re-learning the same part on the same build replaces it.
    """
    if examples and cub:
        raise UsageError("give --examples or --cub, not both")
    source = open_source(annotations=examples) if examples else open_source(cub=cub) if cub else None
    pool = open_source(images=unlabelled) if unlabelled else None
    with open_from(_store_opts(kwargs), read_only=False) as store:
        store.ensure_writable()
        build = service.open_build(store, run, _device(device))
        learnt = service.learn(store, build, part, source, k, category, seed, pool, progress=progress_of(ctx))
    t = learnt.part.templates
    result = {
        "run": learnt.run,
        "build": build.run,
        "part": learnt.part.name,
        "category": learnt.part.category,
        "templates": len(t),
        "patterns_used": learnt.counts["uses"],
        "examples": learnt.examples,
        "unlabelled_images": learnt.unlabelled,
        "seconds": round(learnt.seconds, 1),
    }
    text = (
        f"learnt '{result['part']}' ({result['category']}) on {build.run}: {len(t)} templates, "
        f"{result['patterns_used']} pattern uses, from {', '.join(learnt.examples)} "
        f"(+{learnt.unlabelled} unlabelled) in {result['seconds']} s; stored as run {learnt.run}"
    )
    emit_object(result, fmt, text)


@click.command("localize")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--part", required=True, help="A part learnt with `kgexplain aog learn`.")
@click.option(
    "--annotations",
    type=click.Path(dir_okay=False),
    default=None,
    help="Localise the images of an annotations JSON instead (object boxes are used to crop, as in the build).",
)
@click.option("--category", default=None, help="When the part is learnt for several categories.")
@click.option("--run", default=None, help="The build (default: the latest).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write an overlay PNG per image here.")
@device_option
@store_options
@output_options
@click.pass_context
def localize_command(
    ctx: click.Context,
    images: tuple[str, ...],
    part: str,
    annotations: str | None,
    category: str | None,
    run: str | None,
    out: str | None,
    device: str,
    fmt: str,
    **kwargs: Any,
) -> None:
    """Find PART on new images: JSON or a table of (image, x, y, box, score, template) in the images' pixels.

    Images are used whole (resized to the model's input); with --annotations, cropped to their object boxes.
    """
    if bool(images) == bool(annotations):
        raise UsageError("give image files or --annotations FILE (one of them)")
    source = open_source(annotations=annotations) if annotations else ImageFiles(list(images))
    out_dir = Path(out) if out else None
    with open_from(_store_opts(kwargs)) as store:
        store.check_schema()
        build = service.open_build(store, run, _device(device))
        model = service.load_part(store, build, part, category)
    # Decode everything first: an unreadable image fails before anything is written.
    for i in range(len(source)):
        source.load_image(i)
    found, _, timings = service.localise_source(build, model, source, progress=progress_of(ctx))
    rows = []
    for i, f in enumerate(found):
        row = {"image": f.image, **f.result}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            name = f"{i:05d}-{Path(f.image).stem}-{part}.png"
            img = overlay(source.load_image(i), f.result, f.loc.voters, f.affine)
            img.save(out_dir / name)
            row["overlay"] = str(out_dir / name)
        rows.append(row)
    status(
        ctx,
        f"{len(rows)} images in {sum(timings.values()):.2f} s "
        f"({', '.join(f'{k} {v:.2f}' for k, v in timings.items())})",
    )
    if fmt == "json":
        emit_object({"part": part, "run": build.run, "results": rows}, fmt)
    else:
        emit_rows(
            rows,
            fmt,
            ["image", "part", "x", "y", "box", "score", "template", "flipped"] + (["overlay"] if out_dir else []),
        )


COMMANDS = [aog_group, localize_command]
