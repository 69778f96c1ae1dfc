"""Mining an explanatory graph (Algorithm 1, top-down EM) and inferring its patterns on images.

Layer by layer from the top: every filter's activation entities F(x) are explained by a mixture of N part
patterns plus a noise component. A pattern predicts its position on image I from its prior mu and the
displacement of its parents (patterns of the layer above): ``pred = mu + Delta_I``, where Delta_I is the
1/sigma^2-weighted mean of the parents' displacements ``p_parent - mu_parent`` (footnote 4 of the paper; parents
that do not fire on I do not pull). The E-step (``estep.py``) gives responsibilities and inferences; the M-step
moves mu to the responsibility-weighted mean of ``p_x - Delta`` and sets sigma from the residuals. Parents are
re-chosen every iteration from the second on (``parents.py``). Everything is in image-plane pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from kgexplain.devices import resolve_device
from kgexplain.distributed import Group, offsets
from kgexplain.errors import DataError, UsageError
from kgexplain.explanatory_graph.config import EGConfig
from kgexplain.explanatory_graph.estep import (
    Grid,
    Shift,
    Stats,
    Upper,
    e_step,
    e_step_numba,
    numba_available,
    numba_shift,
    pad,
)
from kgexplain.explanatory_graph.graph import ExplanatoryGraph, Inference, LayerInference, LayerPatterns
from kgexplain.explanatory_graph.normalise import background_std, image_sum, responses
from kgexplain.explanatory_graph.parents import Parents, candidates, image_moments, select_parents
from kgexplain.features.cache import FeatureSet
from kgexplain.features.geometry import LayerGeometry
from kgexplain.progress import Progress, task

MEMORY_BUDGET = 2 << 30  # padded responses of a layer kept on the device up to this size


class LayerData:
    """A layer's normalised responses over a set of images: held on the device, or streamed from the cache.

    Padded by the window's half-range for the torch E-step; unpadded for the numba kernel.
    """

    def __init__(
        self, fs: FeatureSet, std: torch.Tensor, beta: float, r: int, device: torch.device, padded: bool
    ) -> None:
        self.fs, self.std, self.beta, self.device = fs, std.to(device), beta, device
        self.r = r if padded else 0
        self.n = len(fs)
        d, h, w = fs.shape
        self.bytes = self.n * d * (h + 2 * self.r) * (w + 2 * self.r) * 4
        self.cache: torch.Tensor | None = None
        if self.bytes <= MEMORY_BUDGET:
            parts = [self._prepare(x) for _, x in fs.chunks(256, device=device)]
            if len(parts) == 1:  # (no copy)
                self.cache = parts[0]
            elif parts:
                self.cache = torch.cat(parts)
            else:
                self.cache = torch.zeros(0, d, h + 2 * self.r, w + 2 * self.r, device=device)

    def sample(self, rows: np.ndarray) -> LayerData:
        """The same layer on a subset of its images (held in memory)."""
        if self.cache is not None:
            return self.of(self.cache[torch.from_numpy(rows).to(self.device)])
        return self.of(self._prepare(self.fs.get(rows, device=self.device)))

    def of(self, cache: torch.Tensor) -> LayerData:
        """The same layer on other images, from their prepared responses (``cache``, as this one holds them)."""
        sub = object.__new__(LayerData)
        sub.fs, sub.std, sub.beta, sub.device, sub.r = self.fs, self.std, self.beta, self.device, self.r
        sub.n, sub.cache, sub.bytes = int(cache.shape[0]), cache, int(cache.numel()) * 4
        return sub

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Responses of a chunk the feature set just copied out (so it is changed in place)."""
        return pad(responses(x, self.std, self.beta, inplace=True), self.r).contiguous()

    def chunks(self, size: int) -> Iterator[tuple[slice, torch.Tensor]]:
        if self.cache is not None:
            for lo in range(0, self.n, size):
                yield slice(lo, min(lo + size, self.n)), self.cache[lo : lo + size]
        else:
            for sl, x in self.fs.chunks(size, device=self.device):
                yield sl, self._prepare(x)

    def interior(self, f: torch.Tensor) -> torch.Tensor:
        r = self.r
        return f[:, :, r : f.shape[2] - r, r : f.shape[3] - r] if r else f


@dataclass
class LayerState:
    """A fitted layer on the device, with its inferences on the mining images."""

    name: str
    geometry: LayerGeometry
    grid: Grid
    filt: torch.Tensor
    k: torch.Tensor
    mu: torch.Tensor  # (P, 2)
    sigma: torch.Tensor  # (P,)
    parents: Parents | None
    pos: torch.Tensor  # (n, P, 2) on this rank's images
    score: torch.Tensor  # (n, P)
    std: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: float = 0.0  # share of the EM's filter iterations skipped because the filter had stopped moving


