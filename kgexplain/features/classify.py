"""Top-k ImageNet-style predictions of a model on images, framed as kgexplain frames them (resized to the model's
input, aspect not kept)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from kgexplain.features.extract import normalise
from kgexplain.models.registry import ModelHandle


def top_k(handle: ModelHandle, image: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes (name, softmax probability) for one (H, W, 3) uint8 image."""
    size = handle.input_size
    framed = np.array(Image.fromarray(image).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    x = normalise(torch.from_numpy(np.ascontiguousarray(framed))[None], handle)
    with torch.no_grad():
        p = handle.to(x.device).logits(x, "top-k classes").softmax(1)[0]
    top = p.topk(min(k, p.numel()))
    names = handle.class_names or [str(i) for i in range(p.numel())]
    return [(names[int(i)], float(v)) for v, i in zip(top.values, top.indices, strict=True)]
