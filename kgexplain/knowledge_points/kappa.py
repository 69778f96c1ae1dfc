"""kappa(l) of the revised vMF distribution (knowledge-points paper, appendix B), rebuilt and cached.

Features of strength l are a clean direction plus Gaussian noise: f = l * o + eps, o ~ vMF(mu, kappa0) on the unit
sphere, eps ~ N(0, sigma^2 I_d). kappa(l) is the maximum-likelihood concentration of f / |f|, by the closed form
kappa = r (d - r^2) / (1 - r^2) with r = |mean(f / |f|)| (N = 10000 samples, sigma = 1 as in the paper). The
authors' table generator is not public; this is that procedure. kappa0 (the clean features' own spread) is not
given in the paper; the default 1000 keeps them nearly noise-free, so kappa(l) rises from 0 and saturates near it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kgexplain.workspace import temporary_beside


def kappa_closed_form(r: np.ndarray | float, d: int) -> np.ndarray:
    """MLE approximation of the vMF concentration from the mean resultant length r (Banerjee et al. 2005)."""
    r = np.clip(np.asarray(r, np.float64), 0.0, 1 - 1e-9)
    return np.asarray(r * (d - r**2) / (1 - r**2))


def sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors from vMF(mu, kappa) (Wood 1994)."""
    d = mu.shape[0]
    mu = mu / np.linalg.norm(mu)
    if kappa <= 0:
        v = rng.standard_normal((n, d))
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    b = (-2 * kappa + math.sqrt(4 * kappa**2 + (d - 1) ** 2)) / (d - 1)
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (d - 1) * math.log(1 - x0**2)
    w = np.empty(n)
    filled = 0
    while filled < n:
        m = (n - filled) * 2
        z = rng.beta((d - 1) / 2, (d - 1) / 2, m)
        cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        u = rng.uniform(size=m)
        ok = kappa * cand + (d - 1) * np.log(1 - x0 * cand) - c >= np.log(u)
        take = cand[ok][: n - filled]
        w[filled : filled + len(take)] = take
        filled += len(take)
    v = rng.standard_normal((n, d))
    v -= (v @ mu)[:, None] * mu[None]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w[:, None] * mu[None] + np.sqrt(np.clip(1 - w**2, 0, None))[:, None] * v


@dataclass(frozen=True)
class KappaSpec:
    d: int = 3
    sigma: float = 1.0
    kappa0: float = 1000.0
    samples: int = 10000
    l_max: float = 40.0
    points: int = 161
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def build_table(spec: KappaSpec) -> tuple[np.ndarray, np.ndarray]:
    """(strengths, kappas): kappa(l) on an even grid 0..l_max."""
    rng = np.random.default_rng(spec.seed)
    mu = np.zeros(spec.d)
    mu[0] = 1.0
    ls = np.linspace(0.0, spec.l_max, spec.points)
    ks = np.empty_like(ls)
    for i, l in enumerate(ls):
        f = l * sample_vmf(mu, spec.kappa0, spec.samples, rng) + spec.sigma * rng.standard_normal(
            (spec.samples, spec.d)
        )
        o = f / np.linalg.norm(f, axis=1, keepdims=True)
        ks[i] = float(kappa_closed_form(float(np.linalg.norm(o.mean(0))), spec.d))
    ks[0] = 0.0  # pure noise: the uniform distribution (the sample estimate is only noise)
    return ls, np.maximum.accumulate(ks)  # kappa(l) is monotone; removes sampling wiggles at saturation


class KappaTable:
    """kappa(l) by linear interpolation (differentiable in l; constant beyond the table)."""

    def __init__(self, strengths: np.ndarray, kappas: np.ndarray) -> None:
        self.l = torch.as_tensor(strengths, dtype=torch.float32)
        self.k = torch.as_tensor(kappas, dtype=torch.float32)

    @classmethod
    def load(cls, spec: KappaSpec | None = None, cache: Path | None = None) -> KappaTable:
        spec = spec or KappaSpec()
        path = cache / f"kappa-{spec.key()}.npz" if cache is not None else None
        if path is not None and path.is_file():
            z = np.load(path)
            return cls(z["l"], z["k"])
        ls, ks = build_table(spec)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_beside(path, ".npz")
            np.savez(tmp, l=ls, k=ks)
            tmp.replace(path)
        return cls(ls, ks)

    def __call__(self, strength: torch.Tensor) -> torch.Tensor:
        l_grid, k_grid = self.l.to(strength.device), self.k.to(strength.device)
        step = l_grid[1] - l_grid[0]
        pos = (strength / step).clamp(0, len(l_grid) - 1)
        i = pos.floor().long().clamp(max=len(l_grid) - 2)
        t = pos - i
        return k_grid[i] * (1 - t) + k_grid[i + 1] * t


@dataclass(frozen=True)
class KappaTables:
    """The two tables the authors' code keeps apart: the sample embedding's (clean features with kappa0 = 10, so
    kappa(l) saturates near 10) and the regional projection's (kappa0 = 1000)."""

    sample: KappaTable
    regional: KappaTable

    @classmethod
    def load(
        cls,
        sample_kappa0: float = 10.0,
        regional_kappa0: float = 1000.0,
        cache: Path | None = None,
        samples: int = KappaSpec.samples,
    ) -> KappaTables:
        return cls(
            KappaTable.load(KappaSpec(kappa0=sample_kappa0, samples=samples), cache),
            KappaTable.load(KappaSpec(kappa0=regional_kappa0, samples=samples), cache),
        )
