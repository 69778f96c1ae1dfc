"""Sampled Shapley values of a layer's regions, for any network (the exact ones exist only for a linear head).

The players are the ``grid`` x ``grid`` regions the knowledge points use (the layer's map split into the same
adaptive-pooling bins). A coalition keeps its regions and zeroes the others at the layer's output (a forward hook
multiplies the module's output by a mask, so on a conv followed by a ReLU an absent region carries no activation);
the value of a coalition is the logit of the class the model predicts on the whole image. Each permutation adds the
regions one by one, and a region's Shapley value is its mean marginal gain over ``permutations`` seeded random
permutations (Castro et al. 2009). With a global-average-pooling head on the pooled layer every marginal gain is
the region's own term, so the estimate equals ``Collected.shapley`` whatever the permutations (the test checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from kgexplain.features.extract import normalise
from kgexplain.models.registry import ModelHandle


def region_masks(h: int, w: int, grid: int) -> torch.Tensor:
    """(R, h, w) 0/1 masks of the adaptive-pooling bins of an h x w map into ``grid`` x ``grid`` regions (row-major,
    as ``collect`` flattens them; bins may overlap by a cell where h or w is not a multiple of the grid)."""
    gh, gw = min(grid, h), min(grid, w)
    masks = torch.zeros(gh * gw, h, w)
    for i in range(gh):
        r0, r1 = (i * h) // gh, -(-((i + 1) * h) // gh)
        for j in range(gw):
            c0, c1 = (j * w) // gw, -(-((j + 1) * w) // gw)
            masks[i * gw + j, r0:r1, c0:c1] = 1.0
    return masks


@contextmanager
def _masked(handle: ModelHandle, layer: str, state: dict[str, Any]) -> Iterator[None]:
    """Within the block, the layer's output is multiplied by ``state["mask"]`` (B, 1, h, w) when it is set, and its
    map size is left in ``state["shape"]``."""
    module = handle.module.get_submodule(handle.layer(layer).module)

    def hook(_m: torch.nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor | None:
        state["shape"] = tuple(out.shape[-2:])
        return out * state["mask"] if state.get("mask") is not None else None

    removable = module.register_forward_hook(hook)
    try:
        yield
    finally:
        removable.remove()


def sampled_shapley(
    handle: ModelHandle,
    images: np.ndarray,
    layer: str,
    grid: int = 8,
    permutations: int = 8,
    seed: int = 0,
    batch: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(N, R) sampled Shapley value of each region of ``layer`` for the predicted class's logit, for ``images``
    (N, S, S, 3) uint8 framed for the model. Costs N x permutations x (R + 1) forward passes."""
    handle.module.to(device).eval()
    x_all = normalise(torch.from_numpy(np.ascontiguousarray(images)), handle).to(device)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    out = []
    with torch.no_grad(), _masked(handle, layer, state):
        for n in range(len(x_all)):
            x = x_all[n : n + 1]
            state["mask"] = None
            cls = int(handle.logits(x, "Shapley values").argmax(1))  # the unmasked pass leaves the map size
            shape = state["shape"]
            regions = region_masks(shape[0], shape[1], grid).to(device)  # (R, h, w)
            r = regions.shape[0]
            phi = torch.zeros(r, dtype=torch.float64)
            for _ in range(permutations):
                order = torch.randperm(r, generator=gen)
                # coalition k holds the first k regions of the permutation (k = 0 .. R)
                steps = torch.zeros(r + 1, r, device=device)
                for k in range(1, r + 1):
                    steps[k] = steps[k - 1]
                    steps[k, order[k - 1]] = 1.0
                masks = (steps @ regions.flatten(1)).clamp_max(1.0).view(r + 1, 1, *shape)
                values = []
                for lo in range(0, r + 1, batch):
                    part = masks[lo : lo + batch]
                    state["mask"] = part
                    values.append(handle.logits(x.expand(part.shape[0], -1, -1, -1))[:, cls].double().cpu())
                v = torch.cat(values)
                phi[order] += v[1:] - v[:-1]
            out.append((phi / permutations).float())
    return torch.stack(out)
