"""The E-step of one layer, vectorised over images x patterns x candidate positions.

Every pattern V (of filter d) looks at a square window of cells around its predicted position
``pred = mu_V + Delta_{I,V}`` (the parents' shift on image I). Per cell x of the window:

    g(V, x)    = exp(-|p_x - pred|^2 / (2 sigma_V^2))                 Gaussian compatibility (Eq. 3-4)
    dens(V, x) = g * (cell area) / (2 pi sigma_V^2)                   as a density per cell
    r(V, x)    = dens / (sum over V's siblings of dens + tau / (h w))  responsibility, with the noise component
    w(V, x)    = F(x) * r(V, x)                                       activation entities V explains (EM weight)
    S(V, x)    = F(x) * g^2                                           inference score (S = F(x) P(p_x|V)^2)

The sibling sum is a scatter-add over the filter's map; the maps are padded by the window's half-range with a
negative value, so windows never leave the array, off-map cells carry no weight and can never be the inferred
position. Positions are image pixels. ``estep_numba.py`` is the same computation as one fused CPU kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as nnf


@dataclass(frozen=True)
class Grid:
    """A layer's map on the image plane."""

    h: int
    w: int
    sx: float
    sy: float
    cx: float
    cy: float
    r: int  # window half-range in cells

    @property
    def k(self) -> int:
        return 2 * self.r + 1


@dataclass
class Stats:
    """Sufficient statistics for the M-step, summed over images (all shaped (P,))."""

    w: torch.Tensor  # sum of weights
    dx: torch.Tensor  # sum of w * (p_x - pred_x)
    dy: torch.Tensor
    dd: torch.Tensor  # sum of w * |p - pred|^2
    packed: torch.Tensor | None = field(default=None, repr=False, compare=False)  # what w..dd are views of

    @classmethod
    def of_rows(cls, rows: torch.Tensor) -> Stats:
        """The statistics held in one tensor with (w, dx, dy, dd) on the last axis (the inverse of ``rows``)."""
        return cls(rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3], rows)

    @classmethod
    def of_images(cls, rows: torch.Tensor) -> Stats:
        """Statistics summed over images, in image order, from per-image rows (B, P, 4) float64 of (w, dx, dy, dd)."""
        if rows.device.type != "cpu":
            return cls.of_rows(torch.from_numpy(rows.cpu().numpy().sum(0)))
        # lazy: rows on the CPU come from the numba kernel (numba loaded); summed there on every thread, same order
        from kgexplain.explanatory_graph.estep_numba import image_sums

        return cls.of_rows(torch.from_numpy(image_sums(rows.numpy()[..., None])[..., 0]))

    def rows(self) -> torch.Tensor:
        """The statistics as one tensor, (w, dx, dy, dd) on the last axis: (B, P, 4) per image, or (P, 4) (the
        tensor they came from, not a copy, when made by ``of_rows``)."""
        if self.packed is not None:
            return self.packed
        return torch.stack((self.w, self.dx, self.dy, self.dd), -1)


OFF_MAP = -1.0  # padding value: cells off the map can never be a pattern's inferred position
FLOOR = 1e-30  # keeps a window-mode noise level positive where a pattern's Gaussian underflows
TIE = 1e-12  # added to responses when ranking cells, so a window without response picks the cell nearest pred


def pad(f: torch.Tensor, r: int) -> torch.Tensor:
    """Pad maps (B, D, h, w) by r cells on every side with OFF_MAP (responses are >= 0 on the map)."""
    return nnf.pad(f, (r, r, r, r), value=OFF_MAP) if r else f


