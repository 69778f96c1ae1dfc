"""Miner results -> store rows: the only module that knows both the miners' results and the store's schema.

The miners return plain typed data (numpy arrays, dataclasses) and never import the store; this module turns
them into the node and relationship tables of one run, with the stable ids of ``kgexplain.store.ids``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.data.base import ImageSource
from kgexplain.explanatory_graph.graph import ExplanatoryGraph, Inference
from kgexplain.features.extract import geometries_for, layer_shape
from kgexplain.features.geometry import LayerGeometry
from kgexplain.models.registry import ModelHandle
from kgexplain.store import GraphStore, RunRecord
from kgexplain.store import ids as I


def image_sha(source: ImageSource, index: int) -> str:
    """sha256 of the image file, or of the decoded pixels for sources without files."""
    rec = source.record(index)
    if rec.path is not None and Path(rec.path).is_file():
        return hashlib.sha256(Path(rec.path).read_bytes()).hexdigest()
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


def image_rows(source: ImageSource, indices: Sequence[int] | np.ndarray, dataset: str) -> tuple[list[str], pa.Table]:
    """Image ids (per source index given) and the Image nodes."""
    ids, paths, ws, hs, labels = [], [], [], [], []
    for i in indices:
        rec = source.record(int(i))
        ids.append(I.image_id(image_sha(source, int(i))))
        paths.append(str(Path(rec.path).resolve()) if rec.path is not None else rec.id)
        size = rec.meta.get("size")
        if size is None:
            w, h = source.load_image(int(i)).size
        else:
            w, h = size
        ws.append(int(w))
        hs.append(int(h))
        labels.append(rec.label)
    table = pa.table({"id": ids, "path": paths, "w": ws, "h": hs, "label": labels, "dataset": [dataset] * len(ids)})
    return ids, table


@dataclass
class PatchRef:
    path: str
    sha256: str


@dataclass
class EGRunRows:
    nodes: dict[str, pa.Table]
    rels: dict[str, pa.Table]
    counts: dict[str, int] = field(default_factory=dict)


def eg_run_rows(
    run: str,
    model: str,
    graph: ExplanatoryGraph,
    inference: Inference,
    image_ids: Sequence[str],
    top: int,
    patches: Mapping[tuple[str, int, int], PatchRef],
    metrics: Sequence[dict[str, Any]] = (),
) -> EGRunRows:
    """Pattern nodes, OF_FILTER, PARENT and FIRES_ON (each pattern's ``top`` best images) and Metric nodes.

    ``patches`` maps (layer, pattern index, rank) to its stored patch; ``image_ids`` follow the inference rows.
    """
    pat_cols: dict[str, list[Any]] = {
        k: [] for k in ("id", "model", "layer", "filter", "k", "mu_x", "mu_y", "sigma", "score", "fires")
    }
    of_filter: dict[str, list[Any]] = {"from": [], "to": []}
    parent: dict[str, list[Any]] = {k: [] for k in ("from", "to", "dx", "dy", "sigma", "weight")}
    fires: dict[str, list[Any]] = {k: [] for k in ("from", "to", "x", "y", "score", "rank", "patch", "patch_sha")}
    ids_per_layer: dict[str, list[str]] = {}
    for layer in graph.layers:
        pids = [I.pattern_id(run, layer.name, int(f), int(k)) for f, k in zip(layer.filter, layer.k, strict=True)]
        ids_per_layer[layer.name] = pids
        pat_cols["id"] += pids
        pat_cols["model"] += [model] * layer.count
        pat_cols["layer"] += [layer.name] * layer.count
        pat_cols["filter"] += layer.filter.astype(int).tolist()
        pat_cols["k"] += layer.k.astype(int).tolist()
        pat_cols["mu_x"] += layer.mu[:, 0].astype(float).tolist()
        pat_cols["mu_y"] += layer.mu[:, 1].astype(float).tolist()
        pat_cols["sigma"] += layer.sigma.astype(float).tolist()
        pat_cols["score"] += layer.score.astype(float).tolist()
        pat_cols["fires"] += layer.fires.astype(int).tolist()
        of_filter["from"] += pids
        of_filter["to"] += [I.filter_id(model, layer.name, int(f)) for f in layer.filter]
    for i, layer in enumerate(graph.layers):
        if layer.parents.shape[1] == 0 or i + 1 >= len(graph.layers):
            continue
        upper = graph.layers[i + 1]
        up_ids = ids_per_layer[upper.name]
        offsets = layer.parent_offsets(upper)
        child_ids = ids_per_layer[layer.name]
        for v in range(layer.count):
            for m in range(layer.parents.shape[1]):
                u = int(layer.parents[v, m])
                if u < 0:
                    continue
                parent["from"].append(child_ids[v])
                parent["to"].append(up_ids[u])
                parent["dx"].append(float(offsets[v, m, 0]))
                parent["dy"].append(float(offsets[v, m, 1]))
                parent["sigma"].append(float(layer.parent_spread[v, m]))
                parent["weight"].append(float(layer.parent_weight[v, m]))
    for layer in graph.layers:
        li = inference.layers[layer.name]
        rows, scores = inference.top_images(layer.name, top)
        pids = ids_per_layer[layer.name]
        for v in range(layer.count):
            for rank in range(rows.shape[1]):
                row = int(rows[v, rank])
                ref = patches.get((layer.name, v, rank))
                fires["from"].append(pids[v])
                fires["to"].append(image_ids[row])
                fires["x"].append(float(li.position[row, v, 0]))
                fires["y"].append(float(li.position[row, v, 1]))
                fires["score"].append(float(scores[v, rank]))
                fires["rank"].append(rank)
                fires["patch"].append(ref.path if ref else None)
                fires["patch_sha"].append(ref.sha256 if ref else None)
    nodes = {"Pattern": pa.table(pat_cols)}
    rels = {"OF_FILTER": pa.table(of_filter), "PARENT": pa.table(parent), "FIRES_ON": pa.table(fires)}
    if metrics:
        metric_nodes, metric_rels = metric_rows(run, metrics)
        nodes.update(metric_nodes)
        rels.update(metric_rels)
    counts = {"patterns": len(pat_cols["id"]), "parents": len(parent["from"]), "inferences": len(fires["from"])}
    return EGRunRows(nodes, rels, counts)


def layer_and_image_rows(
    handle: ModelHandle, layers: Sequence[str], source: ImageSource, indices: Sequence[int], size: int
) -> tuple[str, list[str], dict[str, pa.Table], dict[str, pa.Table]]:
    """The shared rows a per-layer, per-image run links to: (model id, image ids, nodes, relationships) for the
    model's ``layers`` at input ``size`` and the source images at ``indices``."""
    geoms = geometries_for(handle, [handle.layer(n) for n in layers], size)
    channels = {n: layer_shape(handle, handle.layer(n), size)[0] for n in layers}
    model_id, nodes, rels = model_rows(handle, geoms, channels)
    image_ids, nodes["Image"] = image_rows(source, indices, source.name)
    return model_id, image_ids, nodes, rels


def write_shared(store: GraphStore, nodes: Mapping[str, pa.Table], rels: Mapping[str, pa.Table]) -> None:
    for label in ("Model", "Layer", "Filter", "Image"):
        if label in nodes:
            store.ensure_nodes(label, nodes[label])
    for rel in ("OF_MODEL", "IN_LAYER"):
        if rel in rels:
            store.ensure_rels(rel, rels[rel])


def write_run(store: GraphStore, run: RunRecord, rows: EGRunRows) -> None:
    store.write_run(run, rows.nodes, rows.rels)


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
