"""Data-parallel runs on torch.distributed: one job across processes (``torchrun``), each working on a shard.

A :class:`Group` is this process's place in the job: its ``rank`` among ``world`` processes and the collectives the
jobs use (gather rows in rank order, sum, exchange small objects). ``Group()`` is the single process, where every
collective returns its input, so the jobs have one code path. :func:`join` joins the group that ``torchrun`` set up
(``RANK``/``WORLD_SIZE`` in the environment; gloo on CPUs, NCCL on GPUs) and returns ``Group()`` otherwise;
:func:`launch` starts such a job on this machine (what the commands' ``--nproc N`` does).

Images are split in contiguous blocks by rank (:meth:`Group.block`), so gathering a per-image array in rank order
gives the single-process order. Sums of floats (the EM's statistics, background moments) are reduced in float64:
they differ from a single process's in the last bits only, which the float32 parameters do not see (bench/
distributed.py measures the largest difference); counts are exact; rankings (a pattern's best images, its parents)
are taken on gathered values, so they are the single process's.

A rank that dies (or fails) closes its connections: the collective waiting on it raises on every other rank, and
:class:`DistributedError` says so in one line. Only rank 0 writes the store, after the last collective, so a failed
job leaves no run behind (the ranks' content-addressed patch files and feature caches stay, for the re-run).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from kgexplain.errors import DistributedError
from kgexplain.ranks import is_main_rank, launched, worker_threads

__all__ = [
    "DistributedError",
    "Group",
    "is_main_rank",
    "join",
    "launch",
    "launched",
    "leave",
    "offsets",
    "worker_threads",
]

T = TypeVar("T")
FAULT_ENV = "KGEXPLAIN_FAULT_RANK"  # tests: "RANK:STAGE" kills that rank when it reaches that stage


@dataclass(frozen=True)
class Group:
    """This process's rank among ``world`` processes; ``Group()`` is a single process."""

    rank: int = 0
    world: int = 1
    backend: str | None = None  # None: no process group (single process)

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the store and prints results."""
        return self.rank == 0

    @property
    def joined(self) -> bool:
        return self.backend is not None

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world} ({self.backend})" if self.joined else "one process"

    def block(self, n: int, rank: int | None = None) -> range:
        """The contiguous block of ``range(n)`` that ``rank`` (default: this one) works on."""
        r = self.rank if rank is None else rank
        return range(r * n // self.world, (r + 1) * n // self.world)

    def batches(self, n: int, size: int) -> list[int]:
        """The first indices of this rank's block of the batches ``[0, size), [size, 2 size), ...`` of ``range(n)``
        (whole batches, where a result depends on the batch it is computed with)."""
        starts = list(range(0, n, size))
        return [starts[k] for k in self.block(len(starts))]

    def on_ranks(self) -> str:
        """`` on N ranks`` in a distributed job (for status lines), else empty."""
        return f" on {self.world} ranks" if self.joined else ""

    def main_first(self, make: Callable[[], T], what: str) -> T:
        """``make()`` on rank 0, then on the other ranks once rank 0 is done: for what rank 0 writes when it is
        missing (the synthetic data set, a cache) and the others then read."""
        if self.main:
            made = make()
        self.barrier(what)
        if not self.main:
            made = make()
        return made

    # ------------------------------------------------------------------ collectives
    def sizes(self, k: int) -> list[int]:
        """Every rank's ``k``, in rank order."""
        if not self.joined:
            return [k]
        out = self._tensor_gather(torch.tensor([k], dtype=torch.int64, device=self._device()))
        return [int(v) for v in out.cpu()]

    def gather(self, t: torch.Tensor, what: str = "gather") -> torch.Tensor:
        """Every rank's rows of ``t`` (dim 0; ranks may hold different numbers), concatenated in rank order."""
        if not self.joined:
            return t
        sizes = self.sizes(int(t.shape[0]))
        big = max(sizes)
        dev = self._device()
        pad = torch.zeros((big, *t.shape[1:]), dtype=t.dtype, device=dev)
        pad[: t.shape[0]] = t.to(dev)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        with self.guard(what):
            dist.all_gather(parts, pad)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(t.device)

    def gather_np(self, a: np.ndarray, what: str = "gather") -> np.ndarray:
        """``gather`` for a numpy array."""
        if not self.joined:
            return a
        return self.gather(torch.from_numpy(np.ascontiguousarray(a)), what).numpy()

    def sum(self, t: torch.Tensor, what: str = "sum") -> torch.Tensor:
        """The sum of ``t`` over ranks (exact for integers; for floats, sum in float64 where order matters)."""
        if not self.joined:
            return t
        out = t.detach().clone().to(self._device())
        with self.guard(what):
            dist.all_reduce(out)
        return out.to(t.device)

    def objects(self, obj: T, what: str = "exchange") -> list[T]:
        """Every rank's (picklable, small) ``obj``, in rank order."""
        if not self.joined:
            return [obj]
        out: list[Any] = [None] * self.world
        with self.guard(what):
            dist.all_gather_object(out, obj)
        return out

    def first(self, obj: T, what: str = "exchange") -> T:
        """Rank 0's ``obj`` on every rank."""
        return self.objects(obj, what)[0]

    def barrier(self, what: str = "barrier") -> None:
        if self.joined:
            with self.guard(what):
                dist.barrier()

    def _tensor_gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world)]
        with self.guard("sizes"):
            dist.all_gather(parts, t)
        return torch.cat(parts)

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """A collective that fails because another rank is gone becomes one :class:`DistributedError`."""
        try:
            yield
        except (RuntimeError, dist.DistError) as e:
            first = (
                re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
            )
            raise DistributedError(
                f"rank {self.rank} of {self.world}: another rank failed or stopped during {what} ({first[:160]})",
                hint="see that rank's error above; nothing was stored; re-run the same command, the feature "
                "caches resume per rank",
            ) from e

    def fault(self, stage: str) -> None:
        """Tests: kill this rank at ``stage`` when ``$KGEXPLAIN_FAULT_RANK`` is ``RANK:STAGE``; raise an unexpected
        error there (as a bug would) when it is ``RANK:STAGE:raise``."""
        spec = os.environ.get(FAULT_ENV, "")
        if spec and spec == f"{self.rank}:{stage}":
            os._exit(17)
        if spec and spec == f"{self.rank}:{stage}:raise":
            raise AssertionError(f"a fault injected at {stage} ({FAULT_ENV})")


