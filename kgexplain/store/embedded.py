"""The embedded store: LadybugDB (the maintained fork of Kùzu) in ``<folder>/graph.lbdb``, no server.

Measured on this engine (0.22.0) and designed around:

* ``COPY ... FROM`` an Arrow table is the fast path (61k nodes 0.3 s, 920k edges 2.8 s on 2 cores).
* COPY of a node whose primary key already exists, or that existed *with relationships* and was deleted,
  kills the process with a segmentation fault instead of raising. So: keys are checked before every COPY,
  small inserts use Cypher ``CREATE``, and a run that is written again (after a crash or a rebuild) has its
  nodes recreated with ``CREATE`` (2.6 s for 61k), never with COPY.
* One writer at a time (a file lock); read-only connections can open beside it and see the data as of their
  opening.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ladybug
import pyarrow as pa
import pyarrow.compute as pc

from kgexplain.errors import StoreBusy, StoreError
from kgexplain.store import faults
from kgexplain.store.artifacts import Artifacts
from kgexplain.store.base import RUN_SCOPED, GraphStore, QueryResult, chunks, conform
from kgexplain.store.cypher import is_write_query

GRAPH_FILE = "graph.lbdb"
CREATE_BATCH = 5000
SMALL_INSERT = 2000  # at most this many rows: Cypher CREATE; more: COPY (after checking the keys)
READER_WAIT = 30.0  # seconds a reader waits for the writer's checkpoint
QUIET = 3.0  # seconds of an unreadable database file with no writer's trace beside it, and unchanged: damaged


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def friendly_error(e: BaseException, query: str | None = None) -> StoreError:
    """One line that says what went wrong in a query, with the position for syntax errors."""
    msg = _first_line(e)
    m = re.match(r"Parser exception: (.*?) \(line: (\d+), offset: (\d+)\)", msg)
    if m:
        return StoreError(
            f"Cypher syntax error at line {m.group(2)}, column {int(m.group(3)) + 1}: {m.group(1)}",
            hint="see README 'Querying' for the embedded dialect",
        )
    if "read-only" in msg.lower() or "read only" in msg.lower():
        return StoreError("this query writes to the store", hint="pass --write to allow it")
    return StoreError(f"query failed: {msg}")


def plain(value: Any) -> Any:
    """Engine values -> JSON-friendly Python: nodes, relationships and paths become dicts as the Neo4j backend
    gives them (``_label`` or ``_type``, then the properties the object has; the engine's internal ids and the
    null columns of properties it does not have left out). The engine spells its own keys ``_LABEL``, ``_SRC``,
    ``_NODES`` ... (older versions in lower case)."""
    if isinstance(value, dict):
        own = {k.lower(): k for k in value if k.startswith("_")}
        if "_nodes" in own and "_rels" in own:
            nodes, rels = value[own["_nodes"]], value[own["_rels"]]
            return {"nodes": [plain(n) for n in nodes], "rels": [plain(r) for r in rels]}
        if "_label" in own:
            out: dict[str, Any] = {"_type" if "_src" in own else "_label": value[own["_label"]]}
            out.update({k: plain(v) for k, v in value.items() if not k.startswith("_") and v is not None})
            return out
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class EmbeddedStore(GraphStore):
    backend = "embedded"

    def __init__(self, folder: str | Path, read_only: bool = False, artifacts: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser()
        super().__init__(str(self.folder), Artifacts(artifacts or self.folder / "artifacts"), read_only)
        path = self.folder / GRAPH_FILE
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"{self.folder} is a file, not a store folder", hint="pass a folder to --store")
        if read_only and not path.exists():
            raise StoreError(
                f"no kgexplain store at {self.folder}",
                hint="run `kgexplain build` first, or pass --store with the right folder",
            )
        try:
            if not read_only:
                self.folder.mkdir(parents=True, exist_ok=True)
            self._db: Any = self._open_database(ladybug, path, read_only)
            self._conn: Any = ladybug.Connection(self._db)
        except RuntimeError as e:
            msg = str(e)
            m = re.search(r"Lock is held by PID (\d+)", msg)
            if m or "Could not set lock" in msg:
                who = f" (PID {m.group(1)})" if m else ""
                raise StoreBusy(
                    f"the store {self.folder} is open for writing by another process{who}",
                    hint="wait until it finishes; read-only commands can run meanwhile",
                    pid=int(m.group(1)) if m else None,
                ) from e
            raise StoreError(f"cannot open the store {self.folder}: {_first_line(e)}") from e
        except OSError as e:
            raise StoreError(f"cannot open the store {self.folder}: {e.strerror}") from e
        self._tables: set[str] | None = None

    @staticmethod
    def _open_database(ladybug: Any, path: Path, read_only: bool, wait: float = READER_WAIT) -> Any:
        """Open the database; a reader waits while the writer checkpoints (opening fails meanwhile)."""
        start = time.monotonic()
        deadline = start + wait
        delay = 0.05
        first = EmbeddedStore._writer_traces(path)
        writer_seen = False  # a writer's file beside the database, or a change to it, since the first attempt
        while True:
            before = EmbeddedStore._writer_traces(path)
            try:
                return ladybug.Database(str(path), read_only=read_only)
            except (RuntimeError, ValueError) as e:
                text = str(e).lower()
                after = EmbeddedStore._writer_traces(path)
                writer_seen = writer_seen or bool(before[1] or after[1]) or after[0] != first[0]
                if "cannot read checkpoint" in text and (
                    not read_only or (not writer_seen and time.monotonic() - start > QUIET)
                ):
                    # The engine says "the database may be checkpointing", but no writer is at work on it (a writer
                    # holds the lock, so none can be when opening for writing): its file is cut short or damaged.
                    detail = _first_line(e).removeprefix("Runtime exception: ").split(" The database may be")[0]
                    raise StoreError(
                        f"the store {path.parent} is damaged: its database file cannot be read ({detail})",
                        hint=f"restore {path.name} from a copy, or move the folder away and build again",
                    ) from e
                # The writer is checkpointing, or has just created / truncated its WAL (a reader then sees an
                # empty .wal file), or is appending to it (a reader replaying a half-written record fails with
                # "vector::reserve", a ValueError), or is rewriting the database file (an engine assertion): all pass
                # within moments. An assertion counts as the writer's doing when the writer left traces (its WAL,
                # shadow or checkpoint files, a database file that changed) before or during the attempt: a
                # checkpoint that ends during the attempt removes its files (seen once in CI: an assertion, no WAL).
                replaying = "assertion failed" in text and (
                    bool(before[1]) or EmbeddedStore._writer_traces(path) != before
                )
                transient = read_only and (
                    "checkpoint" in text
                    or ("past the end" in text and ".wal" in text)
                    or "vector::reserve" in text
                    or replaying
                )
                if transient and "recovery is pending" in text and EmbeddedStore._recover(path):
                    continue  # a writer died while checkpointing; its checkpoint is now complete
                if not transient or time.monotonic() > deadline:
                    if transient:
                        raise StoreError(
                            f"the store {path.parent} is being checkpointed by its writer", hint="try again in a moment"
                        ) from e
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def being_written(self) -> bool:
        """A writer's log beside the database file: another process has it open for writing (or one stopped before
        its first checkpoint; the next writer recovers it)."""
        return self.read_only and bool(self._writer_traces(self.folder / GRAPH_FILE)[1])

    @staticmethod
    def _writer_traces(path: Path) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
        """The database file's (mtime, size) and the names of the files a writer keeps beside it (``graph.lbdb.wal``,
        ``.shadow``, ``.wal.checkpoint``, ``.checkpoint.*.lock``)."""
        try:
            st = path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        try:
            names = tuple(sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + ".")))
        except OSError:
            names = ()
        return stamp, names

    @staticmethod
    def _recover(path: Path) -> bool:
        """Finish the checkpoint of a writer that died during it, by opening the database for writing (which is what
        completes it). False when a live writer holds the lock: its checkpoint is running, and a reader waits."""
        try:
            db = ladybug.Database(str(path), read_only=False)
        except RuntimeError as e:
            if "lock" in str(e).lower():
                return False
            raise StoreError(
                f"the store {path.parent} needs recovery after its writer died during a checkpoint: {_first_line(e)}",
                hint="run `kgexplain store init --store ...` as a user who may write to it",
            ) from e
        db.close()
        return True

    def version(self) -> object:
        """The database files' names, sizes and modification times: a connection reads the store as it was when
        it was opened, so a reader that lives on (``kgexplain serve``) opens it again when these change."""
        found = []
        for p in sorted(self.folder.glob(GRAPH_FILE + "*")):
            try:
                st = p.stat()
            except OSError:  # removed between the listing and the look (a checkpoint folds the WAL in)
                continue
            found.append((p.name, st.st_size, st.st_mtime_ns))
        return tuple(found)

    def close(self) -> None:
        conn, db = getattr(self, "_conn", None), getattr(self, "_db", None)
        if conn is not None:
            if not self.read_only and faults.armed("checkpoint"):
                faults.die_soon()  # lands inside the checkpoint below
                conn.execute("CHECKPOINT")
            conn.close()
            self._conn = None
        if db is not None:
            db.close()
            self._db = None

    # ------------------------------------------------------------------ low level
    def _execute(self, cypher: str, params: Mapping[str, Any] | None = None) -> Any:
        if self._conn is None:
            raise StoreError("the store is closed")
        try:
            return self._conn.execute(cypher, dict(params or {}))
        except RuntimeError as e:
            raise friendly_error(e, cypher) from e

    def tables(self) -> set[str]:
        if self._tables is None:
            res = self._execute("CALL show_tables() RETURN name")
            self._tables = {row[0] for row in res.get_all()}
        return self._tables

    def has_label(self, label: str) -> bool:
        return label in self.tables()

    def _apply_ddl(self) -> None:
        for stmt in self.schema.ladybug_ddl():
            self._execute(stmt)
        self._tables = None

    def _put_meta(self, key: str, value: str) -> None:
        self._execute("MERGE (m:Meta {id: $k}) SET m.value = $v", {"k": key, "v": value})

    def upgrade(self) -> list[str]:
        """Add the tables and columns this schema has and the store lacks; returns what was added."""
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        added = []
        existing = self.tables()
        for label, node in self.schema.nodes.items():
            if label in existing:
                cols = {r[1] for r in self._execute(f"CALL table_info('{label}') RETURN *").get_all()}
                for prop, typ in node.properties.items():
                    if prop not in cols:
                        self._execute(f"ALTER TABLE {label} ADD {prop} {typ}")
                        added.append(f"{label}.{prop}")
        for stmt, name in zip(self.schema.ladybug_ddl(), [*self.schema.nodes, *self.schema.rels], strict=True):
            if name not in existing:
                self._execute(stmt)
                added.append(name)
        self._tables = None
        self._put_meta("schema_version", str(self.schema.version))
        return added

    def drop(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        for name in list(self.schema.rels) + list(self.schema.nodes):
            if name in self.tables():
                self._execute(f"DROP TABLE {name}")
        self._tables = None

    # ------------------------------------------------------------------ writes
    def _existing_ids(self, label: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for lo in range(0, len(ids), 50_000):
            res = self._execute(
                f"UNWIND $ids AS i MATCH (n:{label} {{id: i}}) RETURN n.id", {"ids": ids[lo : lo + 50_000]}
            )
            found.update(r[0] for r in res.get_all())
        return found

    def _create_nodes(self, label: str, table: pa.Table) -> None:
        cols = table.column_names
        assign = ", ".join(f"{c}: r.{c}" for c in cols)
        for part in chunks(table, CREATE_BATCH):
            self._execute(f"UNWIND $rows AS r CREATE (:{label} {{{assign}}})", {"rows": part.to_pylist()})

    def _copy(self, table_name: str, table: pa.Table) -> None:
        if len(table):
            self._execute(f"COPY {table_name} FROM $t", {"t": table})

    @staticmethod
    def _check_unique(label: str, table: pa.Table) -> None:
        if pc.count_distinct(table.column("id")).as_py() != len(table):
            raise StoreError(f"{label}: the batch holds duplicate ids")

    def ensure_nodes(self, label: str, table: pa.Table | Mapping[str, Any]) -> int:
        self.ensure_writable()
        tbl = conform(table, self.schema.node(label).properties, label, ("id",))
        if not len(tbl):
            return 0
        ids = tbl.column("id").to_pylist()
        first: dict[str, int] = {}
        for i, k in enumerate(ids):
            first.setdefault(k, i)
        if len(first) != len(ids):
            tbl = tbl.take(pa.array(sorted(first.values())))
            ids = tbl.column("id").to_pylist()
        existing = self._existing_ids(label, ids)
        if existing:
            tbl = tbl.filter(pa.array([k not in existing for k in ids]))
        if len(tbl) <= SMALL_INSERT:
            self._create_nodes(label, tbl)
        else:
            self._copy(label, tbl)
        return len(tbl)

    def ensure_rels(self, rel: str, table: pa.Table | Mapping[str, Any]) -> int:
        self.ensure_writable()
        spec = self.schema.rel(rel)
        tbl = conform(table, spec.properties, rel, ("from", "to"))
        if not len(tbl):
            return 0
        pairs = list(zip(tbl.column("from").to_pylist(), tbl.column("to").to_pylist(), strict=True))
        res = self._execute(
            f"UNWIND $rows AS r MATCH (a:{spec.source} {{id: r.f}})-[:{rel}]->(b:{spec.target} {{id: r.t}}) "
            "RETURN a.id, b.id",
            {"rows": [{"f": f, "t": t} for f, t in pairs]},
        )
        existing = {(a, b) for a, b in res.get_all()}
        seen: set[tuple[str, str]] = set()
        keep = []
        for p in pairs:
            keep.append(p not in existing and p not in seen)
            seen.add(p)
        tbl = tbl.filter(pa.array(keep))
        self._copy(rel, tbl)
        return len(tbl)

    def _delete_run_rows(self, run_id: str) -> None:
        for label in RUN_SCOPED:
            if label in self.tables():
                self._execute(f"MATCH (n:{label}) WHERE n.run = $run DETACH DELETE n", {"run": run_id})

    def _write_run_rows(
        self, run_id: str, nodes: dict[str, pa.Table], rels: dict[str, pa.Table], rewrite: bool
    ) -> None:
        for label, tbl in nodes.items():
            self._check_unique(label, tbl)
            if rewrite or len(tbl) <= SMALL_INSERT:
                self._create_nodes(label, tbl)
            else:
                clash = self._existing_ids(label, tbl.column("id").to_pylist())
                if clash:
                    raise StoreError(
                        f"{label}: {len(clash)} ids of run {run_id} already exist (e.g. {next(iter(clash))})",
                        hint="ids are run-scoped; was the run id reused by different data?",
                    )
                self._copy(label, tbl)
        faults.reach("write:nodes")
        for name, tbl in rels.items():
            self._copy(name, tbl)

    # ------------------------------------------------------------------ reads
    def query(self, cypher: str, params: Mapping[str, Any] | None = None, write: bool = False) -> QueryResult:
        if not write and is_write_query(cypher):
            raise StoreError("this query writes to the store", hint="pass --write to allow it")
        if write and self.read_only:
            raise StoreError(f"{self.url} is open read-only")
        res = self._execute(cypher, params)
        if isinstance(res, list):  # several statements: the last one's result
            res = res[-1]
        columns = list(res.get_column_names())
        rows = []
        try:
            while res.has_next():
                rows.append([plain(v) for v in res.get_next()])
        except (RuntimeError, UnicodeDecodeError) as e:
            raise StoreError(
                f"the store returned unreadable data: {_first_line(e)}",
                hint="the database file may be damaged: run `kgexplain store check`",
            ) from e
        if write:
            self._tables = None
        return QueryResult(columns, rows)

    def fetch_table(
        self, cypher: str, params: Mapping[str, Any] | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        if is_write_query(cypher):
            raise StoreError("fetch_table() is for read queries")
        table: pa.Table = self._execute(cypher, params).get_as_arrow()
        if columns is not None and table.num_columns == len(columns):
            table = table.rename_columns(columns)
        return table
