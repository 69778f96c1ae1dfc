"""PNG figures: heat-map overlays on images and curves across layers (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def heat_overlay(image: np.ndarray, values: np.ndarray, path: Path, alpha: float = 0.55) -> Path:
    """Blend ``values`` (H, W; min..max of the map -> blue..red) over ``image`` (H, W, 3 uint8); writes a PNG."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    rgb = (plt.get_cmap("jet")(np.nan_to_num(unit))[..., :3] * 255).astype(np.float32)
    if rgb.shape[:2] != image.shape[:2]:
        rgb = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(image.shape[1::-1]), np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * rgb
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out.clip(0, 255).astype(np.uint8)).save(path)
    return path


def curves(
    series: Mapping[str, Mapping[str, Sequence[float | None]]],
    x_labels: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """One panel per metric (``series[metric][line] = values over x_labels``), one line per model/checkpoint."""
    metrics = list(series)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, values in series[metric].items():
            y = [np.nan if v is None else float(v) for v in values]
            ax.plot(range(len(x_labels)), y, marker="o", label=name)
        ax.set_xticks(range(len(x_labels)), list(x_labels), rotation=45, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
