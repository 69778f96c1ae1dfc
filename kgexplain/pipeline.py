"""``kgexplain build`` as a library function.

model -> data -> features -> explanatory graph (mined, or from the run's cache) -> inference -> top patches and
contact sheets -> location stability (where keypoints exist) -> one run in the store.

With no arguments it runs the offline reference workload: synthetic images of one category (cropped to their
object boxes, the paper's protocol) plus background images (the negatives that normalise the features), the
shipped toy net, and the embedded store ``./kgexplain-store``. Every stage is idempotent: features and the mined
graph are cached by what determines them, patches are content-addressed, and the store replaces the run's rows,
so re-running a build changes nothing and an interrupted build finishes when run again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.select import open_source
from kgexplain.data.subset import Subset
from kgexplain.data.synth import BACKGROUND
from kgexplain.devices import resolve_device
from kgexplain.errors import UsageError
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraph, ExplanatoryGraphMiner, Inference
from kgexplain.explanatory_graph.patches import contact_sheet, png, top_patches
from kgexplain.explanatory_graph.stability import PARTS, part_array, random_positions, raw_filter_peaks, stability
from kgexplain.features.extract import Extraction, default_framing, extract_features
from kgexplain.features.geometry import scaled_patch_size
from kgexplain.models.registry import ModelHandle, load_model
from kgexplain.persist import PatchRef, eg_run_rows, image_rows, model_rows, write_run, write_shared
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, RunRecord, open_store
from kgexplain.store import ids as I
from kgexplain.workspace import Workspace, folder_size

ALGORITHM = "eg-1"  # bump when mining changes results: it is part of the run id


@dataclass
class BuildConfig:
    model: str = "toynet"
    weights: str | None = None
    layers: Sequence[str] | None = None
    # data: the synthetic workload unless a folder / annotations / CUB is given
    images: str | None = None
    annotations: str | None = None
    cub: str | None = None
    cub_classes: Sequence[str] = ()
    split: str = "all"
    labels: Sequence[str] = ()
    limit: int | None = None
    crop: str | None = None
    negatives: str | None = None  # a folder of background images (feature normalisation)
    category: str = "bird"  # synthetic workload: the category to explain
    n: int = 300  # synthetic workload: images of the category (and as many background images)
    seed: int = 0
    # mining
    iterations: int | None = None
    parents: int | None = None
    mining_seed: int = 0
    patches: int = 5  # top patches per pattern (0: none)
    top_inferences: int = 10  # FIRES_ON relationships per pattern
    sheet_patterns: int = 40  # patterns per layer on the contact sheet
    # execution
    store: str | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    artifacts: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    trust_checkpoint: bool = False


@dataclass
class BuildResult:
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


def _open_data(
    cfg: BuildConfig, ws: Workspace, progress: Progress | None
) -> tuple[ImageSource, ImageSource | None, bool]:
    """Objects, negatives, and whether this is the synthetic reference workload."""
    if not (cfg.images or cfg.annotations or cfg.cub):
        if cfg.category == BACKGROUND:
            raise UsageError("the background class has no object to explain", hint="pick an animal with --category")
        say(
            progress,
            f"reference workload: {cfg.n} synthetic '{cfg.category}' images + {cfg.n} background images "
            f"(seed {cfg.seed})",
        )
        both = open_source(
            synth=True, data_dir=ws.data, n=2 * cfg.n, seed=cfg.seed, categories=[cfg.category, BACKGROUND]
        )
        return Subset.by_label(both, [cfg.category]), Subset.by_label(both, [BACKGROUND]), True
    source = open_source(
        images=cfg.images,
        annotations=cfg.annotations,
        cub=cfg.cub,
        labels=cfg.labels or None,
        cub_classes=cfg.cub_classes,
        split=cfg.split,
        limit=cfg.limit,
    )
    negatives = open_source(images=cfg.negatives) if cfg.negatives else None
    if negatives is None:
        say(progress, "no --negatives: features are normalised by the object images' own statistics")
    return source, negatives, False


def _framing(cfg: BuildConfig, handle: ModelHandle, source: ImageSource, synthetic: bool) -> Framing:
    base = default_framing(handle, source)
    crop = cfg.crop or ("box" if synthetic else base.crop)
    return Framing(base.size, crop)


def _eg_config(cfg: BuildConfig, handle: ModelHandle) -> EGConfig:
    eg = EGConfig(layers=tuple(cfg.layers or ()), seed=cfg.mining_seed)
    if cfg.iterations is not None:
        eg = replace(eg, iterations=cfg.iterations)
    if cfg.parents is not None:
        eg = replace(eg, parents=cfg.parents)
    try:
        return eg.with_model_defaults(handle.name, handle.default_layers)
    except ValueError as e:
        raise UsageError(str(e)) from e


def _weights_spec(weights: str | None) -> str | None:
    """Weights as a later command can load them again: names stay, paths become absolute."""
    if weights is None or weights in ("imagenet", "none", "shipped"):
        return weights
    return str(Path(weights).expanduser().resolve())


def _open_store(cfg: BuildConfig, ws: Workspace) -> GraphStore:
    store = open_store(ws.location, user=cfg.user, password=cfg.password, database=cfg.database, artifacts=ws.artifacts)
    try:
        store.ensure_writable()
    except Exception:
        store.close()
        raise
    return store


def build(cfg: BuildConfig | None = None, progress: Progress | None = None) -> BuildResult:
    """Run the whole pipeline and persist one run; returns what was built and measured."""
    cfg = cfg or BuildConfig()
    timings: dict[str, float] = {}
    ws = Workspace.resolve(cfg.store, cfg.artifacts).ensure()

    # Cheap checks first: model, layers, device, store. Mistakes fail before any data is generated.
    t = time.perf_counter()
    handle = load_model(cfg.model, cfg.weights, trust_checkpoint=cfg.trust_checkpoint)
    eg_cfg = _eg_config(cfg, handle)
    for name in eg_cfg.layers:
        handle.layer(name)
    device = resolve_device(cfg.device)
    timings["model_s"] = time.perf_counter() - t
    store = _open_store(cfg, ws)
    try:
        return _build(
            cfg, progress, timings, ws, handle, eg_cfg, device.type if device.type == "cpu" else str(device), store
        )
    finally:
        store.close()


def _build(
    cfg: BuildConfig,
    progress: Progress | None,
    timings: dict[str, float],
    ws: Workspace,
    handle: ModelHandle,
    eg_cfg: EGConfig,
    device: str,
    store: GraphStore,
) -> BuildResult:
    say(progress, f"model {handle.name} ({handle.weights}), layers {', '.join(eg_cfg.layers)}; store {ws.location}")
    t = time.perf_counter()
    objects, negatives, synthetic = _open_data(cfg, ws, progress)
    timings["data_s"] = time.perf_counter() - t

    framing = _framing(cfg, handle, objects, synthetic)
    layers = list(eg_cfg.layers)
    t = time.perf_counter()
    extraction = extract_features(
        handle,
        objects,
        layers,
        framing=framing,
        relu="pre",
        device=device,
        batch_size=cfg.batch_size,
        cache_dir=ws.cache,
        progress=progress,
    )
    neg_extraction = None
    if negatives is not None:
        neg_extraction = extract_features(
            handle,
            negatives,
            layers,
            framing=Framing(framing.size),
            relu="pre",
            device=device,
            batch_size=cfg.batch_size,
            cache_dir=ws.cache,
            progress=progress,
        )
    timings["features_s"] = time.perf_counter() - t
    say(progress, f"features: {extraction.report.summary()}")
    feats = extraction.features
    if len(next(iter(feats.values()))) < 2:
        raise UsageError("mining needs at least two usable images", hint="add images or fix the skipped ones")

    model_id = I.model_id(handle.name, handle.weights, handle.weights_sha)
    determinants = {
        "algorithm": ALGORITHM,
        "model": handle.identity,
        "config": eg_cfg.to_dict(),
        "data": objects.fingerprint(),
        "framing": framing.describe(),
        "negatives": negatives.fingerprint() if negatives is not None else None,
    }
    data_label = cfg.category if synthetic else Path(objects.name.split(":", 1)[-1]).name
    run_id = I.run_id("eg", handle.name, data_label, determinants)

    miner = ExplanatoryGraphMiner(eg_cfg, device=device)
    cached = ws.cache / "eg" / f"{run_id}.npz"
    t = time.perf_counter()
    from_cache = cached.exists()
    if from_cache:
        graph = ExplanatoryGraph.load(cached)
    else:
        say(progress, f"mining {len(layers)} layers on {len(next(iter(feats.values())))} images")
        graph = miner.fit(
            feats, neg_extraction.features if neg_extraction else None, model=handle.identity, progress=progress
        )
        cached.parent.mkdir(parents=True, exist_ok=True)
        graph.save(cached)
    timings["mining_s"] = time.perf_counter() - t
    t = time.perf_counter()
    inference = miner.infer(graph, feats)
    timings["inference_s"] = time.perf_counter() - t

    rows = feats[layers[0]].indices
    t = time.perf_counter()
    image_ids, image_table = image_rows(objects, rows, objects.name)
    patch_refs, sheets = _patches(cfg, graph, inference, objects, rows, framing, ws, store)
    timings["patches_s"] = time.perf_counter() - t

    t = time.perf_counter()
    stab, metrics = _stability(graph, inference, feats, objects, rows, framing, run_id, model_id, eg_cfg)
    timings["stability_s"] = time.perf_counter() - t

    t = time.perf_counter()
    graph_ref = store.artifacts.put_file(cached, "graphs")  # what `aog learn` and `localize` infer with
    _, shared_nodes, shared_rels = model_rows(
        handle, {n: feats[n].geometry for n in layers}, {n: feats[n].shape[0] for n in layers}
    )
    shared_nodes["Image"] = image_table
    write_shared(store, shared_nodes, shared_rels)
    run_rows = eg_run_rows(run_id, model_id, graph, inference, image_ids, cfg.top_inferences, patch_refs, metrics)
    run = RunRecord(
        run_id,
        "eg",
        model_id,
        objects.name,
        {
            **determinants,
            "framing": framing.describe(),
            "input_size": framing.size,
            "top_inferences": cfg.top_inferences,
            "patches": cfg.patches,
            "load": {"model": cfg.model, "weights": _weights_spec(cfg.weights)},
            "synthetic": {"category": cfg.category, "n": cfg.n, "seed": cfg.seed} if synthetic else None,
        },
        {
            "graph": {"path": graph_ref.path, "sha256": graph_ref.sha256},
            "patterns": graph.patterns,
            "edges": graph.edges,
            "images": len(rows),
            "stability": stab,
            "mining": graph.stats,
        },
    )
    write_run(store, run, run_rows)
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
        stab,
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
    ws: Workspace,
    store: GraphStore,
) -> tuple[dict[tuple[str, int, int], PatchRef], dict[str, str]]:
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

    def put(pixels: np.ndarray) -> PatchRef:
        ref = store.artifacts.put_bytes(png(pixels), "png", "patches")
        return PatchRef(ref.path, ref.sha256)

    # PNG encoding, hashing and writing release the GIL: a few threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for layer in graph.layers:
            patches = top_patches(inference, layer, load, cfg.patches, size)
            for p, ref in zip(patches, pool.map(put, (q.pixels for q in patches)), strict=True):
                refs[(layer.name, p.pattern, p.rank)] = ref
            best = set(np.argsort(-layer.score, kind="stable")[: cfg.sheet_patterns].tolist())
            sheet = contact_sheet(
                [p for p in patches if p.pattern in best],
                layer,
                f"{layer.name}: top {len(best)} patterns x {cfg.patches} patches",
            )
            sheets[layer.name] = store.artifacts.put_bytes(sheet, "png", "sheets").path
    return refs, sheets


def _stability(
    graph: ExplanatoryGraph,
    inference: Inference,
    feats: dict[str, Any],
    source: ImageSource,
    rows: np.ndarray,
    framing: Framing,
    run_id: str,
    model_id: str,
    cfg: EGConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Location stability of the patterns and both baselines, when head/back/tail keypoints exist."""
    keypoints = [framing.keypoints(source, int(i)) for i in rows]
    parts = part_array(keypoints, PARTS)
    if np.isfinite(parts[..., 0]).any(axis=1).sum() < 2:
        return {}, []
    diag = framing.size * 2**0.5
    keep = {layer.name: max(1, round(feats[layer.name].shape[0] / 3)) for layer in graph.layers}
    methods = {
        "patterns": {n: (li.position, li.score) for n, li in inference.layers.items()},
        "raw_filter": {n: raw_filter_peaks(feats[n]) for n in inference.layers},
        "random": {
            n: (random_positions(li.score, framing.size, framing.size, cfg.seed), li.score)
            for n, li in inference.layers.items()
        },
    }
    out: dict[str, Any] = {}
    metrics: list[dict[str, Any]] = []
    for method, layers in methods.items():
        res = stability(layers, parts, diag, keep, cfg.top_images)
        out[method] = res.value
        metrics.append(
            {
                "id": f"stability/{method}",
                "kind": "stability",
                "name": method,
                "value": res.value,
            }
        )
        for name, v in res.per_layer.items():
            metrics.append(
                {
                    "id": f"stability/{method}/{name}",
                    "kind": "stability",
                    "name": method,
                    "value": v,
                    "layer": name,
                    "layer_id": I.layer_id(model_id, name),
                }
            )
    out["ratio"] = out["patterns"] / out["raw_filter"] if out.get("raw_filter") else float("nan")
    return out, metrics
