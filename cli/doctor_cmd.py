"""``kgexplain doctor``."""

from __future__ import annotations

import click

from kgexplain import doctor

from .options import output_options, store_option
from .output import emit_rows


@click.command("doctor")
@store_option
@output_options
def doctor_command(store: str | None, fmt: str) -> None:
    """Check torch, CUDA, the store folder, the weights cache and the shipped toy net."""
    rows = doctor.checks(store)
    emit_rows(rows, fmt, ["check", "status", "detail"])
    if any(r["status"] == "missing" for r in rows):
        raise SystemExit(1)


COMMANDS = [doctor_command]
