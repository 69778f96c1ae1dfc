"""Glue between images, the model, the explanatory graph and the AOG: frame images, detect patterns (on the
image and its mirror), localise a part over a data source, and score localisations against ground truth."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgexplain.aog.detections import Detections, RawFilterReference, graph_detections, raw_filter_detections
from kgexplain.aog.extent import UPSCALE, object_boxes, shifted
from kgexplain.aog.learn import align_facing, align_to_facings, calibrate, learn_part, set_evidence, vote_shift
from kgexplain.aog.model import AOGConfig, PartModel
from kgexplain.aog.vote import Localisation, facing_cues, localise_parts
from kgexplain.data.base import Affine, Box, Framed, Framing, ImageSource
from kgexplain.data.subset import Subset
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


def crops(
    source: ImageSource, indices: Sequence[int], regions: Sequence[Sequence[Box]], size: int
) -> list[list[Framed]]:
    """Per image ``indices[j]``, its frames cropped to each of ``regions[j]`` (source pixels) and resized to
    ``size``, as a box framing does; each image is loaded once for all its regions."""
    framing = Framing(size)
    out = []
    for i, mine in zip(indices, regions, strict=True):
        img = source.load_image(int(i))
        out.append([framing.apply(source, int(i), with_mask=False, region=r, image=img) for r in mine])
    return out


@dataclass
class Detector:
    """Runs the model and infers the explanatory graph's patterns (or raw filters) on framed images."""

    handle: ModelHandle
    graph: ExplanatoryGraph
    miner: ExplanatoryGraphMiner
    device: str = "cpu"
    raw: RawFilterReference | None = None  # set: detect raw filters instead of graph patterns
    sub_cell: bool = True  # positions refined below the cell (the centroid of the 3 x 3 responses around it)

    def __call__(
        self, images: np.ndarray, ids: Sequence[str] | None = None, needed: Mapping[str, np.ndarray] | None = None
    ) -> Detections:
        """Detections on framed images; ``needed`` (:func:`needed_patterns`): infer only those patterns (the
        others fire nowhere), which leaves the localisation of the parts they were taken for unchanged."""
        layers = [lp.name for lp in self.graph.layers]
        feats = features_of(self.handle, images, layers, ids=ids, device=self.device)
        return self.from_features(feats, needed)

    def from_features(
        self, feats: Mapping[str, FeatureSet], needed: Mapping[str, np.ndarray] | None = None
    ) -> Detections:
        if self.raw is not None:
            return raw_filter_detections(feats, self.raw, self.sub_cell)
        inference = self.miner.infer(self.graph, feats, sub_cell=self.sub_cell, needed=needed)
        return graph_detections(self.graph, inference)

    def whole(self, source: ImageSource, indices: Sequence[int], size: int) -> Detections:
        """Detections on whole images cropped to their objects' boxes (as localisation frames them)."""
        return self.on_objects(source, indices, size)[1]

    def on_objects(
        self, source: ImageSource, indices: Sequence[int], size: int
    ) -> tuple[FramedBatch, Detections, list[Box]]:
        """Whole images cropped to their objects: of the estimated box (:meth:`objects`) and its eight neighbours
        shifted by ``extent.SHIFT`` of its width and height, the one on which the graph's patterns fire most
        strongly in total (the first of equals); the crops, their detections and the boxes (source pixels)."""
        sizes = [source.image_size(int(i)) for i in indices]
        tried = [shifted(b, w, h) for b, (w, h) in zip(self.objects(source, indices, size), sizes, strict=True)]
        if not tried:
            batch = FramedBatch.of([])
            return batch, self(batch.images, batch.ids), []
        framed = crops(source, indices, tried, size)
        first = FramedBatch.of([f[0] for f in framed])
        best = self(first.images, first.ids)
        total = best.strength().sum(1, dtype=np.float64)
        which = np.zeros(len(indices), np.int64)
        for k in range(1, len(tried[0])):
            batch = FramedBatch.of([f[k] for f in framed])
            det = self(batch.images, batch.ids)
            mass = det.strength().sum(1, dtype=np.float64)
            take = mass > total  # strictly: the first of equals stays
            best, total, which = best.where(take, det), np.where(take, mass, total), np.where(take, k, which)
        pick = which.tolist()
        chosen = [t[k] for t, k in zip(tried, pick, strict=True)]
        return FramedBatch.of([f[k] for f, k in zip(framed, pick, strict=True)]), best, chosen

    def objects(self, source: ImageSource, indices: Sequence[int], size: int) -> list[Box]:
        """The object's box on each whole image (source pixels), estimated from the graph's top layer
        (:mod:`kgexplain.aog.extent`) on the image resized to ``UPSCALE`` x ``size``."""
        big = round(size * UPSCALE)
        batch = frame(source, indices, Framing(big, "none"))
        top = self.graph.layers[-1].name
        feats = features_of(self.handle, batch.images, [top], device=self.device)
        return [
            affine.inverse_box(tuple(b))
            for b, affine in zip(object_boxes(self.graph, feats[top]), batch.affines, strict=True)
        ]