def subcell(f: torch.Tensor, pos: torch.Tensor, filt: torch.Tensor, grid: Grid, padding: int = 0) -> torch.Tensor:
    """Inferred positions refined below the cell: each pattern's cell (``pos``, (B, P, 2) px, cell centres) moved
    by the centroid of its filter's positive responses in the 3 x 3 cells around it (cells off the map count zero;
    ``f`` (B, D, h, w) the responses, padded by ``padding`` cells with OFF_MAP or not at all). The argmax of the
    E-step is a cell, 8-16 px on the toy net's top layers; votes cast from cell centres put the part where the cells
    are (AOG localisation, seed 7: head 0.049 with cell centres, 0.021 refined)."""
    b, d, hh, ww = f.shape
    dev = f.device
    ci = ((pos[..., 0] - grid.cx) / grid.sx).round().long() + padding
    cj = ((pos[..., 1] - grid.cy) / grid.sy).round().long() + padding
    plane = (torch.arange(b, device=dev)[:, None] * d + filt.to(dev)[None, :]) * (hh * ww)  # (B, P)
    step = torch.tensor([-1, 0, 1], device=dev)
    yy = cj[None] + step[:, None, None]  # (3, B, P) the rows around the cell, then the columns
    xx = ci[None] + step[:, None, None]
    y_in, x_in = (yy >= 0) & (yy < hh), (xx >= 0) & (xx < ww)
    idx = plane + yy.clamp(0, hh - 1)[:, None] * ww + xx.clamp(0, ww - 1)[None]
    v = torch.take(f.reshape(-1), idx).clamp_min(0)  # (3 rows, 3 columns, B, P)
    v = torch.where(y_in[:, None] & x_in[None], v, 0.0)  # off the map: nothing
    den = v.sum((0, 1))
    num_x = v[:, 2].sum(0) - v[:, 0].sum(0)
    num_y = v[2].sum(0) - v[0].sum(0)
    safe = den.clamp_min(1e-30)
    shift_x = torch.where(den > 0, num_x / safe, 0.0) * grid.sx
    shift_y = torch.where(den > 0, num_y / safe, 0.0) * grid.sy
    return torch.stack((pos[..., 0] + shift_x, pos[..., 1] + shift_y), -1).to(pos.dtype)


