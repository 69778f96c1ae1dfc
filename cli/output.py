"""One place that prints results: a readable table by default, ``--json`` or ``--csv`` for machines."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from kgexplain.ranks import is_main_rank

if TYPE_CHECKING:  # the read commands print without loading the jobs (and torch)
    from kgexplain.jobs.common import JobResult


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    if isinstance(v, (list, tuple)):
        return ",".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=True)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    buf = io.StringIO()
    cols = list(columns or (rows[0].keys() if rows else []))
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _cell(r.get(c)) for c in cols})
    return buf.getvalue().rstrip("\n")


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
    """A job's result: ``--json`` its JSON, ``--csv`` its rows, else its text (or its rows as a table). In a
    distributed job rank 0 alone prints it."""
    if not is_main_rank():
        return
    if fmt == "json":
        click.echo(to_json(result.to_json()))
    elif fmt == "csv":
        click.echo(to_csv(result.rows(), result.columns()))
    else:
        click.echo(result.text() or table(result.rows(), result.columns()))