def make_grid(g: LayerGeometry, window: float) -> Grid:
    r = max(1, round(window * max(g.map_h, g.map_w)))
    return Grid(g.map_h, g.map_w, g.stride_x, g.stride_y, g.centre_x, g.centre_y, r)


def edge_weights(parents: Parents, upper_sigma: torch.Tensor) -> torch.Tensor:
    """(P, M) weight of each parent in a child's predicted shift: 1 / sigma^2 of the parent (the authors' code;
    weighting by the spread of the child-parent displacement instead measured less stable)."""
    return 1.0 / (upper_sigma[parents.index] ** 2)


def absolute_stats(st: Stats, mu: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """E-step statistics (offsets from mu + Delta) as sums over p - Delta, scaled: sum w, sum w x, sum w y,
    sum w |p|^2. They do not depend on the mu the E-step used, so stepwise EM can average them over iterations."""
    return [a * scale for a in absolute_rows(st.rows(), mu).unbind(-1)]


def absolute_rows(rows: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``absolute_stats`` of statistics rows (..., P, 4) (per image or summed), unscaled, as rows."""
    m = mu.double()
    mx, my = m[:, 0], m[:, 1]
    w, dx, dy, dd = rows.unbind(-1)
    return torch.stack((w, dx + w * mx, dy + w * my, dd + 2 * (mx * dx + my * dy) + w * (mx * mx + my * my)), -1)


def agreement_weights(parents: Parents, upper_sigma: torch.Tensor, mode: str) -> torch.Tensor:
    """(P, M) 1 / variance of each parent's displacement in the agreement factor: the parent's own sigma
    ("parent", as in the shift) or the spread of the child-parent displacement over the images ("spread", eq. 4's
    sigma_V' "estimated from data"), plus one pixel."""
    if mode == "spread":
        return 1.0 / (parents.spread**2 + 1.0)
    return edge_weights(parents, upper_sigma)


def numba_upper(
    parents: Parents, mu: torch.Tensor, sigma: torch.Tensor, src: tuple[torch.Tensor, torch.Tensor], agree_sigma: str
) -> Upper:
    """The numba kernels' view of the parents (``numba_shift``'s argument) on the images of ``src``, the parents'
    positions and scores there; ``mu`` and ``sigma`` are the parents' layer's."""
    gain = parents.gain if parents.gain is not None else torch.ones(parents.index.shape[0])
    return (
        parents.index, src[0], src[1], mu, edge_weights(parents, sigma), agreement_weights(parents, sigma, agree_sigma),
        gain,
    )  # fmt: skip


def parent_shift(
    parents: Parents,
    upper_mu: torch.Tensor,
    edge_w: torch.Tensor,
    upper_pos: torch.Tensor,
    upper_score: torch.Tensor,
    fire: float,
    agree_w: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Delta (B, P, 2) for a chunk of images from the parents' inferred positions (B, P_up, 2), and the parents'
    agreement (B, P): eq. 3's product of the M parents' Gaussians to the power 1/M is a Gaussian around
    mu + Delta times exp(-1/2 sum_m w_m |d_m - Delta|^2 / M), d_m a parent's displacement, w_m = 1 / sigma_m^2 (only
    parents that fire on the image count). With ``parents.gain`` the shift returned is gain x Delta (the
    agreement is still measured around Delta)."""
    idx = parents.index  # (P, M)
    disp = upper_pos[:, idx] - upper_mu[idx][None]  # (B, P, M, 2)
    w = edge_w[None] * (upper_score[:, idx] / fire).clamp(0, 1)  # (B, P, M)
    total = w.sum(-1, keepdim=True)
    shift = torch.where(
        total > 0, (w[..., None] * disp).sum(-2) / total.clamp_min(1e-30), torch.zeros_like(disp[..., 0, :])
    )
    if agree_w is not None:
        w = agree_w[None] * (upper_score[:, idx] / fire).clamp(0, 1)
    spread = (w * ((disp - shift[..., None, :]) ** 2).sum(-1)).sum(-1)
    if parents.gain is not None:  # the share of Delta the child takes (the agreement is about Delta itself)
        shift = shift * parents.gain[None, :, None]
    return shift, torch.exp(-0.5 * spread / max(1, idx.shape[1]))


class ExplanatoryGraphMiner:
    """Learns an explanatory graph from feature maps (``fit``) and infers its patterns on images (``infer``)."""

    def __init__(
        self, config: EGConfig, device: str | torch.device = "auto", kernel: str = "auto", group: Group | None = None
    ) -> None:
        """``group``: a distributed job's group; then every ``features`` passed in are this rank's block of the
        images (in rank order), the graph is the same on every rank, and inferences come back for every image."""
        self.config = config
        self.group = group or Group()
        self.device = resolve_device(device)
        if kernel not in ("auto", "numba", "torch"):
            raise UsageError(f"kernel must be auto, numba or torch, not {kernel!r}")
        if kernel == "auto":
            kernel = "numba" if self.device.type == "cpu" and numba_available() else "torch"
        if kernel == "numba" and self.device.type != "cpu":
            raise UsageError("the numba kernel runs on the CPU only", hint="use kernel='torch' on a GPU")
        self.kernel = kernel

    def _e_step(
        self,
        f: torch.Tensor,
        mu: torch.Tensor,
        sigma: torch.Tensor,
        filt: torch.Tensor,
        n_pat: int,
        grid: Grid,
        with_stats: bool,
        parents: Parents | None,
        upper: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
        active: torch.Tensor | None = None,
        shift: Shift | None = None,
        sub_cell: bool = False,
        patterns: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Stats | None]:
        """One chunk (statistics per image); ``upper`` = (mu, sigma, positions, scores) of the parents' layer on these
        images; ``active`` (D,) bool: the filters the numba kernel computes (the torch form computes all; callers
        keep the others'); ``patterns`` (P,) bool, without statistics: the patterns the numba kernel computes
        (alike);
        ``shift``: the numba kernel's precomputed parent shift for these images (``numba_shift``)."""
        cfg = self.config
        if self.kernel == "numba":
            up = None
            if parents is not None and upper is not None and shift is None:  # a given shift needs no parents' view
                up = numba_upper(parents, upper[0], upper[1], (upper[2], upper[3]), cfg.agree_sigma)
            return e_step_numba(
                f,
                mu,
                sigma,
                n_pat,
                grid,
                cfg.tau,
                with_stats,
                up,
                cfg.fire_threshold,
                cfg.agreement,
                cfg.noise,
                cfg.score_norm,
                active,
                shift,
                per_image=True,
                sub_cell=sub_cell,
                patterns=patterns,
            )
        pred = mu[None].expand(f.shape[0], -1, -1)
        agree = None
        if parents is not None and upper is not None:
            edge_w, agree_w = edge_weights(parents, upper[1]), agreement_weights(parents, upper[1], cfg.agree_sigma)
            delta, agree = parent_shift(parents, upper[0], edge_w, upper[2], upper[3], cfg.fire_threshold, agree_w)
            pred = pred + delta
        agree = agree if cfg.agreement else None
        return e_step(f, pred, sigma, filt, grid, cfg.tau, with_stats, agree, cfg.noise, cfg.score_norm, True, sub_cell)

    def _chunk(self, patterns: int, grid: Grid) -> int:
        if self.kernel == "numba":
            return 1 << 30  # the kernel wants every image at once (parallel over images)
        return max(1, self.config.chunk_elements // max(1, patterns * grid.k * grid.k))

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        features: Mapping[str, FeatureSet],
        negatives: Mapping[str, FeatureSet] | None = None,
        model: str = "",
        progress: Progress | None = None,
    ) -> ExplanatoryGraph:
        """Mine the layers ``config.layers`` (bottom to top) from the features of the object images.

        ``negatives`` (background images) give the normalisation; without them the object images' own statistics
        are used (documented fallback).
        """
        return self.fit_infer(features, negatives, model, progress)[0]

    def fit_infer(
        self,
        features: Mapping[str, FeatureSet],
        negatives: Mapping[str, FeatureSet] | None = None,
        model: str = "",
        progress: Progress | None = None,
    ) -> tuple[ExplanatoryGraph, Inference]:
        """``fit``, and the inference on the same images that the fit's last pass computed (what ``infer`` on
        these features returns, without a second pass)."""
        cfg = self.config
        g = self.group
        names = list(cfg.layers)
        missing = [n for n in names if n not in features]
        if missing:
            raise UsageError(f"no features for layers {missing}", hint="extract every layer of the config")
        n_images = {len(features[n]) for n in names}
        if len(n_images) != 1:
            raise DataError(f"the layers have different numbers of images: {n_images}")
        sizes = g.sizes(next(iter(n_images)))
        if sum(sizes) == 0:
            raise DataError("no images to mine")
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        t_start = time.perf_counter()
        states: dict[str, LayerState] = {}
        upper: LayerState | None = None
        total_steps = len(names) * (cfg.iterations + 1)
        with task(progress, "mining", total_steps, "step") as advance:
            for li in reversed(range(len(names))):
                name = names[li]
                neg = negatives.get(name) if negatives else None
                n_neg = sum(g.sizes(len(neg) if neg is not None else 0))
                if neg is not None and n_neg >= 2:
                    std = background_std(neg, self.device, group=g)
                else:
                    std = background_std(features[name], self.device, per_position=False, group=g)
                g.fault(f"mining:{name}")
                state = self._fit_layer(li, name, features[name], std, upper, gen, advance, sizes)
                states[name] = state
                upper = state
        layers = [
            self._export(states[n], states[names[i + 1]] if i + 1 < len(names) else None) for i, n in enumerate(names)
        ]
        stats = {
            "seconds": round(time.perf_counter() - t_start, 3),
            "layer_seconds": {n: states[n].seconds for n in names},
            "layer_skipped": {n: round(states[n].skipped, 3) for n in names},
            "images": sum(sizes),
            "device": str(self.device),
        }
        if g.joined:
            stats["ranks"] = g.world
        graph = ExplanatoryGraph(model, layers, cfg.to_dict(), stats)
        inference = {n: LayerInference(*self._gathered(states[n].pos, states[n].score, "inference")) for n in names}
        ids = [i for part in g.objects(list(features[names[0]].ids), "image ids") for i in part]
        return graph, Inference(inference, ids)

    def _gathered(self, pos: torch.Tensor, score: torch.Tensor, what: str) -> tuple[np.ndarray, ...]:
        """Inferences on this rank's images -> (positions, scores, fires) on every image, as arrays."""
        pos_all = self.group.gather(pos.cpu(), what)
        score_all = self.group.gather(score.cpu(), what)
        return pos_all.numpy(), score_all.numpy(), (score_all >= self.config.fire_threshold).numpy()

    def _init_positions(self, data: LayerData, n_patterns: int, grid: Grid, gen: torch.Generator) -> torch.Tensor:
        """N distinct cells per filter by k-means++ seeding on the filter's mean response map: the first cell is
        drawn in proportion to the response, each next one to response x squared distance to the nearest cell
        already drawn, among the cells responding at least as much as the map's mean; so a filter's patterns start
        on its different activation peaks (the authors' code draws random distinct cells)."""
        mean = torch.zeros(data.fs.shape, dtype=torch.float64, device=self.device)
        for _, f in data.chunks(256):
            mean += image_sum(data.interior(f))  # responses are >= 0
        weights = self.group.sum(mean, "initial positions").flatten(1).cpu()
        # Only cells where the filter really responds (at least its mean response) are drawn while there are
        # enough of them: the many weak background cells would otherwise add up to a large share of the draws.
        strong = weights >= weights.mean(1, keepdim=True)
        enough = strong.sum(1, keepdim=True) >= min(n_patterns, weights.shape[1])
        weights = torch.where(strong | ~enough, weights + 1e-12, torch.zeros_like(weights))
        d, n_cells = weights.shape
        rows = torch.arange(n_cells) // grid.w
        cols = torch.arange(n_cells) % grid.w
        chosen = torch.zeros(d, min(n_patterns, n_cells), dtype=torch.long)
        nearest = torch.full((d, n_cells), float("inf"), dtype=torch.float64)
        taken = torch.zeros(d, n_cells, dtype=torch.bool)
        for t in range(chosen.shape[1]):
            w = weights if t == 0 else weights * nearest
            w = w.masked_fill(taken, 0.0)
            w = torch.where(w.sum(1, keepdim=True) > 0, w, (~taken).double())
            pick = torch.multinomial(w, 1, generator=gen).flatten()
            chosen[:, t] = pick
            taken[torch.arange(d), pick] = True
            d2 = (rows[None] - rows[pick][:, None]).double() ** 2 + (cols[None] - cols[pick][:, None]).double() ** 2
            nearest = torch.minimum(nearest, d2)
        cells = chosen
        if n_patterns > n_cells:  # more patterns than cells: wrap around
            cells = cells.repeat(1, (n_patterns + n_cells - 1) // n_cells)[:, :n_patterns]
        cells = cells.flatten().to(self.device)
        x = grid.cx + (cells % grid.w).double() * grid.sx
        y = grid.cy + (cells // grid.w).double() * grid.sy
        return torch.stack((x, y), -1).float()

    def _fit_layer(
        self,
        li: int,
        name: str,
        fs: FeatureSet,
        std: torch.Tensor,
        upper: LayerState | None,
        gen: torch.Generator,
        advance: Callable[[int], None],
        sizes: list[int],
    ) -> LayerState:
        """EM on a sample of the images, then one pass that infers on this rank's images. In a distributed job each
        rank runs the E-step on its share of the sample; the statistics are summed over ranks after each E-step and
        the positions and scores gathered before parents are chosen, so every rank holds the same parameters."""
        cfg, g = self.config, self.group
        geo = fs.geometry
        grid = make_grid(geo, cfg.window)
        t0 = time.perf_counter()
        data = LayerData(fs, std, cfg.beta, grid.r, self.device, padded=self.kernel == "torch")
        d, h, w = fs.shape
        n_pat = cfg.patterns_for(li, h, w)
        p = d * n_pat
        filt = torch.arange(d, device=self.device).repeat_interleave(n_pat)
        kk = torch.arange(n_pat, device=self.device).repeat(d)
        stride = max(geo.stride_x, geo.stride_y)
        side = max(h, w)
        sigma_max = side / n_pat**0.5 * stride
        sigma = torch.full((p,), min(cfg.init_sigma * side * stride, sigma_max), device=self.device)
        mu = self._init_positions(data, n_pat, grid, gen)
        n, offset = sum(sizes), offsets(sizes)[g.rank]
        rows = self._em_rows(n, gen)  # EM on these images (every rank's); the final pass infers on every image
        em_rows = rows if rows is not None else np.arange(n)
        o_lo, o_hi = (int(v) for v in np.searchsorted(em_rows, [offset, offset + data.n]))
        local = em_rows[o_lo:o_hi] - offset  # the EM images among this rank's own, as rows of its data
        em = data if rows is None else data.sample(local)
        n_em = len(em_rows)
        e_lo, e_hi = o_lo, o_hi  # the EM images this rank iterates on, as positions in em_rows
        if rows is not None and g.joined:  # an equal share of the sample each, whoever holds the images
            em, (e_lo, e_hi) = self._rebalanced(em, (o_lo, o_hi), n_em, name)
        up_em: tuple[torch.Tensor, torch.Tensor] | None = None  # the upper layer's inferences on all EM images
        if upper is not None:
            sel = torch.from_numpy(local).to(self.device)
            up_em = (
                g.gather(upper.pos[sel], f"mining {name}").to(self.device),
                g.gather(upper.score[sel], f"mining {name}").to(self.device),
            )
        pos = torch.zeros(e_hi - e_lo, p, 2, device=self.device)  # on this rank's EM images
        score = torch.zeros(e_hi - e_lo, p, device=self.device)
        chunk = self._chunk(p, grid)
        parents: Parents | None = None
        cand = None
        if upper is not None:
            var, total = image_moments(upper.pos, upper.score, g)
            cand = candidates(upper.mu, var, total, geo.input_w, geo.input_h, cfg.border, cfg.max_candidates)
        seconds = {"em": 0.0, "parents": 0.0}
        skipped = 0
        frozen = torch.zeros(d, dtype=torch.bool, device=self.device)  # filters whose patterns stopped moving
        shift: Shift | None = None  # numba: the parents' shift on this rank's EM images, per parent set
        shift_for: Parents | None = None
        batch_order: list[int] = []  # stepwise EM: the rest of this epoch's shuffled EM images
        running: list[torch.Tensor] | None = None  # stepwise EM: sum w, sum w x, sum w y, sum w |p|^2 (p - Delta)
        # Mini-batches (stepwise or incremental EM) on layers whose window holds em_batch_cells or more, in every
        # iteration but the last em_full_iterations, which use every EM image (batch EM); none where a batch would
        # hold every EM image (averaging full passes' statistics would only keep stale ones).
        batched = 0 < cfg.em_batch < n_em and (2 * grid.r + 1) ** 2 >= cfg.em_batch_cells
        full_from = cfg.iterations - cfg.em_full_iterations
        incremental = batched and cfg.em_update == "incremental"
        latest: torch.Tensor | None = None  # incremental EM: this rank's EM images' latest rows of the same sums
        for it in range(cfg.iterations + 1):
            final = it == cfg.iterations
            if up_em is not None and cand is not None and cfg.parents_due(it):
                t = time.perf_counter()
                what = f"parents of {name}"  # chosen on every EM image: every rank's gathered
                pos_all, score_all = g.gather(pos, what).to(self.device), g.gather(score, what).to(self.device)
                parents = select_parents(
                    pos_all,
                    score_all,
                    up_em[0],
                    up_em[1],
                    cand,
                    cfg.parents,
                    score=cfg.parent_score,
                    shrink=cfg.shift == "shrunk",
                )
                seconds["parents"] += time.perf_counter() - t
                frozen[:] = False  # new parents, new predictions: every filter moves again
            if final:
                frozen[:] = False
            held = frozen[filt]  # (P,) patterns that keep their last positions, scores and parameters
            skipped += int(frozen.sum())
            t = time.perf_counter()
            # Stepwise EM: this iteration's E-step on a mini-batch of the EM images (None: all of them).
            # Incremental EM starts with every EM image, so each has statistics before mini-batches replace them.
            late = it >= full_from  # batch EM from here on
            minibatch = batched and not late and not (incremental and it == 0)
            batch = self._minibatch(n_em, batch_order, gen) if minibatch else None
            if final:  # the last pass infers on every image of this rank
                cur = data
                cur_pos = torch.zeros(data.n, p, 2, device=self.device)
                cur_score = torch.zeros(data.n, p, device=self.device)
                cur_src = (upper.pos, upper.score) if upper is not None else None
                cur_shift = None
                if upper is not None and parents is not None and self.kernel == "numba":
                    cur_shift = numba_shift(self._edges(parents, upper, cur_src), cfg.fire_threshold, cfg.agreement)
            else:
                mine = np.arange(e_lo, e_hi) if batch is None else batch[(batch >= e_lo) & (batch < e_hi)]
                cur = em if batch is None else em.sample(mine - e_lo)
                # Rows of this rank's EM images: all of them (views, written in place) or a mini-batch (copies).
                own_rows: slice | torch.Tensor = (
                    slice(None) if batch is None else torch.from_numpy(mine - e_lo).to(self.device)
                )
                cur_pos, cur_score = pos[own_rows], score[own_rows]
                src_rows = slice(e_lo, e_hi) if batch is None else mine
                cur_src = (up_em[0][src_rows], up_em[1][src_rows]) if up_em is not None else None
                cur_shift = None
                if upper is not None and up_em is not None and parents is not None and self.kernel == "numba":
                    if shift_for is not parents:  # once per parent set, on this rank's EM images
                        own = (up_em[0][e_lo:e_hi], up_em[1][e_lo:e_hi])
                        shift = numba_shift(self._edges(parents, upper, own), cfg.fire_threshold, cfg.agreement)
                        shift_for = parents
                    if shift is not None:  # numpy rows: a torch index of one element would index as a scalar
                        at = slice(None) if batch is None else mine - e_lo
                        cur_shift = (shift[0][at], shift[1][at])
            stat_rows: list[torch.Tensor] = []
            for sl, f in cur.chunks(chunk):
                up = None
                if upper is not None and cur_src is not None:
                    up = (upper.mu, upper.sigma, cur_src[0][sl], cur_src[1][sl])
                active = ~frozen if bool(frozen.any()) else None
                sh = (cur_shift[0][sl], cur_shift[1][sl]) if cur_shift is not None and parents is not None else None
                ps, sc, st = self._e_step(f, mu, sigma, filt, n_pat, grid, not final, parents, up, active, sh)
                if active is not None:
                    ps[:, held], sc[:, held] = cur_pos[sl][:, held], cur_score[sl][:, held]
                cur_pos[sl], cur_score[sl] = ps, sc
                if st is not None:
                    stat_rows.append(st.rows())
            if not final:
                if batch is not None:  # else cur_pos and cur_score are views of pos and score, already written
                    pos[own_rows], score[own_rows] = cur_pos, cur_score
                if len(stat_rows) == 1:  # one chunk (the numba kernel takes every image at once): no copy
                    mine_rows = stat_rows[0]
                elif stat_rows:
                    mine_rows = torch.cat(stat_rows)
                else:
                    mine_rows = torch.zeros(0, p, 4, dtype=torch.float64)
                if incremental and not late:  # each EM image's latest statistics, absolute, summed (Neal & Hinton)
                    if latest is None:
                        latest = torch.zeros(e_hi - e_lo, p, 4, dtype=torch.float64)
                    latest[torch.from_numpy(mine - e_lo)] = absolute_rows(mine_rows.cpu(), mu.cpu())
                    total = g.sum(torch.from_numpy(latest.numpy().sum(0)).to(self.device), f"mining {name}")
                    new_mu, new_sigma = self._m_step_absolute(mu, list(total.unbind(-1)), sigma_max)
                else:
                    # This rank's statistics (summed over its images in order), summed over ranks in float64.
                    sums = g.sum(Stats.of_images(mine_rows).rows().to(self.device), f"mining {name}")
                    stats = Stats.of_rows(sums)
                    if batch is not None:  # stepwise: a decaying running average, in absolute terms
                        step = (it + 1) ** -cfg.em_decay
                        now = absolute_stats(stats, mu, n_em / len(batch))
                        running = (
                            now
                            if running is None
                            else [(1 - step) * a + step * b for a, b in zip(running, now, strict=True)]
                        )
                        new_mu, new_sigma = self._m_step_absolute(mu, running, sigma_max)
                    else:
                        new_mu, new_sigma = self._m_step(mu, sigma, stats, sigma_max)
                new_mu = torch.where(held[:, None], mu, new_mu)
                new_sigma = torch.where(held, sigma, new_sigma)
                if cfg.freeze > 0:  # a filter all of whose patterns moved less than `freeze` cells stops iterating
                    still = ((new_mu - mu).norm(dim=-1) < cfg.freeze * stride) & (
                        (new_sigma - sigma).abs() < cfg.freeze * stride
                    )
                    frozen |= still.view(d, n_pat).all(1)
                mu, sigma = new_mu, new_sigma
            else:
                pos, score = cur_pos, cur_score
            seconds["em"] += time.perf_counter() - t
            advance(1)
        seconds["total"] = time.perf_counter() - t0
        share = skipped / max(1, d * cfg.iterations)
        return LayerState(name, geo, grid, filt, kk, mu, sigma, parents, pos, score, std, seconds, share)

    def _rebalanced(
        self, em: LayerData, held: tuple[int, int], n_em: int, name: str
    ) -> tuple[LayerData, tuple[int, int]]:
        """This rank's equal share of the EM sample of ``n_em`` images, as (its data, its positions in the sample),
        from ``em`` (the sample's images among this rank's own: positions ``held``) and the other ranks' images.
        A seeded sample falls unevenly on the ranks' blocks (up to 53 / 47 of 100 on two ranks; the fullest of eight
        blocks holds 17.5 on average against 12.5) and every E-step waits for the rank with the most; dealt evenly,
        the same sample gives the same per-image statistics in less time.
        The ranks exchange the prepared responses of the images that change hands, once per layer."""
        assert em.cache is not None  # a sample is held in memory
        g = self.group
        spans = [(b.start, b.stop) for b in (g.block(n_em, r) for r in range(g.world))]
        wanted = spans[g.rank]
        give = {
            q: em.cache[q - held[0]].to("cpu", copy=True)  # a copy: a view would pickle all of the cache
            for r, (lo, hi) in enumerate(spans)
            if r != g.rank
            for q in range(max(lo, held[0]), min(hi, held[1]))
        }
        got: dict[int, torch.Tensor] = {}
        for part in g.objects(give, f"mining {name}"):
            got.update({q: t for q, t in part.items() if wanted[0] <= q < wanted[1]})
        if held == wanted:  # this rank's share is the images it holds: no second copy of them
            return em, wanted
        rows = [
            em.cache[q - held[0]] if held[0] <= q < held[1] else got[q].to(self.device)
            for q in range(wanted[0], wanted[1])
        ]
        return em.of(torch.stack(rows) if rows else em.cache[:0]), wanted

    def _edges(self, parents: Parents, upper: LayerState, src: tuple[torch.Tensor, torch.Tensor] | None) -> Upper:
        """The numba kernel's view of the parents on a set of images (``numba_shift``'s argument)."""
        assert src is not None
        return numba_upper(parents, upper.mu, upper.sigma, src, self.config.agree_sigma)

    def _minibatch(self, n: int, order: list[int], gen: torch.Generator) -> np.ndarray:
        """Stepwise EM's next mini-batch: the next ``em_batch`` (< n) images of a shuffled pass over the n
        EM images (reshuffled when a pass ends), sorted."""
        b = self.config.em_batch
        if len(order) < b:
            order.extend(torch.randperm(n, generator=gen).tolist())
        rows = np.sort(np.array(order[:b], dtype=np.int64))
        del order[:b]
        if len(set(rows.tolist())) < b:  # a pass ended inside the batch and repeated an image: start a fresh one
            order.clear()
            return self._minibatch(n, order, gen)
        return rows

    @staticmethod
    def _m_step_absolute(
        mu: torch.Tensor, s: list[torch.Tensor], sigma_max: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The M-step from absolute statistics (sum w, sum w x, sum w y, sum w |p|^2 of p - Delta)."""
        w, sx, sy, ss = s
        ok = w > 1e-9
        wc = w.clamp_min(1e-12)
        mx, my = sx / wc, sy / wc
        var = (ss / wc - mx * mx - my * my).clamp_min(0) / 2.0
        new_mu = torch.stack((mx, my), -1).float()
        new_sigma = var.sqrt().float().clamp(sigma_max / 10.0, sigma_max)
        return torch.where(ok[:, None], new_mu, mu), torch.where(ok, new_sigma, torch.full_like(new_sigma, sigma_max))

    def _em_rows(self, n: int, gen: torch.Generator) -> np.ndarray | None:
        """The images EM iterates on: all (None), or a seeded random sample of ``em_images`` (sorted)."""
        k = self.config.em_images
        if not k or k >= n:
            return None
        return np.sort(torch.randperm(n, generator=gen)[:k].numpy())

    @staticmethod
    def _m_step(
        mu: torch.Tensor, sigma: torch.Tensor, st: Stats, sigma_max: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ok = st.w > 1e-9
        w = st.w.clamp_min(1e-12)
        mx, my = st.dx / w, st.dy / w  # mean offset of the explained entities from the prediction
        var = (st.dd / w - mx * mx - my * my).clamp_min(0) / 2.0
        new_mu = mu + torch.stack((mx, my), -1).float()
        new_sigma = var.sqrt().float().clamp(sigma_max / 10.0, sigma_max)
        mu = torch.where(ok[:, None], new_mu, mu)
        sigma = torch.where(ok, new_sigma, torch.full_like(sigma, sigma_max))
        return mu, sigma

    def _export(self, s: LayerState, upper: LayerState | None) -> LayerPatterns:
        cfg, g = self.config, self.group
        # A pattern's score: the mean of its best images' scores over every rank's images (each rank's best are
        # gathered, then the best of those: the same values, in the same order, as on one process).
        k_local = min(cfg.top_images, s.score.shape[0])
        best = torch.topk(s.score, k_local, dim=0).values if k_local else s.score[:0]
        best = g.gather(best.cpu(), "pattern scores")
        k = min(cfg.top_images, best.shape[0])
        top = torch.topk(best, k, dim=0).values.mean(0) if k else torch.zeros(s.score.shape[1])
        fires = g.sum((s.score >= cfg.fire_threshold).sum(0).cpu(), "pattern scores")
        p = s.mu.shape[0]
        if s.parents is None:
            parents = np.full((p, 0), -1, np.int64)
            pw = np.zeros((p, 0), np.float32)
            sp = np.zeros((p, 0), np.float32)
            gain = None
        else:
            parents = s.parents.index.cpu().numpy()
            pw = s.parents.weight.cpu().numpy()
            sp = s.parents.spread.cpu().numpy()
            gain = None if s.parents.gain is None else s.parents.gain.cpu().numpy().astype(np.float32)
        return LayerPatterns(
            name=s.name,
            geometry=s.geometry,
            filter=s.filt.cpu().numpy(),
            k=s.k.cpu().numpy(),
            mu=s.mu.cpu().numpy().astype(np.float32),
            sigma=s.sigma.cpu().numpy().astype(np.float32),
            parents=parents,
            parent_weight=pw,
            parent_spread=sp,
            score=top.cpu().numpy().astype(np.float32),
            fires=fires.cpu().numpy().astype(np.int64),
            std=s.std.cpu().numpy().astype(np.float32),
            shift_gain=gain,
        )

    # ------------------------------------------------------------------ inference
    def infer(
        self,
        graph: ExplanatoryGraph,
        features: Mapping[str, FeatureSet],
        sub_cell: bool = False,
        needed: Mapping[str, np.ndarray] | None = None,
    ) -> Inference:
        """Whether each pattern fires on each image, where, and how strongly (top-down through the parents).

        ``sub_cell``: positions refined below the cell (:func:`~kgexplain.explanatory_graph.estep.subcell`), also
        those the children's parents' shift reads; the part localisation uses it, mining keeps cell centres.
        ``needed``: per layer, (P,) bool, the patterns to infer (with every parent of each in the layer above,
        :meth:`ExplanatoryGraph.ancestors`); the others are reported at position 0 with score 0. A pattern's
        inference reads only its own window and its parents', so the needed ones come out as without it.
        In a distributed job ``features`` are this rank's images; the inference returned covers every rank's."""
        cfg = self.config
        names = [layer.name for layer in graph.layers]
        upper: dict[str, torch.Tensor] | None = None
        out: dict[str, LayerInference] = {}
        ids: list[str] = []
        for i in reversed(range(len(names))):
            layer = graph.layers[i]
            fs = features[layer.name]
            ids = list(fs.ids)
            grid = make_grid(layer.geometry, cfg.window)
            std = torch.from_numpy(layer.std).to(self.device)
            data = LayerData(fs, std, cfg.beta, grid.r, self.device, padded=self.kernel == "torch")
            mu = torch.from_numpy(layer.mu).to(self.device)
            sigma = torch.from_numpy(layer.sigma).to(self.device)
            filt = torch.from_numpy(layer.filter).to(self.device)
            has_parents = layer.parents.shape[1] > 0 and upper is not None
            par = None
            if has_parents:
                par = Parents(
                    torch.from_numpy(layer.parents).to(self.device),
                    torch.from_numpy(layer.parent_weight).to(self.device),
                    torch.from_numpy(layer.parent_spread).to(self.device),
                    torch.from_numpy(layer.gain()).to(self.device),
                )
            pos = torch.zeros(data.n, layer.count, 2, device=self.device)
            score = torch.zeros(data.n, layer.count, device=self.device)
            n_pat = int(layer.k.max()) + 1 if layer.count else 1
            chunk = self._chunk(layer.count, grid)
            need = None if needed is None else np.asarray(needed[layer.name], bool)
            for sl, f in data.chunks(chunk):
                up = (upper["mu"], upper["sigma"], upper["pos"][sl], upper["score"][sl]) if upper is not None else None
                pos[sl], score[sl], _ = self._e_step(
                    f, mu, sigma, filt, n_pat, grid, False, par, up, sub_cell=sub_cell, patterns=need
                )
            if need is not None and self.kernel != "numba" and not need.all():  # the torch form computes every
                # pattern (the numba kernel leaves the others zero): report them alike
                skip = torch.from_numpy(~need).to(self.device)
                pos[:, skip] = 0.0
                score[:, skip] = 0.0
            out[layer.name] = LayerInference(*self._gathered(pos, score, "inference"))
            upper = {"mu": mu, "sigma": sigma, "pos": pos, "score": score}
        ids = [i for part in self.group.objects(ids, "image ids") for i in part]
        return Inference({n: out[n] for n in names}, ids)
