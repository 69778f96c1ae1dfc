"""``kgexplain data synth``, ``kgexplain data photos`` and ``kgexplain data check``."""

from __future__ import annotations

import time

import click

from kgexplain.data.photos import write_photos
from kgexplain.data.spec import DataSpec
from kgexplain.data.synth import CATEGORIES, write_synth
from kgexplain.errors import DataError, UsageError
from kgexplain.store import StoreSpec

from .context import progress_of
from .options import data_options, output_options, store_options
from .output import emit_object


@click.group("data")
def data_group() -> None:
    """Generate the synthetic reference data set, or check a data source."""


@data_group.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write (created).")
@click.option("--n", type=click.IntRange(min=1), default=700, help="Number of images.")
@click.option("--seed", type=int, default=0, help="Data set seed (image i depends only on seed, i).")
@click.option("--size", type=click.IntRange(min=32), default=128, help="Image size in pixels.")
@click.option(
    "--category",
    "categories",
    multiple=True,
    type=click.Choice(CATEGORIES),
    help="Only these categories (repeatable; default all, background included).",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Rendering processes.")
@click.option("--overwrite", is_flag=True, help="Replace a different data set already in --out.")
@output_options
@click.pass_context
def synth_command(
    ctx: click.Context,
    out: str,
    n: int,
    seed: int,
    size: int,
    categories: tuple[str, ...],
    workers: int,
    overwrite: bool,
    fmt: str,
) -> None:
    """Write N synthetic images (PNG), masks and annotations.json to OUT.

    Categories: fox, bird, goat, lizard, mouse, rhino and background (clutter only); keypoints head, back,
    tail, belly, nose, neck, front_foot, hind_foot. Image i is a pure function of (seed, i, size).
    """
    t0 = time.perf_counter()
    source = write_synth(out, n, seed, size, categories or None, workers, progress_of(ctx), overwrite)
    seconds = time.perf_counter() - t0
    result = {
        "out": out,
        "images": len(source),
        "seed": seed,
        "size": size,
        "seconds": round(seconds, 2),
        "labels": source.labels(),
        "annotations": str(source.file),
    }
    emit_object(result, fmt, f"wrote {len(source)} images to {out} in {seconds:.1f} s ({source.file.name})")


@data_group.command("photos")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write (created).")
@output_options
def photos_command(out: str, fmt: str) -> None:
    """Write the real photographs scikit-image ships (chelsea, coffee, rocket, two motorcycles, astronaut) as
    PNGs to OUT/images, rough object masks drawn by hand for chelsea and coffee to OUT/masks (for `info --mask`),
    an annotations.json pairing them, and a labels.json of the ImageNet classes each shows (needs
    `pip install 'kgexplain[real]'`)."""
    written = write_photos(out)
    emit_object(
        {"out": out, "files": [str(p) for p in written]},
        fmt,
        f"wrote {sum(p.parent.name == 'images' for p in written)} photos and "
        f"{sum(p.parent.name == 'masks' for p in written)} hand-drawn masks to {out} (annotations.json, labels.json)",
    )


@data_group.command("check")
@data_options(n_help="Synthetic set size (with --data synth).")
@store_options
@output_options
@click.pass_context
def check_command(ctx: click.Context, data: DataSpec, store: StoreSpec, fmt: str) -> None:
    """Decode every image of a source and report what would be used or skipped (and why)."""
    if data.synthetic and not data.synth:
        raise UsageError(
            "give a data source to check", hint="--images DIR, --annotations FILE, --cub DIR or --data synth"
        )
    progress = progress_of(ctx)
    source = data.open(store.workspace().ensure() if data.synth else None, progress)
    report = source.check(progress)
    emit_object({"source": source.name, **report.to_dict(), "labels": source.labels()}, fmt, report.summary())
    if not report.loaded:
        raise DataError(f"no usable image in {source.name}", hint="see the reasons above")
