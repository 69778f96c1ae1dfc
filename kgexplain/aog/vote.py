"""Localisation: every firing pattern of a template votes for its position plus its learnt offset; each template's
vote map (times the part's position prior) gives a point. The vote peak (or, with ``facing_by="whole"``, the
whole-template score of the authors' AOG code: every pattern's response minus a log-Gaussian penalty for its vote's
distance) chooses the template and the facing; the whole-template score is reported either way. Templates come in
both facings, so one forward pass per image suffices."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

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
    score: float  # whole-template score of the chosen template at (x, y)
    template: int
    flipped: bool  # the object faces the mirrored way (a template learnt on a mirrored example won)
    confidence: float | None = None  # calibrated precision of accepting this presence or more; None: not calibrated
    found: bool = True  # the presence clears the calibrated threshold
    presence: float | None = None  # the chosen template's patterns' strengths weighed by their evidence
    peak: float = 0.0  # height of the chosen template's vote map at (x, y)
    voters: list[tuple[int, float, float, float]] = field(default_factory=list)  # (column, x, y, weight)
    from_prior: str = ""  # the coordinates ("x", "y", "xy") given by the part's position prior, not the votes


@dataclass
class TemplateScores:
    """Per image and template: the vote-map peak (after the prior), its height, and the whole-template score."""

    x: np.ndarray  # (n, T) framed pixels
    y: np.ndarray
    peak: np.ndarray
    whole: np.ndarray | None  # None: computed for the chosen template only (when nothing is chosen by it)
    votes: Votes | None = None  # the votes they were computed from

    def best(self, allowed: np.ndarray | None = None, by: str = "whole") -> np.ndarray:
        """(n,) best template per image among ``allowed`` ((n, T) bool) by the whole score or the peak."""
        v = (self.whole if by == "whole" and self.whole is not None else self.peak).copy()
        if allowed is not None:
            v = np.where(allowed, v, -np.inf)
        return np.argmax(v, 1)


def columns(det: Detections, layer: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Columns of ``det`` holding the given (layer, index) candidates."""
    counts = np.bincount(det.layer, minlength=len(det.layers))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (start[layer] + index).astype(np.int64)


def _reach(spread: float) -> int:
    """The blur's reach in cells: the Gaussian of ``spread`` cells is cut at 3 spreads."""
    return max(1, math.ceil(3 * spread))


@functools.lru_cache(maxsize=16)
def _blur_matrix(g: int, spread: float) -> torch.Tensor:
    """(g, g) the Gaussian of ``spread`` cells (peak 1, cut at :func:`_reach`) as a matrix: B @ m blurs m's
    columns (zero outside the grid, as a zero-padded convolution; batched products beat 1-channel conv2d 10x), and
    its row ix is what a vote in column ix adds to its row of H @ B (:func:`vote_maps`). Memoised: the same
    tensor is returned for the same arguments (read it, never change it)."""
    i = torch.arange(g, dtype=torch.float32)
    d = i[:, None] - i[None, :]
    return torch.where(d.abs() <= _reach(spread), torch.exp(-(d**2) / (2 * spread**2)), torch.zeros(()))


def _grid(part: PartModel) -> tuple[int, float]:
    """The vote maps' side in cells and the cell size in framed pixels."""
    step = max(1.0, float(part.config.vote_step))
    return max(1, math.ceil(part.size / step)), step


def axis_names(held: np.ndarray) -> str:
    """The held coordinates as reported: "", "x", "y" or "xy"."""
    return "".join(a for a, h in zip("xy", held, strict=True) if h)


def held_by_prior(part: PartModel) -> np.ndarray:
    """(2,) bool: the coordinates (x, y) the part's position prior gives instead of the votes (``position="auto"``
    and the examples chose it at learning, :func:`~kgexplain.aog.learn.held_axes`; parts learnt before: none)."""
    axes = part.prior.get("axes") if part.config.position == "auto" and part.prior.get("mean") else None
    return np.array(axes if axes else [False, False], bool)


