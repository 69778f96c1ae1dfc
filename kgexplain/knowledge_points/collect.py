"""One pass over the images: logits, the sample feature and every layer's regional features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kgexplain.features.extract import normalise
from kgexplain.features.hooks import capture_layers
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, task


@dataclass
class Collected:
    logits: torch.Tensor  # (N, C)
    sample: torch.Tensor  # (N, K) pooled feature of the sample layer
    regions: dict[str, torch.Tensor]  # layer -> (N, R, K) regional features (post-ReLU, pooled to the grid)
    grid: dict[str, int]  # layer -> regions per side
    sample_layer: str = ""
    head: tuple[torch.Tensor, torch.Tensor] | None = None  # (W, b) when logits = W pooled(sample layer) + b

    def shapley(self, layer: str) -> torch.Tensor | None:
        """(N, R) exact Shapley value of each region of ``layer`` for the logit of the model's predicted class, or
        None. Exact only where the head is global average pooling then one linear layer (``head``) and ``layer`` is
        the pooled one: the logit is then a sum over regions, b_c + sum_r W_c . f_r / R, so region r's share is its
        own term whatever the coalition."""
        if self.head is None or layer != self.sample_layer or layer not in self.regions:
            return None
        weight = self.head[0][self.logits.argmax(1)]  # (N, K)
        regions = self.regions[layer]
        return (regions * weight[:, None, :]).sum(-1) / regions.shape[1]


def linear_head(
    module: torch.nn.Module, logits: torch.Tensor, pooled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The model's last ``nn.Linear`` as (W, b) if it maps the pooled sample feature to the logits (checked on the
    data, relative error < 1e-4), else None."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].in_features != pooled.shape[1] or linears[-1].out_features != logits.shape[1]:
        return None
    lin = linears[-1]
    w = lin.weight.detach().float().cpu()
    b = lin.bias.detach().float().cpu() if lin.bias is not None else torch.zeros(w.shape[0])
    err = (pooled @ w.T + b - logits).abs().max() / logits.abs().max().clamp_min(1e-12)
    return (w, b) if float(err) < 1e-4 else None


def collect(
    handle: ModelHandle,
    images: np.ndarray,
    layers: Sequence[str],
    sample_layer: str,
    grid: int = 8,
    batch: int = 64,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Collected:
    """``images`` (N, S, S, 3) uint8. Regional maps larger than ``grid`` are average-pooled to grid x grid, so
    every layer is analysed with the same number of regions (as the paper does for fair comparisons)."""
    names = list(dict.fromkeys([*layers, sample_layer]))
    specs = [handle.layer(n) for n in names]
    logits, sample = [], []
    regions: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    sides: dict[str, int] = {}
    with (
        torch.no_grad(),
        capture_layers(handle.module, specs) as cap,
        task(progress, "features", len(images), "img") as advance,
    ):
        for lo in range(0, len(images), batch):
            x = normalise(torch.from_numpy(np.ascontiguousarray(images[lo : lo + batch])), handle).to(device)
            out = handle.logits(x, "knowledge points")
            logits.append(out.float().cpu())
            sample.append(cap[sample_layer].post.float().mean((2, 3)).cpu())
            for n in layers:
                f = cap[n].post.float()
                side = min(grid, f.shape[-1], f.shape[-2])
                sides[n] = side
                f = F.adaptive_avg_pool2d(f, side)
                regions[n].append(f.flatten(2).transpose(1, 2).cpu())
            advance(len(x))
    z, pooled = torch.cat(logits), torch.cat(sample)
    regs = {n: torch.cat(v) for n, v in regions.items()}
    return Collected(z, pooled, regs, sides, sample_layer, linear_head(handle.module, z, pooled))
