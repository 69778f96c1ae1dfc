"""The Neo4j store: a Neo4j 5 server over Bolt (``bolt://`` or ``neo4j://``), through the official driver.

Writes are ``UNWIND $rows AS r ...`` in batches (``batch_size``, measured in ``bench/store_bench.py``); reads run
in READ transactions (routed to readers on a cluster and refused if they write); the target database is always
named; constraints and indexes are created ``IF NOT EXISTS`` from the schema. Driver errors become one-line
messages that say what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import neo4j
import pyarrow as pa
from neo4j import exceptions as nx
from neo4j.graph import Node, Relationship
from neo4j.graph import Path as GraphPath

from kgexplain.errors import StoreError
from kgexplain.store.artifacts import Artifacts
from kgexplain.store.base import RUN_SCOPED, GraphStore, QueryResult, chunks, conform
from kgexplain.store.cypher import is_write_query

DEFAULT_BATCH = 2000
DELETE_BATCH = 10_000
COMPOSE_HINT = "start one with `docker compose -f docker/docker-compose.yml up -d --wait`, or check NEO4J_URI"


def credentials(user: str | None, password: str | None) -> tuple[str, str] | None:
    user = user or os.environ.get("NEO4J_USERNAME") or os.environ.get("NEO4J_USER") or "neo4j"
    password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
    if password is None:
        return None
    return (user, password)


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        return {"_label": next(iter(value.labels), ""), **{k: _plain(v) for k, v in value.items()}}
    if isinstance(value, Relationship):
        return {"_type": value.type, **{k: _plain(v) for k, v in value.items()}}
    if isinstance(value, GraphPath):
        return {"nodes": [_plain(n) for n in value.nodes], "rels": [_plain(r) for r in value.relationships]}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Neo4jStore(GraphStore):
    backend = "neo4j"

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        artifacts: str | Path | None = None,
        read_only: bool = False,
        batch_size: int | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        art = artifacts or os.environ.get("KGEXPLAIN_ARTIFACTS") or "kgexplain-artifacts"
        super().__init__(url, Artifacts(art), read_only)
        self.database = database or os.environ.get("NEO4J_DATABASE") or "neo4j"
        self.batch_size = int(batch_size or os.environ.get("KGEXPLAIN_NEO4J_BATCH") or DEFAULT_BATCH)
        auth = credentials(user, password)
        try:
            self._driver: Any = neo4j.GraphDatabase.driver(
                url, auth=auth, connection_timeout=connect_timeout, connection_acquisition_timeout=connect_timeout * 2
            )
            self._driver.verify_connectivity()
        except nx.AuthError as e:
            raise StoreError(
                f"Neo4j at {url} rejected the credentials for user {auth[0] if auth else '(none)'}",
                hint="set NEO4J_USERNAME / NEO4J_PASSWORD or pass --user / --password",
            ) from e
        except (nx.ServiceUnavailable, OSError) as e:
            raise StoreError(f"cannot reach Neo4j at {url}", hint=COMPOSE_HINT) from e
        except (nx.ConfigurationError, ValueError) as e:
            raise StoreError(f"bad Neo4j URL {url!r}: {e}", hint="write bolt://HOST:7687 or neo4j://HOST:7687") from e
        except nx.Neo4jError as e:
            raise StoreError(f"Neo4j at {url} refused the connection: {e.message or e}") from e

    def close(self) -> None:
        drv = getattr(self, "_driver", None)
        if drv is not None:
            drv.close()
            self._driver = None

    # ------------------------------------------------------------------ low level
    def _run(self, cypher: str, params: Mapping[str, Any] | None = None, write: bool = True) -> QueryResult:
        if self._driver is None:
            raise StoreError("the store is closed")
        try:
            records, _summary, keys = self._driver.execute_query(
                cypher,
                dict(params or {}),
                database_=self.database,
                routing_=neo4j.RoutingControl.WRITE if write else neo4j.RoutingControl.READ,
            )
        except nx.CypherSyntaxError as e:
            first = (e.message or str(e)).strip().splitlines()[0]
            raise StoreError(f"Cypher syntax error: {first}") from e
        except nx.AuthError as e:
            raise StoreError(
                f"Neo4j at {self.url} rejected the credentials",
                hint="set NEO4J_USERNAME / NEO4J_PASSWORD or pass --user / --password",
            ) from e
        except nx.ServiceUnavailable as e:
            raise StoreError(f"lost the connection to Neo4j at {self.url}", hint=COMPOSE_HINT) from e
        except nx.ClientError as e:
            msg = (e.message or str(e)).strip().splitlines()[0]
            if "write" in msg.lower() and "read" in msg.lower():
                raise StoreError("this query writes to the store", hint="pass --write to allow it") from e
            if "database" in msg.lower() and "not" in msg.lower():
                raise StoreError(
                    f"Neo4j database {self.database!r}: {msg}",
                    hint="pass --database (or NEO4J_DATABASE) with an existing database",
                ) from e
            raise StoreError(f"query failed: {msg}") from e
        except nx.Neo4jError as e:
            raise StoreError(f"query failed: {(e.message or str(e)).strip().splitlines()[0]}") from e
        return QueryResult(list(keys), [[_plain(v) for v in r.values()] for r in records])

    def has_label(self, label: str) -> bool:
        return True  # Neo4j is schema-free: every label "exists"

    def stored_schema_version(self) -> int | None:
        v = self._run("MATCH (m:Meta {id: $k}) RETURN m.value", {"k": "schema_version"}, write=False).scalar()
        return int(v) if v is not None else None

    def _apply_ddl(self) -> None:
        for stmt in self.schema.neo4j_ddl():
            self._run(stmt)

    def upgrade(self) -> list[str]:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        self._apply_ddl()
        self._put_meta("schema_version", str(self.schema.version))
        return ["constraints and indexes"]

    def _put_meta(self, key: str, value: str) -> None:
        self._run("MERGE (m:Meta {id: $k}) SET m.value = $v", {"k": key, "v": value})

    def drop(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        for label in list(self.schema.nodes):
            while self._run(f"MATCH (n:{label}) WITH n LIMIT {DELETE_BATCH} DETACH DELETE n RETURN count(*)").scalar():
                pass

    # ------------------------------------------------------------------ writes
    def _batches(self, cypher: str, table: pa.Table, row: Any = None) -> None:
        for part in chunks(table, self.batch_size):
            rows = part.to_pylist() if row is None else [row(r) for r in part.to_pylist()]
            self._run(cypher, {"rows": rows})

    @staticmethod
    def _props(r: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: v for k, v in r.items() if v is not None and k not in skip}

    def ensure_nodes(self, label: str, table: pa.Table | Mapping[str, Any]) -> int:
        self.ensure_writable()
        tbl = conform(table, self.schema.node(label).properties, label, ("id",))
        before = self._run(f"MATCH (n:{label}) RETURN count(n)", write=False).scalar() or 0
        self._batches(
            f"UNWIND $rows AS r MERGE (n:{label} {{id: r.id}}) ON CREATE SET n += r.props",
            tbl,
            lambda r: {"id": r["id"], "props": self._props(r)},
        )
        after = self._run(f"MATCH (n:{label}) RETURN count(n)", write=False).scalar() or 0
        return int(after - before)

    def ensure_rels(self, rel: str, table: pa.Table | Mapping[str, Any]) -> int:
        self.ensure_writable()
        spec = self.schema.rel(rel)
        tbl = conform(table, spec.properties, rel, ("from", "to"))
        count = f"MATCH (:{spec.source})-[e:{rel}]->(:{spec.target}) RETURN count(e)"
        before = self._run(count, write=False).scalar() or 0
        self._batches(
            f"UNWIND $rows AS r MATCH (a:{spec.source} {{id: r.f}}) MATCH (b:{spec.target} {{id: r.t}}) "
            f"MERGE (a)-[e:{rel}]->(b) ON CREATE SET e += r.props",
            tbl,
            lambda r: {"f": r["from"], "t": r["to"], "props": self._props(r, ("from", "to"))},
        )
        return int((self._run(count, write=False).scalar() or 0) - before)

    def _delete_run_rows(self, run_id: str) -> None:
        for label in RUN_SCOPED:
            while self._run(
                f"MATCH (n:{label} {{run: $run}}) WITH n LIMIT {DELETE_BATCH} DETACH DELETE n RETURN count(*)",
                {"run": run_id},
            ).scalar():
                pass

    def _write_run_rows(
        self, run_id: str, nodes: dict[str, pa.Table], rels: dict[str, pa.Table], rewrite: bool
    ) -> None:
        for label, tbl in nodes.items():
            self._batches(
                f"UNWIND $rows AS r CREATE (n:{label}) SET n = r.props", tbl, lambda r: {"props": self._props(r)}
            )
        for name, tbl in rels.items():
            spec = self.schema.rel(name)
            self._batches(
                f"UNWIND $rows AS r MATCH (a:{spec.source} {{id: r.f}}) MATCH (b:{spec.target} {{id: r.t}}) "
                f"CREATE (a)-[e:{name}]->(b) SET e = r.props",
                tbl,
                lambda r: {"f": r["from"], "t": r["to"], "props": self._props(r, ("from", "to"))},
            )

    # ------------------------------------------------------------------ reads
    def query(self, cypher: str, params: Mapping[str, Any] | None = None, write: bool = False) -> QueryResult:
        if not write and is_write_query(cypher):
            raise StoreError("this query writes to the store", hint="pass --write to allow it")
        if write and self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        return self._run(cypher, params, write=write)
