"""Settings of the explanatory-graph miner, with the paper's defaults (papers/explanatory-graph.txt, §3-4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from kgexplain.errors import UsageError

# Per-architecture defaults: the paper's layers and patterns per filter (or density of the map).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "vgg16": {"layers": ("conv4_2", "conv4_3", "conv5_2", "conv5_3"), "density": (0.05, 0.05, 0.1, 0.1)},
    "vgg19": {"layers": ("conv4_3", "conv4_4", "conv5_3", "conv5_4"), "density": (0.05, 0.05, 0.1, 0.1)},
    **{
        f"resnet{depth}": {"layers": ("layer2", "layer3", "layer4"), "patterns": (40, 20, 10)}
        for depth in (18, 34, 50, 101, 152)
    },
    # The toy net's maps are 16x16 and 8x8 at 128 px: 13 patterns per filter on conv4 (density 0.05, as the paper)
    # and 10 on the coarse conv5 maps (about one per 6 cells; 7 at density 0.1 measured less stable, see README).
    "toynet": {"layers": ("conv4_1", "conv4_2", "conv5_1", "conv5_2"), "patterns": (13, 13, 10, 10)},
    "alexnet": {"layers": ("conv3", "conv4", "conv5"), "density": (0.1, 0.1, 0.1)},
    "mobilenet_v2": {"layers": ("features.6", "features.13", "features.17"), "patterns": (40, 20, 10)},
}


# What a graph mined before these options existed (ALGORITHM eg-1) was mined with: a saved config without them
# reads back as this, so an old graph infers as it was mined.
EG1: dict[str, Any] = {
    "agreement": False,
    "agree_sigma": "parent",
    "noise": "cell",
    "score_norm": False,
    "freeze": 0.0,
    "em_images": 0,
    "em_batch": 0,
    "em_update": "stepwise",
    "em_full_iterations": 0,
    "em_batch_cells": 0,
    "parent_schedule": "every",
    "parent_score": "mean",
    "shift": "full",
}


# Options added after ALGORITHM eg-2, with their defaults (left out of ``EGConfig.to_dict`` at these values).
LATER_DEFAULTS: dict[str, Any] = {"em_update": "stepwise"}


@dataclass(frozen=True)
class EGConfig:
    """How to mine. ``layers`` bottom to top; per layer either ``patterns`` per filter or a ``density``."""

    layers: tuple[str, ...] = ()
    density: tuple[float, ...] = ()  # patterns per filter = ceil(h * w * density)
    patterns: tuple[int, ...] = ()  # explicit patterns per filter (overrides density)
    parents: int = 15  # M: upper-layer patterns linked to each pattern
    tau: float = 0.1  # weight of the noise component
    iterations: int = 20  # T: EM iterations per layer
    beta: float = 1.0  # F(x) = beta * max(x_norm, 0)
    window: float = 0.15  # half-range of a pattern's candidate positions, as a fraction of the map side
    init_sigma: float = 0.15  # initial sigma, fraction of the map side
    max_candidates: int = 600  # upper-layer patterns considered as parents (by total score)
    border: float = 0.1  # candidates whose prior lies this close to the image border are not parents
    top_images: int = 20  # a pattern's score: mean of its best images' scores
    fire_threshold: float = 1.0  # fires when F(x) * P^2 reaches this (in background standard deviations)
    seed: int = 0
    chunk_elements: int = 4_000_000  # images per E-step chunk = this / (patterns * window cells)
    # eg-2 (issue 15): measured one by one on the reference workload, see the README's ablation table.
    agreement: bool = False  # eq. 3's product over parents: a factor for how well the parents agree on an image
    agree_sigma: str = "parent"  # the agreement's per-parent variance: the parent's sigma, or "spread" (eq. 4)
    noise: str = "cell"  # the noise component: tau / (h w) per cell ("cell"), or tau x the pattern's mean window mass
    score_norm: bool = False  # S = F P^2 with P of unit mass, (cell / sigma)^2 x the peak-1 Gaussian: see README
    freeze: float = 0.0  # a filter whose patterns all moved less than this (cells) stops until parents change
    em_images: int = 100  # EM iterates on a random sample of this many images (0: all), then one pass over all
    # eg-4: stepwise EM on mini-batches where the E-step is large, batch EM for the last iterations (README)
    em_batch: int = 25  # stepwise EM: each iteration's E-step on this many of the EM images (0: all of them)
    em_decay: float = 0.55  # stepwise EM's step size at iteration k: (k + 1) ** -em_decay
    em_update: str = "stepwise"  # with em_batch: statistics as a decaying running average ("stepwise"), or each
    # EM image's latest statistics summed ("incremental", Neal & Hinton; every EM image in the first iteration)
    em_full_iterations: int = 6  # with em_batch: the last this many EM iterations use every EM image (0: none)
    em_batch_cells: int = 25  # with em_batch: mini-batches only on layers whose window holds this many cells or more
    parent_schedule: str = "doubling"  # parents (re)chosen before iterations 1, 2, 4, 8, ... or at "every" one
    parent_score: str = "mean"  # a parent's score: exp(-D / 2 d2) of the "mean" disagreement, or per-image "kernel"s
    shift: str = "full"  # a child takes all of its parents' shift, or a share by how well they predict it ("shrunk")

    def __post_init__(self) -> None:
        if self.noise not in ("cell", "window"):
            raise UsageError(f"noise must be cell or window, not {self.noise!r}")
        if self.parent_schedule not in ("every", "doubling"):
            raise UsageError(f"parent_schedule must be every or doubling, not {self.parent_schedule!r}")
        if self.shift not in ("shrunk", "full"):
            raise UsageError(f"shift must be shrunk or full, not {self.shift!r}")
        if self.em_update not in ("stepwise", "incremental"):
            raise UsageError(f"em_update must be stepwise or incremental, not {self.em_update!r}")
        if self.parent_score not in ("mean", "kernel"):
            raise UsageError(f"parent_score must be mean or kernel, not {self.parent_score!r}")
        if min(self.em_images, self.freeze, self.em_batch, self.em_full_iterations, self.em_batch_cells) < 0:
            raise UsageError("em_images, em_batch, em_full_iterations, em_batch_cells and freeze must be >= 0")
        if not 0.5 < self.em_decay <= 1.0:
            raise UsageError(f"em_decay must be in (0.5, 1], not {self.em_decay}")

    def parents_due(self, iteration: int) -> bool:
        """Whether parents are (re)chosen before E-step ``iteration`` (0-based; the first uses none)."""
        if iteration < 1:
            return False
        if self.parent_schedule == "doubling":
            return iteration & (iteration - 1) == 0
        return True

    def patterns_for(self, index: int, map_h: int, map_w: int) -> int:
        if self.patterns:
            return int(self.patterns[index])
        density = self.density[index] if self.density else 0.05
        return max(1, math.ceil(map_h * map_w * density))

    def with_model_defaults(self, model_name: str, default_layers: tuple[str, ...]) -> EGConfig:
        """Fill unset layers / densities from the paper's choice for ``model_name``."""
        d = MODEL_DEFAULTS.get(model_name, {})
        cfg = self
        if not cfg.layers:
            cfg = replace(cfg, layers=tuple(d.get("layers", default_layers)))
            if not cfg.patterns and not cfg.density:
                cfg = replace(cfg, density=tuple(d.get("density", ())), patterns=tuple(d.get("patterns", ())))
        n = len(cfg.layers)
        if cfg.patterns and len(cfg.patterns) != n:
            raise UsageError(f"{len(cfg.patterns)} pattern counts for {n} layers", hint="give one per layer")
        if cfg.density and len(cfg.density) != n:
            raise UsageError(f"{len(cfg.density)} densities for {n} layers", hint="give one per layer")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The settings as saved with a graph and hashed into its run id. Options added after ALGORITHM eg-2 are
        left out while they have their default, so the run ids of builds that do not use them stay as they were
        (``from_dict`` reads a missing key as its default, through ``EG1``)."""
        d = asdict(self)
        for key, value in LATER_DEFAULTS.items():
            if d[key] == value:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EGConfig:
        """The inverse of :meth:`to_dict` (JSON turns tuples into lists; unknown keys are ignored)."""
        known = set(cls.__dataclass_fields__)
        args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**{**EG1, **args})
