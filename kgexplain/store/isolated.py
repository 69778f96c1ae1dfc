"""Run work on the embedded store in a child process: a user's Cypher, or the integrity check.

The embedded engine can crash the interpreter on some queries (``RETURN cost(p)`` on a weighted shortest path
segfaults, for instance) and on a damaged database file. The CLI therefore runs users' queries and ``store check``
here: a crash kills only the child, the store stays as it was (a read opens it read-only; a write's committed data
is kept by the engine's WAL), and the user gets a one-line error instead of a dead terminal.

Protocol: JSON on stdin ``{"op": "query", "location", "query", "params", "write"}`` or ``{"op": "check",
"location"}``; JSON on stdout ``{"columns", "rows"}``, ``{"runs": [...]}`` or ``{"error", "hint"}``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from kgexplain.errors import StoreBusy, StoreError
from kgexplain.store.base import QueryResult
from kgexplain.store.embedded import EmbeddedStore
from kgexplain.store.integrity import RunCheck, check_store


class EngineCrash(StoreError):
    """The child process running the work died from a signal."""


def _run_child(request: dict[str, Any], timeout: float | None, write: bool) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kgexplain.store.isolated"],
            input=json.dumps(request),
            text=True,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise StoreError(f"the query ran longer than {timeout:g} s and was stopped", hint="add a LIMIT") from e
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        state = "committed writes are kept, the rest rolled back" if write else "the store is unchanged"
        raise EngineCrash(
            f"the {request['op']} crashed the embedded database engine ({sig}); {state}",
            hint="this is an engine bug: rephrase the query (e.g. avoid cost() on WSHORTEST paths)"
            if request["op"] == "query"
            else "the database file is damaged: see README 'Reliability'",
        )
    try:
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as e:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise StoreError(f"the {request['op']} process failed: {detail}") from e
    if "error" in out:
        if out.get("busy"):  # another process writes the store: the caller may wait for it
            raise StoreBusy(out["error"], hint=out.get("hint"), pid=out.get("pid"))
        raise StoreError(out["error"], hint=out.get("hint"))
    return out


def run_isolated(
    location: str, query: str, params: dict[str, Any] | None = None, write: bool = False, timeout: float | None = None
) -> QueryResult:
    """A user's Cypher on the embedded store at ``location``, in a child process."""
    request = {"op": "query", "location": location, "query": query, "params": params or {}, "write": write}
    out = _run_child(request, timeout, write)
    return QueryResult(out["columns"], out["rows"])


def check_isolated(location: str, artifacts: str | None = None) -> list[RunCheck]:
    """:func:`~kgexplain.store.integrity.check_store` on the embedded store at ``location`` (its files under
    ``artifacts``, default the store's own folder), in a child process; an engine crash while reading is itself a
    verdict: the store is damaged."""
    try:
        out = _run_child({"op": "check", "location": location, "artifacts": artifacts}, None, False)
    except EngineCrash as e:
        return [RunCheck("(store)", "", "damaged", [e.message])]
    return [RunCheck(**r) for r in out["runs"]]


def _check(location: str, artifacts: str | None = None) -> list[RunCheck]:
    try:
        store = EmbeddedStore(location, read_only=True, artifacts=artifacts)
    except StoreError as e:
        if "corrupt" not in e.message.lower() and "damaged" not in e.message.lower():
            raise
        return [RunCheck("(store)", "", "damaged", [e.message])]  # the file cannot even be opened
    with store:
        store.check_schema()
        return check_store(store)


def main() -> int:
    req = json.loads(sys.stdin.read())
    try:
        if req["op"] == "check":
            print(json.dumps({"runs": [r.to_dict() for r in _check(req["location"], req.get("artifacts"))]}))
        else:
            with EmbeddedStore(req["location"], read_only=not req["write"]) as store:
                res = store.query(req["query"], req["params"], write=req["write"])
            print(json.dumps({"columns": res.columns, "rows": res.rows}, default=str))
    except StoreBusy as e:
        print(json.dumps({"error": e.message, "hint": e.hint, "busy": True, "pid": e.pid}))
    except StoreError as e:
        print(json.dumps({"error": e.message, "hint": e.hint}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
