"""Pixel-level reconstruction uncertainty (RU, paper eq. 9-11).

With a layer's decoder g, RU_i = 1/2 log E_{x'}[(x_i - g(f(x'))_i)^2] + C, the noise x' = x + sigma * eps learnt
by the same constrained maximum-entropy fit as SID, but maximising the reconstruction entropy instead of
mean(log sigma). Residuals are in [0, 1] image units, averaged over RGB.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from kgexplain.information.decoder import Decoder, to_unit
from kgexplain.information.sid import ENTROPY_CONSTANT, SIDEstimator, SIDResult

FLOOR = 1e-8


def _residual(decoder: Decoder, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """noisy (B, S, C, h, w) features; target (B, 3, H, W) in [0, 1] -> (B, H, W) mean squared residual."""
    b, s = noisy.shape[:2]
    rec = decoder(noisy.reshape(b * s, *noisy.shape[2:])).reshape(b, s, *target.shape[1:])
    return (rec - target[:, None]).pow(2).mean((1, 2))


def _present(noisy: torch.Tensor | None) -> torch.Tensor:
    assert noisy is not None  # every map runs unless a ``need`` mask leaves it out; these passes give none
    return noisy


def fit_ru(
    estimator: SIDEstimator, decoders: Mapping[str, Decoder], x: torch.Tensor, delta2: torch.Tensor | None = None
) -> SIDResult:
    """RU maps for the estimator's layers (each needs a decoder); the maps are in ``result.extra['ru']``."""
    target = to_unit(x, estimator.probe.handle)
    layers = estimator.layers
    for d in decoders.values():
        d.requires_grad_(False)

    def entropy(noisy: list[torch.Tensor | None]) -> torch.Tensor:
        terms = [
            0.5 * torch.log(_residual(decoders[n], _present(noisy[j]), target) + FLOOR).mean((1, 2))
            for j, n in enumerate(layers)
        ]
        return torch.stack(terms, 1)

    result = estimator.fit(x, delta2=delta2, entropy=entropy)
    cfg = estimator.cfg
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed + 104729)
    log_sigma = torch.from_numpy(result.log_sigma).to(x.device)
    clean = estimator.probe.clean(x)
    maps = []
    with torch.no_grad():
        eps = torch.randn(
            (x.shape[0], len(layers), cfg.eval_samples, x.shape[1], x.shape[-1], x.shape[-1]), generator=gen
        )
        _, noisy = estimator._change(x, clean, log_sigma, eps.to(x.device))
        for j, n in enumerate(layers):
            r = _residual(decoders[n], _present(noisy[j]), target)
            maps.append(0.5 * torch.log(r + FLOOR) + ENTROPY_CONSTANT)
    result.extra = {"ru": torch.stack(maps, 1).cpu().numpy()}  # (B, L, H, W)
    result.passes += 1
    return result
