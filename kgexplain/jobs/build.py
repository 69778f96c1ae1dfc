"""``kgexplain build`` as a library call: :func:`run_build`.

model -> data -> features -> explanatory graph (mined, or from the run's cache) -> inference -> top patches and
contact sheets -> location stability (where keypoints exist) -> one run in the store.

With the default :class:`BuildConfig` it runs the offline reference workload: synthetic images of one category
(cropped to their object boxes, the paper's protocol) plus background images (the negatives that normalise the
features) and the shipped toy net. Every stage is idempotent: features and the mined graph are cached by what
determines them, patches are content-addressed, and the store replaces the run's rows, so re-running a build changes
nothing and an interrupted build finishes when run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import torch

from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.images import LoadReport
from kgexplain.data.mirror import Mirrored
from kgexplain.data.spec import DataSpec
from kgexplain.data.subset import Subset
from kgexplain.data.subset import shard as shard_of
from kgexplain.data.synth import BACKGROUND
from kgexplain.distributed import Group, join
from kgexplain.errors import DataError, UsageError
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraph, ExplanatoryGraphMiner, Inference
from kgexplain.explanatory_graph.facing import choose_facing, mixed
from kgexplain.explanatory_graph.patches import contact_sheet, png, top_patches
from kgexplain.explanatory_graph.stability import (
    PARTS,
    StabilityResult,
    part_array,
    random_positions,
    raw_filter_peaks,
    stability,
)
from kgexplain.features.cache import FeatureSet
from kgexplain.features.extract import Extraction, extract_features
from kgexplain.features.geometry import scaled_patch_size
from kgexplain.jobs.common import JobResult, check_writable, data_label, device_name, opened, workspace_of
from kgexplain.models.registry import ModelHandle, checkpoint_file, resolve_model
from kgexplain.persist.eg import PatchRef, build_record, eg_run_rows, stability_metrics
from kgexplain.persist.shared import image_rows, model_rows, write_shared
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, StoreSpec
from kgexplain.store import ids as I
from kgexplain.store.artifacts import Artifacts
from kgexplain.store.base import now
from kgexplain.workspace import Workspace, folder_size

ALGORITHM = "eg-4"  # bump when mining changes results: it is part of the run id (README: rebuilding)
A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class BuildConfig:
    """What to mine. The defaults are the offline reference workload and the paper's settings.

    ``data`` are the images to explain; when it names no source, the synthetic workload is used: ``n`` images of
    ``category`` and as many background images from ``seed``, cropped to their boxes. ``negatives`` are background
    images that normalise the features (without them, user data is normalised by its own statistics).
    """

    model: str | ModelHandle = "toynet"  # an architecture name, or your own network (ModelHandle.from_module)
    weights: str | None = None  # imagenet | none | shipped | PATH (default: the model's own)
    trust_checkpoint: bool = False
    layers: tuple[str, ...] = ()  # bottom to top; default: the paper's layers for the model
    data: DataSpec = field(default_factory=DataSpec)
    negatives: DataSpec | None = None
    category: str = "bird"  # synthetic workload: the category to explain
    n: int = 300  # synthetic workload: images of the category (and as many background images)
    seed: int = 0  # synthetic workload seed
    iterations: int | None = None  # EM iterations per layer (default 20)
    parents: int | None = None  # parents per pattern, M (default 15)
    em_images: int | None = None  # EM on a sample of this many images, then one pass over all (100; 0: all)
    em_batch: int | None = None  # stepwise EM's mini-batches of the EM images (default 25; 0: all, the eg-3 EM)
    em_update: str | None = None  # with em_batch: "stepwise" (default) or "incremental" statistics
    mining_seed: int = 0
    patches: int = 5  # top patches stored per pattern (0: none)
    top_inferences: int = 10  # FIRES_ON relationships per pattern
    sheet_patterns: int = 40  # patterns per layer on the contact sheet
    device: str = "auto"
    batch_size: int | None = None  # images per forward pass
    facing: str = "as-is"  # "latent": each image mined as it is or mirrored, as the graph chooses (facing.py)
    facing_rounds: int = 3  # with facing "latent": choose, mine again, ... this many times


@dataclass
class BuildResult(JobResult):
    """What a build made and measured; ``summary()`` is what ``kgexplain build --json`` prints."""

    run: str
    workspace: Workspace
    model: ModelHandle
    objects: ImageSource
    negatives: ImageSource | None
    extraction: Extraction
    negative_extraction: Extraction | None
    graph: ExplanatoryGraph
    inference: Inference
    from_cache: bool
    stability: dict[str, Any] = field(default_factory=dict)
    sheets: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        feats = self.extraction.features
        return {
            "run": self.run,
            "store": self.workspace.location,
            "model": self.model.name,
            "weights": self.model.weights,
            "data": self.objects.name,
            "images": self.extraction.report.to_dict(),
            "negatives": self.negative_extraction.report.to_dict() if self.negative_extraction else None,
            "layers": {
                layer.name: {
                    "shape": list(feats[layer.name].shape),
                    "stride": layer.geometry.stride_x,
                    "rf": layer.geometry.rf_x,
                    "patterns": layer.count,
                    "parent_edges": int((layer.parents >= 0).sum()),
                    "contact_sheet": self.sheets.get(layer.name),
                }
                for layer in self.graph.layers
            },
            "patterns": self.graph.patterns,
            "edges": self.graph.edges,
            "mined": not self.from_cache,
            "stability": self.stability,
            "stored": self.counts,
            "artifacts_megabytes": round(folder_size(self.workspace.artifacts) / 1e6, 1),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }

    def to_json(self) -> Any:
        return self.summary()

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"run {s['run']} in {s['store']} ({'mined' if s['mined'] else 'graph from cache'})",
            f"model {s['model']} ({s['weights']}); images: {self.extraction.report.summary()}",
        ]
        for name, info in s["layers"].items():
            c, h, w = info["shape"]
            lines.append(
                f"  {name:10s} {c:4d} filters {h}x{w}  {info['patterns']:6d} patterns "
                f"{info['parent_edges']:7d} parent edges"
            )
        if s["stability"]:
            st = s["stability"]
            lines.append(
                f"location stability (lower is better): patterns {st['patterns']:.4f}, raw filter peaks "
                f"{st['raw_filter']:.4f}, random {st['random']:.4f}; ratio {st['ratio']:.2f}"
            )
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
        lines.append("next: kgexplain patterns --top 5 | kgexplain show PATTERN | kgexplain stats")
        return "\n".join(lines)


def _open_data(
    cfg: BuildConfig, ws: Workspace, progress: Progress | None
) -> tuple[ImageSource, ImageSource | None, bool]:
    """Objects, negatives, and whether this is the synthetic reference workload."""
    if cfg.data.synthetic:
        if cfg.category == BACKGROUND:
            raise UsageError("the background class has no object to explain", hint="pick an animal with --category")
        say(
            progress,
            f"reference workload: {cfg.n} synthetic '{cfg.category}' images + {cfg.n} background images "
            f"(seed {cfg.seed})",
        )
        both = DataSpec(n=2 * cfg.n, seed=cfg.seed, categories=(cfg.category, BACKGROUND)).open(ws)
        return Subset.by_label(both, [cfg.category]), Subset.by_label(both, [BACKGROUND]), True
    source = cfg.data.open(ws, progress)
    negatives = None
    if cfg.negatives is not None:
        try:
            negatives = cfg.negatives.open(ws)
        except DataError as e:
            raise DataError(f"negatives: {e.message}", hint="check the path passed to --negatives") from e
    if negatives is None:
        say(progress, "no --negatives: features are normalised by the object images' own statistics")
    return source, negatives, False


def _eg_config(cfg: BuildConfig, handle: ModelHandle) -> EGConfig:
    eg = EGConfig(layers=tuple(cfg.layers), seed=cfg.mining_seed)
    if cfg.iterations is not None:
        eg = replace(eg, iterations=cfg.iterations)
    if cfg.parents is not None:
        eg = replace(eg, parents=cfg.parents)
    if cfg.em_images is not None:
        eg = replace(eg, em_images=cfg.em_images)
    if cfg.em_batch is not None:
        eg = replace(eg, em_batch=cfg.em_batch)
    if cfg.em_update is not None:
        eg = replace(eg, em_update=cfg.em_update)
    eg = eg.with_model_defaults(handle.name, handle.default_layers)
    for name in eg.layers:
        handle.layer(name)
    return eg


def _weights_spec(weights: str | None) -> str | None:
    """Weights as a later command can load them again: names stay, paths become absolute."""
    path = checkpoint_file(weights)
    return weights if path is None else str(path.resolve())


def run_build(
    config: BuildConfig | None = None, store: GraphStore | StoreSpec | None = None, progress: Progress | None = None
) -> BuildResult:
    """Mine an explanatory graph and store it as one run; returns what was built and measured.

    ``store`` is an open store, or a :class:`StoreSpec` (default: ``./kgexplain-store``) that is opened after the
    checks (model, layers, device) and once the data sources are open, so a mistake fails before any store is
    created.

    Under ``torchrun`` (see :mod:`kgexplain.distributed`) every rank runs this call on its block of the images;
    the graph, the run id and what rank 0 stores are those of a single-process build of the same configuration.

    Example::

        from kgexplain import BuildConfig, StoreSpec, run_build

        result = run_build(BuildConfig(n=40, iterations=3), StoreSpec("my-store"))
        print(result.run, result.summary()["stability"])
    """
    cfg = config or BuildConfig()
    started = now()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    cfg.data.check()
    if cfg.negatives is not None:
        cfg.negatives.check()
    handle = resolve_model(cfg.model, cfg.weights, trust_checkpoint=cfg.trust_checkpoint)
    eg_cfg = _eg_config(cfg, handle)
    device = device_name(cfg.device)
    if cfg.facing not in ("as-is", "latent"):
        raise UsageError(f"facing must be as-is or latent, not {cfg.facing!r}")
    if cfg.facing_rounds < 1:
        raise UsageError(f"facing_rounds must be 1 or more, not {cfg.facing_rounds}")
    group = join(device)
    if cfg.facing == "latent" and group.world > 1:
        raise UsageError("--facing latent runs in one process", hint="leave out --nproc (or torchrun) for it")
    if not group.main:
        progress = None  # rank 0 reports for the job
    timings["model_s"] = time.perf_counter() - t
    store = store or StoreSpec()
    ws = workspace_of(store)
    say(
        progress,
        f"model {handle.name} ({handle.weights}), layers {', '.join(eg_cfg.layers)}; store {ws.location}"
        f"{group.on_ranks()}",
    )
    t = time.perf_counter()
    # rank 0 writes the synthetic set (when needed) before the others read it
    objects, negatives, synthetic = group.main_first(lambda: _open_data(cfg, ws, progress), "opening the data")
    # This rank's blocks, made before any store is opened (too few images for the ranks is said here).
    shard = shard_of(objects, group)
    neg_shard = shard_of(negatives, group) if negatives is not None else None
    framing = cfg.data.framing(handle.input_size, objects, default_crop="box" if synthetic else None)
    timings["data_s"] = time.perf_counter() - t
    inputs = _Inputs(
        handle, eg_cfg, device, ws.ensure(), objects, negatives, synthetic, framing, group, shard, neg_shard, started
    )
    check_writable(store, group, progress)  # opened again to write the run (rank 0): others may write meanwhile
    result = _build(cfg, inputs, store if group.main else None, Artifacts(ws.artifacts), progress, timings)
    group.barrier("the end of the build")
    return result


@dataclass
class _Inputs:
    """What a build works on, checked and opened before the store is."""

    handle: ModelHandle
    eg: EGConfig
    device: str
    workspace: Workspace
    objects: ImageSource
    negatives: ImageSource | None
    synthetic: bool
    framing: Framing  # how the objects become model input
    group: Group = field(default_factory=Group)
    shard: Subset | None = None  # this rank's block of the objects (None: all of them)
    neg_shard: Subset | None = None  # ... and of the negatives
    started: str | None = None  # when the build began (the run's `started`)


def _build(
    cfg: BuildConfig,
    inputs: _Inputs,
    store: GraphStore | StoreSpec | None,
    artifacts: Artifacts,
    progress: Progress | None,
    timings: dict[str, float],
) -> BuildResult:
    """The build on this rank; ``store`` is None on every rank but rank 0, which alone writes the run (the other
    ranks write content-addressed patches only). A :class:`StoreSpec` is opened for writing the run alone."""
    handle, eg_cfg, device, ws = inputs.handle, inputs.eg, inputs.device, inputs.workspace
    objects, negatives, synthetic, group = inputs.objects, inputs.negatives, inputs.synthetic, inputs.group
    shard, neg_shard, framing = inputs.shard, inputs.neg_shard, inputs.framing
    layers = list(eg_cfg.layers)
    t = time.perf_counter()

    def extract(source: ImageSource, framing: Framing) -> Extraction:
        return extract_features(
            handle,
            source,
            layers,
            framing=framing,
            relu="pre",
            device=device,
            batch_size=cfg.batch_size,
            cache_dir=ws.cache,
            progress=progress,
        )

    # Each rank extracts its block of the images (its own feature cache: a re-run resumes per rank).
    extraction = extract(shard or objects, framing)
    neg_extraction = extract(neg_shard or negatives, Framing(framing.size)) if negatives is not None else None
    group.fault("features")
    if group.joined:  # every rank's load report, as one
        extraction = replace(extraction, report=LoadReport.combined(group.objects(extraction.report, "features")))
    timings["features_s"] = time.perf_counter() - t
    say(progress, f"features: {extraction.report.summary()}")
    feats = extraction.features
    if extraction.report.loaded < 2:
        raise UsageError("mining needs at least two usable images", hint="add images or fix the skipped ones")
    local_rows = feats[layers[0]].indices  # source indices of this rank's usable images
    if shard is not None:
        local_rows = np.asarray(shard.indices, np.int64)[local_rows]
    rows = group.gather_np(np.asarray(local_rows, np.int64), "features")

    model_id = I.model_id(handle.name, handle.weights, handle.weights_sha)
    determinants = {
        "algorithm": ALGORITHM,
        "model": handle.identity,
        "config": eg_cfg.to_dict(),
        "data": objects.fingerprint(),
        "framing": framing.describe(),
        "negatives": negatives.fingerprint() if negatives is not None else None,
    }
    if cfg.facing == "latent":  # (only then: the default's run ids stay as they were)
        determinants["facing"] = {"mode": cfg.facing, "rounds": cfg.facing_rounds}
    run_id = I.run_id("eg", handle.name, cfg.category if synthetic else data_label(objects.name), determinants)

    miner = ExplanatoryGraphMiner(eg_cfg, device=device, group=group)
    cached = ws.cache / "eg" / f"{run_id}.npz"
    t = time.perf_counter()
    from_cache = group.first(cached.exists(), "the graph cache")  # rank 0's answer: it writes the cache
    mirror_feats = extract(Mirrored(objects), framing).features if cfg.facing == "latent" else None
    flip: np.ndarray | None = None  # with facing "latent": the images mined mirrored
    if from_cache:
        graph = ExplanatoryGraph.load(cached)
        if mirror_feats is not None:  # mined on a choice of facings: the same images again
            flip = np.asarray(graph.stats["facing"]["mirrored"], bool)
            feats = {n: mixed(feats[n], mirror_feats[n], flip) for n in layers}
    else:
        say(progress, f"mining {len(layers)} layers on {extraction.report.loaded} images")
        negative_feats = neg_extraction.features if neg_extraction else None
        if mirror_feats is not None:
            graph, inference, flip, mined_on = choose_facing(
                miner, feats, mirror_feats, negative_feats, cfg.facing_rounds, handle.identity, progress
            )
            graph.stats["facing"] = {"rounds": cfg.facing_rounds, "mirrored": flip.astype(int).tolist()}
            feats = dict(mined_on)
        else:
            graph, inference = miner.fit_infer(feats, negative_feats, model=handle.identity, progress=progress)
        if group.main:
            cached.parent.mkdir(parents=True, exist_ok=True)
            graph.save(cached)
    timings["mining_s"] = time.perf_counter() - t
    if from_cache:  # a fresh fit's last pass is the inference; a cached graph infers once
        t = time.perf_counter()
        inference = miner.infer(graph, feats)
        timings["inference_s"] = time.perf_counter() - t
    # The images as they were mined (with facing "latent", some mirrored): patches, stability and crops follow them.
    seen = objects if flip is None else Mirrored(objects, _per_source(flip, rows, len(objects)))

    t = time.perf_counter()
    patch_refs, sheets = _patches(cfg, graph, inference, seen, rows, framing, artifacts, group)
    timings["patches_s"] = time.perf_counter() - t

    t = time.perf_counter()
    raw = {n: tuple(group.gather_np(a, "stability") for a in raw_filter_peaks(feats[n])) for n in inference.layers}
    if store is None:  # not rank 0: done
        timings["stability_s"] = time.perf_counter() - t
        return BuildResult(
            run_id, ws, handle, objects, negatives, extraction, neg_extraction, graph, inference, from_cache,
            timings=timings,
        )  # fmt: skip
    stab = _stability(graph, inference, raw, feats, seen, rows, framing, eg_cfg)
    summary: dict[str, Any] = {}
    if stab:
        summary = {method: res.value for method, res in stab.items()}
        summary["ratio"] = summary["patterns"] / summary["raw_filter"] if summary["raw_filter"] else float("nan")
        base = stab["raw_filter"].per_layer
        summary["per_layer"] = {  # each layer's own ratio patterns / raw filter peaks
            name: v / base[name] if base.get(name) else float("nan") for name, v in stab["patterns"].per_layer.items()
        }
    timings["stability_s"] = time.perf_counter() - t

    t = time.perf_counter()
    image_ids, image_table = image_rows(objects, rows, objects.name, artifacts.root)
    frames_ref = _frames(seen, rows, image_ids, image_table, framing, artifacts)
    graph_ref = artifacts.put_file(cached, "graphs")  # what `aog learn` and `localize` infer with
    _, shared_nodes, shared_rels = model_rows(
        handle, {n: feats[n].geometry for n in layers}, {n: feats[n].shape[0] for n in layers}
    )
    shared_nodes["Image"] = image_table
    run_rows = eg_run_rows(
        run_id, model_id, graph, inference, image_ids, cfg.top_inferences, patch_refs, stability_metrics(stab, model_id)
    )
    config = {
        **determinants,
        "framing": framing.describe(),
        "input_size": framing.size,
        "top_inferences": cfg.top_inferences,
        "patches": cfg.patches,
        # where the negatives are (the determinants hold only their fingerprint): `aog learn` calibrates on them
        "negatives_source": cfg.negatives.to_record() if cfg.negatives is not None else None,
        # and where its images are: `aog learn` grows templates on them (and takes examples from their annotations)
        "data_source": None if synthetic else cfg.data.to_record(),
        "load": {"model": handle.name, "python": True}
        if isinstance(cfg.model, ModelHandle)  # `aog learn` and `localize` then need the same handle again
        else {"model": cfg.model, "weights": _weights_spec(cfg.weights)},
        "synthetic": {"category": cfg.category, "n": cfg.n, "seed": cfg.seed} if synthetic else None,
    }
    stats = {
        "graph": {"path": graph_ref.path, "sha256": graph_ref.sha256},
        "patterns": graph.patterns,
        "edges": graph.edges,
        "images": len(rows),
        "stability": summary,
        "mining": graph.stats,
        "sheets": sheets,  # layer -> contact-sheet artifact (the report and the browser show them)
        "frames": frames_ref,  # image id -> the source region the model saw (cropped images only), or None
    }
    if group.joined:
        stats["ranks"] = group.world
    record = replace(build_record(run_id, model_id, objects.name, config, stats), started=inputs.started)
    with opened(store, write=True, progress=progress) as db:  # held only for the writes: others may write meanwhile
        write_shared(db, shared_nodes, shared_rels)
        db.write_run(record, run_rows.nodes, run_rows.rels)
    timings["store_s"] = time.perf_counter() - t
    say(
        progress,
        f"stored run {run_id}: {run_rows.counts['patterns']} patterns, {run_rows.counts['parents']} parent edges, "
        f"{run_rows.counts['inferences']} top inferences",
    )
    return BuildResult(
        run_id,
        ws,
        handle,
        objects,
        negatives,
        extraction,
        neg_extraction,
        graph,
        inference,
        from_cache,
        summary,
        sheets,
        run_rows.counts,
        timings,
    )


def _patches(
    cfg: BuildConfig,
    graph: ExplanatoryGraph,
    inference: Inference,
    source: ImageSource,
    rows: np.ndarray,
    framing: Framing,
    artifacts: Artifacts,
    group: Group,
) -> tuple[dict[tuple[str, int, int], PatchRef], dict[str, str]]:
    """Top patches of every pattern and one contact sheet per layer (rank 0); rank 0 gets every rank's references.

    A crop that several patterns share (the same image and box: patterns of one filter, or of layers above one
    another, often peak on the same cell of their best images) is encoded and stored once. In a distributed job each
    rank renders the patches on its own block of the images, so it loads only those and every shared crop stays on
    one rank."""
    if cfg.patches <= 0:
        return {}, {}
    size = scaled_patch_size(framing.size)
    images: dict[int, np.ndarray] = {}

    def load(row: int) -> np.ndarray:
        if row not in images:
            images[row] = framing.apply(source, int(rows[row]), with_mask=False).image
        return images[row]

    refs: dict[tuple[str, int, int], PatchRef] = {}
    sheets: dict[str, str] = {}
    stored: dict[tuple[int, int, int, int, int], PatchRef] = {}  # (row, x0, y0, w, h) -> its patch, once

    def put(pixels: np.ndarray) -> PatchRef:
        ref = artifacts.put_bytes(png(pixels), "png", "patches")
        return PatchRef(ref.path, ref.sha256)

    block = group.block(len(rows))  # this rank's share of the images (rows of the inference)

    def on_mine(row: int) -> bool:
        return block.start <= row < block.stop

    mine = on_mine if group.world > 1 else None
    # PNG encoding, hashing and writing release the GIL for part of the time: with more than one thread to use,
    # each of ``threads`` workers encodes and writes every ``threads``-th new crop of a layer; with one, this thread
    # does. (A task per patch cost more in hand-overs than the threads saved, measured before shared crops were
    # stored once: the toy build's 25,000 patches took 6.1 s so on two threads, 4.8 s in one thread, 4.45 s as here.)
    threads = max(1, min(4, torch.get_num_threads()))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for layer in graph.layers:
            patches = top_patches(inference, layer, load, cfg.patches, size, rows=mine)
            fresh: dict[tuple[int, int, int, int, int], np.ndarray] = {}
            for p in patches:
                key = (p.row, *p.box)
                if key not in stored:
                    fresh.setdefault(key, p.pixels)
            stored.update(zip(fresh, strided_map(put, list(fresh.values()), pool, threads), strict=True))
            for p in patches:
                refs[(layer.name, p.pattern, p.rank)] = stored[(p.row, *p.box)]
            if not group.main:
                continue
            order = np.argsort(-layer.score, kind="stable")[: cfg.sheet_patterns].tolist()
            if mine is None:
                best = set(order)
                shown = [p for p in patches if p.pattern in best]
            else:  # the sheet's patterns' patches on every rank's images
                shown = top_patches(inference, layer, load, cfg.patches, size, order)
            sheet = contact_sheet(shown, layer, f"{layer.name}: top {len(order)} patterns x {cfg.patches} patches")
            sheets[layer.name] = artifacts.put_bytes(sheet, "png", "sheets").path
    if group.joined:
        merged: dict[tuple[str, int, int], PatchRef] = {}
        for part in group.objects(refs, "patches"):
            merged.update(part)
        refs = merged
    return refs, sheets


def strided_map(fn: Callable[[A], R], items: Sequence[A], pool: Executor, workers: int) -> list[R]:
    """``[fn(x) for x in items]``, with ``workers`` > 1 as that many tasks on ``pool``, task k taking every
    ``workers``-th item from the k-th (results in the items' order)."""
    if workers <= 1:
        return [fn(x) for x in items]
    parts = list(pool.map(lambda k: [fn(x) for x in items[k::workers]], range(workers)))
    return [parts[i % workers][i // workers] for i in range(len(items))]


def _frames(
    source: ImageSource, rows: np.ndarray, ids: list[str], table: Any, framing: Framing, artifacts: Artifacts
) -> str | None:
    """The region of each source image that was framed (cropped to its box) as a JSON artifact, image id ->
    [x0, y0, x1, y1] in source pixel edges, for the images whose region is not the whole image: positions stored in
    the run are framed pixels, and this maps them onto the source image (the browser's marks). An image mined
    mirrored (``source`` a :class:`Mirrored`) has x0 > x1: its framed x runs from right to left. None: no crops."""
    frames: dict[str, list[float]] = {}
    ws, hs = table.column("w").to_pylist(), table.column("h").to_pylist()
    for image_id, row, w, h in zip(ids, rows, ws, hs, strict=True):
        region = framing.region(source.record(int(row)), int(w), int(h))
        if isinstance(source, Mirrored) and source.flip[int(row)]:
            region = (w - region[0], region[1], w - region[2], region[3])
        if region != (0.0, 0.0, float(w), float(h)):
            frames[image_id] = [round(float(v), 3) for v in region]
    if not frames:
        return None
    return artifacts.put_bytes(json.dumps(frames, sort_keys=True).encode(), "json", "frames").path


def _per_source(flip: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """A choice per usable image (``flip``, in the order of ``rows``, their source indices) as one per source image
    (False for images that could not be used)."""
    out = np.zeros(n, bool)
    out[np.asarray(rows, np.int64)] = flip
    return out


def _stability(
    graph: ExplanatoryGraph,
    inference: Inference,
    raw: dict[str, tuple[np.ndarray, ...]],
    feats: dict[str, FeatureSet],
    source: ImageSource,
    rows: np.ndarray,
    framing: Framing,
    cfg: EGConfig,
) -> dict[str, StabilityResult]:
    """Location stability of the patterns and both baselines, when head/back/tail keypoints exist; ``raw``: the
    raw filter peaks (positions, scores) on every image."""
    keypoints = [framing.keypoints(source, int(i)) for i in rows]
    parts = part_array(keypoints, PARTS)
    if np.isfinite(parts[..., 0]).any(axis=1).sum() < 2:
        return {}
    diag = framing.size * 2**0.5
    keep = {layer.name: max(1, round(feats[layer.name].shape[0] / 3)) for layer in graph.layers}
    methods = {
        "patterns": {n: (li.position, li.score) for n, li in inference.layers.items()},
        "raw_filter": {n: (raw[n][0], raw[n][1]) for n in inference.layers},
        "random": {
            n: (random_positions(li.score, framing.size, framing.size, cfg.seed), li.score)
            for n, li in inference.layers.items()
        },
    }
    return {method: stability(layers, parts, diag, keep, cfg.top_images) for method, layers in methods.items()}
