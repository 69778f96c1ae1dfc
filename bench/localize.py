"""Multi-shot part localisation with the And-Or graph vs a raw-filter AOG vs the mean position, on held-out
images of the reference workload, cropped to their boxes (the paper's protocol) or whole.

    python bench/localize.py --seed 7 --n 200 --json
        {"head": {"aog": dist, "raw_filter_aog": dist, "mean_baseline": dist, "iou50": rate}, "back": ...,
         "tail": ..., "speed_ratio": ..., "speed_ratio_paired": ...}
    python bench/localize.py --seed 7 --n 200 --whole --json
        the same keys on uncropped images, plus per part "found_rate" (images with the part on which it is
        reported found) and "background_not_found" (share of --n/2 background images on which it is not found)
    --position auto measures the leave-one-out position rule (AOGConfig.position; the default "votes" takes every
    coordinate from the votes); per part "from_prior" gives the coordinates it took from the part's place in the box,
    "loo_sse" the squared errors that decided it, and on crops "aog_votes_only" the AOG's distance with every
    coordinate from the votes (same parts and facing); --cells puts every pattern (and raw filter) at its cell's
    centre instead of refining it below the cell (the previous positions); --cosine-facings decides the examples'
    facings by their pattern strengths' cosine alone (the rule before the placement evidence, learn._facings)

With data seed S: the explanatory graph is built as `kgexplain build` does (shipped toy net, --train synthetic
images of --category cropped to their boxes, as many background images) in a temporary store; K = 3 examples are
drawn from those training images with seed S (the same three for every part and method); each part is learnt as
`kgexplain aog learn` does (templates of both facings, grown on the first two thirds of the training images, "not
found" calibrated on the rest and on the build's background images), the parts' facings aligned with the head's;
N held-out images are generated with seed S + 10000 and localised as `kgexplain localize` does, all parts sharing
one facing per image. dist is |prediction - truth| / image diagonal averaged over the held-out images (framed
image, as the paper; with --whole the whole image); iou50 the rate of IoU >= 0.5 between boxes of the part's size
centred on the prediction and on the truth. The raw-filter AOG is the same learning and voting code with each
channel's peak as the candidate; the mean baseline predicts the examples' mean part position in the frame (the box,
or with --whole the truth box: a baseline that is given the object box). speed_ratio: localisation time per image
(the forward pass, pattern inference, the votes of all three parts; with --whole also the framing: the object
search, a forward pass at 1.375x, and the detections on the box and its eight shifts, of which the best is kept)
divided by one plain forward pass of the model per image, measured in one run, each the best of --repeats passes,
the two kinds of pass alternating (one pass of 200 toy images takes 0.25 s; the machine's speed drifts by up to 1.5x
over seconds: single passes, or the passes of one kind all before those of the other, moved the ratio by up to +-0.4
between runs). The plain forward pass runs in batches of 32, its fastest batch size here (64, localisation's chunk,
is ~15 % slower for the whole model; the capture cut short after the last mined layer costs the same at 32 and 64).
speed_ratio_paired: the median over the passes of each localisation pass's time over that of the forward pass timed
just before it (less sensitive to the drift; runs of the same code still differ by up to ~0.5 in either figure).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kgexplain import BuildConfig, DataSpec, StoreSpec, run_build
from kgexplain.aog import AOGConfig, PartModel
from kgexplain.aog.detections import raw_filter_reference
from kgexplain.aog.run import Detector, FramedBatch, LoadedBuild, frame, learn_on, localise_source, score_points
from kgexplain.aog.vote import axis_names, held_by_prior
from kgexplain.data.base import Framing
from kgexplain.data.subset import Subset
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
    ap.add_argument("--whole", action="store_true", help="localise on whole images (and background images)")
    ap.add_argument("--facing", choices=["as-is", "latent"], default="as-is", help="the build's --facing")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes of localisation and of the forward pass")
    ap.add_argument(
        "--position", choices=["auto", "votes"], default=AOGConfig.position, help="AOGConfig.position (ablation)"
    )
    ap.add_argument("--cells", action="store_true", help="pattern positions at cell centres (ablation: no sub-cell)")
    ap.add_argument(
        "--cosine-facings",
        action="store_true",
        help="the examples' facings by their strengths' cosine alone (ablation: the rule before placement evidence)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        cfg = BuildConfig(
            seed=args.seed, n=args.train, category=args.category, patches=0, device="cpu", facing=args.facing
        )
        res = run_build(cfg, StoreSpec(d))
        feats = res.extraction.features
        framing = Framing(res.model.input_size, "box")
        size = framing.size
        rows = feats[res.graph.layers[0].name].indices
        pool = Subset(res.objects, rows)
        negatives = res.negatives
        miner = ExplanatoryGraphMiner(EGConfig.from_dict(res.graph.config), device="cpu")
        builds = {
            name: LoadedBuild(res.run, res.model.identity, {}, res.model, res.graph, framing, det)
            for name, det in {
                "aog": Detector(res.model, res.graph, miner, "cpu", sub_cell=not args.cells),
                "raw_filter_aog": Detector(
                    res.model, res.graph, miner, "cpu", raw=raw_filter_reference(feats), sub_cell=not args.cells
                ),
            }.items()
        }
        test_src = DataSpec(n=args.n, seed=args.seed + 10_000, categories=(args.category,)).open(Path(d) / "test")
        background = None
        if args.whole:
            background = DataSpec(n=max(1, args.n // 2), seed=args.seed + 20_000, categories=("background",)).open(
                Path(d) / "background"
            )
        rng = np.random.default_rng(args.seed)
        ex = np.sort(rng.choice(len(pool), args.k, replace=False))
        examples = FramedBatch.of([framing.apply(pool, int(i), with_mask=False) for i in ex])
        out: dict[str, dict[str, float]] = {p: {} for p in PARTS}
        timings: dict[str, float] = {}
        images = frame(test_src, range(len(test_src)), framing).images  # what the plain forward pass is timed on
        forward: list[float] = []
        paired: list[float] = []  # each localisation pass over the forward pass timed just before it
        for name, build in builds.items():
            models: list[PartModel] = []
            for part in PARTS:
                centres = np.array([examples.keypoints[i][part] for i in range(len(ex))])
                aog = AOGConfig(position=args.position)
                if args.cosine_facings:  # no placement evidence reaches an infinite margin
                    aog = replace(aog, facing_margin=float("inf"))
                learnt = learn_on(build, part, args.category, examples, centres, pool, aog, negatives, models)
                models.append(learnt.part)
            # Crops: detection and votes (framing decodes and crops, as before); whole: also the object search.
            # The best of --repeats passes (the same results each time), each right after a plain forward pass, so
            # that the machine's speed, which drifts over seconds here, is the same for both.
            seconds = []
            for _ in range(args.repeats if name == "aog" else 1):
                if name == "aog":
                    forward.append(forward_seconds(res.model, images, 32))
                found, split = localise_source(build, models, test_src, whole=args.whole)
                seconds.append(split["detect_s"] + split["vote_s"] + (split["frame_s"] if args.whole else 0.0))
            timings[name] = min(seconds)
            if name == "aog":
                paired = [s / f for s, f in zip(seconds, forward, strict=True)]
            votes_only = None  # the same parts with every coordinate from the votes (crops; where some were held)
            if name == "aog" and not args.whole and any(held_by_prior(m).any() for m in models):
                plain = [replace(m, config=replace(m.config, position="votes")) for m in models]
                votes_only, _ = localise_source(build, plain, test_src)
            gone = None
            if background is not None:
                gone, _ = localise_source(build, models, background, whole=True)
            for model in models:
                locs = found[model.name]
                if args.whole:  # source pixels = the whole image
                    pred = np.array([[f.result["x"], f.result["y"]] for f in locs])
                    truth = np.array(
                        [test_src.record(i).keypoints.get(model.name, (np.nan, np.nan)) for i in range(len(test_src))]
                    )
                    w, h = test_src.image_size(0)
                    scale = size / max(w, h)
                    pred, truth = pred * scale, truth * scale
                else:
                    pred = np.array([[f.loc.x, f.loc.y] for f in locs])
                    truth = np.array(
                        [framing.keypoints(test_src, i).get(model.name, (np.nan, np.nan)) for i in range(len(test_src))]
                    )
                sc = score_points(pred, truth, size, model.box)
                out[model.name][name] = round(sc.distance, 4)
                if name != "aog":
                    continue
                out[model.name]["iou50"] = round(sc.iou50, 3)
                out[model.name]["from_prior"] = axis_names(held_by_prior(model))
                out[model.name]["loo_sse"] = model.prior.get("loo_sse")
                if not args.whole:
                    alone = pred
                    if votes_only is not None:
                        alone = np.array([[f.loc.x, f.loc.y] for f in votes_only[model.name]])
                    out[model.name]["aog_votes_only"] = round(score_points(alone, truth, size, model.box).distance, 4)
                centres = np.array([examples.keypoints[i][model.name] for i in range(len(ex))]).mean(0)
                if args.whole:  # the examples' mean position in the box, placed in each image's truth box
                    boxes = np.array([test_src.record(i).box for i in range(len(test_src))], np.float64) * scale
                    mean_pred = boxes[:, :2] + (centres + 0.5)[None] / size * (boxes[:, 2:] - boxes[:, :2]) - 0.5
                else:
                    mean_pred = np.tile(centres, (len(truth), 1))
                out[model.name]["mean_baseline"] = round(score_points(mean_pred, truth, size, model.box).distance, 4)
                out[model.name]["found_rate"] = round(float(np.mean([f.loc.found for f in locs])), 3)
                if gone is not None:
                    out[model.name]["background_not_found"] = round(
                        float(np.mean([not f.loc.found for f in gone[model.name]])), 3
                    )
        fwd = min(forward)
        result: dict[str, object] = dict(out)
        result["speed_ratio"] = round(timings["aog"] / fwd, 2)
        result["speed_ratio_paired"] = round(float(np.median(paired)), 2)
        result["forward_ms_per_image"] = round(1000 * fwd / len(images), 3)
        result["localise_ms_per_image"] = round(1000 * timings["aog"] / len(images), 3)
        result["seed"], result["n"], result["k"], result["whole"] = args.seed, len(images), args.k, args.whole
        result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
