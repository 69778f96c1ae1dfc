"""Device selection: ``auto | cpu | cuda | cuda:N``; nothing else in the library assumes CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kgexplain.errors import DeviceError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device string into a ``torch.device``, failing clearly when it does not exist."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} requested but CUDA is not available on this machine",
                hint="use --device cpu or --device auto",
            )
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"bad device {spec!r}", hint="write cuda:0, cuda:1, ...") from None
            count = torch.cuda.device_count()
            if not 0 <= index < count:
                raise DeviceError(
                    f"device {spec!r} does not exist: this machine has {count} CUDA device(s)",
                    hint=f"use cuda:0 ... cuda:{count - 1}",
                )
        return torch.device(spec)
    raise DeviceError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[object]:
    """Mixed precision (float16) on CUDA when enabled; a no-op on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set the number of intra-op CPU threads."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
