"""Browser latency on a VGG-16-scale store: how fast `kgexplain serve` answers the index, pattern, run and image pages.

    python bench/serve_bench.py --json
        {"pattern_page_p95_ms": ..., "image_page_p95_ms": ..., "index_ms": ..., "pattern_page_p50_ms": ...,
         "run_page_p95_ms": ..., "patterns": ...}

(`python bench/web.py`, the earlier name, runs this script.)

The store is the random graph with the paper's shape (bench/store_bench.py: 61,440 patterns, 921,600 parent edges,
614,400 top inferences), embedded, written once into a temporary folder. Each figure times whole HTTP requests
(Starlette's test client: routing, the store's queries, the template) for --requests random pages of that kind,
seeded by --seed; the first request of each kind is a warm-up and not counted. ``index_ms`` is the median of
--index-requests requests of the index page (the store's runs and its counts over the whole store).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from kgexplain.store import StoreSpec, open_store
from kgexplain.store.sample_graph import sample_graph, small, vgg16_scale
from kgexplain.web.serve import make_app
from kgexplain.web.site import href


def timed(client: TestClient, paths: list[str]) -> list[float]:
    client.get(paths[0])  # warm-up
    out = []
    for p in paths:
        t = time.perf_counter()
        r = client.get(p)
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"{p}: HTTP {r.status_code}")
    return out


def ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["vgg16", "small"], default="vgg16")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--index-requests", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shape = vgg16_scale() if args.scale == "vgg16" else small()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "store"
        sg = sample_graph(shape, seed=args.seed)
        t = time.perf_counter()
        with open_store(path) as s:
            sg.write(s)
        write_s = time.perf_counter() - t
        ids = sg.nodes["Pattern"].column("id").to_pylist()
        images = sg.shared_nodes["Image"].column("id").to_pylist()
        with StoreSpec(str(path)).read() as db, TestClient(make_app(db)) as client:
            pats = timed(client, ["/" + href("patterns", ids[i]) for i in rng.integers(0, len(ids), args.requests)])
            runs = timed(client, ["/" + href("runs", sg.run.id, int(p)) for p in rng.integers(0, 20, 20)])
            imgs = timed(client, ["/" + href("images", images[i]) for i in rng.integers(0, len(images), 50)])
            index = timed(client, ["/"] * max(1, args.index_requests))
    out = {
        "pattern_page_p95_ms": ms(pats, 95),
        "image_page_p95_ms": ms(imgs, 95),
        "index_ms": ms(index, 50),
        "pattern_page_p50_ms": ms(pats, 50),
        "run_page_p95_ms": ms(runs, 95),
        "patterns": len(ids),
        "edges": len(sg.rels["PARENT"]),
        "write_s": round(write_s, 1),
        "requests": args.requests,
        "scale": args.scale,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
