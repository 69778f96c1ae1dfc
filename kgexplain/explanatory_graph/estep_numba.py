"""The E-step (``estep.py``) as one fused CPU kernel, compiled by numba.

Per image and filter, the kernel makes two passes over the filter's patterns: the first (``_windows``) accumulates
the patterns' densities into one map-sized buffer (the sibling mixture), the second (``_responses``) computes
responsibilities, the M-step sums and the inference. The buffer and the filter's map stay in cache, and nothing of
size images x patterns x cells is ever materialised, which makes it several times faster than the vectorised torch
form on a CPU. Images run in parallel. Patterns without parents predict the same position on every image, so for
them the first pass runs once per filter and every image shares it. Compiled kernels are cached on disk (numba
``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TIE = 1e-12
FLOOR = 1e-30  # as estep.FLOOR


@njit(fastmath=True, cache=True, inline="always")
def _axis_gaussian(d0: float, step: float, inv: float, c: float, r: int, out: np.ndarray) -> None:
    """out[r + o] = exp(-(d0 + o * step)^2 * inv) for o in -r..r, with 2 exponentials instead of 2r + 1 (and
    ``c`` = exp(-step^2 inv), the pattern's own, from ``_axis_steps``, computed once per pattern).

    g(o) = A * B^o * C^(o^2) with A = exp(-d0^2 inv), B = exp(-2 d0 step inv), C = exp(-step^2 inv); the centre
    cell is the one nearest to the prediction, so A is the largest value and, if it underflows, all do.
    """
    a = math.exp(-d0 * d0 * inv)
    out[r] = a
    if a == 0.0:
        for o in range(1, r + 1):
            out[r + o] = 0.0
            out[r - o] = 0.0
        return
    up = a
    down = a
    e = math.exp(-2.0 * d0 * step * inv)
    qu = e * c  # ratio g(1)/g(0)
    # ratio g(-1)/g(0) = exp(2 d0 step inv) C: a division instead of a third exponential, unless e is out of range
    qd = c / e if 0.0 < e < 1e300 else math.exp(2.0 * d0 * step * inv) * c
    c2 = c * c
    for o in range(1, r + 1):
        up *= qu
        down *= qd
        out[r + o] = up
        out[r - o] = down
        qu *= c2
        qd *= c2


@njit(fastmath=True, cache=True)
def _axis_steps(sigma: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(P, 3) per pattern: inv = 1 / (2 sigma^2) and C = exp(-step^2 inv) along x and y: what ``_axis_gaussian``
    needs of a pattern whatever the image (computed once per call instead of once per image)."""
    out = np.empty((sigma.shape[0], 3), np.float64)
    for v in range(sigma.shape[0]):
        inv = 0.5 / (sigma[v] * sigma[v])
        out[v, 0] = inv
        out[v, 1] = math.exp(-sx * sx * inv)
        out[v, 2] = math.exp(-sy * sy * inv)
    return out


@njit(parallel=True, fastmath=True, cache=True)
def parent_shift_kernel(
    parents: np.ndarray,  # (P, M) int64 indices into the upper layer
    up_pos: np.ndarray,  # (B, Pu, 2) float32 parents' inferred positions
    up_score: np.ndarray,  # (B, Pu) float32 parents' scores
    up_mu: np.ndarray,  # (Pu, 2) float32
    edge_w: np.ndarray,  # (P, M) float32 weight of each parent in the shift
    agree_w: np.ndarray,  # (P, M) float32 1 / variance of each parent's displacement in the agreement
    gain: np.ndarray,  # (P,) float32 the share of Delta each child takes (Parents.gain)
    fire: float,
    agreement: bool,
    out_shift: np.ndarray,  # (B, P, 2) float32: gain x Delta (Delta: the mean displacement of the parents that fire)
    out_agree: np.ndarray,  # (B, P) float32: exp(-1/2 sum_m w_m |d_m - Delta|^2 / M), or 1 without agreement
) -> None:
    """``miner.parent_shift`` for every image and pattern; the E-step reads it (once per parent set, not per pass)."""
    b_count, pu_count = up_pos.shape[0], up_pos.shape[1]
    p_count, m_count = parents.shape
    for b in prange(b_count):
        # Per parent, once (a parent has many children): how much it fires, and its displacement from its mu.
        on = np.empty(pu_count, np.float64)
        ux = np.empty(pu_count, np.float32)
        uy = np.empty(pu_count, np.float32)
        for u in range(pu_count):
            on[u] = min(max(up_score[b, u] / fire, 0.0), 1.0)
            ux[u] = up_pos[b, u, 0] - up_mu[u, 0]
            uy[u] = up_pos[b, u, 1] - up_mu[u, 1]
        for v in range(p_count):
            tw = 0.0
            ddx = 0.0
            ddy = 0.0
            for m in range(m_count):
                u = parents[v, m]
                wf = on[u] * edge_w[v, m]
                tw += wf
                ddx += wf * ux[u]
                ddy += wf * uy[u]
            if tw > 0.0:
                ddx /= tw
                ddy /= tw
            else:
                ddx = 0.0
                ddy = 0.0
            out_shift[b, v, 0] = ddx * gain[v]
            out_shift[b, v, 1] = ddy * gain[v]
            ag = 1.0
            if agreement and m_count > 0:
                spread = 0.0
                for m in range(m_count):
                    u = parents[v, m]
                    wf = on[u] * agree_w[v, m]
                    ex = ux[u] - ddx
                    ey = uy[u] - ddy
                    spread += wf * (ex * ex + ey * ey)
                ag = math.exp(-0.5 * spread / m_count)
            out_agree[b, v] = ag


@njit(cache=True, inline="always")
def _zero(out_pos: np.ndarray, out_score: np.ndarray, out_stats: np.ndarray, b: int, v: int, stats: bool) -> None:
    """A pattern not computed: position, score (and statistics) 0 on image b."""
    out_pos[b, v, 0] = 0.0
    out_pos[b, v, 1] = 0.0
    out_score[b, v] = 0.0
    if stats:
        for j in range(4):
            out_stats[b, v, j] = 0.0


@njit(fastmath=True, cache=True, inline="always")
def _windows(
    b: int,
    d: int,
    mu: np.ndarray,
    has_shift: bool,
    shift: np.ndarray,
    agree: np.ndarray,
    sigma: np.ndarray,
    steps: np.ndarray,
    n: int,
    sx: float,
    sy: float,
    cx: float,
    cy: float,
    r: int,
    tau: float,
    h: int,
    w: int,
    with_stats: bool,
    noise_window: bool,
    active: np.ndarray,
    gx: np.ndarray,  # (n, 2r + 1) out: the Gaussian along x around each pattern's centre cell (x its agreement)
    gy: np.ndarray,  # (n, 2r + 1) out: along y
    ci: np.ndarray,  # (n,) out: the centre cell's column
    cj: np.ndarray,  # (n,) out: its row
    pr: np.ndarray,  # (n, 2) out: the prediction mu + Delta, px
    lvl: np.ndarray,  # (n,) out (window noise): the pattern's noise level
    sib: np.ndarray,  # (h, w) out (with statistics): 1 / (mixture + noise) per cell, or the mixture (window noise)
) -> None:
    """Filter d's patterns on image b (any b when there is no shift: nothing then depends on the image): their
    predictions, window Gaussians and, with statistics, the sibling mixture that the responsibilities divide by."""
    area = sx * sy / (2.0 * math.pi)
    if with_stats:
        sib[:, :] = 0.0
    ylo, yhi, xlo, xhi = h, 0, w, 0  # the box around the windows (the cells the responses read)
    for t in range(n):
        v = d * n + t
        if not active[v]:
            continue
        # pred = mu + Delta, and the Gaussian scaled by the parents' agreement (eq. 3).
        px = mu[v, 0]
        py = mu[v, 1]
        ag = np.float32(1.0)
        if has_shift:
            px += shift[b, v, 0]
            py += shift[b, v, 1]
            ag = agree[b, v]
        pr[t, 0] = px
        pr[t, 1] = py
        i0 = round((px - cx) / sx)
        j0 = round((py - cy) / sy)
        i0 = min(max(i0, 0), w - 1)
        j0 = min(max(j0, 0), h - 1)
        ci[t] = i0
        cj[t] = j0
        inv = steps[v, 0]
        _axis_gaussian(cx + i0 * sx - px, sx, inv, steps[v, 1], r, gx[t])
        _axis_gaussian(cy + j0 * sy - py, sy, inv, steps[v, 2], r, gy[t])
        if with_stats:
            c = area / (sigma[v] * sigma[v])
            y0, y1 = max(j0 - r, 0), min(j0 + r + 1, h)
            x0, x1 = max(i0 - r, 0), min(i0 + r + 1, w)
            ylo, yhi, xlo, xhi = min(ylo, y0), max(yhi, y1), min(xlo, x0), max(xhi, x1)
            if noise_window:  # the pattern's own mean density over its window cells on the map
                mass = 0.0
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        mass += gy[t, y - j0 + r] * gx[t, x - i0 + r]
                lvl[t] = tau * c * mass / ((y1 - y0) * (x1 - x0)) + FLOOR
            for y in range(y0, y1):
                gyc = gy[t, y - j0 + r] * c * ag
                for x in range(x0, x1):
                    sib[y, x] += gyc * gx[t, x - i0 + r]
        if ag != 1.0:
            for o in range(2 * r + 1):
                gx[t, o] *= ag
    if with_stats and not noise_window:
        noise = tau / (h * w)
        for y in range(ylo, yhi):  # one reciprocal per cell instead of one division per window cell
            for x in range(xlo, xhi):
                sib[y, x] = 1.0 / (sib[y, x] + noise)


@njit(fastmath=True, cache=True, inline="always")
def _responses(
    b: int,
    d: int,
    f: np.ndarray,
    sigma: np.ndarray,
    n: int,
    sx: float,
    sy: float,
    cx: float,
    cy: float,
    r: int,
    with_stats: bool,
    noise_window: bool,
    score_norm: bool,
    sub_cell: bool,
    active: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    ci: np.ndarray,
    cj: np.ndarray,
    pr: np.ndarray,
    lvl: np.ndarray,
    sib: np.ndarray,
    out_pos: np.ndarray,
    out_score: np.ndarray,
    out_stats: np.ndarray,
) -> None:
    """Filter d's patterns on image b, from ``_windows``: inferred position and score, and the M-step sums."""
    h, w = f.shape[2], f.shape[3]
    area = sx * sy / (2.0 * math.pi)
    cell = sx * sy
    for t in range(n):
        v = d * n + t
        if not active[v]:
            _zero(out_pos, out_score, out_stats, b, v, with_stats)
            continue
        px = pr[t, 0]
        py = pr[t, 1]
        c = np.float32(area / (sigma[v] * sigma[v]))
        i0 = ci[t]
        j0 = cj[t]
        best = np.float32(-1.0)
        best_s = np.float32(0.0)
        bx = i0
        by = j0
        sw = np.float32(0.0)
        sdx = np.float32(0.0)
        sdy = np.float32(0.0)
        sdd = np.float32(0.0)
        y0, y1 = max(j0 - r, 0), min(j0 + r + 1, h)
        x0, x1 = max(i0 - r, 0), min(i0 + r + 1, w)
        for y in range(y0, y1):
            gyv = gy[t, y - j0 + r]
            dy = np.float32(cy + y * sy - py)
            for x in range(x0, x1):
                g = gyv * gx[t, x - i0 + r]
                fv = f[b, d, y, x]
                g2 = g * g
                rank = (fv + np.float32(TIE)) * g2
                if rank > best:
                    best = rank
                    best_s = fv * g2
                    bx = x
                    by = y
                if with_stats:
                    dx = np.float32(cx + x * sx - px)
                    # sib holds 1 / (mixture + noise) per cell, or the mixture alone (window noise)
                    wt = fv * (g * c) / (sib[y, x] + lvl[t]) if noise_window else fv * (g * c) * sib[y, x]
                    sw += wt
                    sdx += wt * dx
                    sdy += wt * dy
                    sdd += wt * (dx * dx + dy * dy)
        ox = 0.0
        oy = 0.0
        if sub_cell:  # as estep.subcell: cells off the map count zero
            den = 0.0
            for y in range(max(by - 1, 0), min(by + 2, h)):
                for x in range(max(bx - 1, 0), min(bx + 2, w)):
                    fv = max(f[b, d, y, x], np.float32(0.0))
                    den += fv
                    ox += fv * (x - bx)
                    oy += fv * (y - by)
            if den > 0.0:
                ox /= den
                oy /= den
            else:
                ox = 0.0
                oy = 0.0
        out_pos[b, v, 0] = cx + (bx + ox) * sx
        out_pos[b, v, 1] = cy + (by + oy) * sy
        if score_norm:
            q = cell / (sigma[v] * sigma[v])
            best_s *= np.float32(q * q)
        out_score[b, v] = best_s
        if with_stats:
            out_stats[b, v, 0] = sw
            out_stats[b, v, 1] = sdx
            out_stats[b, v, 2] = sdy
            out_stats[b, v, 3] = sdd


@njit(parallel=True, fastmath=True, cache=True)
def estep_kernel(
    f: np.ndarray,  # (B, D, h, w) float32 responses F(x) >= 0
    mu: np.ndarray,  # (P, 2) float32 prior positions, px
    has_shift: bool,  # whether the patterns have parents (else shift and agree are not read)
    shift: np.ndarray,  # (B, P, 2) float32 the parents' shift Delta per image (parent_shift_kernel)
    agree: np.ndarray,  # (B, P) float32 the parents' agreement per image
    sigma: np.ndarray,  # (P,) float32
    n_per_filter: int,
    sx: float,
    sy: float,
    cx: float,
    cy: float,
    r: int,
    tau: float,
    with_stats: bool,
    noise_window: bool,  # noise level tau x the pattern's mean window density (else tau / (h w) per cell)
    score_norm: bool,  # scores with the unit-mass Gaussian, (cell / sigma)^2 x its peak-1 form
    sub_cell: bool,  # positions moved by the centroid of the 3 x 3 positive responses around the cell (estep.subcell)
    active: np.ndarray,  # (P,) bool: patterns to compute; the others' outputs are left zero (with statistics,
    # whole filters only: a filter's patterns share the sibling mixture; without, each pattern stands alone)
    out_pos: np.ndarray,  # (B, P, 2) float32
    out_score: np.ndarray,  # (B, P) float32
    out_stats: np.ndarray,  # (B, P, 4) float64: w, w*dx, w*dy, w*|d|^2
) -> None:
    """``estep.e_step`` for every image and pattern, into the ``out_`` arrays (see ``estep.e_step_numba``)."""
    b_count, d_count, h, w = f.shape
    k = 2 * r + 1
    n = n_per_filter
    steps = _axis_steps(sigma, sx, sy)
    on = np.zeros(d_count, np.bool_)  # filters with a pattern to compute
    for v in range(d_count * n):
        on[v // n] = on[v // n] or active[v]
    # Without a shift the windows and the sibling mixture are the same on every image: computed once per filter.
    shared = 0 if has_shift else d_count
    gx_all = np.empty((shared, n, k), np.float32)
    gy_all = np.empty((shared, n, k), np.float32)
    ci_all = np.zeros((shared, n), np.int64)
    cj_all = np.zeros((shared, n), np.int64)
    pr_all = np.empty((shared, n, 2), np.float32)
    lvl_all = np.empty((shared, n), np.float32)
    sib_all = np.empty((shared, h, w), np.float32)
    for d in prange(shared):
        if on[d]:
            _windows(0, d, mu, has_shift, shift, agree, sigma, steps, n, sx, sy, cx, cy, r, tau, h, w, with_stats,
                     noise_window, active, gx_all[d], gy_all[d], ci_all[d], cj_all[d], pr_all[d], lvl_all[d],
                     sib_all[d])  # fmt: skip
    for b in prange(b_count):
        sib = np.zeros((h, w), np.float32)
        gx = np.empty((n, k), np.float32)
        gy = np.empty((n, k), np.float32)
        ci = np.empty(n, np.int64)
        cj = np.empty(n, np.int64)
        pr = np.empty((n, 2), np.float32)
        lvl = np.empty(n, np.float32)
        for d in range(d_count):
            if not on[d]:
                for t in range(n):
                    _zero(out_pos, out_score, out_stats, b, d * n + t, with_stats)
            elif has_shift:
                _windows(b, d, mu, has_shift, shift, agree, sigma, steps, n, sx, sy, cx, cy, r, tau, h, w,
                         with_stats, noise_window, active, gx, gy, ci, cj, pr, lvl, sib)  # fmt: skip
                _responses(b, d, f, sigma, n, sx, sy, cx, cy, r, with_stats, noise_window, score_norm, sub_cell,
                           active, gx, gy, ci, cj, pr, lvl, sib, out_pos, out_score, out_stats)  # fmt: skip
            else:
                _responses(b, d, f, sigma, n, sx, sy, cx, cy, r, with_stats, noise_window, score_norm, sub_cell,
                           active, gx_all[d], gy_all[d], ci_all[d], cj_all[d], pr_all[d], lvl_all[d], sib_all[d],
                           out_pos, out_score, out_stats)  # fmt: skip


@njit(parallel=True, cache=True)
def image_sums(x: np.ndarray, square: bool = False) -> np.ndarray:
    """(B, D, h, w) -> (D, h, w) float64: the sum over the images of ``x`` (or of ``x * x``, squared in x's type),
    each value added in image order as numpy's ``sum(0, dtype=float64)`` adds it, the second axis split across
    threads (feature maps' channels; the E-step's per-image statistics as (B, P, 4, 1))."""
    b_count, d_count, h, w = x.shape
    out = np.zeros((d_count, h, w), np.float64)
    for d in prange(d_count):
        for b in range(b_count):
            for y in range(h):
                for i in range(w):
                    v = x[b, d, y, i]
                    if square:
                        v = v * v
                    out[d, y, i] += np.float64(v)
    return out
