"""Sample-level projection g = M f mimicking the model's class posteriors with a revised-vMF mixture (paper 3.2).

f is a sample's feature (by default the global-average-pooled last conv layer, what the classifier sees), scaled
so that its mean norm over the data is sqrt(K). Q_M(y | x) = pi_y exp(kappa(|g|) cos(g, mu_y)) / sum (eq. 6). Each
step updates the mixture's priors and directions by the M-step of eq. 15, then takes a gradient step on M for
KL(p || Q_M), p = softmax(z / T). T = 4 by default, the temperature of all three of the authors' scripts; T = 1 (the
DNN's own posterior P(y | x) of eq. 4) is an option.

The M-step's weights (``responsibilities``) are by default the model's posterior at T = 1, softmax(z) ("model"); at
T = 1 that is p itself, as in the authors' code. The authors weight by p at the fit's temperature ("targets"); at
T = 4 the toy net's p is nearly flat, every class direction becomes the same weighted mean, and the fit fails (toy
net, 500 images, seeds 0/1/2: KL 0.19-0.26 and Pearson(|g|, T = 4 entropy) -0.12 to -0.46, against KL 0.07 and
-0.92 to -0.95 with "model"). ``"posterior"`` uses the mixture's own posterior (the E-step of eq. 15) after a first
step from the model's; it fits worse (KL 0.23-0.29 at T = 1).

kappa(|g|) stays inside autograd, a departure from the authors' code: the loss sees |g| only through kappa, so with
kappa detached no gradient reaches the strength and |g| drifts with the optimiser (toy net at T = 4: KL 0.19-0.42,
Pearson -0.17 to -0.33). The kappa table is the sample one (kappa0 = 10; ``KappaTables``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kgexplain.errors import UsageError
from kgexplain.knowledge_points.kappa import KappaTable


@dataclass(frozen=True)
class SampleConfig:
    dim: int = 3
    steps: int = 2000
    lr: float = 0.01
    temperature: float = 4.0  # targets p = softmax(logits / T), as the authors' code; 1: the DNN's own posterior
    init_std: float = 0.1
    responsibilities: str = "model"  # M-step weights: "model" (softmax(z)) | "targets" (p at T) | "posterior"
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def feature_scale(f: torch.Tensor) -> float:
    """The factor that brings the data's mean feature norm to sqrt(K)."""
    return float(f.shape[1] ** 0.5 / f.norm(dim=1).mean().clamp_min(1e-12))


def vmf_posterior(g: torch.Tensor, mu: torch.Tensor, log_pi: torch.Tensor, kappa: KappaTable) -> torch.Tensor:
    """log Q(y | g) for the revised vMF mixture (eq. 6): (N, C)."""
    strength = g.norm(dim=-1, keepdim=True)
    cos = F.normalize(g, dim=-1) @ mu.T
    return torch.log_softmax(log_pi + kappa(strength) * cos, dim=-1)


@dataclass
class SampleEmbedding:
    M: torch.Tensor  # (d', K)
    mu: torch.Tensor  # (C, d') unit class directions
    log_pi: torch.Tensor  # (C,)
    scale: float  # feature scale factor
    kappa: KappaTable
    loss: float

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return (f * self.scale) @ self.M.T

    def log_posterior(self, g: torch.Tensor) -> torch.Tensor:
        return vmf_posterior(g, self.mu, self.log_pi, self.kappa)


def m_step(g: torch.Tensor, resp: torch.Tensor, kappa: KappaTable) -> tuple[torch.Tensor, torch.Tensor]:
    """mu_y ∝ sum_i kappa(|g_i|) resp_iy g_i/|g_i|, pi_y = mean resp_iy (eq. 15)."""
    k = kappa(g.norm(dim=1, keepdim=True))
    mu = F.normalize(resp.T @ (k * F.normalize(g, dim=1)), dim=1)
    return mu, torch.log(resp.mean(0).clamp_min(1e-12))


def fit_sample(f: torch.Tensor, logits: torch.Tensor, kappa: KappaTable, cfg: SampleConfig) -> SampleEmbedding:
    gen = torch.Generator().manual_seed(cfg.seed)
    scale = feature_scale(f)
    fs = f * scale
    p = torch.softmax(logits / cfg.temperature, dim=1)
    model = torch.softmax(logits, dim=1)
    M = (torch.randn((cfg.dim, f.shape[1]), generator=gen) * cfg.init_std / f.shape[1] ** 0.5).requires_grad_(True)
    opt = torch.optim.Adam([M], lr=cfg.lr)
    if cfg.responsibilities not in ("model", "posterior", "targets"):
        raise UsageError(f"responsibilities must be 'model', 'targets' or 'posterior', not {cfg.responsibilities!r}")
    if cfg.temperature <= 0:
        raise UsageError(f"the temperature must be positive, not {cfg.temperature}")
    fixed = p if cfg.responsibilities == "targets" else model
    loss = torch.zeros(())
    mu, log_pi = m_step(fs @ M.detach().T, fixed, kappa)
    for _ in range(cfg.steps):
        g = fs @ M.T
        with torch.no_grad():
            resp = vmf_posterior(g, mu, log_pi, kappa).exp() if cfg.responsibilities == "posterior" else fixed
            mu, log_pi = m_step(g, resp, kappa)
        logq = vmf_posterior(g, mu, log_pi, kappa)
        loss = F.kl_div(logq, p, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    M = M.detach()
    with torch.no_grad():
        g = fs @ M.T
        resp = vmf_posterior(g, mu, log_pi, kappa).exp() if cfg.responsibilities == "posterior" else fixed
        mu, log_pi = m_step(g, resp, kappa)
    return SampleEmbedding(M, mu, log_pi, scale, kappa, float(loss.detach()))


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy (nats) of softmax(logits / temperature) per row."""
    logp = torch.log_softmax(logits / temperature, dim=1)
    return -(logp.exp() * logp).sum(1)


def pearson(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pca_norms(f: torch.Tensor, dim: int = 3) -> np.ndarray:
    """|PCA projection to ``dim``| of the centred features (the baseline of the paper's Table 1)."""
    x = f.double() - f.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:dim].T).norm(dim=1).numpy()
