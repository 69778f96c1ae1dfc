"""Glue between images, the model, the explanatory graph and the AOG: frame images, detect patterns (on the
image and its mirror), and score localisations against ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kgexplain.aog.detections import Detections, RawFilterReference, graph_detections, raw_filter_detections
from kgexplain.aog.vote import Localisation
from kgexplain.data.base import Affine, Framed, Framing, ImageSource
from kgexplain.explanatory_graph import ExplanatoryGraph, ExplanatoryGraphMiner
from kgexplain.features.cache import FeatureSet
from kgexplain.features.extract import features_of
from kgexplain.models.registry import ModelHandle


@dataclass
class FramedBatch:
    images: np.ndarray  # (n, S, S, 3) uint8
    ids: list[str]
    affines: list[Affine]
    keypoints: list[dict[str, tuple[float, float]]]
    source_sizes: list[tuple[int, int]]

    @classmethod
    def of(cls, frames: Sequence[Framed]) -> FramedBatch:
        return cls(
            np.stack([f.image for f in frames]) if frames else np.zeros((0, 1, 1, 3), np.uint8),
            [f.id for f in frames],
            [f.affine for f in frames],
            [dict(f.keypoints) for f in frames],
            [f.source_size for f in frames],
        )

    def mirrored(self) -> np.ndarray:
        return np.ascontiguousarray(self.images[:, :, ::-1])


def frame(source: ImageSource, indices: Sequence[int], framing: Framing) -> FramedBatch:
    return FramedBatch.of([framing.apply(source, int(i), with_mask=False) for i in indices])


@dataclass
class Detector:
    """Runs the model and infers the explanatory graph's patterns (or raw filters) on framed images."""

    handle: ModelHandle
    graph: ExplanatoryGraph
    miner: ExplanatoryGraphMiner
    device: str = "cpu"
    raw: RawFilterReference | None = None  # set: detect raw filters instead of graph patterns

    def __call__(self, images: np.ndarray, ids: Sequence[str] | None = None) -> Detections:
        layers = [lp.name for lp in self.graph.layers]
        feats = features_of(self.handle, images, layers, ids=ids, device=self.device)
        return self.from_features(feats)

    def from_features(self, feats: Mapping[str, FeatureSet]) -> Detections:
        if self.raw is not None:
            return raw_filter_detections(feats, self.raw)
        inference = self.miner.infer(self.graph, feats)
        return graph_detections(self.graph, inference)

    def both(self, batch: FramedBatch) -> tuple[Detections, Detections]:
        """Detections on the images and on their mirrors (in the mirrors' coordinates)."""
        return self(batch.images, batch.ids), self(batch.mirrored(), batch.ids)


def to_source(loc: Localisation, affine: Affine) -> dict[str, object]:
    """A localisation as JSON-ready values in the source image's pixels."""
    x, y = affine.inverse_point(loc.x, loc.y)
    x0, y0, x1, y1 = affine.inverse_box(loc.box)
    return {
        "part": loc.part,
        "x": round(float(x), 2),
        "y": round(float(y), 2),
        "box": [round(float(v), 2) for v in (x0, y0, x1, y1)],
        "score": round(loc.score, 4),
        "template": loc.template,
        "flipped": loc.flipped,
    }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centred_box(x: float, y: float, box: tuple[float, float]) -> tuple[float, float, float, float]:
    return (x + 0.5 - box[0] / 2, y + 0.5 - box[1] / 2, x + 0.5 + box[0] / 2, y + 0.5 + box[1] / 2)


@dataclass
class PartScore:
    distance: float  # mean |prediction - truth| / image diagonal (framed image)
    iou50: float  # rate of IoU >= 0.5 with the ground-truth box (keypoint-centred, the part's box size)
    images: int


def score_points(pred: np.ndarray, truth: np.ndarray, size: int, box: tuple[float, float]) -> PartScore:
    """``pred`` and ``truth`` (n, 2) framed pixels; images whose truth is missing are left out."""
    ok = np.isfinite(truth).all(1)
    if not ok.any():
        return PartScore(float("nan"), float("nan"), 0)
    p, t = pred[ok], truth[ok]
    dist = np.sqrt(((p - t) ** 2).sum(1)) / (size * np.sqrt(2.0))
    hits = [
        iou(centred_box(pi[0], pi[1], box), centred_box(ti[0], ti[1], box)) >= 0.5 for pi, ti in zip(p, t, strict=True)
    ]
    return PartScore(float(dist.mean()), float(np.mean(hits)), int(ok.sum()))
