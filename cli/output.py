"""One place that prints results: a readable table by default, ``--json`` or ``--csv`` for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from kgexplain.ranks import is_main_rank
from kgexplain.tables import cell as _cell
from kgexplain.tables import table, to_csv

if TYPE_CHECKING:  # the read commands print without loading the jobs (and torch)
    from kgexplain.jobs.common import JobResult


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=True)


def emit_rows(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    if fmt == "json":
        click.echo(to_json(list(rows)))
    elif fmt == "csv":
        click.echo(to_csv(rows, columns))
    else:
        click.echo(table(rows, columns))


def emit_object(obj: dict[str, Any], fmt: str, text: str | None = None) -> None:
    """A single result: JSON when asked, otherwise ``text`` (or key: value lines); rank 0 alone in a distributed
    job."""
    if not is_main_rank():
        return
    if fmt == "json":
        click.echo(to_json(obj))
    elif fmt == "csv":
        flat = {k: v for k, v in obj.items() if not isinstance(v, (dict, list))}
        click.echo(to_csv([flat]))
    else:
        click.echo(text if text is not None else "\n".join(f"{k}: {_cell(v)}" for k, v in obj.items()))


def emit_result(result: JobResult, fmt: str) -> None:
    """A job's result: ``--json`` its JSON, ``--csv`` its rows, else its text (a summary, or its rows as a table). In a
    distributed job rank 0 alone prints it."""
    if not is_main_rank():
        return
    if fmt == "json":
        click.echo(to_json(result.to_json()))
    elif fmt == "csv":
        click.echo(to_csv(result.rows(), result.columns()))
    else:
        click.echo(result.text())
