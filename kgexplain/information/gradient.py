"""The gradient-magnitude baseline of the paper's coherency experiment, and the weight rescaling it uses.

map_ij = sqrt(sum_c (dy / df_ijc)^2), y the score of the predicted (or given) class, f a layer's output.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from kgexplain.errors import LayerError
from kgexplain.models.registry import ModelHandle


def gradient_maps(
    handle: ModelHandle, x: torch.Tensor, layers: Sequence[str], target: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Per layer (B, h, w) gradient magnitudes of the class score w.r.t. the layer's output."""
    modules = dict(handle.module.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(name: str) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
            outputs[name] = out
            return out.clone()  # in-place ReLUs downstream must not overwrite the tensor we differentiate by

        return hook

    try:
        for name in layers:
            spec = handle.layer(name)
            hooks.append(modules[spec.module].register_forward_hook(hook_for(name)))
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = handle.logits(xg, "the gradient baseline")
            cls = logits.argmax(1) if target is None else torch.as_tensor(list(target), device=logits.device)
            y = logits.gather(1, cls[:, None]).sum()
            grads = torch.autograd.grad(y, [outputs[n] for n in layers])
    finally:
        for h in hooks:
            h.remove()
    return {n: g.pow(2).sum(1).sqrt().detach().cpu().numpy() for n, g in zip(layers, grads, strict=True)}


def rescaled_pair(handle: ModelHandle, layer: str, factor: float = 4.0) -> ModelHandle:
    """A copy whose conv ``layer`` has weights and bias / factor and whose next conv has weights * factor.

    With ReLU and max pooling between them (both positively homogeneous) the network's output is unchanged,
    while ``layer``'s activations shrink by ``factor`` (paper sec. 4).
    """
    module = copy.deepcopy(handle.module)
    convs = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    spec = handle.layer(layer)
    names = [n for n, _ in convs]
    if spec.module not in names:
        raise LayerError(f"{layer!r} is not a conv layer; the rescaling needs a conv and the conv after it")
    i = names.index(spec.module)
    if i + 1 >= len(convs):
        raise LayerError(f"{layer!r} is the last conv layer; the rescaling needs the conv after it")
    conv, nxt = convs[i][1], convs[i + 1][1]
    with torch.no_grad():
        conv.weight /= factor
        if conv.bias is not None:
            conv.bias /= factor
        nxt.weight *= factor
    return ModelHandle(**{**handle.__dict__, "module": module.eval(), "weights": f"{handle.weights}+rescaled"})