def prior_map(part: PartModel, flipped: bool) -> torch.Tensor | None:
    """(g, g) the part's position prior in the object frame for one facing (peak 1) on the vote grid, or None."""
    if not part.config.prior or not part.prior:
        return None
    size = part.size
    mx, my = part.prior["mean"][int(flipped)]
    sx, sy = part.prior["sigma"]
    if max(sx, sy) > part.config.prior_max * size:
        return None
    g, step = _grid(part)
    t = (torch.arange(g, dtype=torch.float32) + 0.5) * step - 0.5  # cell centres, framed pixels
    gx = torch.exp(-((t - mx) ** 2) / (2 * sx**2))
    gy = torch.exp(-((t - my) ** 2) / (2 * sy**2))
    return gy[:, None] * gx[None, :]


@dataclass
class Votes:
    """A part's templates' votes on some images, template after template: each template's columns, and over all
    their S patterns together the voted positions (n, S, 2) (a pattern's position plus its offset) and weights
    (n, S) (its strength times its weight in the template)."""

    cols: list[np.ndarray]
    position: np.ndarray
    weight: np.ndarray
    start: list[int]  # where each template's patterns begin (and, last, S)

    def of(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Template k's columns, votes (n, S_k, 2) and weights (n, S_k) (views)."""
        sl = slice(self.start[k], self.start[k + 1])
        return self.cols[k], self.position[:, sl], self.weight[:, sl]


def all_votes(det: Detections, part: PartModel) -> Votes:
    """Every template's votes, gathered from the detections in one take per array."""
    cols = [columns(det, tpl.layer, tpl.index) for tpl in part.templates]
    start = np.concatenate([[0], np.cumsum([len(c) for c in cols], dtype=np.int64)]).tolist()
    if not cols:
        return Votes(cols, np.zeros((det.n, 0, 2), np.float32), np.zeros((det.n, 0), np.float32), start)
    every = np.concatenate(cols)
    offset = np.concatenate([tpl.offset for tpl in part.templates])
    weight = np.concatenate([tpl.weight for tpl in part.templates])
    position = np.take(det.position, every, axis=1) + offset[None]
    return Votes(cols, position, np.take(det.strength(), every, axis=1) * weight[None], start)


def vote_maps(det: Detections, part: PartModel, votes_of: Votes | None = None) -> torch.Tensor:
    """(n, T, g, g) vote maps on a grid of ``vote_step``-pixel cells, one per template (a vote's Gaussian has
    peak 1), times the position prior. Each map is B @ H @ B, H the histogram of the template's votes on the
    cells (those with a positive weight on the grid) and B the blur: the votes are added straight into H @ B
    (:func:`~kgexplain.aog.vote_numba.row_blurred_votes`), then one product."""
    # An --nproc command forks its workers after loading the job's modules, and numba sizes its thread pool from
    # the environment it is first imported in, so it loads with the first vote, not with this module.
    from kgexplain.aog.vote_numba import row_blurred_votes  # lazy: numba, in the worker that votes (see above)

    n, t = det.n, len(part.templates)
    g, step = _grid(part)
    spread = part.config.vote_spread * part.size / step
    blur = _blur_matrix(g, spread)
    rows = np.zeros((n, t, g, g), np.float32)
    votes = votes_of if votes_of is not None else all_votes(det, part)
    if votes.weight.size:
        which = np.repeat(np.arange(t), np.diff(votes.start))  # each column's template
        row_blurred_votes(
            np.ascontiguousarray(votes.position, np.float32),
            np.ascontiguousarray(votes.weight, np.float32),
            which,
            step,
            blur.numpy(),
            _reach(spread),
            rows,
        )
    maps = blur @ torch.from_numpy(rows)  # blur is symmetric: B @ (H @ B)
    for k, tpl in enumerate(part.templates):
        prior = prior_map(part, tpl.faces)
        if prior is not None:
            maps[:, k] *= prior
    return maps


def _peaks(maps: torch.Tensor, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and template: peak height and position in framed pixels (sub-cell: the weighted mean of the
    3x3 cells around the peak, :func:`~kgexplain.aog.vote_numba.peaks`)."""
    from kgexplain.aog.vote_numba import peaks  # lazy: as in vote_maps

    n, t, h, w = maps.shape
    val = np.empty(n * t, np.float32)
    xs, ys = np.empty(n * t), np.empty(n * t)
    peaks(np.ascontiguousarray(maps.numpy()).reshape(n * t, h, w), val, xs, ys)
    return val.reshape(n, t), ((xs + 0.5) * step - 0.5).reshape(n, t), ((ys + 0.5) * step - 0.5).reshape(n, t)


def _whole(
    fires: np.ndarray,
    strength: np.ndarray,
    votes: np.ndarray,
    weight: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    delta: float,
) -> np.ndarray:
    """(n,) one template's whole-template scores at the points (x, y) (n,), from its patterns' fires, strengths and
    votes ((n, S), (n, S), (n, S, 2)) and weights (S,)."""
    d2 = (votes[..., 0] - x[:, None]) ** 2 + (votes[..., 1] - y[:, None]) ** 2
    return (np.where(fires, strength - d2 / (2 * delta**2), 0.0) * weight[None]).sum(1)


def whole_scores(
    det: Detections, part: PartModel, xs: np.ndarray, ys: np.ndarray, votes_of: Votes | None = None
) -> np.ndarray:
    """(n, T) whole-template scores at the points (xs, ys) (n, T): over the template's firing patterns, weight x
    (strength - d^2 / (2 delta^2)), d the distance of the pattern's vote from the point (the authors' AOG score,
    with their delta of 70 px at 224)."""
    strength = det.strength()
    delta = part.config.facing_delta * part.size
    out = np.zeros((det.n, len(part.templates)))
    every = votes_of if votes_of is not None else all_votes(det, part)
    for k, tpl in enumerate(part.templates):
        cols, votes, _ = every.of(k)
        out[:, k] = _whole(det.fires[:, cols], strength[:, cols], votes, tpl.weight, xs[:, k], ys[:, k], delta)
    return out


def template_scores(det: Detections, part: PartModel) -> TemplateScores:
    if not part.templates:
        raise UsageError(f"part {part.name!r} has no templates", hint="learn it again with `kgexplain aog learn`")
    votes = all_votes(det, part)
    val, xs, ys = _peaks(vote_maps(det, part, votes), _grid(part)[1])
    whole = whole_scores(det, part, xs, ys, votes) if part.config.facing_by == "whole" else None
    return TemplateScores(xs, ys, val, whole, votes)


def template_presence(strengths: np.ndarray, tpl: Template) -> np.ndarray:
    """(n,) a template's presence on each image: the evidence-weighted mean of its patterns' strengths ((n, S), in
    the template's order); what "not found" is calibrated on."""
    assert tpl.evidence is not None
    return (strengths * tpl.evidence[None]).mean(1)


def presence_by_facing(det: Detections, part: PartModel) -> np.ndarray | None:
    """(n, 2) per image, the highest :func:`template_presence` among the part's templates of each facing (column 1:
    mirrored); None when the templates have no evidence yet (while learning) or only one facing."""
    facing = part.facings()
    if facing.all() or not facing.any() or any(t.evidence is None for t in part.templates):
        return None
    strength = det.strength()
    out = np.full((det.n, 2), -np.inf)
    for tpl, f in zip(part.templates, facing.tolist(), strict=True):
        p = template_presence(strength[:, columns(det, tpl.layer, tpl.index)], tpl)
        out[:, int(f)] = np.maximum(out[:, int(f)], p)
    return out


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(b - a) / (a + b) of two non-negative evidences (negatives count as 0): in [-1, 1], positive for b."""
    a, b = np.maximum(a, 0), np.maximum(b, 0)
    return (b - a) / np.maximum(a + b, 1e-12)


def _difference(pr: np.ndarray) -> np.ndarray:
    """(b - a) / (|a| + |b|) of the two columns of :func:`presence_by_facing`: in [-1, 1], positive for mirrored."""
    a, b = pr[:, 0], pr[:, 1]
    return (b - a) / np.maximum(np.abs(a) + np.abs(b), 1e-12)


def _facing_peaks(part: PartModel, ts: TemplateScores) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b): per image, the part's best template's vote peak (or whole-template score, per ``facing_by``) of the
    learnt facing and of the mirrored one; None when its templates detect one facing only."""
    facing = part.facings()
    if facing.all() or not facing.any():
        return None
    value = ts.whole if part.config.facing_by == "whole" and ts.whole is not None else ts.peak
    return value[:, ~facing].max(1), value[:, facing].max(1)


def facing_cues(det: Detections, part: PartModel, ts: TemplateScores | None = None) -> dict[str, np.ndarray | None]:
    """The part's two cues for the facing on each image, each in [-1, 1] and positive for the mirrored facing:
    ``peak``, :func:`_facing_peaks` as :func:`_ratio`; ``presence``, :func:`presence_by_facing` as
    :func:`_difference` (None without evidence)."""
    peaks = _facing_peaks(part, ts if ts is not None else template_scores(det, part))
    pr = presence_by_facing(det, part)
    return {"peak": None if peaks is None else _ratio(*peaks), "presence": None if pr is None else _difference(pr)}


CUE_IMAGES = 20  # the fewest unlabelled images shared by the parts' stored cues for weighing them
CUE_AGREEMENT_MAX = 0.995  # a cue's agreement is capped here (its weight at log(0.995 / 0.005) = 5.3)


def cue_weights(cues: np.ndarray, rounds: int = 5) -> np.ndarray:
    """(C,) a weight per facing cue from ``cues`` (C, n), their values on n unlabelled images: a cue's agreement a
    is the share of images (where both say something) on which its sign is that of the weighted sum of the other
    cues, clipped to [0.5, ``CUE_AGREEMENT_MAX``], and its weight log(a / (1 - a)), the log odds of a voter right
    with probability a; from equal weights, ``rounds`` times (a one-parameter Dawid-Skene without labels). A cue no
    better than chance gets 0; if every cue does, all get 1."""
    c = cues.shape[0]
    w = np.ones(c)
    if c < 2:
        return w
    for _ in range(rounds):
        total = (cues * w[:, None]).sum(0)
        new = np.empty(c)
        for i in range(c):
            others = total - cues[i] * w[i]
            said = (cues[i] != 0) & (others != 0)  # a cue of 0 says nothing either way
            agree = float(np.mean((cues[i][said] > 0) == (others[said] > 0))) if said.any() else 0.5
            a = min(max(agree, 0.5), CUE_AGREEMENT_MAX)
            new[i] = math.log(a / (1 - a))
        w = new
    return w if (w > 0).any() else np.ones(c)


def weighted_facing(
    det: Detections, scored: Sequence[tuple[PartModel, TemplateScores]], peaks: Sequence[str]
) -> np.ndarray | None:
    """(n,) bool, one facing per image (mirrored: True) from every cue of the ``scored`` parts (the vote peaks of
    those named in ``peaks``, the presence of all), each weighted by :func:`cue_weights` on the unlabelled images
    the parts' templates grew on (their stored ``cues``); None when some part has no stored cues or they share
    fewer than ``CUE_IMAGES`` images. (A part alone has two cues, which agree with each other alike: equal
    weights.)"""
    stored = [p.cues for p, _ in scored]
    if not all(c and c.get("ids") for c in stored):
        return None
    common = sorted(set.intersection(*(set(c["ids"]) for c in stored)))
    if len(common) < CUE_IMAGES:
        return None
    train: list[np.ndarray] = []
    now: list[np.ndarray] = []
    for (part, ts), c in zip(scored, stored, strict=True):
        at = {i: k for k, i in enumerate(c["ids"])}
        rows = [at[i] for i in common]
        live = facing_cues(det, part, ts)
        for kind in ("peak", "presence"):
            if kind == "peak" and part.name not in peaks:
                continue
            if c.get(kind) is not None and live[kind] is not None:
                train.append(np.asarray(c[kind], np.float64)[rows])
                now.append(np.asarray(live[kind], np.float64))
    if not train:
        return None
    w = cue_weights(np.stack(train))
    return (np.stack(now) * w[:, None]).sum(0) > 0


def decide_facing(
    scored: Sequence[tuple[PartModel, TemplateScores]],
    rule: str = "ratio",
    presence: Sequence[np.ndarray | None] = (),
) -> np.ndarray:
    """(n,) bool: one facing per image (mirrored: True). Each part's evidence is its best template per facing
    (vote peak or whole-template score, per its ``facing_by``); rule "ratio" sums the parts' normalised differences
    (b - a) / (a + b), so no part outweighs another by the scale of its scores; "sum" sums the differences.
    ``presence``: per part, :func:`presence_by_facing` (or None), whose normalised differences
    (b - a) / (|a| + |b|) are added: how strongly each facing's patterns fire, wherever they fire."""
    n = scored[0][1].peak.shape[0]
    total = np.zeros(n)
    for pr in presence:
        if pr is not None:
            total += _difference(pr)
    for part, ts in scored:
        peaks = _facing_peaks(part, ts)
        if peaks is not None:
            a, b = peaks
            total += _ratio(a, b) if rule == "ratio" else b - a
    return total > 0


def localise(
    det: Detections,
    part: PartModel,
    facing: np.ndarray | None = None,
    voters: int = 10,
    scores: TemplateScores | None = None,
    prior_axes: bool = True,
) -> list[Localisation]:
    """Localise ``part`` on each image of ``det``. ``facing`` ((n,) bool, mirrored = True) fixes the object's
    facing, as decided for all its parts by :func:`decide_facing`; without it the part decides alone (by its
    ``facing_by``: the vote peak by default; always the peak when its ``facing`` setting is "each").
    ``prior_axes``: the coordinates the part's position prior holds come from it (:func:`held_by_prior`); the caller
    turns this off for images framed by an estimated box, whose own error the examples' comparison never saw."""
    ts = scores if scores is not None else template_scores(det, part)
    tf = part.facings()
    by = "peak" if part.config.facing == "each" else part.config.facing_by
    if facing is not None and part.config.facing != "each" and len(set(tf.tolist())) == 2:
        k = ts.best(tf[None, :] == np.asarray(facing, bool)[:, None], by=by)
    else:
        k = ts.best(by=by)
    rows = np.arange(det.n)
    xs, ys, peak = ts.x[rows, k], ts.y[rows, k], ts.peak[rows, k]
    dx, dy = part.prior.get("vote_shift", {}).get("shift", (0.0, 0.0))
    if dx or dy:  # the votes moved to where the examples have the part (learn.vote_shift), mirrored with the facing
        xs = xs + np.where(tf[k], -dx, dx)
        ys = ys + dy
    held = held_by_prior(part) & prior_axes
    if held.any():  # those coordinates from the prior's mean for the chosen template's facing
        mean = np.asarray(part.prior["mean"], np.float64)[tf[k].astype(int)]  # (n, 2)
        xs = mean[:, 0] if held[0] else xs
        ys = mean[:, 1] if held[1] else ys
    strength = det.strength()
    delta = part.config.facing_delta * part.size
    whole = ts.whole[rows, k] if ts.whole is not None else np.zeros(det.n)
    presence = np.full(det.n, np.nan)
    # Per chosen template, on its images: whole scores (unless computed), presence, and each image's strongest
    # voters (column, x, y, weight), sorted for all its images at once.
    tops: list[list[tuple[int, float, float, float]]] = [[] for _ in range(det.n)]
    for t in np.unique(k).tolist():
        tpl, sel = part.templates[t], np.flatnonzero(k == t)
        cols = columns(det, tpl.layer, tpl.index)
        sub = strength[np.ix_(sel, cols)]
        if ts.whole is None:
            votes = ts.votes.of(t)[1][sel] if ts.votes is not None else det.position[np.ix_(sel, cols)] + tpl.offset
            whole[sel] = _whole(det.fires[np.ix_(sel, cols)], sub, votes, tpl.weight, xs[sel], ys[sel], delta)
        if tpl.evidence is not None:
            presence[sel] = template_presence(sub, tpl)
        if not voters:
            continue
        w = sub * tpl.weight[None]
        order = np.argsort(-w, axis=1, kind="stable")[:, :voters]
        weight = np.take_along_axis(w, order, 1)
        col = cols[order]
        px, py = det.position[sel[:, None], col, 0], det.position[sel[:, None], col, 1]
        for r, i in enumerate(sel.tolist()):
            tops[i] = [
                v
                for v in zip(col[r].tolist(), px[r].tolist(), py[r].tolist(), weight[r].tolist(), strict=True)
                if v[3] > 0
            ]
    calibrated = bool(part.calibration) and not np.isnan(presence).any()
    conf = part.confidence(presence) if calibrated else None
    found = part.found(presence) if calibrated else np.ones(det.n, bool)
    bw, bh = part.box
    out = []
    for i in range(det.n):
        tpl = part.templates[int(k[i])]
        top = tops[i]
        x, y = float(xs[i]), float(ys[i])
        out.append(
            Localisation(
                part.name,
                x,
                y,
                (x + 0.5 - bw / 2, y + 0.5 - bh / 2, x + 0.5 + bw / 2, y + 0.5 + bh / 2),
                float(whole[i]),
                tpl.k,
                tpl.faces,
                None if conf is None else float(conf[i]),
                bool(found[i]),
                None if np.isnan(presence[i]) else float(presence[i]),
                float(peak[i]),
                top,
                axis_names(held),
            )
        )
    return out


def localise_parts(
    det: Detections, parts: Sequence[PartModel], voters: int = 10, prior_axes: bool = True
) -> dict[str, list[Localisation]]:
    """Localise several parts of one category with one facing per image, shared by every part whose ``facing``
    setting is "parts" and decided from their cues: by default (``facing_weights="agreement"``) every such part's
    vote peaks (but those a position prior holds) and presence, each weighted by how well it agreed with the
    others on the images the templates grew on (:func:`weighted_facing`); else, or for parts learnt without stored
    cues, by :func:`decide_facing` (the vote peaks alike, with ``facing_presence`` the presences too).
    ``prior_axes`` as for :func:`localise`."""
    scored = [(p, template_scores(det, p)) for p in parts]
    joint = [(p, ts) for p, ts in scored if p.config.facing == "parts"]
    # A part held by its position prior follows the facing; its prior-shaped peaks do not vote for it.
    free = [(p, ts) for p, ts in joint if prior_map(p, False) is None]
    facing = None
    if joint and all(p.config.facing_weights == "agreement" for p, _ in joint):
        facing = weighted_facing(det, joint, [p.name for p, _ in free or joint])
    if joint and facing is None:
        presence = [presence_by_facing(det, p) for p, _ in joint if p.config.facing_presence]
        facing = decide_facing(free or joint, presence=presence)
    return {
        p.name: localise(det, p, facing if p.config.facing == "parts" else None, voters, ts, prior_axes)
        for p, ts in scored
    }
