"""The And-Or graph of one semantic part: part (OR) -> templates (AND) -> latent patterns (OR) -> units."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AOGConfig:
    """How templates are learnt and how votes are cast. Lengths are fractions of the framed image side, so
    they mean the same at every input size (the original code's pixels at 224 in brackets)."""

    patterns_per_template: int = 300  # latent patterns an AND node keeps
    offset_scale: float = 0.05  # delta of the displacement prior (11 px at 224; the original code's 70 px
    # let patterns far from the part in, and they vote for the wrong place when the pose changes)
    vote_spread: float = 11 / 224  # each vote is spread over about +-11 px
    vote_step: float = 2.0  # vote maps on cells of this many framed pixels (1: every pixel; 2 is 8x cheaper)
    box_fraction: float = 0.3  # part box side when the annotations give no part box
    refine_rounds: int = 3  # rounds of growing the templates on unlabelled images
    grow_fraction: float = 0.5  # the most confident share of the unlabelled images that teach the templates
    flip: bool = True  # learn a mirrored template from every example too (both facings, one forward pass)
    facing: str = "parts"  # one facing per object, from: "parts" (whole-template scores of every part learnt
    # for the category), "self" (this part's own), or "each" (each part on its own, by vote peak: eg-1's rule)
    facing_by: str = "peak"  # what the facing and template are chosen by: "peak" (vote-map height) or "whole"
    facing_delta: float = 70 / 224  # delta of the whole-template score's log-Gaussian distance penalty
    facing_presence: bool = False  # the shared facing also weighs, per part, how strongly each facing's templates'
    # patterns fire (their evidence-weighted presence, which ignores where they fire), beside the vote peaks
    # (measured in the README's Parts section: it helps parts decided together on whole images, hurts a part alone)
    facing_weights: str = "agreement"  # how the parts' facing cues are summed: "agreement" (each cue, a part's vote
    # peaks or its presence, weighted by how often it agrees with the others on the unlabelled images the templates
    # grew on) or "equal" (the vote peaks alone, each part alike; with ``facing_presence`` the presences too)
    facing_margin: float = 0.1  # the examples' facings come from where their templates place the part on each
    # other when every example's evidence reaches this fraction of the side (else another part's, else the cosine)
    template_error: float = 0.2  # drop templates that place the other examples' part farther than this fraction of
    # the side on average (each example seen in the template's facing); 0 keeps every template
    prior: bool = False  # multiply the vote map by the part's position prior in the object frame
    prior_from: str = "examples"  # the prior's mean and spread: the annotated "examples" or the "grown" localisations
    prior_max: float = 0.1  # ... used only where its sigma stays below this (the part sits still in its box)
    prior_floor: float = 0.06  # the prior's smallest sigma (fraction of the framed side)
    position: str = "votes"  # where the point's coordinates come from: "votes" (the chosen template's vote peak),
    # or "auto": per axis, the vote peak or the position prior's mean for the decided facing, whichever placed the
    # annotated examples better, each left out in turn (``learn.held_axes``). Measured in the README (Parts): with
    # sub-cell positions it helped the tail on most seeds and cost it on a new one (seed 67: 0.31 against 0.21)
    precision: float = 0.95  # "not found" threshold: the lowest presence with this precision at even odds
    vote_shift: bool = True  # move the part's votes towards the examples' mean in the object frame where they land
    # off it on the unlabelled images and the examples' own leave-one-out errors agree (``learn.vote_shift``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Template:
    """An AND node: the latent patterns one annotated example selected, with their offsets to the part."""

    k: int
    example: str  # image id of the annotated example
    flipped: bool  # learnt on the mirrored example
    layer: np.ndarray  # (S,) layer index of each selected pattern
    index: np.ndarray  # (S,) index within its layer
    offset: np.ndarray  # (S, 2) part centre minus the pattern's position, framed pixels
    weight: np.ndarray  # (S,) non-negative, sums to 1
    facing: bool | None = None  # the facing it detects (shared by the part's templates; None: ``flipped``)
    evidence: np.ndarray | None = None  # (S,) log ratio of each pattern's mean strength on images with the
    # object to that on background images: the presence score weighs strengths by it

    @property
    def faces(self) -> bool:
        return self.flipped if self.facing is None else self.facing


@dataclass
class PartModel:
    """The OR node of a semantic part: alternative templates and the part's box size (framed pixels)."""

    name: str
    category: str
    size: int  # framed image side the offsets are measured in
    box: tuple[float, float]  # (w, h)
    layers: list[str]
    templates: list[Template] = field(default_factory=list)
    config: AOGConfig = field(default_factory=AOGConfig)
    prior: dict[str, Any] = field(default_factory=dict)  # {"mean": [[x, y] facing right, mirrored], "sigma": [sx, sy]}
    calibration: dict[str, Any] = field(default_factory=dict)  # {"threshold", "a", "b", "positives", ...}
    cues: dict[str, Any] = field(default_factory=dict)  # the facing cues on the unlabelled images the templates
    # grew on: {"ids": [...], "peak": [...], "presence": [...] or None} (``vote.facing_cues``)
    facing_from: str = ""  # what decided the examples' facings: "placement", "given" (another part's), "cosine";
    # "" for a part learnt before this was recorded (by the cosine)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # templates dropped at learning for placing the
    # other examples' part too far off (``learn.transfer_errors``): example, mirrored, error_px

    def facings(self) -> np.ndarray:
        """(T,) bool: the mirrored facing of each template."""
        return np.array([t.faces for t in self.templates], bool)

    def example_facings(self) -> dict[str, bool]:
        """Each annotated example's facing (image id -> mirrored facing): its own template's, or the opposite of
        its mirrored template's where only that one is kept."""
        out = {t.example: not t.faces for t in self.templates if t.flipped}
        out |= {t.example: t.faces for t in self.templates if not t.flipped}
        return out

    def confidence(self, score: np.ndarray) -> np.ndarray | None:
        """The calibrated confidence of presence scores: the precision, at even odds, of accepting detections
        that score this or more on the calibration images (None: not calibrated)."""
        c = self.calibration
        if not c:
            return None
        s = np.asarray(score, np.float64)
        xs, ys = np.asarray(c["scores"]), np.asarray(c["confidence"])
        idx = np.searchsorted(xs, s, side="right") - 1  # the highest calibration point at or below the score
        return np.where(idx >= 0, ys[np.clip(idx, 0, len(ys) - 1)], ys[0] if len(ys) else 0.5)

    def found(self, score: np.ndarray) -> np.ndarray:
        """Whether each score clears the calibrated threshold (always true when not calibrated)."""
        s = np.asarray(score, np.float64)
        return s >= self.calibration["threshold"] if self.calibration else np.ones(s.shape, bool)
