"""``kgexplain info`` end to end: frame images, measure per model/checkpoint, store metrics and maps, write files."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kgexplain.data.base import Framed, Framing, ImageSource
from kgexplain.errors import DataError, UsageError
from kgexplain.information.decoder import load_decoder
from kgexplain.information.measure import Measurement, measure
from kgexplain.information.sid import SIDConfig
from kgexplain.models.registry import ModelHandle
from kgexplain.persist import layer_and_image_rows, metric_rows, write_shared
from kgexplain.plots import curves, heat_overlay
from kgexplain.progress import Progress
from kgexplain.store import GraphStore, RunRecord
from kgexplain.store import ids as I


@dataclass
class InfoResult:
    weights: str
    run: str
    measurement: Measurement
    image_names: list[str]
    files: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"weights": self.weights, "image": self.image_names[r.image], **r.row()} for r in self.measurement.records
        ]

    def summary(self) -> list[dict[str, Any]]:
        return [{"weights": self.weights, **row} for row in self.measurement.summary()]


def load_mask_file(path: str | Path, size: int) -> np.ndarray:
    """A mask image (non-zero = object) resized to the model input."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"mask file not found: {p}", hint="pass one --mask per image, in the same order")
    try:
        with Image.open(p) as im:
            m = np.asarray(im.convert("L").resize((size, size), Image.Resampling.NEAREST))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read mask {p}: {e}", hint="masks are image files (PNG), non-zero = object") from e
    return m > 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "image"


def frames_of(source: ImageSource, framing: Framing) -> list[Framed]:
    """Decode every image first: an unreadable one fails before anything is measured or written."""
    return [framing.apply(source, i) for i in range(len(source))]


def info_run(
    store: GraphStore,
    handle: ModelHandle,
    weights_label: str,
    source: ImageSource,
    frames: Sequence[Framed],
    layers: Sequence[str],
    config: SIDConfig,
    *,
    ru: bool = False,
    decoder_cache: Path | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    batch: int = 2,
    device: torch.device | str = "cpu",
    out: Path | None = None,
    progress: Progress | None = None,
) -> InfoResult:
    """Measure one model on the frames, store the run (metrics + map artifacts), write files under ``out``."""
    decoders = None
    if ru:
        if decoder_cache is None:
            raise UsageError("RU needs the decoder cache folder")
        decoders = {n: load_decoder(decoder_cache, handle, n, device) for n in layers}
    m = measure(handle, frames, layers, config, decoders, masks, batch, device, progress)

    size = frames[0].image.shape[0]
    model_id, image_ids, shared_nodes, shared_rels = layer_and_image_rows(
        handle, layers, source, [f.index for f in frames], size
    )
    determinants = {
        "layers": list(layers),
        "sid": config.to_dict(),
        "ru": ru,
        "data": source.fingerprint(),
        "masks": [None if mk is None else int(mk.sum()) for mk in (masks or [])],
    }
    run = I.run_id("info", handle.name, source.name, [model_id, determinants])
    names = [f"{i:04d}-{_slug(Path(f.id).stem)}" for i, f in enumerate(frames)]
    metrics: list[dict[str, Any]] = []
    files: list[str] = []
    for r in m.records:
        img, layer = image_ids[r.image], r.layer
        base = {"layer": layer, "image": img, "checkpoint": weights_label, "layer_id": I.layer_id(model_id, layer)}
        maps = {"sid": r.sid_map, "ru": r.ru_map}
        for kind, arr in maps.items():
            if arr is None:
                continue
            buf = io.BytesIO()
            np.save(buf, arr)
            ref = store.artifacts.put_bytes(buf.getvalue(), "npy", "maps")
            metrics.append(
                {
                    **base,
                    "id": f"{layer}/{img}/{kind}",
                    "kind": kind,
                    "name": kind,
                    "value": r.sid if kind == "sid" else r.ru,
                    "image_id": img,
                    "artifact": ref.path,
                    "artifact_sha": ref.sha256,
                    "extra": {
                        "constraint": r.constraint if kind == "sid" else r.ru_constraint,
                        "lambda": r.lam,
                        "grid": config.grid_for(size),
                    },
                }
            )
            if out is not None:
                stem = out / f"{names[r.image]}-{layer}-{kind}"
                np.save(stem.with_suffix(".npy"), arr)
                heat_overlay(frames[r.image].image, arr, stem.with_suffix(".png"))
                files += [str(stem.with_suffix(".npy")), str(stem.with_suffix(".png"))]
        for kind, value in (("concentration", r.concentration), ("ru_concentration", r.ru_concentration)):
            if value is not None and np.isfinite(value):
                metrics.append(
                    {**base, "id": f"{layer}/{img}/{kind}", "kind": kind, "name": kind, "value": value, "image_id": img}
                )
    for row in m.summary():
        layer = str(row["layer"])
        for key in ("sid", "ru", "concentration", "ru_concentration", "constraint_rel_err_max"):
            if row.get(key) is not None:
                metrics.append(
                    {
                        "id": f"{layer}/mean/{key}",
                        "kind": "info_layer",
                        "name": key,
                        "value": row[key],
                        "layer": layer,
                        "checkpoint": weights_label,
                        "layer_id": I.layer_id(model_id, layer),
                        "extra": {"images": row["images"]},
                    }
                )
    nodes, rels = metric_rows(run, metrics)
    write_shared(store, shared_nodes, shared_rels)
    record = RunRecord(
        run,
        "info",
        model_id,
        source.name,
        {**determinants, "weights": weights_label},
        {"summary": m.summary(), "seconds": round(m.seconds, 2), "passes": m.passes, "delta2": m.delta2},
    )
    store.write_run(record, nodes, rels)
    return InfoResult(weights_label, run, m, [f.id for f in frames], files)


def plot_curves(results: Sequence[InfoResult], path: Path) -> Path:
    """SID (RU, concentration) per layer, one line per model/checkpoint."""
    layers = results[0].measurement.layers
    keys = ["sid", "concentration"] + (["ru"] if any(r.measurement.records[0].ru is not None for r in results) else [])
    series: dict[str, dict[str, list[float | None]]] = {k: {} for k in keys}
    for res in results:
        by_layer = {row["layer"]: row for row in res.measurement.summary()}
        for k in keys:
            series[k][res.weights] = [by_layer[n].get(k) for n in layers]  # type: ignore[misc]
    return curves(series, layers, path, title="per-pixel information discarding (nats), mean over images")
