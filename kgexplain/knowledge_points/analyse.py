"""One model (checkpoint) end to end: sample embedding, then per layer importance, regional projection and points."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from kgexplain.distributed import Group
from kgexplain.features.extract import layer_shape
from kgexplain.knowledge_points.collect import Collected, collect
from kgexplain.knowledge_points.importance import ImportanceConfig, fit_importance, neighbours
from kgexplain.knowledge_points.kappa import KappaTables
from kgexplain.knowledge_points.points import Points, knowledge_points
from kgexplain.knowledge_points.regional import RegionalConfig, RegionalEmbedding, fit_regional
from kgexplain.knowledge_points.sample import SampleConfig, SampleEmbedding, entropy, fit_sample, pca_norms, pearson
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, say


@dataclass(frozen=True)
class KPConfig:
    tau: float = 0.4
    grid: int | None = None  # regions per side; default: the sample layer's map side (the paper's choice)
    sample_kappa0: float = 10.0  # the sample embedding's kappa table (the authors': kappa(l) saturates near 10)
    regional_kappa0: float = 1000.0  # the regional projection's
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
    shapley: torch.Tensor | None = None  # (N, R) exact Shapley value per region (linear heads only; see collect)
    corr_h_shapley: float = float("nan")  # mean over images of Pearson(|h^(r)|, phi^(r))
    corr_w_shapley: float = float("nan")  # the same for w

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
            "corr_h_shapley": _round(self.corr_h_shapley),
            "corr_w_shapley": _round(self.corr_w_shapley),
            "seconds": round(self.seconds, 1),
        }


@dataclass
class Analysis:
    sample: SampleEmbedding
    g: torch.Tensor  # (N, d')
    entropy: np.ndarray  # (N,) entropy of the model's output (T = 1)
    corr: dict[str, float]  # |g| and PCA baselines against the entropy, at T = 1 and at the fit's temperature
    layers: dict[str, LayerResult]
    collected: Collected
    truth: np.ndarray
    seconds: float


def _round(x: float, nd: int = 4) -> float | None:
    return round(float(x), nd) if np.isfinite(x) else None


def strength_correlations(
    g: torch.Tensor,
    sample_feature: torch.Tensor,
    logits: torch.Tensor,
    temperature: float,
    fit_entropy: np.ndarray | None = None,
) -> dict[str, float]:
    """|g| (and |PCA_3(f)|, the paper's baseline) against the entropy of the model's output: Pearson, Pearson with log
    entropy, and Spearman. Keys without a suffix use softmax(z) (T = 1); ``_fitted_t`` keys use softmax(z / T) at
    the temperature the embedding was fitted to (the authors' measurement).

    Two keys say what limits the Pearson figure: ``monotone_ceiling`` is -Pearson(m(|g|), entropy) for the best
    non-increasing function m of |g| (isotonic regression), the most negative Pearson any strength-only read-out
    could reach, so Pearson(|g|, entropy) above it measures the curvature of the relation, not a bad fit; with
    ``fit_entropy`` (the fitted mixture's own entropy per sample) ``corr_fit_entropy`` is its Pearson with the
    entropy the fit mimics, i.e. how well the embedding reproduces the uncertainty at all (both at T = 1 and T)."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes half a second to load

    norm = g.norm(dim=1).numpy()
    pca = pca_norms(sample_feature, g.shape[1])
    out: dict[str, float] = {}
    for suffix, t in (("", 1.0), ("_fitted_t", temperature)):
        ent = entropy(logits, t).numpy()
        log_ent = np.log(np.clip(ent, 1e-12, None))
        out |= {
            f"corr_norm_entropy{suffix}": pearson(norm, ent),
            f"corr_pca{suffix}": pearson(pca, ent),
            f"corr_norm_log_entropy{suffix}": pearson(norm, log_ent),
            f"corr_pca_log_entropy{suffix}": pearson(pca, log_ent),
            f"spearman_norm_entropy{suffix}": float(spearmanr(norm, ent)[0]),
            f"spearman_pca{suffix}": float(spearmanr(pca, ent)[0]),
            f"monotone_ceiling{suffix}": -pearson(_decreasing_fit(norm, ent), ent),
        }
        if fit_entropy is not None:
            out[f"corr_fit_entropy{suffix}"] = pearson(fit_entropy, ent)
    out["corr_entropy_fitted_t"] = out.pop("corr_norm_entropy_fitted_t")
    return out


def _decreasing_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares non-increasing function of x fitted to y, at each x."""
    from scipy.optimize import isotonic_regression  # lazy: scipy.optimize takes half a second to load

    order = np.argsort(x, kind="stable")
    fit = np.empty(len(y))
    fit[order] = isotonic_regression(y[order], increasing=False).x
    return fit


def per_image_pearson(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and std over rows of the Pearson correlation of two (N, R) tables (rows with no spread skipped)."""
    vals = np.array([pearson(x, y) for x, y in zip(a.numpy(), b.numpy(), strict=True)])
    vals = vals[np.isfinite(vals)]
    return (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))


def analyse_layers(
    col: Collected,
    truth: np.ndarray | None,
    layers: Sequence[str],
    kappa: KappaTables,
    cfg: KPConfig,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
    group: Group | None = None,
) -> Analysis:
    """Everything after the forward pass. ``col`` holds CPU tensors; the per-layer fits (the costly part) run on
    ``device``, the small sample embedding on the CPU. With a distributed ``group`` the layers are dealt to the
    ranks (every fit couples all the images, and each is seeded on its own, so a layer's result is the one a single
    process gets) and every rank gets every layer's result. ``truth`` None: the model's own prediction (reliable =
    points to the predicted class)."""
    if truth is None:
        truth = col.logits.argmax(1).numpy()
    grp = group or Group()
    t0 = time.perf_counter()
    emb = fit_sample(col.sample, col.logits, kappa.sample, cfg.sample)
    g = emb.embed(col.sample)
    ent = entropy(col.logits).numpy()
    fit_ent = entropy(emb.log_posterior(g)).numpy()  # the mixture's own (log-softmax is a no-op on log Q)
    corr = strength_correlations(g, col.sample, col.logits, cfg.sample.temperature, fit_ent)
    t, r = cfg.sample.temperature, corr["corr_entropy_fitted_t"]
    say(progress, f"sample embedding: KL {emb.loss:.4f}, corr(|g|, entropy at T = {t:g}) {r:.3f}")
    nb = neighbours(col.logits, cfg.importance.others, cfg.importance.kappa_p, cfg.importance.seed)
    results = {}
    for i, name in enumerate(layers):
        if i % grp.world != grp.rank:
            continue
        t = time.perf_counter()
        regions = col.regions[name]
        on_dev = regions.to(device)
        w, v = fit_importance(on_dev, nb, cfg.importance, progress)
        proj = fit_regional(on_dev, w, nb, g, kappa.regional, cfg.regional, progress)
        del on_dev
        w, v = w.cpu(), v.cpu()
        h = proj.embed(regions)
        pts = knowledge_points(h, emb, truth, cfg.tau, cfg.reference)
        ci, cs = per_image_pearson(h.norm(dim=-1), w)
        phi = col.shapley(name)
        results[name] = LayerResult(name, col.grid[name], w, v, proj, h, pts, ci, cs, time.perf_counter() - t, phi)
        if phi is not None:
            results[name].corr_h_shapley = per_image_pearson(h.norm(dim=-1), phi)[0]
            results[name].corr_w_shapley = per_image_pearson(w, phi)[0]
        s = results[name].summary()
        say(progress, f"{name}: {s['kp']} knowledge points, {s['reliable']} reliable ({s['seconds']} s)")
    if grp.joined:
        mine = set(results)
        merged = {k: v for part in grp.objects(results, "knowledge points") for k, v in part.items()}
        results = {name: merged[name] for name in layers}
        for name in layers:  # the layers other ranks fitted, reported here too
            if name not in mine:
                s = results[name].summary()
                say(progress, f"{name}: {s['kp']} knowledge points, {s['reliable']} reliable ({s['seconds']} s)")
    return Analysis(emb, g, ent, corr, results, col, truth, time.perf_counter() - t0)


def analyse(
    handle: ModelHandle,
    images: np.ndarray,
    truth: np.ndarray | None,
    layers: Sequence[str],
    kappa: KappaTables,
    cfg: KPConfig,
    sample_layer: str | None = None,
    device: torch.device | str = "cpu",
    batch: int = 64,
    progress: Progress | None = None,
    group: Group | None = None,
) -> Analysis:
    """``images`` (N, S, S, 3) uint8 framed for the model; ``truth`` (N,) class indices (-1 unknown; None: the
    model's prediction); ``group``:
    see :func:`analyse_layers` (the forward pass runs on every rank)."""
    sample_layer = sample_layer or list(handle.layers)[-1]
    grid = cfg.grid or min(layer_shape(handle, handle.layer(sample_layer), images.shape[1])[1:])
    col = collect(handle, images, layers, sample_layer, grid=grid, batch=batch, device=device, progress=progress)
    return analyse_layers(col, truth, layers, kappa, cfg, progress, device, group)
