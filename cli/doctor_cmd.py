"""``kgexplain doctor``."""

from __future__ import annotations

import click

from kgexplain import doctor
from kgexplain.store import StoreSpec

from .options import output_options, store_options
from .output import emit_rows


@click.command("doctor")
@store_options
@output_options
def doctor_command(store: StoreSpec, fmt: str) -> None:
    """Check torch, CUDA, the store (and every run in it), image formats, the weights cache and the toy net.

    Exits 1 when something is missing or the store is damaged."""
    rows = doctor.checks(store)
    emit_rows(rows, fmt, ["check", "status", "detail"])
    if any(r["status"] in ("missing", "damaged") for r in rows):
        raise SystemExit(1)
