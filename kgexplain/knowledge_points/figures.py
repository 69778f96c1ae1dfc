"""The pictures of a knowledge-point analysis: the sample embedding with the class directions, the regional
embeddings per layer, reliable knowledge points drawn on a few images, and the counts per layer and checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgexplain.data.base import Framed
from kgexplain.knowledge_points.analyse import Analysis
from kgexplain.plots import curves, embedding_3d, region_boxes


def write_plots(
    a: Analysis,
    checkpoint: str,
    names: Sequence[str],
    frames: Sequence[Framed],
    out: Path,
    examples: int = 6,
    cap: int = 4000,
) -> list[str]:
    """The sample embedding, one regional-embedding plot per layer and knowledge-point regions on a few images."""
    files = [
        embedding_3d(a.g.numpy(), a.collected.logits.argmax(1).numpy(), a.sample.mu.numpy(), names,
                     out / "sample-embedding.png", f"{checkpoint}: sample features g (colour: prediction)")
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    for name, lr in a.layers.items():
        p = lr.points
        hn = lr.h / lr.h.norm(dim=-1).mean().clamp_min(1e-12) * float(a.g.norm(dim=1).mean())
        flat = hn.reshape(-1, hn.shape[-1]).numpy()
        pick = rng.choice(len(flat), min(cap, len(flat)), replace=False)
        files.append(
            embedding_3d(flat[pick], p.cls.ravel()[pick], a.sample.mu.numpy(), names, out / f"regions-{name}.png",
                         f"{checkpoint} {name}: regional features h (faint: not a knowledge point)",
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
            kp = int(lr.points.is_kp[i].sum())
            caption = f"{name}: {len(boxes)} of {kp} knowledge points reliable" if kp else f"{name}: no knowledge point"
            files.append(region_boxes(frames[i].image, boxes, names, out / f"kp-{i:03d}-{name}.png", caption))
    return [str(f) for f in files]


def plot_counts(results: Sequence[tuple[str, Analysis]], out: Path) -> list[Path]:
    """Knowledge points and reliable ones per image and the reliable ratio: across layers (one line per checkpoint,
    counts.png) and, for several checkpoints, across checkpoints (one line per layer, checkpoints.png)."""
    layers = list(results[0][1].layers)
    keys = ("kp_per_image", "reliable_per_image", "reliable_ratio")
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for checkpoint, a in results:
        n = len(a.truth)
        rows = {s["layer"]: s for s in (r.summary() for r in a.layers.values())}
        table[checkpoint] = {
            x: {"kp_per_image": rows[x]["kp"] / n, "reliable_per_image": rows[x]["reliable"] / n,
                "reliable_ratio": rows[x]["reliable_ratio"]}
            for x in layers
        }  # fmt: skip
    empty = {"reliable_ratio": "no knowledge points:\nthe ratio is undefined"}
    by_layer = {k: {c: [table[c][x][k] for x in layers] for c in table} for k in keys}
    title = "knowledge points per layer (lines: checkpoints)"
    paths = [curves(by_layer, layers, out / "counts.png", title=title, empty=empty)]
    if len(results) > 1:
        ckpts = list(table)
        by_ckpt = {k: {x: [table[c][x][k] for c in ckpts] for x in layers} for k in keys}
        paths.append(
            curves(by_ckpt, ckpts, out / "checkpoints.png", title="knowledge points through training", empty=empty)
        )
    return paths
