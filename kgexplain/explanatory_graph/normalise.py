"""Feature normalisation by background statistics (the authors' code, notes/original-code.md §1).

Each (channel, position) is divided by its standard deviation over background ("negative") images, and only
positive responses count: F(x) = beta * max(x, 0) / std. Positions where the raw response is <= 0 carry no
activation entities.
"""

from __future__ import annotations

import torch

from kgexplain.distributed import Group
from kgexplain.errors import DataError
from kgexplain.features.cache import FeatureSet


def background_std(
    features: FeatureSet,
    device: torch.device | str = "cpu",
    floor: float = 0.05,
    per_position: bool = True,
    group: Group | None = None,
) -> torch.Tensor:
    """Standard deviation over images per (channel, row, col) (``per_position=False``: one per channel, pooled
    over positions); tiny values are floored at ``floor`` x the channel's median std so dead units cannot blow up,
    and a channel's median at 1e-3 x the layer's (``_lower``): floors relative to the layer's own scale, since a
    network's maps can be of any size (MobileNet-V2 with random weights: std 6e-9 at features.17).

    Per position is the authors' normalisation by *background* images. Without background images the object
    images' own statistics are used, pooled per channel: per position they would flatten the parts themselves
    (a part that comes and goes at a position gives that position a large std)."""
    n = 0
    s1 = s2 = None
    for _, x in features.chunks(256, device=device):
        t1, t2 = image_sum(x), image_sum(x, square=True)
        s1 = t1 if s1 is None else s1 + t1
        s2 = t2 if s2 is None else s2 + t2
        n += x.shape[0]
    if group is not None and group.joined:
        d, h, w = features.shape
        z = torch.zeros((d, h, w), dtype=torch.float64, device=device)
        s1 = group.sum(z if s1 is None else s1, "background statistics")
        s2 = group.sum(z if s2 is None else s2, "background statistics")
        n = sum(group.sizes(n))
    if s1 is None or s2 is None or n < 2:
        raise DataError("background statistics need at least two images", hint="give more --negatives")
    if not per_position:
        d, h, w = s1.shape
        m = n * h * w
        t1, t2 = s1.sum((1, 2)), s2.sum((1, 2))
        pooled = ((t2 - t1 * t1 / m) / (m - 1)).clamp_min(0).sqrt().float()
        pooled = torch.maximum(pooled, _lower(pooled))
        return pooled[:, None, None].expand(d, h, w).contiguous()
    var = (s2 - s1 * s1 / n) / (n - 1)
    std = var.clamp_min(0).sqrt().float()
    med = std.flatten(1).median(dim=1).values
    med = torch.maximum(med, _lower(med))
    return torch.maximum(std, floor * med[:, None, None])


def image_sum(x: torch.Tensor, square: bool = False) -> torch.Tensor:
    """The sum over the images (dim 0) of float32 maps ``x`` (B, D, h, w) (or of ``x * x``), accumulated in float64.
    On the CPU a numba loop adds the float32 values into float64 sums on every thread, without a float64 copy of
    the chunk and in numpy's order (equal to numpy's ``sum(0, dtype=float64)``; 3x faster on 2 cores). Squares are
    taken in float32, exact for values a feature set holds (float16, times a power of two: 11-bit mantissas whose
    products need 22 of float32's 24 bits)."""
    if x.device.type == "cpu":
        # lazy: the CPU path's kernels load numba, which a GPU run does not need
        from kgexplain.explanatory_graph.estep_numba import image_sums

        return torch.from_numpy(image_sums(x.detach().numpy(), square))
    return (x * x if square else x).sum(0, dtype=torch.float64)


def _lower(per_channel: torch.Tensor) -> torch.Tensor:
    """The least a channel's standard deviation may be: 1e-3 x the median of the layer's positive ones (1 when
    every channel is constant), never zero."""
    pos = per_channel[per_channel > 0]
    ref = pos.median() if pos.numel() else torch.ones((), dtype=per_channel.dtype, device=per_channel.device)
    return (1e-3 * ref).clamp_min(torch.finfo(per_channel.dtype).tiny)


def responses(x: torch.Tensor, std: torch.Tensor, beta: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """F(x) for a chunk of pre-ReLU maps (B, D, h, w); ``inplace``: in ``x`` itself (one pass less)."""
    if inplace:
        return x.clamp_min_(0).div_(std).mul_(beta)
    return (x.clamp_min(0) / std).mul_(beta)
