"""The store interface shared by the embedded (LadybugDB) and Neo4j backends.

Writes come in two kinds:

* **shared** nodes and relationships (models, layers, filters, images) are inserted when missing and never
  changed: ``ensure_nodes`` / ``ensure_rels``;
* **run-scoped** data (patterns, parent edges, top inferences, parts, metrics) is replaced as a whole by
  ``write_run``: the run is marked ``writing``, its previous rows are deleted, the new rows are written, and only
  then is it marked ``complete``. An interrupted write leaves a run that is not complete; writing it again
  replaces whatever was left, so there are never duplicates.

Batches are pyarrow tables whose columns are checked against the schema (unknown columns are an error,
missing ones are null). Values always travel as query parameters, never pasted into Cypher.
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from kgexplain.errors import StoreError
from kgexplain.store import faults
from kgexplain.store.artifacts import Artifacts
from kgexplain.store.digest import WRITTEN, written_record
from kgexplain.store.schema import Schema, load_schema
from kgexplain.version import __version__
from kgexplain.workspace import Workspace

ARROW_TYPES = {"STRING": pa.string(), "INT64": pa.int64(), "DOUBLE": pa.float64(), "BOOL": pa.bool_()}
RUN_SCOPED = (
    "Pattern",
    "Part",
    "Template",
    "Metric",
    "KnowledgePoint",
)  # labels with a `run` property, replaced per run
SCHEMA_KEY = "schema_version"


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows and self.rows[0] else None

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class RunRecord:
    """What identifies and describes a run (stored on the Run node)."""

    id: str
    kind: str
    model: str = ""
    data: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    started: str | None = None  # when the job began (ISO time); None: when this write begins


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def conform(
    table: pa.Table | Mapping[str, Any], columns: Mapping[str, str], what: str, leading: tuple[str, ...] = ()
) -> pa.Table:
    """Reorder/cast ``table`` to ``leading`` + the schema's columns (missing ones null, unknown ones an error)."""
    if not isinstance(table, pa.Table):
        table = pa.table(dict(table))
    wanted = list(leading) + [c for c in columns if c not in leading]
    unknown = [c for c in table.column_names if c not in wanted]
    if unknown:
        raise StoreError(f"{what}: columns {unknown} are not in the schema", hint="see schema/graph.json")
    for c in leading:
        if c not in table.column_names:
            raise StoreError(f"{what}: column {c!r} is required")
    arrays = []
    for c in wanted:
        typ = pa.string() if c in leading else ARROW_TYPES[columns[c]]
        if c in table.column_names:
            col = table.column(c)
            try:
                arrays.append(col.cast(typ) if col.type != typ else col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise StoreError(f"{what}: column {c!r} cannot be stored as {columns.get(c, 'STRING')}: {e}") from e
        else:
            arrays.append(pa.nulls(len(table), typ))
    out = pa.table(arrays, names=wanted)
    for c in leading:
        if out.column(c).null_count:
            raise StoreError(f"{what}: {out.column(c).null_count} rows have no {c!r}")
    return out


def chunks(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for lo in range(0, len(table), size):
        yield table.slice(lo, size)


class GraphStore(ABC):
    """A knowledge store: a graph database plus an artifacts folder."""

    backend = "abstract"

    def __init__(self, url: str, artifacts: Artifacts, read_only: bool) -> None:
        self.url = url
        self.artifacts = artifacts
        self.read_only = read_only
        self.schema: Schema = load_schema()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _apply_ddl(self) -> None: ...

    @abstractmethod
    def has_label(self, label: str) -> bool:
        """Whether the store has a table (embedded) or any node or relationship (Neo4j) of this label or type."""

    def version(self) -> object:
        """What changes when any process writes the store, for a long-lived reader to know that it should open
        the store again (None: every read sees the latest writes, as on Neo4j)."""
        return None

    @property
    def workspace(self) -> Workspace:
        """The store's artifacts folder as a workspace: generated data sets, caches."""
        return Workspace(self.url, self.artifacts.root)

    def stored_schema_version(self) -> int | None:
        if not self.has_label("Meta"):
            return None
        v = self.query("MATCH (m:Meta) WHERE m.id = $k RETURN m.value", {"k": SCHEMA_KEY}).scalar()
        return int(v) if v is not None else None

    def init_schema(self) -> None:
        """Create the tables/constraints (idempotent) and record the schema version."""
        stored = self.stored_schema_version()
        if stored is not None and stored != self.schema.version:
            self._version_error(stored)
        self._apply_ddl()
        if stored is None:
            self._put_meta(SCHEMA_KEY, str(self.schema.version))
            self._put_meta("created_by", f"kgexplain {__version__}")

    def being_written(self) -> bool:
        """Whether another process is writing the store now, as far as a reader can tell (embedded: its log)."""
        return False

    def check_schema(self) -> None:
        """Fail clearly when the store was written by another schema version."""
        stored = self.stored_schema_version()
        if stored is None and self.being_written():
            raise StoreError(
                f"{self.url} is being created by another process and holds nothing to read yet",
                hint="run this again when that command (a first `kgexplain build`, say) has finished",
            )
        if stored is None:
            raise StoreError(
                f"{self.url} is not an initialised kgexplain store",
                hint="run `kgexplain build` or `kgexplain store init` first",
            )
        if stored != self.schema.version:
            self._version_error(stored)

    def _version_error(self, stored: int) -> None:
        if stored < self.schema.version:
            raise StoreError(
                f"{self.url} was written by schema v{stored}; this kgexplain uses v{self.schema.version}",
                hint="run `kgexplain store upgrade` to add what is new, or build into a new store",
            )
        raise StoreError(
            f"{self.url} was written by a newer kgexplain (schema v{stored} > v{self.schema.version})",
            hint="upgrade kgexplain to read it",
        )

    def ensure_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        stored = self.stored_schema_version()
        if stored is None:
            self.init_schema()
        elif stored != self.schema.version:
            self._version_error(stored)

    @abstractmethod
    def _put_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def upgrade(self) -> list[str]:
        """Add what this schema has and the store lacks; returns what was added."""

    @abstractmethod
    def drop(self) -> None:
        """Delete every node, relationship and table of this store (artifacts stay)."""

    # ------------------------------------------------------------------ writes
    @abstractmethod
    def ensure_nodes(self, label: str, table: pa.Table | Mapping[str, Any]) -> int:
        """Insert the rows whose id is not stored yet; returns how many were inserted."""

    @abstractmethod
    def ensure_rels(self, rel: str, table: pa.Table | Mapping[str, Any]) -> int:
        """Insert the relationships (``from``, ``to`` ids) that do not exist yet."""

    @abstractmethod
    def _delete_run_rows(self, run_id: str) -> None: ...

    @abstractmethod
    def _write_run_rows(
        self, run_id: str, nodes: dict[str, pa.Table], rels: dict[str, pa.Table], rewrite: bool
    ) -> None: ...

    def run_status(self, run_id: str) -> str | None:
        if not self.has_label("Run"):
            return None
        return self.query("MATCH (r:Run) WHERE r.id = $id RETURN r.status", {"id": run_id}).scalar()

    def _had_rows(self, run_id: str) -> bool:
        for label in RUN_SCOPED:
            n = self.query(f"MATCH (n:{label}) WHERE n.run = $run RETURN count(n)", {"run": run_id}).scalar()
            if n:
                return True
        return False

    def write_run(
        self,
        run: RunRecord,
        nodes: Mapping[str, pa.Table | Mapping[str, Any]],
        rels: Mapping[str, pa.Table | Mapping[str, Any]],
    ) -> None:
        """Replace everything of ``run`` with ``nodes`` and ``rels`` (run-scoped), then mark it complete, recording
        what was written (``kgexplain.store.integrity``). A complete run that already holds exactly these rows is
        left as it is (only its config and stats are updated)."""
        self.ensure_writable()
        for label in nodes:
            if label not in RUN_SCOPED:
                raise StoreError(f"{label} is not run-scoped", hint="write shared nodes with ensure_nodes")
        node_tables = {}
        for label, t in nodes.items():
            tbl = conform(t, self.schema.node(label).properties, label, ("id",))
            if "run" in tbl.column_names:
                tbl = tbl.set_column(tbl.column_names.index("run"), "run", pa.array([run.id] * len(tbl), pa.string()))
            node_tables[label] = tbl
        rel_tables = {
            name: conform(t, self.schema.rel(name).properties, name, ("from", "to")) for name, t in rels.items()
        }
        for name, tbl in rel_tables.items():
            if "run" in tbl.column_names:
                rel_tables[name] = tbl.set_column(
                    tbl.column_names.index("run"), "run", pa.array([run.id] * len(tbl), pa.string())
                )
        written = written_record(node_tables, rel_tables)
        run = replace(run, stats={**run.stats, WRITTEN: written})
        status = self.run_status(run.id)
        if status == "complete" and self._holds(run.id, written):
            self._upsert_run(run, "complete")  # the same rows again: keep them (config and stats may be newer)
            return
        self._upsert_run(run, "writing", started=run.started or now())
        faults.reach("write:started")
        rewrite = status is not None or self._had_rows(run.id) or self._tombstoned(run.id)
        if rewrite:
            self._delete_run_rows(run.id)
            self._tombstone(run.id)
            faults.reach("write:deleted")
        self._write_run_rows(run.id, node_tables, rel_tables, rewrite)
        self._upsert_run(run, "complete", finished=now())
        faults.reach("write:complete")

    def _holds(self, run_id: str, written: Mapping[str, Any]) -> bool:
        """Whether the stored run recorded exactly these rows, and still holds as many nodes of each label."""
        stats = self.query("MATCH (r:Run) WHERE r.id = $id RETURN r.stats", {"id": run_id}).scalar()
        before = json.loads(stats or "{}").get(WRITTEN) or {}
        if before.get("content") != written["content"]:
            return False
        for label, want in written["nodes"].items():
            n = self.query(f"MATCH (n:{label}) WHERE n.run = $run RETURN count(n)", {"run": run_id}).scalar()
            if int(n or 0) != want["count"]:
                return False
        return True

    def delete_run(self, run_id: str) -> bool:
        """Delete a run and everything it wrote (shared nodes stay)."""
        self.ensure_writable()
        if self.run_status(run_id) is None and not self._had_rows(run_id):
            return False
        self._delete_run_rows(run_id)
        self._tombstone(run_id)
        self.query("MATCH (r:Run) WHERE r.id = $id DETACH DELETE r", {"id": run_id}, write=True)
        return True

    def _tombstone(self, run_id: str) -> None:
        self._put_meta(f"deleted:{run_id}", now())

    def _tombstoned(self, run_id: str) -> bool:
        return self.query("MATCH (m:Meta) WHERE m.id = $k RETURN count(m)", {"k": f"deleted:{run_id}"}).scalar() > 0

    def _upsert_run(self, run: RunRecord, status: str, started: str | None = None, finished: str | None = None) -> None:
        props = {
            "id": run.id,
            "kind": run.kind,
            "model": run.model,
            "data": run.data,
            "config": json.dumps(run.config, sort_keys=True, default=str),
            "code_version": __version__,
            "status": status,
            "stats": json.dumps(run.stats, sort_keys=True, default=str),
        }
        if started:
            props["started"] = started
        if finished:
            props["finished"] = finished
        exists = self.run_status(run.id) is not None
        if exists:
            sets = ", ".join(f"r.{k} = ${k}" for k in props if k != "id")
            self.query(f"MATCH (r:Run) WHERE r.id = $id SET {sets}", props, write=True)
        else:
            self.ensure_nodes("Run", pa.table({k: [v] for k, v in props.items()}))
        if run.model:
            self.ensure_rels("USED_MODEL", {"from": [run.id], "to": [run.model]})

    # ------------------------------------------------------------------ reads
    @abstractmethod
    def query(self, cypher: str, params: Mapping[str, Any] | None = None, write: bool = False) -> QueryResult:
        """Run Cypher with parameters; ``write=False`` refuses to modify the store."""

    def fetch_table(
        self, cypher: str, params: Mapping[str, Any] | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """A read query's result as an Arrow table (the embedded store converts in C++, without Python rows)."""
        res = self.query(cypher, params)
        names = columns or res.columns
        return pa.table({c: [r[i] for r in res.rows] for i, c in enumerate(names)})

    def counts(self) -> dict[str, int]:
        """Number of nodes per label and relationships per type."""
        out = {}
        for label in self.schema.nodes:
            if self.has_label(label):
                out[label] = int(self.query(f"MATCH (n:{label}) RETURN count(n)").scalar() or 0)
        for rel in self.schema.rels.values():
            if self.has_label(rel.name):
                out[rel.name] = int(
                    self.query(f"MATCH (:{rel.source})-[e:{rel.name}]->(:{rel.target}) RETURN count(e)").scalar() or 0
                )
        return out