def to_source(loc: Localisation, affine: Affine, image_size: tuple[int, int] | None = None) -> dict[str, object]:
    """A localisation as JSON-ready values in the source image's pixels; the part's box clipped to the image
    (``image_size``, width and height) as detectors clip theirs."""
    x, y = affine.inverse_point(loc.x, loc.y)
    x0, y0, x1, y1 = affine.inverse_box(loc.box)
    if image_size is not None:
        w, h = image_size
        x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
        y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    return {
        "part": loc.part,
        "x": round(float(x), 2),
        "y": round(float(y), 2),
        "box": [round(float(v), 2) for v in (x0, y0, x1, y1)],
        "score": round(loc.score, 4),
        "presence": None if loc.presence is None else round(loc.presence, 4),
        "confidence": None if loc.confidence is None else round(loc.confidence, 4),
        "found": loc.found,
        "template": loc.template,
        "flipped": loc.flipped,
        "from_prior": loc.from_prior,
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


def needed_patterns(graph: ExplanatoryGraph, parts: Sequence[PartModel]) -> dict[str, np.ndarray]:
    """Per layer, (P,) bool: the patterns the parts' templates use and every ancestor of them (their parents,
    theirs, ...), all that localising the parts reads (a pattern's inference reads its own window and its parents',
    never its siblings). On the reference workload's three parts, about half of the graph's patterns."""
    chosen = {lp.name: np.zeros(lp.count, bool) for lp in graph.layers}
    for part in parts:
        for tpl in part.templates:
            for i, lp in enumerate(graph.layers):
                chosen[lp.name][tpl.index[tpl.layer == i]] = True
    return graph.ancestors(chosen)


def localise_source(
    build: LoadedBuild,
    parts: Sequence[PartModel],
    source: ImageSource,
    chunk: int = 64,
    progress: Progress | None = None,
    whole: bool | None = None,
) -> tuple[dict[str, list[Located]], dict[str, float]]:
    """Localise ``parts`` (one category; one facing per object, shared) on every image of ``source``: cropped to
    its box when the build cropped and the image has one, else (or with ``whole``) cropped to the object's box as
    estimated from the graph. Also returns the seconds spent framing (for a searched image also the detections on
    the box and its shifts, which choose the crop and are the ones localised), detecting (the other images) and
    voting."""
    out: dict[str, list[Located]] = {p.name: [] for p in parts}
    size = build.framing.size
    timings = {"frame_s": 0.0, "detect_s": 0.0, "vote_s": 0.0}
    # Framed images infer only what the parts' templates read; a searched image infers every pattern, whose total
    # strength chooses among the box's shifts.
    needed = needed_patterns(build.graph, parts)
    with task(progress, "localise", len(source), "img") as advance:
        for lo in range(0, len(source), chunk):
            rows = list(range(lo, min(lo + chunk, len(source))))
            boxed = [i for i in rows if source.record(i).box is not None]
            if build.framing.crop != "box":  # the build framed whole images: so does localisation
                groups = [(rows, False, False)]
            elif whole:
                groups = [(rows, True, False)]
            else:  # each image cropped to its box, or searched when it has none
                unboxed = [i for i in rows if source.record(i).box is None]
                groups = [(boxed, False, True), (unboxed, True, False)]
            located: dict[int, dict[str, Located]] = {}
            for idx, search, by_box in groups:
                if not idx:
                    continue
                t = time.perf_counter()
                boxes: list[Box | None] = [None] * len(idx)
                if search:  # the object's box chosen by the detections on it, which are the ones localised
                    batch, det, found_boxes = build.detector.on_objects(source, idx, size)
                    boxes = list(found_boxes)
                    timings["frame_s"] += time.perf_counter() - t
                else:
                    batch = frame(source, idx, build.framing_for(by_box))
                    timings["frame_s"] += time.perf_counter() - t
                    t = time.perf_counter()
                    det = build.detector(batch.images, batch.ids, needed)
                    timings["detect_s"] += time.perf_counter() - t
                t = time.perf_counter()
                # A coordinate the part's prior holds is its place in the box; only a given box frames it well.
                found = localise_parts(det, parts, prior_axes=not search)
                timings["vote_s"] += time.perf_counter() - t
                for j, i in enumerate(idx):
                    located[i] = {}
                    image_size, b = source.image_size(i), boxes[j]  # once per image, for all its parts
                    object_box = None if b is None else [round(float(v), 2) for v in b]
                    for name, locs in found.items():
                        result = to_source(locs[j], batch.affines[j], image_size)
                        result["object_box"] = object_box
                        located[i][name] = Located(batch.ids[j], result, locs[j], batch.affines[j])
            for i in rows:
                for name in out:
                    out[name].append(located[i][name])
            advance(len(rows))
    return out, timings


CALIBRATION_IMAGES = 100  # held-out images with the part, and background images, that calibrate "not found"
CALIBRATION_MIN_POOL = 9  # unlabelled images needed to hold a third out for calibrating "not found"
CALIBRATION_MIN_NEGATIVES = 4  # background images needed (half weigh the patterns' evidence, half calibrate)


def uncalibrated_reason(pool: int, negatives: int | None) -> str | None:
    """Why a part learnt on ``pool`` unlabelled images and ``negatives`` background images (None: no background
    source) is not calibrated, or None when it is."""
    if negatives is None or negatives == 0:
        return "no background images"
    if pool < CALIBRATION_MIN_POOL:
        return f"{pool} unlabelled images, {CALIBRATION_MIN_POOL} needed to hold a third out: pass --unlabelled DIR"
    if negatives < CALIBRATION_MIN_NEGATIVES:
        return f"{negatives} background images, {CALIBRATION_MIN_NEGATIVES} needed"
    return None


@dataclass
class Learnt:
    part: PartModel
    aligned_to: str | None  # the part whose facings this one's were aligned with
    grown: int  # unlabelled images the templates grew on
    held_out: int  # images with the part that calibrated "not found"
    background: int  # background images that calibrated it
    aligned_by: str = ""  # how: through "a shared example", or by "localising it on the examples"
    uncalibrated: str | None = None  # why "not found" is not calibrated (:func:`uncalibrated_reason`; None: it is)


def learn_on(
    build: LoadedBuild,
    name: str,
    category: str,
    examples: FramedBatch,
    centres: np.ndarray,
    pool: ImageSource,
    config: AOGConfig | None = None,
    negatives: ImageSource | None = None,
    others: Sequence[PartModel] = (),
) -> Learnt:
    """Learn a part from framed ``examples`` (and their mirrors) on a build; its templates grow on the first two
    thirds of ``pool``; where its own templates do not decide the examples' facings, it takes those of the first of
    ``others`` (the other parts of its category) whose templates did; its facings are aligned with the first of
    ``others`` it shares an example with (else with the first of ``others`` as localised on the examples); and
    with ``negatives`` (background images) its "not found" threshold is calibrated on the rest of ``pool`` (at most
    CALIBRATION_IMAGES) and as many background images, both searched whole and localised with ``others`` (their
    facing cues weigh in), as a whole image is at localisation."""
    rows = list(range(len(pool)))
    uncalibrated = uncalibrated_reason(len(pool), None if negatives is None else len(negatives))
    held = rows[len(rows) * 2 // 3 :][:CALIBRATION_IMAGES] if uncalibrated is None else []
    grow = rows[: len(rows) - len(held)] if held else rows
    framing = build.framing_for(all(pool.record(i).box is not None for i in grow[:50]))
    batch = frame(pool, grow, framing)
    det_ex = build.detector(examples.images, examples.ids)
    det_mirror = build.detector(examples.mirrored(), examples.ids)
    det_u = build.detector(batch.images, batch.ids)
    size = build.framing.size
    # the examples' facings of a part of the category whose templates' placement decided them
    decided = (o.example_facings() for o in others if o.facing_from == "placement")
    given = next((f for f in decided if set(f) >= set(examples.ids)), None)
    model = learn_part(name, category, det_ex, centres, examples.ids, size, None, config, det_u, det_mirror, given)
    aligned = next((o.name for o in others if align_facing(model, o)), None)
    aligned_by = "a shared example" if aligned else ""
    if aligned is None and others:
        # No example in common (another examples file): the other parts, localised on this part's examples, say
        # which way each faces in their frame.
        found = localise_parts(det_ex, list(others))[others[0].name]
        if align_to_facings(model, {e: loc.flipped for e, loc in zip(examples.ids, found, strict=True)}):
            aligned, aligned_by = others[0].name, "localising it on the examples"
    background = 0
    if held and negatives is not None:
        # Background images: the first half weighs the patterns' evidence, the second calibrates (both searched
        # whole, as a whole image is at localisation); neither is an image the threshold is then judged on.
        half = min(len(negatives) // 2, CALIBRATION_IMAGES)
        fit = list(range(half))
        cal = list(range(half, min(len(negatives), 2 * half)))
        set_evidence(model, det_u, build.detector.whole(negatives, fit, size))
        model.cues = stored_cues(det_u, batch.ids, model)  # with the presence, now that it can be weighed
        _shift_votes(model, det_u, others, det_ex, centres, examples.ids)
        # Localised as `localize` does, with the category's other learnt parts (they share the facing's cues).
        pos, _ = localise_source(build, [model, *others], Subset(pool, held), whole=True)
        neg, _ = localise_source(build, [model, *others], Subset(negatives, cal), whole=True)
        calibrate(model, _presence(pos[name]), _presence(neg[name]))
        errors = held_out_errors(Subset(pool, held), pos[name], model)
        if errors:
            model.calibration["localisation"] = errors
        background = len(fit) + len(cal)
    else:
        model.cues = stored_cues(det_u, batch.ids, model)  # the vote peaks only: no evidence, no presence
        _shift_votes(model, det_u, others, det_ex, centres, examples.ids)
    return Learnt(model, aligned, len(grow), len(held), background, aligned_by, uncalibrated)


def _shift_votes(
    model: PartModel,
    det_u: Detections,
    others: Sequence[PartModel],
    det_ex: Detections,
    centres: np.ndarray,
    example_ids: Sequence[str],
) -> None:
    """Where the part's votes land on the unlabelled images its templates grew on (localised with the category's
    other learnt parts, as `localize` does), against the examples: ``learn.vote_shift``, kept in the part's prior."""
    if not model.config.vote_shift:
        return
    found = localise_parts(det_u, [model, *others], voters=0)[model.name]
    placed = [(f.x, f.y, f.flipped) for f in found]
    model.prior = {**model.prior, "vote_shift": vote_shift(model, placed, det_ex, centres, example_ids)}


def stored_cues(det: Detections, ids: Sequence[str], part: PartModel) -> dict[str, Any]:
    """The part's facing cues (:func:`~kgexplain.aog.vote.facing_cues`) on the unlabelled images it grew on
    (``det``, of the images ``ids``), as the part stores them: what weighs the cues of the parts localised together
    (:func:`~kgexplain.aog.vote.weighted_facing`)."""
    cues = facing_cues(det, part)
    return {
        "ids": list(ids),
        **{k: None if v is None else [round(float(x), 5) for x in v] for k, v in cues.items()},
    }


def held_out_errors(source: ImageSource, found: Sequence[Located], part: PartModel) -> dict[str, Any] | None:
    """How far the part was placed from where it is annotated, on the held-out images that annotate it: the mean
    distance divided by the image's diagonal (the paper's normalised distance, on whole images), over all of them
    and over those where the calibrated part (``part``) reports it found; None when no image annotates the part."""
    dist, presence = [], []
    for i, f in enumerate(found):
        truth = source.record(i).keypoints.get(part.name)
        if truth is None:
            continue
        w, h = source.image_size(i)
        dist.append(math.hypot(f.result["x"] - truth[0], f.result["y"] - truth[1]) / math.hypot(w, h))
        presence.append(np.nan if f.loc.presence is None else f.loc.presence)
    if not dist:
        return None
    d, ok = np.asarray(dist), part.found(np.asarray(presence, np.float64))
    return {
        "images": len(d),
        "distance": round(float(d.mean()), 4),
        "found": int(ok.sum()),
        "distance_found": round(float(d[ok].mean()), 4) if ok.any() else None,
    }


def _presence(found: Sequence[Located]) -> np.ndarray:
    return np.array([f.loc.presence if f.loc.presence is not None else np.nan for f in found], np.float64)