def e_step(
    fp: torch.Tensor,
    pred: torch.Tensor,
    sigma: torch.Tensor,
    filt: torch.Tensor,
    grid: Grid,
    tau: float,
    with_stats: bool = True,
    agree: torch.Tensor | None = None,
    noise: str = "cell",
    score_norm: bool = False,
    per_image: bool = False,
    sub_cell: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Stats | None]:
    """One chunk of images.

    fp: padded responses (B, D, h + 2r, w + 2r); pred: predicted positions (B, P, 2) px; sigma: (P,) px;
    filt: (P,) channel of each pattern; agree: (B, P) the parents' agreement factor (eq. 3), or None for 1;
    noise: ``cell`` (tau / (h w) per cell) or ``window`` (tau x the pattern's mean density over its window);
    score_norm: score with the unit-mass Gaussian, S = F (g (cell / sigma)^2)^2, instead of the peak-1 g;
    sub_cell: positions refined below the cell (:func:`subcell`; the statistics do not read positions).
    Returns inferred positions (B, P, 2) px, scores (B, P) and the chunk's M-step statistics (summed over the
    chunk's images, or per image (B, P) with ``per_image``).
    """
    b, _d, hp, wp = fp.shape
    r, k = grid.r, grid.k
    dev, dt = fp.device, fp.dtype
    offs = torch.arange(-r, r + 1, device=dev)
    # Window centre cell (nearest to the prediction, kept on the map).
    ci = ((pred[..., 0] - grid.cx) / grid.sx).round().clamp_(0, grid.w - 1).long()  # (B, P)
    cj = ((pred[..., 1] - grid.cy) / grid.sy).round().clamp_(0, grid.h - 1).long()
    # Offsets of the window's cells from the prediction, in pixels, per axis.
    dxp = (grid.cx + (ci[..., None] + offs) * grid.sx).to(dt) - pred[..., 0:1]  # (B, P, k)
    dyp = (grid.cy + (cj[..., None] + offs) * grid.sy).to(dt) - pred[..., 1:2]
    inv = (0.5 / (sigma * sigma)).to(dt)[None, :, None]
    gx = torch.exp(-(dxp * dxp) * inv)
    gy = torch.exp(-(dyp * dyp) * inv)
    g = gy[..., :, None] * gx[..., None, :]  # (B, P, k, k)
    plain = g  # without the agreement factor: the noise level is the pattern's own mass
    if agree is not None:
        g = g * agree.to(dt)[..., None, None]
    # Flat index of every window cell in the padded maps of the batch.
    base = (filt * (hp * wp))[None, :] + cj * wp + ci  # (B, P); padded cell (cj + r, ci + r) minus (r, r)
    grid_off = (torch.arange(k, device=dev)[:, None] * wp + torch.arange(k, device=dev)[None, :]).view(-1)
    idx = (base[..., None] + grid_off).view(b, -1)  # (B, P*k*k)
    flat = fp.reshape(b, -1)
    fw = flat.gather(1, idx).view_as(g)  # OFF_MAP outside the map

    g2 = g * g
    _, arg = ((fw + TIE) * g2).view(b, g.shape[1], -1).max(-1)
    score = torch.gather(fw.clamp_min(0).view(b, g.shape[1], -1) * g2.view(b, g.shape[1], -1), 2, arg[..., None])[
        ..., 0
    ]
    if score_norm:
        score = score * ((grid.sx * grid.sy) / (sigma * sigma)).to(dt)[None, :] ** 2
    ky, kx = arg // k, arg % k
    pos = torch.stack((grid.cx + (ci + kx - r) * grid.sx, grid.cy + (cj + ky - r) * grid.sy), dim=-1).to(pred.dtype)
    if sub_cell:
        pos = subcell(fp, pos, filt, grid, r)
    if not with_stats:
        return pos, score, None

    area = grid.sx * grid.sy / (2.0 * math.pi)
    scale = (area / (sigma * sigma)).to(dt)[None, :, None, None]
    dens = g * scale
    sib = torch.zeros_like(flat).scatter_add_(1, idx, dens.view(b, -1))
    if noise == "window":  # tau x the mean density of the pattern over the window cells on the map
        on_map = (fw >= 0).to(dt)
        mass = (plain * scale * on_map).sum((-2, -1)) / on_map.sum((-2, -1)).clamp_min(1.0)
        level: torch.Tensor | float = tau * mass[..., None, None] + FLOOR
    else:
        level = tau / (grid.h * grid.w)
    resp = dens / (sib.gather(1, idx).view_as(g) + level)
    wgt = fw.clamp_min(0) * resp
    wx = wgt.sum(-2)  # (B, P, k): summed over rows -> weight per column offset
    wy = wgt.sum(-1)  # (B, P, k): per row offset
    if per_image:
        stats = Stats(
            w=wx.sum(2).double(),
            dx=(wx * dxp).sum(2).double(),
            dy=(wy * dyp).sum(2).double(),
            dd=((wx * dxp * dxp).sum(2) + (wy * dyp * dyp).sum(2)).double(),
        )
        return pos, score, stats
    stats = Stats(
        w=wx.sum((0, 2)).double(),
        dx=(wx * dxp).sum((0, 2)).double(),
        dy=(wy * dyp).sum((0, 2)).double(),
        dd=((wx * dxp * dxp).sum((0, 2)) + (wy * dyp * dyp).sum((0, 2))).double(),
    )
    return pos, score, stats


def numba_available() -> bool:
    try:
        import numba  # noqa: F401  # lazy: numba takes a while to load; only the CPU kernel needs it
    except ImportError:  # pragma: no cover - numba is a dependency; this guards odd platforms
        return False
    return True


Upper = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Shift = tuple[np.ndarray, np.ndarray]


