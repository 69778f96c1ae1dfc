"""Knowledge points (paper 3.4): regions whose projected feature is discriminative enough, max_c p(c | h) > tau.

Before counting, each layer's h are rescaled so that their mean strength E_{x,r} |h^(r)| equals a common reference
(1 by default, as the authors' code), which makes one tau fair across layers (appendix F). p(c | h) is the revised-vMF
posterior with the sample embedding's class directions and priors (eq. 6). A knowledge point is reliable when its
argmax class is the image's true class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgexplain.knowledge_points.sample import SampleEmbedding


@dataclass
class Points:
    strength: np.ndarray  # (N, R) |h| after the layer's normalisation
    prob: np.ndarray  # (N, R) max_c p(c | h)
    cls: np.ndarray  # (N, R) argmax class
    is_kp: np.ndarray  # (N, R) bool
    reliable: np.ndarray  # (N, R) bool (False where the truth is unknown)
    truth: np.ndarray  # (N,) true class index, -1 unknown

    @property
    def count(self) -> int:
        return int(self.is_kp.sum())

    @property
    def reliable_count(self) -> int:
        return int(self.reliable.sum())

    @property
    def ratio(self) -> float:
        """Reliable / all knowledge points among images with a known truth (nan when there are none)."""
        known = self.is_kp & (self.truth >= 0)[:, None]
        return float(self.reliable.sum() / known.sum()) if known.any() else float("nan")

    def per_image(self) -> tuple[np.ndarray, np.ndarray]:
        return self.is_kp.sum(1), self.reliable.sum(1)


def knowledge_points(
    h: torch.Tensor, sample: SampleEmbedding, truth: np.ndarray, tau: float = 0.4, reference: float | None = None
) -> Points:
    """``h`` (N, R, d') regional embeddings; ``truth`` (N,) class indices (-1: unknown); ``reference`` the mean
    strength every layer is normalised to (default 1)."""
    strength = h.norm(dim=-1)
    ref = float(reference) if reference is not None else 1.0
    hn = h * (ref / strength.mean().clamp_min(1e-12))
    with torch.no_grad():
        post = sample.log_posterior(hn.reshape(-1, hn.shape[-1])).exp().reshape(*hn.shape[:2], -1)
    prob, cls = post.max(dim=-1)
    is_kp = (prob > tau).numpy()
    truth = np.asarray(truth, np.int64)
    reliable = is_kp & (cls.numpy() == truth[:, None]) & (truth >= 0)[:, None]
    return Points(hn.norm(dim=-1).numpy(), prob.numpy(), cls.numpy(), is_kp, reliable, truth)
