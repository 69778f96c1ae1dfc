"""The knowledge store: an embedded graph database (default) or Neo4j, plus a folder of artifacts.

from kgexplain.store import open_store
with open_store("kgexplain-store", read_only=True) as store:
    store.query("MATCH (p:Pattern) RETURN p.id, p.score ORDER BY p.score DESC LIMIT 5").records()
"""

from __future__ import annotations

import os
from pathlib import Path

from kgexplain.errors import StoreError
from kgexplain.store.artifacts import ArtifactRef, Artifacts
from kgexplain.store.base import GraphStore, QueryResult, RunRecord
from kgexplain.store.embedded import EmbeddedStore
from kgexplain.store.schema import Schema, load_schema

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
DEFAULT_STORE = "kgexplain-store"

__all__ = [
    "ArtifactRef",
    "Artifacts",
    "GraphStore",
    "QueryResult",
    "RunRecord",
    "Schema",
    "is_bolt_url",
    "load_schema",
    "open_store",
    "resolve_location",
]


def resolve_location(location: str | os.PathLike[str] | None = None) -> str:
    """``--store`` value -> a folder path or a Bolt URL (``neo4j`` alone means ``$NEO4J_URI``)."""
    loc = str(location) if location not in (None, "") else os.environ.get("KGEXPLAIN_STORE") or DEFAULT_STORE
    if loc.strip().lower() == "neo4j":
        uri = os.environ.get("NEO4J_URI")
        if not uri:
            raise StoreError("--store neo4j needs NEO4J_URI", hint="export NEO4J_URI=bolt://localhost:7687")
        loc = uri
    if "://" in loc:
        scheme = loc.split("://", 1)[0].lower()
        if scheme not in BOLT_SCHEMES:
            raise StoreError(
                f"unsupported store URL scheme {scheme!r} in {loc!r}",
                hint="use a folder for the embedded store, or bolt://HOST:7687 / neo4j://HOST:7687",
            )
    return loc


def is_bolt_url(location: str) -> bool:
    return "://" in location and location.split("://", 1)[0].lower() in BOLT_SCHEMES


def open_store(
    location: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    artifacts: str | Path | None = None,
    batch_size: int | None = None,
) -> GraphStore:
    """Open (creating when writable) the store at ``location``: a folder (embedded) or a Bolt URL (Neo4j)."""
    loc = resolve_location(location)
    if is_bolt_url(loc):
        from kgexplain.store.neo4j_store import Neo4jStore  # lazy: the Neo4j driver loads only for a bolt:// store

        return Neo4jStore(
            loc,
            user=user,
            password=password,
            database=database,
            artifacts=artifacts,
            read_only=read_only,
            batch_size=batch_size,
        )
    return EmbeddedStore(Path(loc), read_only=read_only, artifacts=artifacts)
