"""``kgexplain kp`` end to end for one model or checkpoint: analyse, store the run, write the plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from kgexplain.data.base import Framed, ImageSource
from kgexplain.errors import UsageError
from kgexplain.knowledge_points.analyse import Analysis, KPConfig, analyse
from kgexplain.knowledge_points.kappa import KappaTable
from kgexplain.knowledge_points.points import knowledge_points
from kgexplain.models.registry import ModelHandle
from kgexplain.persist import layer_and_image_rows, metric_rows, write_shared
from kgexplain.plots import curves, embedding_3d, region_boxes
from kgexplain.progress import Progress
from kgexplain.store import GraphStore, RunRecord
from kgexplain.store import ids as I


@dataclass
class KPResult:
    checkpoint: str
    run: str
    analysis: Analysis
    class_names: list[str]
    files: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        corr = self.analysis.corr["corr_norm_entropy"]
        return [
            {"checkpoint": self.checkpoint, **r.summary(), "corr_norm_entropy": round(corr, 4)}
            for r in self.analysis.layers.values()
        ]


def truth_of(frames: Sequence[Framed], class_names: Sequence[str] | None, mode: str) -> np.ndarray | None:
    """True class index per image (-1 unknown); None for ``mode="predicted"`` (filled from the logits later)."""
    if mode == "predicted":
        return None
    if not class_names:
        raise UsageError(
            "the model has no class names, so image labels cannot be matched to its outputs",
            hint="use --truth predicted (reliability against the model's own prediction)",
        )
    index = {c: i for i, c in enumerate(class_names)}
    truth = np.array([index.get(f.label or "", -1) for f in frames], np.int64)
    if (truth < 0).all():
        raise UsageError(
            "no image label names one of the model's classes",
            hint="give data labelled with the model's class names, or use --truth predicted",
        )
    return truth


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
        for key in ("kp", "reliable", "reliable_ratio", "kp_per_image", "corr_importance_strength", "seconds"):
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


def kp_run(
    store: GraphStore,
    handle: ModelHandle,
    checkpoint: str,
    source: ImageSource,
    frames: Sequence[Framed],
    layers: Sequence[str],
    cfg: KPConfig,
    kappa: KappaTable,
    *,
    truth_mode: str = "label",
    sample_layer: str | None = None,
    device: torch.device | str = "cpu",
    batch: int = 64,
    out: Path | None = None,
    progress: Progress | None = None,
) -> KPResult:
    """Analyse one model on the frames, store the run (KnowledgePoint nodes, Metric rows), write plots to ``out``."""
    names = list(handle.class_names or [])
    truth = truth_of(frames, names, truth_mode)
    images = np.stack([f.image for f in frames])
    a = analyse(handle, images, truth if truth is not None else np.full(len(frames), -1), layers, kappa, cfg,
                sample_layer, device, batch, progress)  # fmt: skip
    if truth is None:  # reliability against the model's own prediction
        truth = a.collected.logits.argmax(1).numpy()
        for layer in a.layers.values():
            layer.points = knowledge_points(layer.h, a.sample, truth, cfg.tau, cfg.reference)
        a.truth = truth
    if not names:
        names = [str(c) for c in range(a.collected.logits.shape[1])]

    model_id, image_ids, shared_nodes, shared_rels = layer_and_image_rows(
        handle, layers, source, [f.index for f in frames], frames[0].image.shape[0]
    )
    determinants = {
        "layers": list(layers),
        "sample_layer": sample_layer,
        "truth": truth_mode,
        "config": cfg.to_dict(),
        "data": source.fingerprint(),
    }
    run = I.run_id("kp", handle.name, source.name, [model_id, determinants])
    kp_table, kp_rels = kp_rows(run, checkpoint, model_id, a, frames, image_ids, names)
    nodes, rels = metric_rows(run, layer_metrics(checkpoint, model_id, a))
    nodes["KnowledgePoint"] = kp_table
    rels.update(kp_rels)
    write_shared(store, shared_nodes, shared_rels)
    res = KPResult(checkpoint, run, a, names)
    record = RunRecord(
        run,
        "kp",
        model_id,
        source.name,
        {**determinants, "checkpoint": checkpoint},
        {"summary": res.summary(), "corr": a.corr, "seconds": round(a.seconds, 2), "images": len(frames)},
    )
    store.write_run(record, nodes, rels)
    if out is not None:
        res.files = write_plots(res, frames, out)
    return res


def write_plots(res: KPResult, frames: Sequence[Framed], out: Path, examples: int = 6, cap: int = 4000) -> list[str]:
    """The sample embedding, one regional-embedding plot per layer and knowledge-point regions on a few images."""
    a, names = res.analysis, res.class_names
    files = [
        embedding_3d(a.g.numpy(), a.collected.logits.argmax(1).numpy(), a.sample.mu.numpy(), names,
                     out / "sample-embedding.png", f"{res.checkpoint}: sample features g (colour: prediction)")
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    for name, lr in a.layers.items():
        p = lr.points
        hn = lr.h / lr.h.norm(dim=-1).mean().clamp_min(1e-12) * float(a.g.norm(dim=1).mean())
        flat = hn.reshape(-1, hn.shape[-1]).numpy()
        pick = rng.choice(len(flat), min(cap, len(flat)), replace=False)
        files.append(
            embedding_3d(flat[pick], p.cls.ravel()[pick], a.sample.mu.numpy(), names, out / f"regions-{name}.png",
                         f"{res.checkpoint} {name}: regional features h (faint: not a knowledge point)",
                         faint=~p.is_kp.ravel()[pick])
        )  # fmt: skip
    size = frames[0].image.shape[0]
    for i in range(min(examples, len(frames))):
        for name, lr in a.layers.items():
            side, cell = lr.grid, size / lr.grid
            boxes = [
                ((r % side) * cell, (r // side) * cell, (r % side + 1) * cell, (r // side + 1) * cell,
                 int(lr.points.cls[i, r]))
                for r in np.nonzero(lr.points.reliable[i])[0]
            ]  # fmt: skip
            files.append(region_boxes(frames[i].image, boxes, names, out / f"kp-{i:03d}-{name}.png"))
    return [str(f) for f in files]


def plot_counts(results: Sequence[KPResult], out: Path) -> list[Path]:
    """Knowledge points and reliable ones per image and the reliable ratio: across layers (one line per checkpoint,
    counts.png) and, for several checkpoints, across checkpoints (one line per layer, checkpoints.png)."""
    layers = list(results[0].analysis.layers)
    keys = ("kp_per_image", "reliable_per_image", "reliable_ratio")
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in results:
        n = len(r.analysis.truth)
        rows = {s["layer"]: s for s in r.summary()}
        table[r.checkpoint] = {
            x: {"kp_per_image": rows[x]["kp"] / n, "reliable_per_image": rows[x]["reliable"] / n,
                "reliable_ratio": rows[x]["reliable_ratio"]}
            for x in layers
        }  # fmt: skip
    by_layer = {k: {c: [table[c][x][k] for x in layers] for c in table} for k in keys}
    paths = [curves(by_layer, layers, out / "counts.png", title="knowledge points per layer (lines: checkpoints)")]
    if len(results) > 1:
        ckpts = list(table)
        by_ckpt = {k: {x: [table[c][x][k] for c in ckpts] for x in layers} for k in keys}
        paths.append(curves(by_ckpt, ckpts, out / "checkpoints.png", title="knowledge points through training"))
    return paths
