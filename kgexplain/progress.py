"""One way for long work to report how it goes: a callback that receives :class:`ProgressEvent` objects.

The library never prints. Every job and every slow function takes ``progress: Progress | None`` and reports through
it: status lines (``say``) and counted tasks (``task``). The CLI turns the events into tqdm bars and lines on stderr
(nothing with ``-q``); a notebook or a service can do whatever it likes with them. ``None`` means silence.

Example::

    from kgexplain.progress import ProgressEvent

    def show(event: ProgressEvent) -> None:
        if event.message:
            print(event.message)

    run_build(BuildConfig(n=40), store, progress=show)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """A status line (``message``) or a step of a counted task (``task``, ``total``, ``advance``, ``finished``)."""

    task: str = ""  # what is being counted ("features", "mining", ...); "" for a status line
    message: str | None = None  # a status line, for a person
    total: int | None = None  # the task's size, on its first event
    advance: int = 0  # units done since the task's previous event
    unit: str = "it"
    finished: bool = False  # the task is over (sent even when it fails)


Progress = Callable[[ProgressEvent], None]


def say(progress: Progress | None, message: str) -> None:
    """Report a status line."""
    if progress is not None:
        progress(ProgressEvent(message=message))


def quiet(_event: ProgressEvent) -> None:
    """A progress callback that ignores everything."""


@contextlib.contextmanager
def task(progress: Progress | None, name: str, total: int | None, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Count the work of one task: yields ``advance(n)``; the task starts with ``total`` and finishes with the block."""
    if progress is None:
        yield lambda _n: None
        return
    report = progress
    report(ProgressEvent(task=name, total=total, unit=unit))

    def advance(n: int) -> None:
        report(ProgressEvent(task=name, advance=int(n), unit=unit))

    try:
        yield advance
    finally:
        report(ProgressEvent(task=name, unit=unit, finished=True))
