"""Localisation: every firing pattern of a template votes for its position plus its learnt offset; the vote
maps of all templates (and of the mirrored image) compete, and the best peak is the part."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from kgexplain.aog.detections import Detections
from kgexplain.aog.model import PartModel, Template
from kgexplain.errors import UsageError


@dataclass
class Localisation:
    """One part on one image, in framed pixels (the caller maps them back to the source image)."""

    part: str
    x: float
    y: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (pixel edges)
    score: float  # peak of the winning vote map: weighted fraction of agreeing votes, 0..2
    template: int
    flipped: bool
    voters: list[tuple[int, float, float, float]] = field(default_factory=list)  # (column, x, y, weight)


def columns(det: Detections, layer: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Columns of ``det`` holding the given (layer, index) candidates."""
    counts = np.bincount(det.layer, minlength=len(det.layers))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (start[layer] + index).astype(np.int64)


def _kernel(spread: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * spread))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    return torch.exp(-(t**2) / (2 * spread**2))


def _template_votes(det: Detections, strength: np.ndarray, tpl: Template) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols = columns(det, tpl.layer, tpl.index)
    votes = det.position[:, cols] + tpl.offset[None]  # (n, S, 2)
    weights = strength[:, cols] * tpl.weight[None]  # (n, S)
    return cols, votes, weights


def vote_maps(det: Detections, part: PartModel) -> torch.Tensor:
    """(n, T, size, size) vote maps, one per template; a vote's Gaussian has peak 1."""
    size, n, t = part.size, det.n, len(part.templates)
    flat = torch.zeros(n * t, size * size)
    strength = det.strength()
    for k, tpl in enumerate(part.templates):
        _, votes, weights = _template_votes(det, strength, tpl)
        ix = np.rint(votes[..., 0]).astype(np.int64)
        iy = np.rint(votes[..., 1]).astype(np.int64)
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size) & (weights > 0)
        rows = np.broadcast_to(np.arange(n)[:, None] * t + k, ix.shape)
        flat.index_put_(
            (torch.from_numpy(rows[ok]), torch.from_numpy(iy[ok] * size + ix[ok])),
            torch.from_numpy(weights[ok].astype(np.float32)),
            accumulate=True,
        )
    kern = _kernel(part.config.vote_spread * size)
    maps = flat.view(n * t, 1, size, size)
    r = (kern.numel() - 1) // 2
    maps = F.conv2d(maps, kern.view(1, 1, 1, -1), padding=(0, r))
    maps = F.conv2d(maps, kern.view(1, 1, -1, 1), padding=(r, 0))
    return maps.view(n, t, size, size)


def _peaks(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best template, its peak value and position (sub-pixel: weighted mean of the 3x3 around the peak)."""
    n, t, h, w = maps.shape
    val, arg = maps.view(n, t * h * w).max(1)
    k = (arg // (h * w)).numpy()
    cell = (arg % (h * w)).numpy()
    y0, x0 = cell // w, cell % w
    xs, ys = x0.astype(np.float64), y0.astype(np.float64)
    m = maps.numpy()
    for i in range(n):
        ylo, yhi, xlo, xhi = max(0, y0[i] - 1), min(h, y0[i] + 2), max(0, x0[i] - 1), min(w, x0[i] + 2)
        patch = m[i, k[i], ylo:yhi, xlo:xhi]
        if patch.sum() > 0:
            gy, gx = np.mgrid[ylo:yhi, xlo:xhi]
            xs[i] = float((patch * gx).sum() / patch.sum())
            ys[i] = float((patch * gy).sum() / patch.sum())
    return k, val.numpy(), xs, ys


def localise(
    det: Detections, part: PartModel, flipped: Detections | None = None, voters: int = 10
) -> list[Localisation]:
    """Localise ``part`` on each image of ``det``; ``flipped`` holds the detections on the mirrored images
    (in the mirrored image's coordinates) and is tried too, keeping the higher peak."""
    if not part.templates:
        raise UsageError(f"part {part.name!r} has no templates", hint="learn it again with `kgexplain aog learn`")
    size = part.size
    k, val, xs, ys = _peaks(vote_maps(det, part))
    flip = np.zeros(det.n, bool)
    if flipped is not None:
        kf, valf, xf, yf = _peaks(vote_maps(flipped, part))
        flip = valf > val
        k, val = np.where(flip, kf, k), np.where(flip, valf, val)
        xs, ys = np.where(flip, (size - 1) - xf, xs), np.where(flip, yf, ys)
    bw, bh = part.box
    strength = det.strength()
    strength_f = flipped.strength() if flipped is not None else strength
    out = []
    for i in range(det.n):
        src, st = (flipped, strength_f) if flip[i] and flipped is not None else (det, strength)
        tpl = part.templates[int(k[i])]
        cols, _, weights = _template_votes(src.rows([i]), st[i : i + 1], tpl)
        order = np.argsort(-weights[0], kind="stable")[:voters]
        top = []
        for j in order:
            if weights[0, j] <= 0:
                break
            px, py = (float(v) for v in src.position[i, cols[j]])
            if flip[i]:
                px = (size - 1) - px
            top.append((int(cols[j]), px, py, float(weights[0, j])))
        x, y = float(xs[i]), float(ys[i])
        out.append(
            Localisation(
                part.name,
                x,
                y,
                (x + 0.5 - bw / 2, y + 0.5 - bh / 2, x + 0.5 + bw / 2, y + 0.5 + bh / 2),
                float(val[i]),
                tpl.k,
                bool(flip[i]),
                top,
            )
        )
    return out
