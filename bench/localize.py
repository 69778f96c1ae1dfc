"""Multi-shot part localisation with the And-Or graph vs a raw-filter AOG vs the mean position, on held-out
images of the reference workload.

    python bench/localize.py --seed 7 --n 200 --json
        {"head": {"aog": dist, "raw_filter_aog": dist, "mean_baseline": dist, "iou50": rate}, "back": ...,
         "tail": ..., "speed_ratio": ...}

With data seed S: the explanatory graph is built as `kgexplain build` does (shipped toy net, --train synthetic
images of --category cropped to their boxes, as many background images) in a temporary store; K = 3 examples
are drawn from those training images with seed S (the same three for every part and method); N held-out images
are generated with seed S + 10000. dist is |prediction - truth| / image diagonal averaged over the held-out
images (framed image, as the paper); iou50 the rate of IoU >= 0.5 between boxes of the part's size centred on
the prediction and on the truth. The raw-filter AOG is the same learning and voting code with each channel's
peak as the candidate; the mean baseline predicts the examples' mean part position relative to the object box.
speed_ratio: localisation time per image (forward of the image and its mirror, pattern inference, votes)
divided by one plain forward pass of the model per image, measured in one run at the same batch size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kgexplain import BuildConfig, DataSpec, StoreSpec, run_build
from kgexplain.aog import AOGConfig, learn_part, localise
from kgexplain.aog.detections import raw_filter_reference
from kgexplain.aog.run import Detector, frame, score_points
from kgexplain.data.base import Framing
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraphMiner
from kgexplain.features.extract import normalise

PARTS = ("head", "back", "tail")


def forward_seconds(handle, images: np.ndarray, batch: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(images), batch):
            handle.module(normalise(torch.from_numpy(np.ascontiguousarray(images[lo : lo + batch])), handle))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=200, help="held-out test images")
    ap.add_argument("--train", type=int, default=300, help="images the graph is mined on")
    ap.add_argument("--k", type=int, default=3, help="annotated examples per part")
    ap.add_argument("--category", default="bird")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        cfg = BuildConfig(seed=args.seed, n=args.train, category=args.category, patches=0, device="cpu")
        res = run_build(cfg, StoreSpec(d))
        feats = res.extraction.features
        framing = Framing(res.model.input_size, "box")
        size = framing.size
        rows = feats[res.graph.layers[0].name].indices
        miner = ExplanatoryGraphMiner(EGConfig.from_dict(res.graph.config), device="cpu")
        detectors = {
            "aog": Detector(res.model, res.graph, miner, "cpu"),
            "raw_filter_aog": Detector(res.model, res.graph, miner, "cpu", raw=raw_filter_reference(feats)),
        }
        train = frame(res.objects, rows, framing)
        test_src = DataSpec(n=args.n, seed=args.seed + 10_000, categories=(args.category,)).open(Path(d) / "test")
        test = frame(test_src, range(len(test_src)), framing)
        rng = np.random.default_rng(args.seed)
        ex = np.sort(rng.choice(len(rows), args.k, replace=False))
        out: dict[str, object] = {p: {} for p in PARTS}
        timings: dict[str, float] = {}
        for name, det in detectors.items():
            t = time.perf_counter()
            d_train, d_train_f = det.both(train)
            t_test = time.perf_counter()
            d_test, d_test_f = det.both(test)
            timings[f"{name}_detect_s"] = time.perf_counter() - t_test
            for part in PARTS:
                centres = np.array([train.keypoints[i][part] for i in ex])
                model = learn_part(
                    part,
                    args.category,
                    d_train.rows(ex),
                    centres,
                    [train.ids[i] for i in ex],
                    size,
                    config=AOGConfig(),
                    unlabelled=d_train,
                    unlabelled_flipped=d_train_f,
                )
                tv = time.perf_counter()
                locs = localise(d_test, model, d_test_f)
                timings[f"{name}_vote_{part}_s"] = time.perf_counter() - tv
                truth = np.array([k.get(part, (np.nan, np.nan)) for k in test.keypoints])
                sc = score_points(np.array([[loc.x, loc.y] for loc in locs]), truth, size, model.box)
                out[part][name] = round(sc.distance, 4)  # type: ignore[index]
                if name == "aog":
                    out[part]["iou50"] = round(sc.iou50, 3)  # type: ignore[index]
                    mean = score_points(np.tile(centres.mean(0), (len(truth), 1)), truth, size, model.box)
                    out[part]["mean_baseline"] = round(mean.distance, 4)  # type: ignore[index]
            timings[f"{name}_total_s"] = time.perf_counter() - t
        fwd = forward_seconds(res.model, test.images, 32)
        loc_s = timings["aog_detect_s"] + timings["aog_vote_head_s"]
        out["speed_ratio"] = round(loc_s / fwd, 2)
        out["forward_ms_per_image"] = round(1000 * fwd / len(test.images), 3)
        out["localise_ms_per_image"] = round(1000 * loc_s / len(test.images), 3)
        out["seed"], out["n"], out["k"] = args.seed, len(test.images), args.k
        out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
