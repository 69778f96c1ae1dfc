"""What every command reads from the root context: whether status lines and progress bars are wanted."""

from __future__ import annotations

import click


def progress_enabled(ctx: click.Context) -> bool:
    return not (ctx.find_root().obj or {}).get("quiet")


def status(ctx: click.Context, message: str) -> None:
    """A status line on stderr unless --quiet."""
    if progress_enabled(ctx):
        click.echo(message, err=True)
