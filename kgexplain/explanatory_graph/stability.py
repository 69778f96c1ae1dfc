"""Location stability of patterns (paper §4.4; the authors' code, notes/original-code.md §1).

For every kept pattern: over its top images (by inference score), the distance from its inferred position to
each annotated part (head, back, tail); the sample standard deviation of those distances per part; the mean
over parts, then over patterns, then over layers; divided by the image diagonal. Lower is more stable. Per layer
the patterns with the highest mean top-image score are kept (the authors keep 167 of VGG-16's 512 filters' worth,
a third; the same fraction of the layer's filters is kept here for patterns and baselines alike).

Baselines run through the same code: raw filter peaks (each channel is one "pattern" at the argmax of its map,
scored by its maximum) and a random-position control (the patterns' own top images, positions drawn uniformly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kgexplain.explanatory_graph.estep import Grid, subcell
from kgexplain.features.cache import FeatureSet

PARTS = ("head", "back", "tail")


@dataclass
class StabilityResult:
    value: float  # normalised standard deviation, averaged over layers
    per_layer: dict[str, float] = field(default_factory=dict)
    patterns_kept: dict[str, int] = field(default_factory=dict)


def part_array(keypoints: Sequence[Mapping[str, tuple[float, float]]], parts: Sequence[str] = PARTS) -> np.ndarray:
    """(n, parts, 2) keypoint positions; NaN where a part is not annotated."""
    out = np.full((len(keypoints), len(parts), 2), np.nan)
    for i, kp in enumerate(keypoints):
        for j, name in enumerate(parts):
            if name in kp:
                out[i, j] = kp[name]
    return out


def layer_stability(position: np.ndarray, score: np.ndarray, parts: np.ndarray, keep: int, top: int) -> float:
    """Mean over the ``keep`` best patterns of the per-part std of distances over each one's ``top`` images."""
    n, p, _ = position.shape
    top = min(top, n)
    node = np.sort(score, axis=0)[::-1][:top].mean(0)  # (P,) mean of top image scores
    kept = np.argsort(-node, kind="stable")[: min(keep, p)]
    values = []
    for v in kept:
        imgs = np.argsort(-score[:, v], kind="stable")[:top]
        d = np.linalg.norm(position[imgs, v][:, None, :] - parts[imgs], axis=-1)  # (top, parts)
        stds = []
        for j in range(parts.shape[1]):
            col = d[:, j]
            col = col[np.isfinite(col)]
            if col.size >= 2:
                stds.append(col.std(ddof=1))
        if stds:
            values.append(float(np.mean(stds)))
    return float(np.mean(values)) if values else float("nan")


def stability(
    layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
    parts: np.ndarray,
    diagonal: float,
    keep: Mapping[str, int],
    top: int = 20,
) -> StabilityResult:
    """``layers`` maps a layer to (positions (n, P, 2), scores (n, P)); returns the normalised stability."""
    per = {name: layer_stability(pos, sc, parts, keep[name], top) / diagonal for name, (pos, sc) in layers.items()}
    vals = [v for v in per.values() if np.isfinite(v)]
    return StabilityResult(float(np.mean(vals)) if vals else float("nan"), per, dict(keep))


def raw_filter_peaks(fs: FeatureSet, sub_cell: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each channel as a detector: position of its map's maximum (after ReLU) and the maximum as its score;
    ``sub_cell``: the position refined by the centroid of the 3 x 3 cells around it (as graph patterns are for
    localisation, :func:`~kgexplain.explanatory_graph.estep.subcell`)."""
    g = fs.geometry
    pos_parts, score_parts = [], []
    for _, x in fs.chunks(256):
        x = torch.relu(x)
        b, d, h, w = x.shape
        val, arg = x.view(b, d, -1).max(-1)
        col, row = (arg % w).float(), (arg // w).float()
        pos = torch.stack((g.centre_x + col * g.stride_x, g.centre_y + row * g.stride_y), -1)
        if sub_cell:
            grid = Grid(h, w, g.stride_x, g.stride_y, g.centre_x, g.centre_y, 1)
            pos = subcell(x, pos, torch.arange(d), grid)
        pos_parts.append(pos.numpy())
        score_parts.append(val.numpy())
    if not pos_parts:  # no images (a rank of a distributed job whose images could not be decoded)
        return np.zeros((0, fs.channels, 2), np.float32), np.zeros((0, fs.channels), np.float32)
    return np.concatenate(pos_parts), np.concatenate(score_parts)


def random_positions(score: np.ndarray, width: float, height: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, p = score.shape
    return np.stack((rng.uniform(-0.5, width - 0.5, (n, p)), rng.uniform(-0.5, height - 0.5, (n, p))), -1)
