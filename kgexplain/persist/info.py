"""Information-discarding measurements -> store rows: Metric nodes of kind ``sid``, ``ru``, ``concentration`` and
``ru_concentration`` per image and layer (the maps as ``.npy`` artifacts), per-layer means of kind ``info_layer``,
each linked MEASURES -> Layer and MEASURED_ON -> Image, and the Run node."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from kgexplain.information.measure import Measurement
from kgexplain.store import Artifacts, RunRecord
from kgexplain.store import ids as I


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def info_metrics(
    measurement: Measurement,
    model_id: str,
    image_ids: Sequence[str],
    checkpoint: str,
    grid: int,
    artifacts: Artifacts,
) -> list[dict[str, Any]]:
    """Metric rows of one measurement (``image_ids`` follow its images); the maps are stored in ``artifacts``."""
    metrics: list[dict[str, Any]] = []
    for r in measurement.records:
        img, layer = image_ids[r.image], r.layer
        base = {"layer": layer, "image": img, "checkpoint": checkpoint, "layer_id": I.layer_id(model_id, layer)}
        for kind, arr in (("sid", r.sid_map), ("ru", r.ru_map)):
            if arr is None:
                continue
            ref = artifacts.put_bytes(_npy(arr), "npy", "maps")
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
                        "grid": grid,
                    },
                }
            )
        for kind, value in (("concentration", r.concentration), ("ru_concentration", r.ru_concentration)):
            if value is not None and np.isfinite(value):
                metrics.append(
                    {**base, "id": f"{layer}/{img}/{kind}", "kind": kind, "name": kind, "value": value, "image_id": img}
                )
    for row in measurement.summary():
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
                        "checkpoint": checkpoint,
                        "layer_id": I.layer_id(model_id, layer),
                        "extra": {"images": row["images"]},
                    }
                )
    return metrics


def info_record(
    run: str, model_id: str, data: str, determinants: dict[str, Any], checkpoint: str, measurement: Measurement
) -> RunRecord:
    """The Run node of one model's (checkpoint's) measurement."""
    stats = {
        "summary": measurement.summary(),
        "seconds": round(measurement.seconds, 2),
        "passes": measurement.passes,
        "delta2": measurement.delta2,
    }
    return RunRecord(run, "info", model_id, data, {**determinants, "weights": checkpoint}, stats)
