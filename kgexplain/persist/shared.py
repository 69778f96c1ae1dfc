"""The rows every method shares: Model, Layer and Filter nodes, Image nodes, and Metric nodes with their links."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.data.base import ImageSource, sha256_file
from kgexplain.features.extract import geometries_for, layer_shape
from kgexplain.features.geometry import LayerGeometry
from kgexplain.models.registry import ModelHandle
from kgexplain.store import GraphStore
from kgexplain.store import ids as I


def image_sha(source: ImageSource, index: int) -> str:
    """sha256 of the image file, or of the decoded pixels for sources without files."""
    rec = source.record(index)
    if rec.path is not None and Path(rec.path).is_file():
        return sha256_file(rec.path)
    return hashlib.sha256(np.asarray(source.load_image(index)).tobytes()).hexdigest()


def model_rows(
    handle: ModelHandle, geometries: Mapping[str, LayerGeometry], channels: Mapping[str, int]
) -> tuple[str, dict[str, pa.Table], dict[str, pa.Table]]:
    """Model, Layer and Filter nodes (shared) and their OF_MODEL / IN_LAYER relationships."""
    model = I.model_id(handle.name, handle.weights, handle.weights_sha)
    names = list(geometries)
    layer_ids = [I.layer_id(model, n) for n in names]
    layers = pa.table(
        {
            "id": layer_ids,
            "model": [model] * len(names),
            "name": names,
            "module": [handle.layer(n).module for n in names],
            "idx": [list(handle.layers).index(n) if n in handle.layers else -1 for n in names],
            "channels": [int(channels[n]) for n in names],
            "stride": [float(geometries[n].stride_x) for n in names],
            "centre": [float(geometries[n].centre_x) for n in names],
            "rf": [float(geometries[n].rf_x) for n in names],
            "map_h": [geometries[n].map_h for n in names],
            "map_w": [geometries[n].map_w for n in names],
        }
    )
    f_ids, f_layer, f_ch = [], [], []
    for n, lid in zip(names, layer_ids, strict=True):
        for c in range(int(channels[n])):
            f_ids.append(I.filter_id(model, n, c))
            f_layer.append(lid)
            f_ch.append(c)
    nodes = {
        "Model": pa.table(
            {
                "id": [model],
                "arch": [handle.name],
                "weights": [handle.weights],
                "sha": [handle.weights_sha or ""],
                "input_size": [handle.input_size],
            }
        ),
        "Layer": layers,
        "Filter": pa.table({"id": f_ids, "layer": f_layer, "channel": f_ch}),
    }
    rels = {
        "OF_MODEL": pa.table({"from": layer_ids, "to": [model] * len(names)}),
        "IN_LAYER": pa.table({"from": f_ids, "to": f_layer}),
    }
    return model, nodes, rels


def stored_path(path: Path, artifacts: Path | None) -> str:
    """How an image's path is stored: relative to the store's artifacts folder when the image lies in it (the data
    sets the store generated), so a copied or moved store still finds them; absolute otherwise."""
    full = path.resolve()
    if artifacts is not None:
        try:
            return full.relative_to(artifacts.resolve()).as_posix()
        except ValueError:
            pass
    return str(full)


def image_rows(
    source: ImageSource, indices: Sequence[int] | np.ndarray, dataset: str, artifacts: Path | None = None
) -> tuple[list[str], pa.Table]:
    """Image ids (per source index given) and the Image nodes (paths as :func:`stored_path` says). An image's id is
    its content's hash, so every run that sees the same image links to one node; an image that is more than one
    entry here (two objects of one photo, each cropped to its box; a file copied under two names) gets a node per
    entry, its id also hashing the entry's id, so that each keeps its own frame and inferences."""
    shas = [image_sha(source, int(i)) for i in indices]
    repeated = {sha for sha, n in Counter(shas).items() if n > 1}
    ids, paths, ws, hs, labels = [], [], [], [], []
    for i, sha in zip(indices, shas, strict=True):
        rec = source.record(int(i))
        ids.append(I.image_id(hashlib.sha256(f"{sha}|{rec.id}".encode()).hexdigest() if sha in repeated else sha))
        paths.append(stored_path(Path(rec.path), artifacts) if rec.path is not None else rec.id)
        size = rec.meta.get("size")
        if size is None:
            w, h = source.image_size(int(i))
        else:
            w, h = size
        ws.append(int(w))
        hs.append(int(h))
        labels.append(rec.label)
    table = pa.table({"id": ids, "path": paths, "w": ws, "h": hs, "label": labels, "dataset": [dataset] * len(ids)})
    return ids, table


def layer_and_image_rows(
    handle: ModelHandle,
    layers: Sequence[str],
    source: ImageSource,
    indices: Sequence[int],
    size: int,
    artifacts: Path | None = None,
) -> tuple[str, list[str], dict[str, pa.Table], dict[str, pa.Table]]:
    """The shared rows a per-layer, per-image run links to: (model id, image ids, nodes, relationships) for the
    model's ``layers`` at input ``size`` and the source images at ``indices``."""
    geoms = geometries_for(handle, [handle.layer(n) for n in layers], size)
    channels = {n: layer_shape(handle, handle.layer(n), size)[0] for n in layers}
    model_id, nodes, rels = model_rows(handle, geoms, channels)
    image_ids, nodes["Image"] = image_rows(source, indices, source.name, artifacts)
    return model_id, image_ids, nodes, rels


def write_shared(store: GraphStore, nodes: Mapping[str, pa.Table], rels: Mapping[str, pa.Table]) -> None:
    for label in ("Model", "Layer", "Filter", "Image"):
        if label in nodes:
            store.ensure_nodes(label, nodes[label])
    for rel in ("OF_MODEL", "IN_LAYER"):
        if rel in rels:
            store.ensure_rels(rel, rels[rel])


def metric_rows(run: str, metrics: Sequence[Mapping[str, Any]]) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """Metric nodes with MEASURES (``layer_id``) and MEASURED_ON (``image_id``) relationships.

    Each metric is a mapping of Metric properties (``id`` without the run prefix, no ``run``) plus optional
    ``layer_id`` / ``image_id``; ``extra`` may be a dict (stored as JSON).
    """
    props = ("id", "run", "kind", "name", "value", "layer", "image", "checkpoint", "extra", "artifact", "artifact_sha")
    cols: dict[str, list[Any]] = {k: [] for k in props}
    measures: dict[str, list[str]] = {"from": [], "to": []}
    measured_on: dict[str, list[str]] = {"from": [], "to": []}
    for m in metrics:
        mid = f"{run}/{m['id']}"
        for k in props:
            v = mid if k == "id" else run if k == "run" else m.get(k)
            if k == "extra" and isinstance(v, Mapping):
                v = json.dumps(v, sort_keys=True)
            if k == "value" and v is not None:
                v = float(v)
            cols[k].append(v)
        if m.get("layer_id"):
            measures["from"].append(mid)
            measures["to"].append(m["layer_id"])
        if m.get("image_id"):
            measured_on["from"].append(mid)
            measured_on["to"].append(m["image_id"])
    types = {"value": pa.float64()}
    nodes = {"Metric": pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})}
    rels = {}
    if measures["from"]:
        rels["MEASURES"] = pa.table(measures)
    if measured_on["from"]:
        rels["MEASURED_ON"] = pa.table(measured_on)
    return nodes, rels
