"""The graph schema (``schema/graph.json``, installed as ``kgexplain.schema``) and the DDL derived from it.

The JSON file is the single source of truth: labels, keys, typed properties, relationship endpoints and
indexes. Both backends derive their DDL from it; the writers validate every batch against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from kgexplain.errors import StoreError

TYPES = {"STRING", "INT64", "DOUBLE", "BOOL"}


@dataclass(frozen=True)
class NodeType:
    label: str
    properties: dict[str, str]
    indexes: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class RelType:
    name: str
    source: str
    target: str
    properties: dict[str, str]
    doc: str = ""


@dataclass(frozen=True)
class Schema:
    version: int
    nodes: dict[str, NodeType]
    rels: dict[str, RelType]
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def node(self, label: str) -> NodeType:
        if label not in self.nodes:
            raise StoreError(f"unknown node label {label!r}", hint=f"the schema has {', '.join(self.nodes)}")
        return self.nodes[label]

    def rel(self, name: str) -> RelType:
        if name not in self.rels:
            raise StoreError(f"unknown relationship {name!r}", hint=f"the schema has {', '.join(self.rels)}")
        return self.rels[name]

    # ------------------------------------------------------------------ embedded (LadybugDB / Kùzu dialect)
    def ladybug_ddl(self) -> list[str]:
        stmts = []
        for n in self.nodes.values():
            cols = ", ".join(f"{p} {t}" for p, t in n.properties.items())
            stmts.append(f"CREATE NODE TABLE IF NOT EXISTS {n.label}({cols}, PRIMARY KEY(id))")
        for r in self.rels.values():
            cols = "".join(f", {p} {t}" for p, t in r.properties.items())
            stmts.append(f"CREATE REL TABLE IF NOT EXISTS {r.name}(FROM {r.source} TO {r.target}{cols})")
        return stmts

    # ------------------------------------------------------------------ Neo4j 5
    def neo4j_ddl(self) -> list[str]:
        stmts = []
        for n in self.nodes.values():
            stmts.append(
                f"CREATE CONSTRAINT kgx_{n.label.lower()}_id IF NOT EXISTS FOR (n:{n.label}) REQUIRE n.id IS UNIQUE"
            )
            for prop in n.indexes:
                stmts.append(f"CREATE INDEX kgx_{n.label.lower()}_{prop} IF NOT EXISTS FOR (n:{n.label}) ON (n.{prop})")
        return stmts


def parse_schema(doc: dict[str, Any]) -> Schema:
    try:
        version = int(doc["version"])
        nodes = {}
        for label, spec in doc["nodes"].items():
            props = dict(spec["properties"])
            if props.get("id") != "STRING":
                raise ValueError(f"node {label} needs a STRING id")
            bad = {p: t for p, t in props.items() if t not in TYPES}
            if bad:
                raise ValueError(f"node {label} has unknown types {bad}")
            unknown = [i for i in spec.get("indexes", []) if i not in props]
            if unknown:
                raise ValueError(f"node {label} indexes unknown properties {unknown}")
            nodes[label] = NodeType(label, props, tuple(spec.get("indexes", [])), spec.get("doc", ""))
        rels = {}
        for name, spec in doc["relationships"].items():
            if spec["from"] not in nodes or spec["to"] not in nodes:
                raise ValueError(f"relationship {name} joins unknown labels")
            props = dict(spec.get("properties", {}))
            bad = {p: t for p, t in props.items() if t not in TYPES}
            if bad or {"from", "to"} & set(props):
                raise ValueError(f"relationship {name} has bad properties {bad or props}")
            rels[name] = RelType(name, spec["from"], spec["to"], props, spec.get("doc", ""))
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"the graph schema is malformed: {e}") from e
    return Schema(version, nodes, rels, doc)


@lru_cache(maxsize=1)
def load_schema() -> Schema:
    """The schema shipped with this kgexplain."""
    text = (resources.files("kgexplain.schema") / "graph.json").read_text(encoding="utf-8")
    return parse_schema(json.loads(text))
