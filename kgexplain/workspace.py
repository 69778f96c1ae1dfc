"""The workspace: one folder that holds a store's graph and its artifacts.

``./kgexplain-store`` by default (or ``$KGEXPLAIN_STORE``)::

    kgexplain-store/
      artifacts/data/       generated data sets (the synthetic reference workload)
      artifacts/cache/      feature caches (float16 shards, see kgexplain.features.cache)
      artifacts/...         patches, maps, plots (content-addressed, added by the miners)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgexplain.errors import StoreError

DEFAULT_STORE = "kgexplain-store"
STORE_ENV = "KGEXPLAIN_STORE"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, location: str | Path | None = None) -> Workspace:
        loc = location if location not in (None, "") else os.environ.get(STORE_ENV) or DEFAULT_STORE
        return cls(Path(str(loc)).expanduser())

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache(self) -> Path:
        return self.artifacts / "cache"

    @property
    def data(self) -> Path:
        return self.artifacts / "data"

    def ensure(self) -> Workspace:
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the store folder {self.root}: {e.strerror}",
                hint="pass --store with a writable location",
            ) from e
        if not os.access(self.root, os.W_OK):
            raise StoreError(
                f"the store folder {self.root} is not writable", hint="pass --store with a writable location"
            )
        return self


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
