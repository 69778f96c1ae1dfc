"""What every command reads from the root context: whether to report progress, and how (tqdm bars on stderr)."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm

from kgexplain.progress import Progress, ProgressEvent


def progress_enabled(ctx: click.Context) -> bool:
    return not (ctx.find_root().obj or {}).get("quiet")


def status(ctx: click.Context, message: str) -> None:
    """A status line on stderr unless --quiet."""
    if progress_enabled(ctx):
        click.echo(message, err=True)


class ProgressBars:
    """The library's progress events as tqdm bars (one per task, removed when it finishes) and status lines."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.message is not None:
            tqdm.write(event.message, file=sys.stderr)
        if not event.task:
            return
        bar = self.bars.get(event.task)
        if event.finished:
            if bar is not None:
                bar.close()
                del self.bars[event.task]
            return
        if bar is None:
            bar = self.bars[event.task] = tqdm(  # disable=None: no bars when stderr is not a terminal (logs, pipes)
                total=event.total, desc=event.task, unit=event.unit, file=sys.stderr, leave=False, disable=None
            )
        if event.advance:
            bar.update(event.advance)


def progress_of(ctx: click.Context) -> Progress | None:
    """Bars and status lines on stderr, or None (silence) with --quiet."""
    return ProgressBars() if progress_enabled(ctx) else None
