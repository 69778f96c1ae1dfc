"""Choosing each pattern's M parents in the layer above: co-activation x spatial consistency, as matrix products.

For a child V and a candidate parent V', with per-image scores s (>= 0) and inferred positions p centred on their
mean over images (dp = p - mean_I p):

    coactivation(V, V') = sum_I s_V s_V' / (|s_V| |s_V'|)                        (cosine of the score vectors)
    D(V, V')            = sum_I s_V s_V' |dp_V - dp_V'|^2 / sum_I s_V s_V'       (weighted mean squared disagreement)
    score(V, V')        = coactivation * exp(-D / (2 d2)),   d2 = mean of D over all pairs

Expanding |a - b|^2 = |a|^2 + |b|^2 - 2 a.b turns the sums over images into matrix products of (images x
patterns) matrices, which is what makes selection cheap (the authors' code scores one child at a time).
Candidates follow the authors' code: patterns whose prior position is near the border are excluded, the half
with the least positional variance is dropped, and the ``max_candidates`` with the largest total score remain.
``slow_parent_scores`` computes the same scores with explicit loops (the test reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kgexplain.distributed import Group


@dataclass
class Parents:
    index: torch.Tensor  # (P, M) indices into the upper layer's patterns
    weight: torch.Tensor  # (P, M) score (co-activation x spatial consistency)
    spread: torch.Tensor  # (P, M) sqrt(D / 2): deviation of the relative displacement, px
    gain: torch.Tensor | None = field(default=None)  # (P,) share of the parents' shift a child takes (None: all)


def shift_gain(pos_c: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """(P,) the share of the parents' mean displacement Delta that each child's predicted position takes.

    Two Gaussian estimates of a child's displacement on an image are combined by their precisions: its own
    spread over the images, N(0, v0) with v0 its positional variance per axis (from ``pos_c``, (n, P, 2)), and the
    parents' N(Delta, 1 / wbar), wbar the mean over the M parents of 1 / (spread^2 + 1 px^2) (the geometric mean
    of their Gaussians, as eq. 3's product to the power 1 / M). The posterior mean is gain x Delta with gain =
    wbar / (wbar + 1 / v0): parents that predict the child well move it almost fully, parents whose displacement
    tells little about it (a large spread) leave it near its prior position."""
    dp = pos_c.double() - pos_c.double().mean(0, keepdim=True)
    v0 = (dp * dp).mean(0).sum(-1) / 2  # (P,) per axis
    wbar = (1.0 / (spread.double() ** 2 + 1.0)).mean(1)
    gain = torch.where(v0 > 0, wbar * v0 / (wbar * v0 + 1.0), torch.zeros_like(v0))
    return gain.float()


def image_moments(
    pos: torch.Tensor, score: torch.Tensor, group: Group | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pattern's positional variance over images (x and y summed, (P,)) and its total score (P,), from a
    layer's inferences (n, P, 2) / (n, P); with ``group``, over every rank's images.

    The variance is (n sum p^2 - (sum p)^2) / n^2 from float64 sums: positions are cell centres (multiples of half
    a pixel), so the sums and the numerator are exact, whichever ranks added them up; patterns whose variances are
    equal stay equal, and the median cut in :func:`candidates` is the same on one process and on several."""
    g = group or Group()
    n = float(sum(g.sizes(int(pos.shape[0]))))
    p = pos.double()
    sums = g.sum(torch.stack((p.sum(0), (p * p).sum(0))), "parent candidates")  # (2, P, 2)
    var = ((n * sums[1] - sums[0] * sums[0]).sum(-1) / max(n * n, 1.0)).clamp_min(0)
    total = g.sum(score.double().sum(0), "parent candidates")
    return var, total


