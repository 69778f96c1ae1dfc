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
    box_fraction: float = 0.3  # part box side when the annotations give no part box
    refine_rounds: int = 3  # rounds of growing the templates on unlabelled images
    grow_fraction: float = 0.5  # the most confident share of the unlabelled images that teach the templates
    flip: bool = True  # also try the horizontally flipped image

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
