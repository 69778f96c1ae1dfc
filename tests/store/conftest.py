"""The ``store`` fixture runs a test against every backend: the embedded store always, Neo4j when
``NEO4J_URI`` is set and the ``neo4j`` marker is selected (``python -m pytest -m neo4j``).

The Neo4j runs delete every node with a kgexplain label in the target database: point NEO4J_URI at a
scratch server (docker/docker-compose.yml).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgexplain.store import GraphStore, open_store
from kgexplain.store.sample_graph import SampleGraph, sample_graph, small

BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param(
        "neo4j",
        id="neo4j",
        marks=[
            pytest.mark.neo4j,
            pytest.mark.skipif(not os.environ.get("NEO4J_URI"), reason="set NEO4J_URI to run against Neo4j"),
        ],
    ),
]


def make_store(kind: str, tmp_path: Path) -> GraphStore:
    if kind == "embedded":
        return open_store(tmp_path / "store")
    store = open_store(os.environ["NEO4J_URI"], artifacts=tmp_path / "artifacts")
    store.drop()
    store.init_schema()
    return store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    s = make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def graph() -> SampleGraph:
    return sample_graph(small(), seed=3)
