"""The AOG's latent patterns on a set of images: where each candidate fires and how strongly.

Two kinds of candidates share this form, so the And-Or graph and its raw-filter baseline run through the same
code: the explanatory graph's patterns (positions and scores from top-down inference) and raw filters (the
peak of each channel's map, the baseline of the paper's comparison).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kgexplain.explanatory_graph import ExplanatoryGraph, Inference
from kgexplain.explanatory_graph.stability import raw_filter_peaks
from kgexplain.features.cache import FeatureSet


@dataclass
class Detections:
    """Candidates concatenated over layers: column j is pattern ``index[j]`` of layer ``layers[layer[j]]``."""

    position: np.ndarray  # (n, P, 2) framed pixels (x, y)
    score: np.ndarray  # (n, P) response at that position
    fires: np.ndarray  # (n, P) bool
    layers: list[str]
    layer: np.ndarray  # (P,) index into ``layers``
    index: np.ndarray  # (P,) index of the candidate within its layer
    reference: np.ndarray  # (P,) a typical strong score of the candidate (scores are divided by it)
    _strength: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.score.shape[0])

    def rows(self, rows: Sequence[int] | np.ndarray) -> Detections:
        r = np.asarray(rows, np.int64)
        return Detections(
            self.position[r],
            self.score[r],
            self.fires[r],
            self.layers,
            self.layer,
            self.index,
            self.reference,
        )

    def where(self, take: np.ndarray, other: Detections) -> Detections:
        """These detections with the rows where ``take`` ((n,) bool) is True replaced by ``other``'s (the same
        candidates on other framings of the same images)."""
        t = np.asarray(take, bool)
        return Detections(
            np.where(t[:, None, None], other.position, self.position),
            np.where(t[:, None], other.score, self.score),
            np.where(t[:, None], other.fires, self.fires),
            self.layers,
            self.layer,
            self.index,
            self.reference,
        )

    def strength(self) -> np.ndarray:
        """(n, P) scores relative to each candidate's reference, zero where it does not fire, capped at 2
        (computed once; do not modify it)."""
        if self._strength is None:
            rel = self.score / np.maximum(self.reference, 1e-12)[None, :]
            self._strength = np.where(self.fires, np.clip(rel, 0.0, 2.0), 0.0).astype(np.float32)
        return self._strength

    def flipped(self, width: int) -> Detections:
        """The same detections with x mirrored (for results computed on a horizontally flipped image)."""
        pos = self.position.copy()
        pos[..., 0] = (width - 1) - pos[..., 0]
        return Detections(pos, self.score, self.fires, self.layers, self.layer, self.index, self.reference)


def graph_detections(graph: ExplanatoryGraph, inference: Inference) -> Detections:
    """The explanatory graph's patterns as inferred on some images."""
    names = [layer.name for layer in graph.layers]
    pos, score, fires, layer, index, ref = [], [], [], [], [], []
    for i, lp in enumerate(graph.layers):
        li = inference.layers[lp.name]
        pos.append(li.position)
        score.append(li.score)
        fires.append(li.fires)
        layer.append(np.full(lp.count, i, np.int64))
        index.append(np.arange(lp.count, dtype=np.int64))
        ref.append(lp.score.astype(np.float32))
    return Detections(
        np.concatenate(pos, 1).astype(np.float32),
        np.concatenate(score, 1).astype(np.float32),
        np.concatenate(fires, 1),
        names,
        np.concatenate(layer),
        np.concatenate(index),
        np.concatenate(ref),
    )


@dataclass
class RawFilterReference:
    """Per-channel reference scores of raw filters on the mining images (for the raw-filter AOG)."""

    layers: list[str]
    reference: dict[str, np.ndarray]


def raw_filter_reference(features: Mapping[str, FeatureSet], top: int = 20) -> RawFilterReference:
    ref = {}
    for name, fs in features.items():
        _, s = raw_filter_peaks(fs)
        k = min(top, s.shape[0])
        ref[name] = np.sort(s, axis=0)[-k:].mean(0).astype(np.float32)
    return RawFilterReference(list(features), ref)


def raw_filter_detections(
    features: Mapping[str, FeatureSet], ref: RawFilterReference, sub_cell: bool = False
) -> Detections:
    """Every channel of every layer as one candidate: its map's peak (after ReLU) and the peak value (``sub_cell``:
    the peak's position refined below the cell)."""
    pos, score, layer, index, refs = [], [], [], [], []
    for i, name in enumerate(ref.layers):
        p, s = raw_filter_peaks(features[name], sub_cell)
        pos.append(p)
        score.append(s)
        layer.append(np.full(s.shape[1], i, np.int64))
        index.append(np.arange(s.shape[1], dtype=np.int64))
        refs.append(ref.reference[name])
    sc = np.concatenate(score, 1).astype(np.float32)
    return Detections(
        np.concatenate(pos, 1).astype(np.float32),
        sc,
        sc > 0,
        list(ref.layers),
        np.concatenate(layer),
        np.concatenate(index),
        np.concatenate(refs),
    )
