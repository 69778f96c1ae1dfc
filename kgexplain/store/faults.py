"""Fault injection for the reliability tests (as databases keep fail points): a process started with
``KGEXPLAIN_FAULT=<point>`` kills itself with SIGKILL, like a crash or ``kill -9``, when it reaches that point.

Points, in the order a run is written: ``write:started`` (the run is marked ``writing``), ``write:deleted`` (a
rewrite removed the run's old rows), ``write:nodes`` (the nodes are written, the relationships not yet),
``write:complete`` (the run is marked complete, nothing is checkpointed yet) and ``checkpoint`` (the embedded store
is killed a moment into the checkpoint its close starts). Without the variable nothing happens.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "KGEXPLAIN_FAULT"
CHECKPOINT_DELAY = 0.002  # seconds into the checkpoint; it takes tens of milliseconds on any real write


def armed(point: str) -> bool:
    return os.environ.get(ENV) == point


def reach(point: str) -> None:
    """Die here when this is the armed point."""
    if armed(point):
        os.kill(os.getpid(), signal.SIGKILL)


def die_soon(delay: float = CHECKPOINT_DELAY) -> None:
    """Die ``delay`` seconds from now, whatever the process is doing then (inside the engine, for instance)."""
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
