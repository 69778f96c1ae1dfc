"""Knowledge points -> store rows: KnowledgePoint nodes (one per knowledge point) with KP_IN -> Layer and KP_ON ->
Image, Metric rows of kind ``kp_layer`` (per layer and checkpoint) and ``kp_sample`` (the sample embedding's
correlations), and the Run node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.data.base import Framed
from kgexplain.knowledge_points.analyse import Analysis
from kgexplain.store import RunRecord
from kgexplain.store import ids as I


def kp_rows(
    run: str,
    checkpoint: str,
    model_id: str,
    analysis: Analysis,
    frames: Sequence[Framed],
    image_ids: Sequence[str],
    class_names: Sequence[str],
) -> tuple[pa.Table, dict[str, pa.Table]]:
    """KnowledgePoint nodes (one per knowledge point) with KP_IN → Layer and KP_ON → Image."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "id", "run", "checkpoint", "layer", "image", "region", "x", "y", "cls", "prob", "strength",
            "importance", "truth", "reliable",
        )
    }  # fmt: skip
    kp_in: dict[str, list[str]] = {"from": [], "to": []}
    kp_on: dict[str, list[str]] = {"from": [], "to": []}
    size = frames[0].image.shape[0]
    for name, res in analysis.layers.items():
        p, side = res.points, res.grid
        layer_id = I.layer_id(model_id, name)
        cell = size / side
        for i, r in zip(*np.nonzero(p.is_kp), strict=True):
            fr = frames[int(i)]
            x, y = fr.affine.inverse_point((r % side + 0.5) * cell, (r // side + 0.5) * cell)
            kid = f"{run}/{checkpoint}/{name}/{image_ids[i]}/r{r}"
            t = int(p.truth[i])
            for k, v in (
                ("id", kid), ("run", run), ("checkpoint", checkpoint), ("layer", name), ("image", image_ids[i]),
                ("region", int(r)), ("x", float(x)), ("y", float(y)), ("cls", class_names[int(p.cls[i, r])]),
                ("prob", float(p.prob[i, r])), ("strength", float(p.strength[i, r])),
                ("importance", float(res.w[i, r])), ("truth", class_names[t] if t >= 0 else None),
                ("reliable", bool(p.reliable[i, r])),
            ):  # fmt: skip
                cols[k].append(v)
            kp_in["from"].append(kid)
            kp_in["to"].append(layer_id)
            kp_on["from"].append(kid)
            kp_on["to"].append(image_ids[i])
    types = {"region": pa.int64(), "reliable": pa.bool_()} | {
        k: pa.float64() for k in ("x", "y", "prob", "strength", "importance")
    }
    table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})
    return table, {"KP_IN": pa.table(kp_in), "KP_ON": pa.table(kp_on)}


def layer_metrics(checkpoint: str, model_id: str, analysis: Analysis) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, value in analysis.corr.items():
        out.append({"id": f"{checkpoint}/sample/{key}", "kind": "kp_sample", "name": key, "value": value,
                    "checkpoint": checkpoint})  # fmt: skip
    for name, res in analysis.layers.items():
        s = res.summary()
        for key in (
            "kp",
            "reliable",
            "reliable_ratio",
            "kp_per_image",
            "corr_importance_strength",
            "corr_h_shapley",
            "corr_w_shapley",
            "seconds",
        ):
            if s[key] is None:
                continue
            out.append(
                {
                    "id": f"{checkpoint}/{name}/{key}",
                    "kind": "kp_layer",
                    "name": key,
                    "value": s[key],
                    "layer": name,
                    "checkpoint": checkpoint,
                    "layer_id": I.layer_id(model_id, name),
                    "extra": {"regions": s["regions"], "grid": res.grid},
                }
            )
    return out


def kp_record(
    run: str, model_id: str, data: str, determinants: dict[str, Any], checkpoint: str, stats: dict[str, Any]
) -> RunRecord:
    """The Run node of one model's (checkpoint's) knowledge points."""
    return RunRecord(run, "kp", model_id, data, {**determinants, "checkpoint": checkpoint}, stats)
