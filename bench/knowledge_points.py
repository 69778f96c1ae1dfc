"""Knowledge points on the reference workload (toy net): sample embedding, importance, counts through training.

    python bench/knowledge_points.py --seed 0 --n 200 --json
        {"corr_norm_entropy": ..., "corr_pca": ..., "corr_importance_strength": ..., "reliable_ratio": {layer: r},
         "kp_by_checkpoint": [...], "seconds_per_layer": ...}

With seed S: N synthetic object images (data seed S, the six animals, whole image) and fit seed S.
- temperature: the T the sample embedding was fitted at (--temperature, default 4 as the authors' code).
- corr_entropy_fitted_t: Pearson(|g|, entropy of softmax(z / T)) at that T (the paper's Table 1 as the authors
  measure it); corr_norm_entropy: the same against the T = 1 entropy; corr_pca the same for |PCA to d' = 3| of the
  same sample features (T = 1; corr_pca_fitted_t at T). Extras under sample_correlations: log entropy and the
  Spearman rank correlations at both temperatures (the toy net is so confident that the T = 1 entropy is ~0 for most
  images; see README).
- corr_h_shapley / corr_w_shapley: mean over images of Pearson(|h^(r)|, phi^(r)) and Pearson(w^(r), phi^(r)) at the
  last layer, phi the exact Shapley value of each region for the predicted logit (the toy net's head is global
  average pooling then one linear layer, so phi_r = W_c . f_r / R).
- with --sampled-shapley K (images) and --permutations P: the same Pearson correlations against a *sampled* Shapley
  value (P seeded permutations over the 64 regions, absent regions zeroed at the layer; kgexplain.knowledge_points.
  shapley) on the first K images, for every layer (lower layers have no exact value): sampled_shapley.by_layer
  {layer: {corr_h, corr_w}}, and sampled_shapley.vs_exact: Pearson and max |difference| against the exact value at
  the last layer (equal up to float error: a check of the estimator).
- w_self_agreement: mean over images of Pearson(w, w') at the last layer, w' refitted against another random
  comparison set (fit seed S + 1); null when N - 1 <= 100 (then every comparison set is all the other images).
- corr_importance_strength: mean over images of Pearson(|h^(r)|, w^(r)) at the last layer (paper Table 2);
  per layer under corr_importance_by_layer.
- reliable_ratio: reliable / all knowledge points per layer (final net), tau = 0.4 after normalising each layer's
  mean |h| to 1.
- kp_by_checkpoint: per checkpoint (the shipped epoch checkpoints; the last is the final net), knowledge points per
  image, reliable ones per image and the ratio for each of --checkpoint-layers, and the checkpoint's
  corr_norm_entropy; at the fitted T also Spearman, monotone_ceiling_fitted_t (the most negative Pearson any
  non-increasing function of |g| reaches: what a perfect strength read-out could show) and
  corr_fit_entropy_fitted_t (Pearson of the fitted mixture's own entropy with the model's). The same keys for the
  final net are under sample_correlations.
- seconds_per_layer: wall time of importance + projection + counting for one layer on N images (mean over the final
  net's layers; the forward pass is excluded and listed as collect_seconds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from kgexplain.data.base import Framing
from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.knowledge_points.analyse import KPConfig, analyse_layers, per_image_pearson
from kgexplain.knowledge_points.collect import collect
from kgexplain.knowledge_points.importance import ImportanceConfig, fit_importance, neighbours
from kgexplain.knowledge_points.kappa import KappaTables
from kgexplain.knowledge_points.regional import RegionalConfig
from kgexplain.knowledge_points.sample import SampleConfig
from kgexplain.knowledge_points.shapley import sampled_shapley
from kgexplain.models import load_model
from kgexplain.zoo import shipped_checkpoint, training_series


def r4(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=200, help="images")
    ap.add_argument("--layers", default="conv2_2,conv3_2,conv4_2,conv5_2", help="layers of the final net")
    ap.add_argument("--checkpoint-layers", default="conv3_2,conv5_2", help="layers per checkpoint ('': none)")
    ap.add_argument("--no-checkpoints", action="store_true", help="only the final net")
    ap.add_argument("--temperature", type=float, default=SampleConfig.temperature, help="fit temperature T")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sampled-shapley", type=int, default=0, metavar="K", help="images for the sampled Shapley value")
    ap.add_argument("--permutations", type=int, default=8, help="permutations per image (sampled Shapley)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    layers = args.layers.split(",")
    ck_layers = [n for n in args.checkpoint_layers.split(",") if n]  # empty: the sample embedding only
    cfg = KPConfig(
        sample=SampleConfig(seed=args.seed, temperature=args.temperature),
        importance=ImportanceConfig(seed=args.seed),
        regional=RegionalConfig(seed=args.seed),
    )
    with tempfile.TemporaryDirectory() as d:
        src = DataSpec(n=args.n, seed=args.seed, categories=ANIMALS).open(d)
        frames = [Framing(128, "none").apply(src, i) for i in range(len(src))]
    images = np.stack([f.image for f in frames])
    kappa = KappaTables.load(cfg.sample_kappa0, cfg.regional_kappa0)

    def run(weights: str, chosen: list[str]) -> tuple[Any, float]:
        handle = load_model("toynet", weights)
        handle.to(args.device)
        names = list(handle.class_names or [])
        truth = np.array([names.index(f.label) for f in frames])
        t = time.perf_counter()
        col = collect(handle, images, chosen, "conv5_2", grid=8, device=args.device)
        collect_s = time.perf_counter() - t
        return analyse_layers(col, truth, chosen, kappa, replace(cfg), device=args.device), collect_s

    final, collect_s = run(str(shipped_checkpoint()), layers)
    last = final.layers[layers[-1]]
    other = replace(cfg.importance, seed=args.seed + 1)
    nb = neighbours(final.collected.logits, other.others, other.kappa_p, other.seed)
    w_again, _ = fit_importance(final.collected.regions[layers[-1]].to(args.device), nb, other)
    out: dict[str, Any] = {
        "temperature": args.temperature,
        "corr_entropy_fitted_t": r4(final.corr["corr_entropy_fitted_t"]),
        "corr_pca_fitted_t": r4(final.corr["corr_pca_fitted_t"]),
        "corr_norm_entropy": r4(final.corr["corr_norm_entropy"]),
        "corr_pca": r4(final.corr["corr_pca"]),
        "corr_importance_strength": r4(last.corr_importance),
        "corr_h_shapley": r4(last.corr_h_shapley),
        "corr_w_shapley": r4(last.corr_w_shapley),
        # with N - 1 <= others every comparison set is all the other images, so the two fits see the same set
        "w_self_agreement": r4(per_image_pearson(last.w, w_again.cpu())[0]) if args.n - 1 > other.others else None,
        "sample_kl": r4(final.sample.loss),
        "reliable_ratio": {n: r4(r.points.ratio) for n, r in final.layers.items()},
        "kp_by_checkpoint": [],
        "seconds_per_layer": round(float(np.mean([r.seconds for r in final.layers.values()])), 2),
        "images": args.n,
        "collect_seconds": round(collect_s, 2),
        "sample_correlations": {k: r4(v) for k, v in final.corr.items()},
        "corr_importance_by_layer": {n: r4(r.corr_importance) for n, r in final.layers.items()},
        "kp_per_image": {n: round(r.points.count / args.n, 2) for n, r in final.layers.items()},
        "reliable_per_image": {n: round(r.points.reliable_count / args.n, 2) for n, r in final.layers.items()},
        "accuracy": round(float((final.collected.logits.argmax(1).numpy() == final.truth).mean()), 4),
        "device": args.device,
    }
    if args.sampled_shapley:
        handle = load_model("toynet", str(shipped_checkpoint()))
        k = min(args.sampled_shapley, args.n)
        t = time.perf_counter()
        by_layer = {}
        for name, res in final.layers.items():
            phi = sampled_shapley(handle, images[:k], name, grid=8, permutations=args.permutations, seed=args.seed)
            if phi.shape[1] != res.w.shape[1]:
                continue  # a layer with fewer regions than the grid (the pooled bins differ)
            by_layer[name] = {
                "corr_h": r4(per_image_pearson(res.h[:k].norm(dim=-1), phi)[0]),
                "corr_w": r4(per_image_pearson(res.w[:k], phi)[0]),
            }
            if name == layers[-1] and last.shapley is not None:
                exact = last.shapley[:k]
                by_layer[name]["vs_exact_pearson"] = r4(per_image_pearson(exact, phi)[0])
                by_layer[name]["vs_exact_max_abs"] = float((exact - phi).abs().max())
        out["sampled_shapley"] = {
            "images": k, "permutations": args.permutations, "by_layer": by_layer,
            "seconds": round(time.perf_counter() - t, 1),
        }  # fmt: skip
    if not args.no_checkpoints:
        for path in training_series():
            a, _ = run(str(path), ck_layers)
            out["kp_by_checkpoint"].append(
                {
                    "checkpoint": path.stem,
                    "accuracy": round(float((a.collected.logits.argmax(1).numpy() == a.truth).mean()), 4),
                    "corr_norm_entropy": r4(a.corr["corr_norm_entropy"]),
                    "corr_entropy_fitted_t": r4(a.corr["corr_entropy_fitted_t"]),
                    "corr_pca_fitted_t": r4(a.corr["corr_pca_fitted_t"]),
                    "spearman_fitted_t": r4(a.corr["spearman_norm_entropy_fitted_t"]),
                    "monotone_ceiling_fitted_t": r4(a.corr["monotone_ceiling_fitted_t"]),
                    "corr_fit_entropy_fitted_t": r4(a.corr["corr_fit_entropy_fitted_t"]),
                    "kp_per_image": {n: round(r.points.count / args.n, 2) for n, r in a.layers.items()},
                    "reliable_per_image": {n: round(r.points.reliable_count / args.n, 2) for n, r in a.layers.items()},
                    "reliable_ratio": {n: r4(r.points.ratio) for n, r in a.layers.items()},
                }
            )
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
