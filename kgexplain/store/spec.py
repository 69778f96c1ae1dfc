"""How to reach a store: :class:`StoreSpec` (what ``--store``, ``--user``, ... describe) and :func:`open_store`.

A spec is plain data; ``spec.open()`` opens the store (the caller owns it and closes it, e.g. with ``with``), and
``spec.workspace()`` names its artifacts folder without opening the database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kgexplain.errors import StoreBusy, StoreError, UsageError
from kgexplain.progress import Progress, say
from kgexplain.store.base import GraphStore, QueryResult
from kgexplain.store.cypher import to_embedded_dialect
from kgexplain.store.embedded import GRAPH_FILE, EmbeddedStore
from kgexplain.store.integrity import RunCheck, check_store
from kgexplain.store.isolated import check_isolated, run_isolated
from kgexplain.workspace import Workspace, is_bolt_url, resolve_location

STORE_WAIT = 600.0  # seconds a writer waits for another process's write to the embedded store ($KGEXPLAIN_STORE_WAIT)


def store_wait() -> float:
    """How long a writer waits for the embedded store while another process writes it: ``$KGEXPLAIN_STORE_WAIT``
    seconds (0: not at all), default ``STORE_WAIT``."""
    raw = os.environ.get("KGEXPLAIN_STORE_WAIT", "").strip()
    try:
        wait = float(raw) if raw else STORE_WAIT
    except ValueError:
        wait = -1.0
    if not wait >= 0:
        raise UsageError(f"KGEXPLAIN_STORE_WAIT={raw!r} is not a number of seconds", hint="e.g. 600, or 0 not to wait")
    return wait


T = TypeVar("T")


def waiting_for_the_writer(attempt: Callable[[], T], progress: Progress | None) -> T:
    """``attempt()``, again while it finds the embedded store written by another process (``StoreBusy``), up to
    ``store_wait()`` seconds, with one status line to ``progress``."""
    wait, start, delay = store_wait(), time.monotonic(), 0.05
    deadline = start + wait
    said = False
    while True:
        try:
            return attempt()
        except StoreBusy as e:
            now = time.monotonic()
            if wait and not said:
                say(progress, f"{e.message}: waiting for it (up to {wait:g} s; KGEXPLAIN_STORE_WAIT)")
                said = True
            if now >= deadline:
                waited = f" (waited {now - start:.0f} s)" if now - start >= 1 else ""
                raise StoreBusy(
                    f"{e.message}{waited}",
                    hint="run again when it has finished, or raise KGEXPLAIN_STORE_WAIT; read-only commands "
                    "can run meanwhile",
                    pid=e.pid,
                ) from e
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, 1.0)


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


@dataclass(frozen=True)
class StoreSpec:
    """Where a store is and how to reach it.

    ``location`` is a folder (the embedded store) or ``bolt://HOST:7687`` / ``neo4j://...`` (Neo4j); ``None`` means
    ``$KGEXPLAIN_STORE`` or ``./kgexplain-store``, and ``"neo4j"`` means ``$NEO4J_URI``. Credentials default to
    ``$NEO4J_USERNAME`` / ``$NEO4J_PASSWORD``; ``artifacts`` is the Neo4j store's artifacts folder.

    Example::

        with StoreSpec("my-store").open(read_only=True) as store:
            store.query("MATCH (r:Run) RETURN r.id").records()
    """

    location: str | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    artifacts: str | None = None
    batch_size: int | None = None

    @property
    def url(self) -> str:
        """The folder or Bolt URL this spec names (environment defaults applied)."""
        return resolve_location(self.location)

    def workspace(self) -> Workspace:
        """The store's artifacts folder (data sets, caches, patches), without opening the database."""
        return Workspace.resolve(self.location, self.artifacts)

    def open(self, read_only: bool = False) -> GraphStore:
        return open_store(
            self.location,
            read_only=read_only,
            user=self.user,
            password=self.password,
            database=self.database,
            artifacts=self.workspace().artifacts,
            batch_size=self.batch_size,
        )

    def open_for_writing(self, progress: Progress | None = None) -> GraphStore:
        """Open for writing; while another process writes the embedded store (which admits one writer), wait for
        it, up to ``store_wait()`` seconds, with a status line to ``progress``."""
        return waiting_for_the_writer(lambda: self.open(read_only=False), progress)

    def read(self) -> GraphStore:
        """Open read-only a store that must exist and be at this kgexplain's schema version."""
        store = self.open(read_only=True)
        try:
            store.check_schema()
        except Exception:
            store.close()
            raise
        return store

    def query(
        self,
        cypher: str,
        params: dict[str, Any] | None = None,
        write: bool = False,
        timeout: float | None = None,
        progress: Progress | None = None,
    ) -> QueryResult:
        """A user's Cypher, read-only unless ``write``. On the embedded store it runs in a child process (an engine
        crash cannot take the store with it) in the engine's dialect (``type(r)``, ``elementId(n)``, ...
        translated; columns named as Neo4j names them), and a write waits while another process writes the store
        (``waiting_for_the_writer``, its status line to ``progress``); on Neo4j directly."""
        if is_bolt_url(self.url):
            with self.open(read_only=not write) as store:
                return store.query(cypher, params, write=write)
        if not (Path(self.url).expanduser() / GRAPH_FILE).exists():
            raise StoreError(f"no kgexplain store at {self.url}", hint="run `kgexplain build` first, or pass --store")
        query = to_embedded_dialect(cypher)
        if write:  # waits while another process writes, as jobs do
            return waiting_for_the_writer(lambda: run_isolated(self.url, query, params, write, timeout), progress)
        return run_isolated(self.url, query, params, write, timeout)

    def check(self) -> list[RunCheck]:
        """Every run checked against what it recorded when it was written (``kgexplain.store.integrity``). On the
        embedded store the check runs in a child process, so a damaged file that crashes the engine is a verdict,
        not a crash."""
        if is_bolt_url(self.url):
            with self.read() as store:
                return check_store(store)
        if not (Path(self.url).expanduser() / GRAPH_FILE).exists():
            raise StoreError(f"no kgexplain store at {self.url}", hint="run `kgexplain build` first, or pass --store")
        return check_isolated(self.url, str(self.workspace().artifacts))
