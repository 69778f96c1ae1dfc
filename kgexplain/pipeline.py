"""``kgexplain build`` as a library function: data -> model -> features (-> miners, added stage by stage).

With no arguments it runs the offline reference workload: synthetic images of one category plus background
images (the negatives), the shipped toy net, and the store folder ``./kgexplain-store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.select import open_source
from kgexplain.data.subset import Subset
from kgexplain.data.synth import BACKGROUND
from kgexplain.devices import resolve_device
from kgexplain.errors import UsageError
from kgexplain.features.extract import Extraction, default_framing, extract_features
from kgexplain.models.registry import ModelHandle, load_model
from kgexplain.workspace import Workspace, folder_size

Log = Callable[[str], None]


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
    # execution
    store: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    trust_checkpoint: bool = False
    progress: bool = False


@dataclass
class BuildResult:
    workspace: Workspace
    model: ModelHandle
    objects: ImageSource
    negatives: ImageSource | None
    extraction: Extraction
    negative_extraction: Extraction | None
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        feats = self.extraction.features
        return {
            "store": str(self.workspace.root),
            "model": self.model.name,
            "weights": self.model.weights,
            "data": self.objects.name,
            "images": self.extraction.report.to_dict(),
            "negatives": self.negative_extraction.report.to_dict() if self.negative_extraction else None,
            "layers": {
                name: {
                    "shape": list(fs.shape),
                    "stride": fs.geometry.stride_x,
                    "centre": fs.geometry.centre_x,
                    "rf": fs.geometry.rf_x,
                    "from_cache": self.extraction.from_cache.get(name, False),
                    "megabytes": round(fs.nbytes / 1e6, 2),
                }
                for name, fs in feats.items()
            },
            "cache_megabytes": round(folder_size(self.workspace.cache) / 1e6, 1),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def _open_data(cfg: BuildConfig, ws: Workspace, log: Log) -> tuple[ImageSource, ImageSource | None]:
    user_data = cfg.images or cfg.annotations or cfg.cub
    if not user_data:
        if cfg.category == BACKGROUND:
            raise UsageError("the background class has no object to explain", hint="pick an animal with --category")
        log(
            f"reference workload: {cfg.n} synthetic '{cfg.category}' images + {cfg.n} background images "
            f"(seed {cfg.seed})"
        )
        both = open_source(
            synth=True, data_dir=ws.data, n=2 * cfg.n, seed=cfg.seed, categories=[cfg.category, BACKGROUND]
        )
        return Subset.by_label(both, [cfg.category]), Subset.by_label(both, [BACKGROUND])
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
    return source, negatives


def build(cfg: BuildConfig | None = None, log: Log | None = None) -> BuildResult:
    """Run the pipeline as far as it goes: data, model, features (cached in the store's artifacts)."""
    cfg = cfg or BuildConfig()
    say = log or (lambda _m: None)
    timings: dict[str, float] = {}
    ws = Workspace.resolve(cfg.store).ensure()

    # Model and layer names first: a mistake there should fail before any data is generated.
    t = time.perf_counter()
    handle = load_model(cfg.model, cfg.weights, trust_checkpoint=cfg.trust_checkpoint)
    for name in cfg.layers or handle.default_layers:
        handle.layer(name)
    resolve_device(cfg.device)
    timings["model_s"] = time.perf_counter() - t
    say(f"model {handle.name} ({handle.weights}), layers {', '.join(cfg.layers or handle.default_layers)}")

    t = time.perf_counter()
    objects, negatives = _open_data(cfg, ws, say)
    timings["data_s"] = time.perf_counter() - t

    framing = _framing(cfg, handle, objects)
    t = time.perf_counter()
    extraction = extract_features(
        handle,
        objects,
        cfg.layers,
        framing=framing,
        relu="pre",
        device=cfg.device,
        batch_size=cfg.batch_size,
        cache_dir=ws.cache,
        progress=cfg.progress,
    )
    neg_extraction = None
    if negatives is not None:
        neg_extraction = extract_features(
            handle,
            negatives,
            cfg.layers,
            framing=Framing(framing.size),
            relu="pre",
            device=cfg.device,
            batch_size=cfg.batch_size,
            cache_dir=ws.cache,
            progress=cfg.progress,
        )
    timings["features_s"] = time.perf_counter() - t
    say(f"features: {extraction.report.summary()}")
    return BuildResult(ws, handle, objects, negatives, extraction, neg_extraction, timings)


def _framing(cfg: BuildConfig, handle: ModelHandle, source: ImageSource) -> Framing:
    base = default_framing(handle, source)
    return Framing(base.size, cfg.crop or base.crop)


def store_path(cfg: BuildConfig) -> Path:
    return Workspace.resolve(cfg.store).root
