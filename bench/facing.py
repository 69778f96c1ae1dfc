"""Mining with the object's facing as a latent variable per image: does it make patterns more stable?

    python bench/facing.py --seed 11 --n 300 --json
        {"original": {"ratio": ..., "per_layer": {...}}, "oracle": {...}, "chosen": {...},
         "chosen_agreement": ..., "seed": ..., "n": ...}

Issue 15 asks whether mining should treat the facing as one latent variable per image (the authors' intent; their
doFlipConfiguration is a no-op through a bug). Three builds on the same reference workload (N synthetic birds of data
seed S cropped to their boxes, N background images, the shipped toy net; written to files and read back as an
annotations file, so every build goes through `kgexplain build`'s code):

* original: the images as they are (the default build; the same figures as bench/stability.py);
* oracle: each bird mirrored where it faces the other way from the first facing (the generator's pose), so every
  bird faces the same way: what knowing the latent facing would give at best;
* chosen: the facing decided from the data by the original build's graph: each image is kept or mirrored, whichever
  the graph explains better (the sum of its top-layer patterns' inference scores, on the image and on its mirror),
  and the graph mined again on the chosen images. ``chosen_agreement``: the share of images whose choice agrees
  with the oracle's (up to one global flip, which is the same facing).

A mirrored image's box and keypoints are mirrored with it; distances are unchanged by a mirror, so the location
stability (ratio of patterns to raw filter peaks, paper §4.4) is measured the same way on all three.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from kgexplain import BuildConfig, DataSpec, StoreSpec, run_build
from kgexplain.data import Framing
from kgexplain.data.synth import write_synth
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraphMiner
from kgexplain.features import extract_features


def mirrored_set(ann: Path, flip: dict[int, bool], out: Path) -> Path:
    """A copy of annotations ``ann`` with the images whose index is True in ``flip`` mirrored (box and keypoints
    too; masks dropped: the build does not read them)."""
    data = json.loads(ann.read_text())
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for rec in data["images"]:
        src = ann.parent / rec["path"]
        rec = {k: v for k, v in rec.items() if k != "mask"}
        target = out / rec["path"]
        if flip.get(int(rec["index"]), False):
            with Image.open(src) as img:
                w = img.width
                ImageOps.mirror(img).save(target)
            x0, y0, x1, y1 = rec["box"]
            rec["box"] = [w - x1, y0, w - x0, y1]  # pixel edges
            rec["keypoints"] = {k: [w - 1 - x, y] for k, (x, y) in rec["keypoints"].items()}  # pixel indices
        else:
            target.write_bytes(src.read_bytes())
        images.append(rec)
    path = out / "annotations.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if k not in ("images", "synth")} | {"images": images}))
    return path


def build(ann: Path, store: Path) -> Any:
    birds = DataSpec(annotations=str(ann), labels=("bird",), crop="box")
    background = DataSpec(annotations=str(ann), labels=("background",))
    return run_build(BuildConfig(data=birds, negatives=background, patches=0), StoreSpec(str(store)))


def figures(res: Any) -> dict[str, Any]:
    st = res.stability
    return {"ratio": round(st["ratio"], 3), "per_layer": {k: round(v, 3) for k, v in st["per_layer"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=1, help="choose, mine again, choose again ... (R >= 1)")
    ap.add_argument("--decide", choices=["top", "all"], default="top", help="the layers whose scores choose")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_synth(root / "data", 2 * args.n, args.seed, 128, ["bird", "background"])
        ann = root / "data" / "annotations.json"
        recs = [r for r in json.loads(ann.read_text())["images"] if r["label"] == "bird"]
        original = build(ann, root / "s0")
        facing = {int(r["index"]): r["pose"]["flip"] < 0 for r in recs}
        oracle = build(mirrored_set(ann, facing, root / "oracle"), root / "s1")
        # The graph's own choice: each bird kept or mirrored, whichever its patterns score higher on; with --rounds
        # R > 1 the graph mined on the chosen images chooses again.
        everything = mirrored_set(ann, {int(r["index"]): True for r in recs}, root / "mirror")
        framing = Framing(128, "box")
        layers = [lp.name for lp in original.graph.layers]
        feats = {
            name: extract_features(
                original.model, DataSpec(annotations=str(a), labels=("bird",), crop="box").open(root / "ws"), layers,
                framing=framing,
            ).features
            for name, a in (("image", ann), ("mirror", everything))
        }  # fmt: skip
        graph = original.graph
        picked = original
        rounds = []
        for _ in range(args.rounds):
            miner = ExplanatoryGraphMiner(EGConfig.from_dict(graph.config), device="cpu")
            use = layers[-1:] if args.decide == "top" else layers
            score = {}
            for name, fs in feats.items():
                inf = miner.infer(graph, fs)
                score[name] = sum(inf.layers[n].score.sum(1) for n in use)
            chosen = {
                int(r["index"]): bool(m > o) for r, m, o in zip(recs, score["mirror"], score["image"], strict=True)
            }
            agree = float(np.mean([chosen[int(r["index"])] == facing[int(r["index"])] for r in recs]))
            picked = build(mirrored_set(ann, chosen, root / f"chosen{len(rounds)}"), root / f"s{2 + len(rounds)}")
            graph = picked.graph
            rounds.append({"agreement": round(max(agree, 1 - agree), 3), **figures(picked)})
    out = {
        "original": figures(original),
        "oracle": figures(oracle),
        "chosen": figures(picked),
        "chosen_agreement": rounds[-1]["agreement"],
        "rounds": rounds,
        "decide": args.decide,
        "seed": args.seed,
        "n": args.n,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
