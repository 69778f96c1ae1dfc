"""The workspace: where a store's artifacts live (generated data, feature caches, patches, maps, plots).

For the embedded store (a folder, ``./kgexplain-store`` by default or ``$KGEXPLAIN_STORE``) the artifacts are in
``<folder>/artifacts`` next to ``<folder>/graph.lbdb``; for a Neo4j store they are in ``--artifacts`` (or
``$KGEXPLAIN_ARTIFACTS``, default ``./kgexplain-artifacts``)::

    artifacts/data/       generated data sets (the synthetic reference workload)
    artifacts/cache/      feature caches (float16 shards, see kgexplain.features.cache)
    artifacts/patches/... content-addressed files referenced from the graph
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgexplain.errors import StoreError
from kgexplain.store import is_bolt_url, resolve_location


@dataclass(frozen=True)
class Workspace:
    location: str  # a folder or a Bolt URL
    artifacts: Path

    @classmethod
    def resolve(cls, location: str | Path | None = None, artifacts: str | Path | None = None) -> Workspace:
        loc = resolve_location(location)
        if artifacts:
            art = Path(artifacts).expanduser()
        elif is_bolt_url(loc):
            art = Path(os.environ.get("KGEXPLAIN_ARTIFACTS") or "kgexplain-artifacts").expanduser()
        else:
            art = Path(loc).expanduser() / "artifacts"
        return cls(loc, art)

    @property
    def root(self) -> Path:
        """The store folder (embedded) or the artifacts folder (Neo4j)."""
        return self.artifacts if is_bolt_url(self.location) else Path(self.location).expanduser()

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
                f"cannot create the artifacts folder {self.artifacts}: {e.strerror}",
                hint="pass --store (or --artifacts) with a writable location",
            ) from e
        if not os.access(self.artifacts, os.W_OK):
            raise StoreError(
                f"the artifacts folder {self.artifacts} is not writable",
                hint="pass --store (or --artifacts) with a writable location",
            )
        return self


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