def _arr(t: torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


def numba_shift(upper: Upper, fire: float, agreement: bool) -> Shift:
    """The parents' shift Delta (B, P, 2) and agreement (B, P) on a set of images, for ``e_step_numba``.

    ``upper`` = (parent index (P, M), the parents' positions (B, Pu, 2) and scores (B, Pu) on these images, their
    mu (Pu, 2), the edge weights (P, M) of the shift and (P, M) of the agreement, and each child's share (P,) of
    the shift, ``Parents.gain``). They change only when the
    parents do, so callers compute them once per parent set and pass them to every E-step on the same images.
    """
    # lazy: importing the kernel loads numba, which only the CPU path needs
    from kgexplain.explanatory_graph.estep_numba import parent_shift_kernel

    idx, pos_u, score_u, mu_u, edge_w, agree_w, gain = upper
    b, p = pos_u.shape[0], idx.shape[0]
    shift = np.empty((b, p, 2), np.float32)
    agree = np.empty((b, p), np.float32)
    parent_shift_kernel(
        _arr(idx, np.int64),
        _arr(pos_u),
        _arr(score_u),
        _arr(mu_u),
        _arr(edge_w),
        _arr(agree_w),
        _arr(gain),
        float(fire),
        agreement,
        shift,
        agree,
    )
    return shift, agree


def e_step_numba(
    f: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    n_per_filter: int,
    grid: Grid,
    tau: float,
    with_stats: bool = True,
    upper: Upper | None = None,
    fire: float = 1.0,
    agreement: bool = False,
    noise: str = "cell",
    score_norm: bool = False,
    active: torch.Tensor | None = None,
    shift: Shift | None = None,
    per_image: bool = False,
    sub_cell: bool = False,
    patterns: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Stats | None]:
    """``e_step`` on *unpadded* CPU responses (B, D, h, w) through the fused numba kernel.

    The prediction ``mu + Delta`` comes from ``shift`` (``numba_shift`` of these images), or is computed here from
    ``upper`` (see ``numba_shift``). ``active`` (D,) bool skips the filters that are False (their outputs are zero);
    ``patterns`` (P,) bool, without statistics only, skips single patterns alike (each pattern's inference reads
    its own window and parents' shift, nothing of its siblings, so the others' outputs are unchanged).
    """
    # lazy: importing the kernel loads numba, which only the CPU path needs
    from kgexplain.explanatory_graph.estep_numba import estep_kernel

    b, p = f.shape[0], mu.shape[0]
    if shift is None and upper is not None:
        shift = numba_shift(upper, fire, agreement)
    has_shift = shift is not None
    delta, agree = shift if shift is not None else (np.zeros((1, 1, 2), np.float32), np.ones((1, 1), np.float32))
    pos = np.empty((b, p, 2), np.float32)
    score = np.empty((b, p), np.float32)
    st = np.empty((b, p, 4) if with_stats else (1, 1, 4), np.float64)
    mask = np.repeat(np.ones(f.shape[1], np.bool_) if active is None else _arr(active, np.bool_), n_per_filter)
    if patterns is not None:
        if with_stats:
            raise ValueError("patterns are skipped one by one only without statistics (siblings share them)")
        mask &= np.asarray(patterns, np.bool_)
    estep_kernel(
        _arr(f),
        _arr(mu),
        has_shift,
        delta,
        agree,
        _arr(sigma),
        n_per_filter,
        float(grid.sx),
        float(grid.sy),
        float(grid.cx),
        float(grid.cy),
        grid.r,
        float(tau),
        with_stats,
        noise == "window",
        score_norm,
        sub_cell,
        mask,
        pos,
        score,
        st,
    )
    stats = None
    if with_stats:
        rows = torch.from_numpy(st)
        stats = Stats.of_rows(rows) if per_image else Stats.of_images(rows)
    return torch.from_numpy(pos), torch.from_numpy(score), stats
