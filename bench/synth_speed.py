"""Throughput of the synthetic data generator.

python bench/synth_speed.py --json            # {"images_per_s": ...} at 224 px, in memory, one process
python bench/synth_speed.py --workers 2 --write /tmp/synth   # also PNG writing with 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

from kgexplain.data.synth import CATEGORIES, render, write_synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=700, help="images to render")
    ap.add_argument("--size", type=int, default=224, help="image size in pixels")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--workers", type=int, default=1, help="processes for the written data set (with --write)")
    ap.add_argument("--write", action="store_true", help="also time writing PNGs + annotations to a temp folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    render(args.seed, 0, CATEGORIES[0], args.size)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    for i in range(args.n):
        render(args.seed, i, CATEGORIES[i % len(CATEGORIES)], args.size)
    seconds = time.perf_counter() - t0
    result: dict[str, object] = {
        "images_per_s": round(args.n / seconds, 1),
        "n": args.n,
        "size": args.size,
        "seconds": round(seconds, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    if args.write:
        out = tempfile.mkdtemp(prefix="kgx-synth-")
        try:
            t0 = time.perf_counter()
            write_synth(out, args.n, args.seed, args.size, workers=args.workers)
            w = time.perf_counter() - t0
            result["written_images_per_s"] = round(args.n / w, 1)
            result["write_workers"] = args.workers
        finally:
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
