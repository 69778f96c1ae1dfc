"""One error hierarchy for the whole library.

Every error a user can cause (a missing file, a wrong layer name, weights that cannot be found) is a
``KgExplainError`` whose message says what happened *and what to do*. The CLI prints ``str(error)`` on one
line and exits with ``error.exit_code``; library users catch ``KgExplainError``.
"""

from __future__ import annotations


class KgExplainError(Exception):
    """Base class of every error kgexplain raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(KgExplainError):
    """Invalid arguments or option combinations."""

    exit_code = 2


class ModelError(KgExplainError):
    """Unknown model, unloadable checkpoint, architecture mismatch."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable."""


class LayerError(ModelError):
    """Unknown layer name or a layer that cannot be hooked."""


class DeviceError(KgExplainError):
    """A device was requested that this machine does not have."""


class DataError(KgExplainError):
    """A data source is missing, malformed or empty."""


class ImageDecodeError(DataError):
    """One image could not be decoded (callers usually skip and count it)."""


class CacheError(KgExplainError):
    """A feature cache is unreadable or inconsistent."""


class StoreError(KgExplainError):
    """The graph store cannot be opened, written or queried."""


class StoreBusy(StoreError):
    """The embedded store is open for writing by another process (``pid`` when the engine names it)."""

    def __init__(self, message: str, hint: str | None = None, pid: int | None = None) -> None:
        super().__init__(message, hint)
        self.pid = pid


class DistributedError(KgExplainError):
    """Another rank of a distributed job failed, or the group could not be formed."""

    exit_code = 3  # a rank that stops because another one failed (the launcher names the one that failed first)
