"""One pass over the images: logits, the sample feature and every layer's regional features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kgexplain.errors import LayerError
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
            out = handle.module(x)
            if out.dim() != 2:
                raise LayerError("knowledge points need a classifier output (batch, classes)")
            logits.append(out.float().cpu())
            sample.append(cap[sample_layer].post.float().mean((2, 3)).cpu())
            for n in layers:
                f = cap[n].post.float()
                side = min(grid, f.shape[-1], f.shape[-2])
                sides[n] = side
                f = F.adaptive_avg_pool2d(f, side)
                regions[n].append(f.flatten(2).transpose(1, 2).cpu())
            advance(len(x))
    return Collected(torch.cat(logits), torch.cat(sample), {n: torch.cat(v) for n, v in regions.items()}, sides)