def join(device: torch.device | str = "cpu", timeout_s: float = 1800.0) -> Group:
    """This process's group: the torchrun job it belongs to (joined once), or ``Group()`` when not launched so.

    gloo for a CPU device, NCCL for CUDA (each rank on ``cuda:LOCAL_RANK``).
    """
    if not launched():
        return Group()
    if "OMP_NUM_THREADS" in os.environ and "NUMBA_NUM_THREADS" not in os.environ:
        # torchrun gives each process its share in OMP_NUM_THREADS (1 for several) and leaves numba to take every
        # core: numba, which the job loads later, takes the same share (a --nproc worker has set it already)
        os.environ["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError, dist.DistError) as e:
        raise DistributedError(
            f"rank {rank} of {world}: cannot join the distributed job ({str(e).strip().splitlines()[0][:160]})",
            hint="start it with torchrun (MASTER_ADDR and MASTER_PORT reachable from every node)",
        ) from e
    return Group(rank, world, backend)


def leave() -> None:
    """Tear the process group down (the CLI does so after a command)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, entry: Callable[..., Any], args: tuple[Any, ...], device: str = "cpu") -> None:
    """Run ``entry(*args)`` in ``nproc`` processes on this machine as one job, through torch's elastic launcher
    (what ``torchrun --nproc-per-node`` runs). On a CPU the workers are forked from this process, so they start
    with its imports (seconds saved per worker); on a GPU they are spawned. A worker that fails stops the others,
    and the job fails with a :class:`DistributedError` naming it."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # lazy: only --nproc needs it
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch  # lazy: only --nproc needs it

    for name in ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the job's own one-line error says what failed

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"kgexplain-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        start_method="spawn" if torch.device(device).type == "cuda" else "fork",
        monitor_interval=0.05,
        max_restarts=0,
    )
    try:
        elastic_launch(config, entry)(*args)
    except ChildFailedError as e:
        causes = {r: f for r, f in e.failures.items() if f.exitcode != DistributedError.exit_code} or e.failures
        rank, failure = min(causes.items())
        how = f"exit code {failure.exitcode}" if failure.exitcode >= 0 else f"signal {-failure.exitcode}"
        raise DistributedError(
            f"rank {rank} of {nproc} failed ({how}); the job stopped and nothing was stored",
            hint="see that rank's error above",
        ) from e


def offsets(sizes: Sequence[int]) -> list[int]:
    """Where each rank's rows start in the gathered order."""
    return [int(v) for v in np.concatenate([[0], np.cumsum(sizes)])[:-1]]
