"""Learning a part's And-Or graph from K annotated examples (multi-shot; the paper uses K = 3).

Each example gives one template (AND node). A template keeps the latent patterns that fire on its example,
scored as in the original AOG code by their response on the example and how close they are to the annotated
part (a Gaussian displacement prior); each keeps its offset to the part centre. (The original also favours
patterns that fire on many unlabelled images; measured here, that prefers generic patterns that fire in both
poses, and localisation got worse, so it is left out.) With unlabelled images the templates then grow, as the
multi-shot AOG does: the part is localised on the unlabelled images, and on the most confident ones each template
is re-learnt from every pattern whose offset to the found part is consistent — three rounds by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kgexplain.aog.detections import Detections
from kgexplain.aog.model import AOGConfig, PartModel, Template
from kgexplain.aog.vote import localise
from kgexplain.errors import DataError, UsageError


def _select(det: Detections, row: int, centre: np.ndarray, size: int, cfg: AOGConfig) -> tuple[np.ndarray, ...]:
    strength = det.strength()[row]
    offset = centre[None, :] - det.position[row]  # (P, 2)
    delta = cfg.offset_scale * size
    near = np.exp(-(offset**2).sum(1) / (2 * delta**2))
    score = strength * near
    order = np.argsort(-score, kind="stable")
    keep = order[: cfg.patterns_per_template]
    keep = keep[score[keep] > 0]
    return keep, offset[keep].astype(np.float32), score[keep].astype(np.float32)


def _normalised(w: np.ndarray) -> np.ndarray:
    total = float(w.sum())
    return (w / total).astype(np.float32) if total > 0 else np.full_like(w, 1.0 / max(1, len(w)), np.float32)


def learn_part(
    name: str,
    category: str,
    examples: Detections,
    centres: np.ndarray,
    example_ids: Sequence[str],
    size: int,
    box: tuple[float, float] | None = None,
    config: AOGConfig | None = None,
    unlabelled: Detections | None = None,
    unlabelled_flipped: Detections | None = None,
) -> PartModel:
    """``examples`` holds the detections on the K annotated images, ``centres`` (K, 2) the part's position
    on them (framed pixels). ``unlabelled`` (and its mirrored twin) are optional images without annotations."""
    cfg = config or AOGConfig()
    centres = np.asarray(centres, np.float64)
    if centres.shape != (examples.n, 2):
        raise UsageError(f"{examples.n} examples but centres of shape {centres.shape}")
    if not np.isfinite(centres).all():
        raise DataError("every example needs the part's position", hint="annotate the part on every example")
    side = cfg.box_fraction * size
    part = PartModel(name, category, size, box or (side, side), list(examples.layers), [], cfg)
    for k in range(examples.n):
        cols, offset, score = _select(examples, k, centres[k], size, cfg)
        if not len(cols):
            continue
        part.templates.append(
            Template(k, example_ids[k], False, examples.layer[cols], examples.index[cols], offset, _normalised(score))
        )
    if not part.templates:
        raise DataError(
            f"no pattern fires on any example of part {name!r}",
            hint="check that the part's keypoints lie on the object, inside each example image",
        )
    if unlabelled is not None and unlabelled.n:
        for _ in range(cfg.refine_rounds):
            _grow(part, unlabelled, unlabelled_flipped)
    return part


def _grow(part: PartModel, det: Detections, flipped: Detections | None) -> None:
    """Re-learn each template from the unlabelled images it wins confidently (self-training, as the multi-shot
    AOG grows on unlabelled images): patterns whose offset to the found part is consistent there join the
    template, patterns whose offset does not hold fade. (Letting every template judge the images by its own
    peak instead of the winner's was measured too: head distance 0.10 instead of 0.046 on seed 7.)"""
    cfg = part.config
    found = localise(det, part, flipped if cfg.flip else None, voters=0)
    scores = np.array([loc.score for loc in found])
    confident = scores >= np.quantile(scores, 1 - cfg.grow_fraction)
    delta = cfg.offset_scale * part.size
    spread = 2 * cfg.vote_spread * part.size
    strength = det.strength()
    strength_f = flipped.strength() if flipped is not None else strength
    for t, tpl in enumerate(part.templates):
        won = [i for i, loc in enumerate(found) if loc.template == tpl.k and confident[i]]
        if len(won) < 3:
            continue
        offs, ws = [], []
        for i in won:
            loc = found[i]
            src, st = (flipped, strength_f) if loc.flipped and flipped is not None else (det, strength)
            cx = (part.size - 1) - loc.x if loc.flipped else loc.x  # back into the frame src was detected in
            offs.append(np.array([cx, loc.y])[None, :] - src.position[i])  # (P, 2)
            ws.append(st[i])
        off = np.stack(offs)  # (m, P, 2)
        w = np.stack(ws)  # (m, P)
        mass = w.sum(0)
        mean = (w[..., None] * off).sum(0) / np.maximum(mass, 1e-12)[:, None]
        var = (w * ((off - mean[None]) ** 2).sum(-1)).sum(0) / np.maximum(mass, 1e-12)
        score = (mass / len(won)) * np.exp(-var / (2 * spread**2)) * np.exp(-(mean**2).sum(1) / (2 * delta**2))
        keep = np.argsort(-score, kind="stable")[: cfg.patterns_per_template]
        keep = keep[score[keep] > 0]
        if not len(keep):
            continue
        part.templates[t] = Template(
            tpl.k,
            tpl.example,
            tpl.flipped,
            det.layer[keep],
            det.index[keep],
            mean[keep].astype(np.float32),
            _normalised(score[keep]),
        )
