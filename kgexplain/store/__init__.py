"""The knowledge store: an embedded graph database (default) or Neo4j, plus a folder of artifacts.

from kgexplain.store import StoreSpec
with StoreSpec("kgexplain-store").open(read_only=True) as store:
    store.query("MATCH (p:Pattern) RETURN p.id, p.score ORDER BY p.score DESC LIMIT 5").records()
"""

from __future__ import annotations

from kgexplain.store.artifacts import ArtifactRef, Artifacts
from kgexplain.store.base import GraphStore, QueryResult, RunRecord
from kgexplain.store.schema import Schema, load_schema
from kgexplain.store.spec import StoreSpec, open_store
from kgexplain.workspace import is_bolt_url, resolve_location

__all__ = [
    "ArtifactRef",
    "Artifacts",
    "GraphStore",
    "QueryResult",
    "RunRecord",
    "Schema",
    "StoreSpec",
    "is_bolt_url",
    "load_schema",
    "open_store",
    "resolve_location",
]
