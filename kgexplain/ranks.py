"""Where this process stands in a distributed job, from its environment alone (no torch): what the command line
needs before it knows whether a command runs distributed. The job itself is :mod:`kgexplain.distributed`."""

from __future__ import annotations

import os


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_rank() -> bool:
    """True unless this process is a rank other than 0 of a launched job (what prints results)."""
    return not launched() or os.environ.get("RANK") == "0"


def worker_threads(nproc: int) -> int:
    """Threads per worker when ``nproc`` share this machine: its cores split evenly (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, nproc))
