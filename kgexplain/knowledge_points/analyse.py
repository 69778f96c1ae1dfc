"""One model (checkpoint) end to end: sample embedding, then per layer importance, regional projection and points."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from kgexplain.features.extract import layer_shape
from kgexplain.knowledge_points.collect import Collected, collect
from kgexplain.knowledge_points.importance import ImportanceConfig, fit_importance, neighbours
from kgexplain.knowledge_points.kappa import KappaTable
from kgexplain.knowledge_points.points import Points, knowledge_points
from kgexplain.knowledge_points.regional import RegionalConfig, RegionalEmbedding, fit_regional
from kgexplain.knowledge_points.sample import SampleConfig, SampleEmbedding, entropy, fit_sample, pca_norms, pearson
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, say


@dataclass(frozen=True)
class KPConfig:
    tau: float = 0.4
    grid: int | None = None  # regions per side; default: the sample layer's map side (the paper's choice)
    reference: float = 1.0  # mean |h| every layer is normalised to before counting (the authors' code: 1)
    sample: SampleConfig = field(default_factory=SampleConfig)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    regional: RegionalConfig = field(default_factory=RegionalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerResult:
    layer: str
    grid: int
    w: torch.Tensor  # (N, R) regional importance
    v: torch.Tensor  # (N, K) channel importance
    projection: RegionalEmbedding
    h: torch.Tensor  # (N, R, d')
    points: Points
    corr_importance: float  # mean over images of Pearson(|h^(r)|, w^(r)) (paper Table 2)
    corr_importance_std: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        p = self.points
        return {
            "layer": self.layer,
            "regions": int(p.is_kp.size),
            "kp": p.count,
            "reliable": p.reliable_count,
            "reliable_ratio": _round(p.ratio),
            "kp_per_image": round(p.count / max(1, p.is_kp.shape[0]), 2),
            "corr_importance_strength": _round(self.corr_importance),
            "seconds": round(self.seconds, 1),
        }


@dataclass
class Analysis:
    sample: SampleEmbedding
    g: torch.Tensor  # (N, d')
    entropy: np.ndarray  # (N,) entropy of the model's output
    corr: dict[str, float]  # |g| and PCA baselines against the entropy
    layers: dict[str, LayerResult]
    collected: Collected
    truth: np.ndarray
    seconds: float


def _round(x: float, nd: int = 4) -> float | None:
    return round(float(x), nd) if np.isfinite(x) else None


def strength_correlations(g: torch.Tensor, sample_feature: torch.Tensor, ent: np.ndarray) -> dict[str, float]:
    """Pearson of |g| (and of |PCA_3(f)|) with the output entropy, and with log entropy (see README)."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes half a second to load

    norm = g.norm(dim=1).numpy()
    pca = pca_norms(sample_feature, g.shape[1])
    log_ent = np.log(np.clip(ent, 1e-12, None))
    return {
        "corr_norm_entropy": pearson(norm, ent),
        "corr_pca": pearson(pca, ent),
        "corr_norm_log_entropy": pearson(norm, log_ent),
        "corr_pca_log_entropy": pearson(pca, log_ent),
        "spearman_norm_entropy": float(spearmanr(norm, ent)[0]),
        "spearman_pca": float(spearmanr(pca, ent)[0]),
    }


def per_image_pearson(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and std over rows of the Pearson correlation of two (N, R) tables (rows with no spread skipped)."""
    vals = np.array([pearson(x, y) for x, y in zip(a.numpy(), b.numpy(), strict=True)])
    vals = vals[np.isfinite(vals)]
    return (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))


def analyse_layers(
    col: Collected,
    truth: np.ndarray,
    layers: Sequence[str],
    kappa: KappaTable,
    cfg: KPConfig,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> Analysis:
    """Everything after the forward pass. ``col`` holds CPU tensors; the per-layer fits (the costly part) run on
    ``device``, the small sample embedding on the CPU."""
    t0 = time.perf_counter()
    emb = fit_sample(col.sample, col.logits, kappa, cfg.sample)
    g = emb.embed(col.sample)
    ent = entropy(col.logits).numpy()
    corr = strength_correlations(g, col.sample, ent)
    say(progress, f"sample embedding: KL {emb.loss:.4f}, corr(|g|, entropy) {corr['corr_norm_entropy']:.3f}")
    nb = neighbours(col.logits, cfg.importance.others, cfg.importance.kappa_p, cfg.importance.seed)
    results = {}
    for name in layers:
        t = time.perf_counter()
        regions = col.regions[name]
        on_dev = regions.to(device)
        w, v = fit_importance(on_dev, nb, cfg.importance, progress)
        proj = fit_regional(on_dev, w, nb, g, kappa, cfg.regional, progress)
        del on_dev
        w, v = w.cpu(), v.cpu()
        h = proj.embed(regions)
        pts = knowledge_points(h, emb, truth, cfg.tau, cfg.reference)
        ci, cs = per_image_pearson(h.norm(dim=-1), w)
        results[name] = LayerResult(name, col.grid[name], w, v, proj, h, pts, ci, cs, time.perf_counter() - t)
        s = results[name].summary()
        say(progress, f"{name}: {s['kp']} knowledge points, {s['reliable']} reliable ({s['seconds']} s)")
    return Analysis(emb, g, ent, corr, results, col, truth, time.perf_counter() - t0)


def analyse(
    handle: ModelHandle,
    images: np.ndarray,
    truth: np.ndarray,
    layers: Sequence[str],
    kappa: KappaTable,
    cfg: KPConfig,
    sample_layer: str | None = None,
    device: torch.device | str = "cpu",
    batch: int = 64,
    progress: Progress | None = None,
) -> Analysis:
    """``images`` (N, S, S, 3) uint8 framed for the model; ``truth`` (N,) class indices (-1 unknown)."""
    sample_layer = sample_layer or list(handle.layers)[-1]
    grid = cfg.grid or min(layer_shape(handle, handle.layer(sample_layer), images.shape[1])[1:])
    col = collect(handle, images, layers, sample_layer, grid=grid, batch=batch, device=device, progress=progress)
    return analyse_layers(col, truth, layers, kappa, cfg, progress, device)
