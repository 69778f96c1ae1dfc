"""Mining speed: explanatory-graph mining time / feature-extraction time of the same images, in one run.

    python bench/mining_speed.py --json [--toy-n N] [--skip-vgg16]
        {"toy_ratio": ..., "vgg16_ratio": ..., "vgg16_peak_mb": ..., ...}

* toy: the reference workload (N synthetic birds cropped to their boxes, as many background images for the
  normalisation) with the shipped toy net; 4 layers, 4,288 patterns.
* vgg16: VGG-16 with random weights (timing only) on 100 synthetic 224-px images; the paper's 4 layers and
  61,440 patterns. Run in a child process whose peak resident memory is reported (model, features and mining).

Mining = fit_infer: EM, parent selection and the inference on the same images (the fit's last pass, what
`kgexplain build` runs). A separate `infer` over the same images (what `localize` and cached graphs cost) is
reported as infer_s. Extraction = a fresh forward pass over the same images (decoding included, no cache). The
fused CPU kernel is compiled before timing (numba caches it on disk, so this is a one-time cost per installation;
it is reported as compile_s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from typing import Any

import torch


def _time_extraction(handle: Any, source: Any, layers: list[str], framing: Any, device: str) -> float:
    from kgexplain.features import extract_features

    t = time.perf_counter()
    extract_features(handle, source, layers, framing=framing, device=device)
    return time.perf_counter() - t


def _mine(handle: Any, source: Any, negatives: Any, framing: Any, device: str, workdir: str) -> dict[str, float]:
    from kgexplain.data import Framing
    from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraphMiner
    from kgexplain.features import extract_features

    cfg = EGConfig().with_model_defaults(handle.name, handle.default_layers)
    layers = list(cfg.layers)
    feats = extract_features(handle, source, layers, framing=framing, device=device, cache_dir=workdir).features
    neg = extract_features(
        handle, negatives, layers, framing=Framing(framing.size), device=device, cache_dir=workdir
    ).features
    extraction = _time_extraction(handle, source, layers, framing, device)
    miner = ExplanatoryGraphMiner(cfg, device=device)
    t = time.perf_counter()
    graph, _ = miner.fit_infer(feats, neg, model=handle.identity)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    miner.infer(graph, feats)
    infer = time.perf_counter() - t
    return {
        "extraction_s": extraction,
        "fit_s": fit,
        "infer_s": infer,
        "mining_s": fit,
        "patterns": graph.patterns,
        "edges": graph.edges,
        "images": len(source),
    }


def warm_kernel() -> float:
    """Compile (or load from numba's disk cache) the fused kernel outside the timed region."""
    from kgexplain.explanatory_graph.estep import Grid, e_step_numba

    t = time.perf_counter()
    f = torch.zeros(1, 1, 4, 4)
    mu = torch.zeros(2, 2)
    up = (
        torch.zeros(2, 1, dtype=torch.long),
        torch.zeros(1, 1, 2),
        torch.ones(1, 1),
        torch.zeros(1, 2),
        torch.ones(2, 1),
        torch.ones(2, 1),
        torch.ones(2),
    )  # parent index (P, M), positions, scores, mu, edge weights (P, M) of the shift and of the agreement, gain (P,)
    for with_stats in (True, False):
        e_step_numba(f, mu, torch.ones(2), 2, Grid(4, 4, 1, 1, 0, 0, 1), 0.1, with_stats, up, 1.0)
        e_step_numba(f, mu, torch.ones(2), 2, Grid(4, 4, 1, 1, 0, 0, 1), 0.1, with_stats, None, 1.0)
    return time.perf_counter() - t


def _written(n_objects: int, n_negatives: int, seed: int, size: int, folder: str) -> tuple[Any, Any]:
    """The synthetic images as PNG files with annotations, read back as `kgexplain build` reads them."""
    from kgexplain.data import Subset
    from kgexplain.data.synth import write_synth

    both = write_synth(
        os.path.join(folder, "data"), 2 * max(n_objects, n_negatives), seed, size, ["bird", "background"]
    )
    objects = Subset(Subset.by_label(both, ["bird"]), range(n_objects))
    negatives = Subset(Subset.by_label(both, ["background"]), range(n_negatives))
    return objects, negatives


def toy(n: int, seed: int, device: str) -> dict[str, float]:
    from kgexplain.data import Framing
    from kgexplain.models import load_model

    handle = load_model("toynet")
    with tempfile.TemporaryDirectory() as d:
        objects, negatives = _written(n, n, seed, handle.input_size, d)
        return _mine(handle, objects, negatives, Framing(handle.input_size, "box"), device, d)


def _vgg_child(conn: Any, n: int, seed: int, device: str) -> None:
    try:
        from kgexplain.data import Framing
        from kgexplain.models import load_model

        warm_kernel()
        handle = load_model("vgg16", "none")
        with tempfile.TemporaryDirectory() as d:
            objects, negatives = _written(n, 50, seed, 224, d)
            out: dict[str, Any] = _mine(handle, objects, negatives, Framing(224, "box"), device, d)
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(out)
    except BaseException as e:  # report, never leave the parent waiting
        conn.send({"error": f"{type(e).__name__}: {e}"})
        raise


def vgg16(n: int, seed: int, device: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_vgg_child, args=(child, n, seed, device))
    p.start()
    child.close()
    try:
        out: dict[str, Any] = parent.recv()
    except EOFError:
        out = {"error": f"the VGG-16 run died (exit code {p.exitcode}; out of memory?)"}
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy-n", "--n", dest="n", type=int, default=300, help="toy workload: object images")
    ap.add_argument("--vgg-n", type=int, default=100, help="VGG-16: object images")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-vgg16", "--skip-vgg", dest="skip_vgg", action="store_true", help="time the toy net only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    compile_s = warm_kernel()
    t = toy(args.n, args.seed, args.device)
    result: dict[str, Any] = {
        "toy_ratio": round(t["mining_s"] / t["extraction_s"], 2),
        "toy": {k: round(v, 3) if isinstance(v, float) else v for k, v in t.items()},
        "compile_s": round(compile_s, 2),
        "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    if not args.skip_vgg:
        v = vgg16(args.vgg_n, args.seed, args.device)
        if "error" in v:
            result["vgg16_error"] = v["error"]
        else:
            result["vgg16_ratio"] = round(v["mining_s"] / v["extraction_s"], 2)
            result["vgg16_peak_mb"] = round(v["peak_mb"])
            result["vgg16"] = {k: round(x, 3) if isinstance(x, float) else x for k, x in v.items()}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