def candidates(
    mu_up: torch.Tensor,
    var: torch.Tensor,
    total_score: torch.Tensor,
    image_w: float,
    image_h: float,
    border: float,
    max_candidates: int,
) -> torch.Tensor:
    """Indices of upper-layer patterns that may be parents, from their priors and :func:`image_moments`."""
    p = mu_up.shape[0]
    keep = torch.ones(p, dtype=torch.bool, device=mu_up.device)
    bx, by = border * image_w, border * image_h
    keep &= (mu_up[:, 0] >= bx - 0.5) & (mu_up[:, 0] <= image_w - 0.5 - bx)
    keep &= (mu_up[:, 1] >= by - 0.5) & (mu_up[:, 1] <= image_h - 0.5 - by)
    if not keep.any():  # tiny maps: everything is near the border
        keep[:] = True
    var = var.to(mu_up.device)
    idx = torch.nonzero(keep).flatten()
    if idx.numel() > 1:
        mobile = var[idx] >= var[idx].median()
        idx = idx[mobile] if mobile.sum() >= 1 else idx
    total = total_score.to(mu_up.device)[idx]
    if idx.numel() > max_candidates:
        idx = idx[torch.topk(total, max_candidates).indices]
    return torch.sort(idx).values


def parent_scores(
    pos_c: torch.Tensor, s_c: torch.Tensor, pos_u: torch.Tensor, s_u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(coactivation, D) for children (n, Pc, 2)/(n, Pc) against candidates (n, C, 2)/(n, C).

    Pairs that never fire together get coactivation 0 and a huge D (so any score built from them is 0).
    """
    a = s_c.clamp_min(0).float()
    b = s_u.clamp_min(0).float()
    dpc = (pos_c - pos_c.mean(0, keepdim=True)).float()
    dpu = (pos_u - pos_u.mean(0, keepdim=True)).float()
    ab = a.T @ b  # (Pc, C)
    norm = a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :]
    co = ab / norm.clamp_min(1e-30)
    sq_c = (dpc * dpc).sum(-1)
    sq_u = (dpu * dpu).sum(-1)
    # sum_I a b |dpc - dpu|^2 as ONE product: stack the four terms along the image axis.
    x = torch.cat((a * sq_c, a, a * dpc[..., 0], a * dpc[..., 1]), 0)  # (4n, Pc)
    y = torch.cat((b, b * sq_u, -2.0 * b * dpu[..., 0], -2.0 * b * dpu[..., 1]), 0)  # (4n, C)
    num = x.T @ y
    d = num.clamp_min_(0).div_(ab.clamp_min(1e-30))
    return co, d


def mean_disagreement(d: torch.Tensor, co: torch.Tensor) -> torch.Tensor:
    """d2: the mean of D over pairs that fire together at all."""
    together = co > 0
    count = int(together.sum())
    if not count:
        return torch.tensor(1.0, device=d.device)
    return (torch.where(together, d, 0.0).sum() / count).clamp_min(1e-12)


def kernel_scores(
    pos_c: torch.Tensor, s_c: torch.Tensor, pos_u: torch.Tensor, s_u: torch.Tensor, d2: float, elements: int = 2**25
) -> torch.Tensor:
    """sum_I s_V s_V' exp(-|dp_V - dp_V'|^2 / (2 d2)) / (|s_V| |s_V'|) for children (n, Pc, 2)/(n, Pc) against
    candidates (n, C, 2)/(n, C): the co-activation with every image's agreement weighed on its own, so one image
    whose positions disagree costs that image's share instead of the pair (the authors' code sums per-image
    kernels in the same way, weighted by the child's score alone). Images x children x candidates are visited
    explicitly, in chunks of at most ``elements``."""
    n, pc, _ = pos_c.shape
    a = s_c.clamp_min(0).float()
    b = s_u.clamp_min(0).float()
    dpc = (pos_c - pos_c.mean(0, keepdim=True)).float()
    dpu = (pos_u - pos_u.mean(0, keepdim=True)).float()
    sq_u = (dpu * dpu).sum(-1)  # (n, C)
    norm = a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :]
    out = torch.empty(pc, pos_u.shape[1], device=pos_c.device)
    step = max(1, elements // max(1, n * pos_u.shape[1]))
    scale = -0.5 / d2
    for lo in range(0, pc, step):
        c = dpc[:, lo : lo + step]  # (n, cc, 2)
        sq = torch.baddbmm(((c * c).sum(-1))[:, :, None] + sq_u[:, None, :], c, dpu.transpose(1, 2), alpha=-2.0)
        k = sq.clamp_min_(0).mul_(scale).exp_().mul_(b[:, None, :])  # (n, cc, C)
        out[lo : lo + step] = torch.einsum("nc,ncu->cu", a[:, lo : lo + step], k)
    return out / norm.clamp_min(1e-30)


def select_parents(
    pos_c: torch.Tensor,
    s_c: torch.Tensor,
    pos_u: torch.Tensor,
    s_u: torch.Tensor,
    cand: torch.Tensor,
    m: int,
    chunk: int = 4096,
    score: str = "mean",
    shrink: bool = False,
) -> Parents:
    """The M best parents among ``cand`` for every child (children processed in chunks to bound memory).

    ``score``: "mean" scores a pair by co-activation x exp(-D / 2 d2) with D the weighted mean disagreement;
    "kernel" by :func:`kernel_scores` (per-image Gaussian kernels). ``shrink``: each child's :func:`shift_gain`
    (else it takes the parents' whole shift)."""
    m = min(m, cand.numel())
    pu, su = pos_u[:, cand], s_u[:, cand]
    first: tuple[torch.Tensor, torch.Tensor] | None = None
    if pos_c.shape[1] <= chunk:
        first = parent_scores(pos_c, s_c, pu, su)
        d2 = mean_disagreement(first[1], first[0])
    else:  # d2 is global: estimate it on a sample of children so that the chunks agree
        sample = torch.linspace(0, pos_c.shape[1] - 1, chunk, device=pos_c.device).long()
        co_s, d_s = parent_scores(pos_c[:, sample], s_c[:, sample], pu, su)
        d2 = mean_disagreement(d_s, co_s)
    idx_out, w_out, sp_out = [], [], []
    for lo in range(0, pos_c.shape[1], chunk):
        co, d = (
            first if first is not None else parent_scores(pos_c[:, lo : lo + chunk], s_c[:, lo : lo + chunk], pu, su)
        )
        if score == "kernel":
            sl = slice(lo, lo + chunk)
            pair = kernel_scores(pos_c[:, sl], s_c[:, sl], pu, su, float(d2))
        else:
            pair = torch.exp(d * (-0.5 / float(d2))).mul_(co)
        w, j = torch.topk(pair, m, dim=1, sorted=False)
        order = torch.argsort(w, dim=1, descending=True)
        w, j = torch.gather(w, 1, order), torch.gather(j, 1, order)
        idx_out.append(cand[j])
        w_out.append(w)
        sp_out.append(torch.sqrt(torch.gather(d, 1, j) / 2.0))
    spread = torch.cat(sp_out)
    gain = shift_gain(pos_c, spread) if shrink else None
    return Parents(torch.cat(idx_out), torch.cat(w_out), spread, gain)


def slow_parent_scores(
    pos_c: torch.Tensor, s_c: torch.Tensor, pos_u: torch.Tensor, s_u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same (coactivation, D) with explicit loops over children, candidates and images (test reference)."""
    n, pc, _ = pos_c.shape
    cu = pos_u.shape[1]
    co = torch.zeros(pc, cu, dtype=torch.float64)
    dd = torch.full((pc, cu), float("inf"), dtype=torch.float64)
    mc = pos_c.double().mean(0)
    mu = pos_u.double().mean(0)
    for i in range(pc):
        for j in range(cu):
            num = den = sa = sb = dot = 0.0
            for img in range(n):
                a, b = max(float(s_c[img, i]), 0.0), max(float(s_u[img, j]), 0.0)
                dc = pos_c[img, i].double() - mc[i]
                du = pos_u[img, j].double() - mu[j]
                num += a * b * float(((dc - du) ** 2).sum())
                den += a * b
                sa += a * a
                sb += b * b
                dot += a * b
            if sa > 0 and sb > 0:
                co[i, j] = dot / (sa**0.5 * sb**0.5)
            if den > 0:
                dd[i, j] = num / den
    return co, dd
