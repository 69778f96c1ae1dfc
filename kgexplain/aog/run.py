"""Glue between images, the model, the explanatory graph and the AOG: frame images, detect patterns (on the
image and its mirror), localise a part over a data source, and score localisations against ground truth."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgexplain.aog.detections import Detections, RawFilterReference, graph_detections, raw_filter_detections
from kgexplain.aog.model import PartModel
from kgexplain.aog.vote import Localisation, localise
from kgexplain.data.base import Affine, Framed, Framing, ImageSource
from kgexplain.errors import DataError
from kgexplain.explanatory_graph import ExplanatoryGraph, ExplanatoryGraphMiner
from kgexplain.features.cache import FeatureSet
from kgexplain.features.extract import features_of
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, task


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


@dataclass
class LoadedBuild:
    """A stored explanatory-graph build (its model, mined graph and framing), ready to run on new images."""

    run: str
    model_id: str
    config: dict[str, Any]
    handle: ModelHandle
    graph: ExplanatoryGraph
    framing: Framing  # how the build framed its images
    detector: Detector

    def framing_for(self, has_boxes: bool) -> Framing:
        """Crop to the object box when the images come with one and the build did too; else the whole image."""
        return Framing(self.framing.size, "box" if has_boxes and self.framing.crop == "box" else "none")


def pick_examples(source: ImageSource, part: str, k: int, seed: int | None) -> list[int]:
    """The first K records with the part annotated (in file order), or K of them chosen by ``seed``."""
    have = [i for i in range(len(source)) if part in source.record(i).keypoints]
    if not have:
        names = sorted({n for i in range(len(source)) for n in source.record(i).keypoints})
        raise DataError(
            f"no annotated '{part}' in {source.name}",
            hint=f"annotated parts: {', '.join(names) or 'none'}; add {part!r} keypoints to the examples",
        )
    if len(have) < k:
        raise DataError(
            f"only {len(have)} images have '{part}' annotated, {k} needed", hint="lower --k or annotate more"
        )
    if seed is None:
        return have[:k]
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(have, k, replace=False))


@dataclass
class Located:
    image: str
    result: dict[str, Any]  # JSON-ready, source-image pixels
    loc: Localisation
    affine: Affine  # source -> framed pixels of this image


def localise_source(
    build: LoadedBuild, part: PartModel, source: ImageSource, chunk: int = 64, progress: Progress | None = None
) -> tuple[list[Located], dict[str, float]]:
    """Localise ``part`` on every image of ``source`` (cropped to its box when it has one); also returns the seconds
    spent framing, detecting and voting."""
    out: list[Located] = []
    timings = {"frame_s": 0.0, "detect_s": 0.0, "vote_s": 0.0}
    with task(progress, "localise", len(source), "img") as advance:
        for lo in range(0, len(source), chunk):
            idx = list(range(lo, min(lo + chunk, len(source))))
            t = time.perf_counter()
            has_boxes = all(source.record(i).box is not None for i in idx)
            batch = frame(source, idx, build.framing_for(has_boxes))
            timings["frame_s"] += time.perf_counter() - t
            t = time.perf_counter()
            det, det_f = build.detector.both(batch)
            timings["detect_s"] += time.perf_counter() - t
            t = time.perf_counter()
            locs = localise(det, part, det_f if part.config.flip else None)
            timings["vote_s"] += time.perf_counter() - t
            for j, loc in enumerate(locs):
                out.append(Located(batch.ids[j], to_source(loc, batch.affines[j]), loc, batch.affines[j]))
            advance(len(idx))
    return out, timings
