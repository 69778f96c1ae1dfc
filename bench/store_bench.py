"""Store benchmark: write a VGG-16-scale explanatory graph, then time look-ups and co-activation paths.

    python bench/store_bench.py --json
        {"write_s": ..., "lookup_p95_ms": ..., "paths_p95_ms": ..., "rows": ...}   (embedded store)
    python bench/store_bench.py --neo4j bolt://localhost:7687 --batch-sizes 500,2000,5000 --scale small
        Neo4j write throughput (rows/s) per batch size (needs a server; credentials from NEO4J_*)

The graph is random with the paper's shape (61,440 patterns, 921,600 parent edges, 614,400 top inferences);
look-ups fetch a pattern and its parents; paths are the 5 best 3-hop co-activation paths from a bottom-layer
pattern (`kgexplain paths P --max-hops 3 --k 5`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from kgexplain.store import open_store
from kgexplain.store.graph import best_paths
from kgexplain.store.sample_graph import Shape, sample_graph, small, vgg16_scale

LOOKUP = "MATCH (p:Pattern) WHERE p.id = $id RETURN p.id, p.layer, p.filter, p.mu_x, p.mu_y, p.sigma, p.score"
PARENTS = (
    "MATCH (p:Pattern)-[e:PARENT]->(q:Pattern) WHERE p.id = $id "
    "RETURN q.id, e.dx, e.dy, e.sigma, e.weight ORDER BY e.weight DESC"
)


def p95(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, 95))


def embedded(shape: Shape, seed: int, lookups: int, paths: int) -> dict[str, object]:
    g = sample_graph(shape, seed)
    folder = tempfile.mkdtemp(prefix="kgx-store-bench-")
    try:
        with open_store(folder) as store:
            t0 = time.perf_counter()
            g.write(store)
            write_s = time.perf_counter() - t0
        with open_store(folder, read_only=True) as store:
            rng = np.random.default_rng(seed + 1)
            ids = g.nodes["Pattern"].column("id").to_pylist()
            bottom = [i for i in ids if f"/{shape.layers[0][0]}/" in i]
            times = []
            for pid in rng.choice(ids, lookups):
                t = time.perf_counter()
                _ = store.query(LOOKUP, {"id": pid}).rows
                _ = store.query(PARENTS, {"id": pid}).rows
                times.append(time.perf_counter() - t)
            path_times = []
            for pid in rng.choice(bottom, paths):
                t = time.perf_counter()
                best_paths(store, str(pid), max_hops=3, k=5)
                path_times.append(time.perf_counter() - t)
        size = os.path.getsize(os.path.join(folder, "graph.lbdb"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "write_s": round(write_s, 2),
        "lookup_p95_ms": round(p95(times), 2),
        "paths_p95_ms": round(p95(path_times), 2),
        "rows": g.rows,
        "patterns": len(g.nodes["Pattern"]),
        "parent_edges": len(g.rels["PARENT"]),
        "top_inferences": len(g.rels["FIRES_ON"]),
        "db_megabytes": round(size / 1e6, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def neo4j(url: str, shape: Shape, seed: int, batch_sizes: list[int]) -> dict[str, object]:
    out: dict[str, object] = {}
    for bs in batch_sizes:
        g = sample_graph(shape, seed, run_name=f"bench-{bs}")
        with open_store(url, batch_size=bs, artifacts=tempfile.mkdtemp(prefix="kgx-art-")) as store:
            t0 = time.perf_counter()
            g.write(store)
            s = time.perf_counter() - t0
            store.delete_run(g.run.id)
        out[str(bs)] = {"rows_per_s": round(g.rows / s), "seconds": round(s, 2), "rows": g.rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["vgg16", "small"], default="vgg16")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--neo4j", default=None, metavar="URL", help="also measure Neo4j write throughput")
    ap.add_argument("--batch-sizes", default="500,2000,5000")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shape = vgg16_scale() if args.scale == "vgg16" else small()
    result = embedded(shape, args.seed, args.lookups, args.paths)
    if args.neo4j:
        result["neo4j"] = neo4j(args.neo4j, shape, args.seed, [int(b) for b in args.batch_sizes.split(",")])
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
