"""Explanatory-graph builds -> store rows: Pattern nodes, OF_FILTER, PARENT and FIRES_ON relationships, the stability
Metric nodes, and the Run node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.explanatory_graph.graph import ExplanatoryGraph, Inference
from kgexplain.explanatory_graph.stability import StabilityResult
from kgexplain.persist.shared import metric_rows
from kgexplain.store import RunRecord
from kgexplain.store import ids as I


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
        offsets = layer.parent_offsets(upper)
        child, slot = np.nonzero(layer.parents >= 0)  # every edge, child by child, in parent order
        up = layer.parents[child, slot]
        parent["from"] += np.asarray(ids_per_layer[layer.name], object)[child].tolist()
        parent["to"] += np.asarray(ids_per_layer[upper.name], object)[up].tolist()
        parent["dx"] += offsets[child, slot, 0].astype(float).tolist()
        parent["dy"] += offsets[child, slot, 1].astype(float).tolist()
        parent["sigma"] += layer.parent_spread[child, slot].astype(float).tolist()
        parent["weight"] += layer.parent_weight[child, slot].astype(float).tolist()
    for layer in graph.layers:
        li = inference.layers[layer.name]
        rows, scores = inference.top_images(layer.name, top)
        n_top = rows.shape[1]
        v = np.repeat(np.arange(layer.count), n_top)  # pattern by pattern, best image first
        rank = np.tile(np.arange(n_top), layer.count)
        row = rows.reshape(-1).astype(np.int64)
        refs = [patches.get((layer.name, int(a), int(b))) for a, b in zip(v, rank, strict=True)]
        fires["from"] += np.asarray(ids_per_layer[layer.name], object)[v].tolist()
        fires["to"] += np.asarray(image_ids, object)[row].tolist()
        fires["x"] += li.position[row, v, 0].astype(float).tolist()
        fires["y"] += li.position[row, v, 1].astype(float).tolist()
        fires["score"] += scores.reshape(-1).astype(float).tolist()
        fires["rank"] += rank.tolist()
        fires["patch"] += [ref.path if ref else None for ref in refs]
        fires["patch_sha"] += [ref.sha256 if ref else None for ref in refs]
    nodes = {"Pattern": pa.table(pat_cols)}
    rels = {"OF_FILTER": pa.table(of_filter), "PARENT": pa.table(parent), "FIRES_ON": pa.table(fires)}
    if metrics:
        metric_nodes, metric_rels = metric_rows(run, metrics)
        nodes.update(metric_nodes)
        rels.update(metric_rels)
    counts = {"patterns": len(pat_cols["id"]), "parents": len(parent["from"]), "inferences": len(fires["from"])}
    return EGRunRows(nodes, rels, counts)


def stability_metrics(results: Mapping[str, StabilityResult], model_id: str) -> list[dict[str, Any]]:
    """Metric rows of location stability: one per method (patterns, raw_filter, random) and one per method and layer."""
    metrics: list[dict[str, Any]] = []
    for method, res in results.items():
        metrics.append({"id": f"stability/{method}", "kind": "stability", "name": method, "value": res.value})
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
    return metrics


def build_record(run: str, model_id: str, data: str, config: dict[str, Any], stats: dict[str, Any]) -> RunRecord:
    """The Run node of a build: what determined it (config) and what it found (stats)."""
    return RunRecord(run, "eg", model_id, data, config, stats)
