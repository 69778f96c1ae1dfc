"""The vote maps' two loops over votes and cells as CPU kernels, compiled by numba (``vote.py`` calls them).

A template's vote map is its votes' histogram on the grid blurred by a separable Gaussian, B @ H @ B (B the
symmetric (g, g) blur matrix). :func:`row_blurred_votes` adds every vote straight into H @ B: a vote in cell
(iy, ix) adds its weight times B's row ix, inside the Gaussian's band, to row iy; nothing of the histogram is
materialised and one of the two dense products is saved. :func:`peaks` finds each map's highest cell and the
weighted mean of the 3 x 3 cells around it in one pass. Images run in parallel. Compiled kernels are cached on
disk (numba ``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def row_blurred_votes(
    position: np.ndarray, weight: np.ndarray, which: np.ndarray, step: float, blur: np.ndarray, r: int, out: np.ndarray
) -> None:
    """out (n, T, g, g), zeroed, += H @ B per image and template: each vote j of image i (``position`` (n, S, 2)
    framed pixels, ``weight`` (n, S)) of template ``which[j]`` with a positive weight and a cell on the grid adds
    weight x ``blur``[ix, ix - r .. ix + r] to row iy of its map (``r`` the blur's reach in cells)."""
    n, s = weight.shape
    g = out.shape[2]
    for i in prange(n):
        for j in range(s):
            w = weight[i, j]
            if not w > 0:
                continue
            fx = (position[i, j, 0] + 0.5) / step
            fy = (position[i, j, 1] + 0.5) / step
            if not (fx >= 0 and fx < g and fy >= 0 and fy < g):  # off the grid (or NaN)
                continue
            ix, iy = int(fx), int(fy)
            row = out[i, which[j], iy]
            b = blur[ix]
            for c in range(max(0, ix - r), min(g, ix + r + 1)):
                row[c] += w * b[c]


@njit(parallel=True, cache=True)
def peaks(maps: np.ndarray, val: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Per map of ``maps`` (N, h, w): its highest cell's value (the first in row-major order on ties) into ``val``
    and its position in cells, refined by the weighted mean of the 3 x 3 cells around it (cells off the map count
    zero; the cell itself where they sum to zero), into ``x`` and ``y`` (N,)."""
    m, h, w = maps.shape
    for k in prange(m):
        a = maps[k]
        best = a[0, 0]
        by, bx = 0, 0
        for i in range(h):
            for j in range(w):
                if a[i, j] > best:
                    best = a[i, j]
                    by, bx = i, j
        mass, sx, sy = 0.0, 0.0, 0.0
        for di in range(-1, 2):
            for dj in range(-1, 2):
                i, j = by + di, bx + dj
                if 0 <= i < h and 0 <= j < w:
                    v = a[i, j]
                    mass += v
                    sx += v * dj
                    sy += v * di
        val[k] = best
        x[k] = bx + sx / mass if mass > 0 else bx
        y[k] = by + sy / mass if mass > 0 else by
