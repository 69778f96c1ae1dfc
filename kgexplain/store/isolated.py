"""Run a user's Cypher against the embedded store in a child process.

The embedded engine can crash the interpreter on some queries (``RETURN cost(p)`` on a weighted shortest path
segfaults, for instance). The CLI therefore runs users' queries here: a crash kills only the child, the store
stays as it was (a read opens it read-only; a write's committed data is kept by the engine's WAL), and the user
gets a one-line error instead of a dead terminal.

Protocol: JSON on stdin ``{"location", "query", "params", "write", "artifacts"}``; JSON on stdout
``{"columns", "rows"}`` or ``{"error", "hint"}``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from kgexplain.errors import StoreError
from kgexplain.store.base import QueryResult
from kgexplain.store.embedded import EmbeddedStore


def run_isolated(
    location: str, query: str, params: dict[str, Any] | None = None, write: bool = False, timeout: float | None = None
) -> QueryResult:
    payload = json.dumps({"location": location, "query": query, "params": params or {}, "write": write})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kgexplain.store.isolated"],
            input=payload,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise StoreError(f"the query ran longer than {timeout:g} s and was stopped", hint="add a LIMIT") from e
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        state = "committed writes are kept, the rest rolled back" if write else "the store is unchanged"
        raise StoreError(
            f"the query crashed the embedded database engine ({sig}); {state}",
            hint="this is an engine bug: rephrase the query (e.g. avoid cost() on WSHORTEST paths)",
        )
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as e:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise StoreError(f"the query process failed: {detail}") from e
    if "error" in out:
        raise StoreError(out["error"], hint=out.get("hint"))
    return QueryResult(out["columns"], out["rows"])


def main() -> int:
    req = json.loads(sys.stdin.read())
    try:
        with EmbeddedStore(req["location"], read_only=not req["write"]) as store:
            res = store.query(req["query"], req["params"], write=req["write"])
        print(json.dumps({"columns": res.columns, "rows": res.rows}, default=str))
    except StoreError as e:
        print(json.dumps({"error": e.message, "hint": e.hint}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
