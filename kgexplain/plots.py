"""PNG figures: heat-map overlays on images and curves across layers (matplotlib, headless)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

PNG_LEVEL = 1  # zlib level of the PNGs written through Pillow (as the patches'): a 512-px overlay takes 25 ms at 1,
# 155 ms at Pillow's default 6, for a file 17 % larger


def save_png(img: Image.Image, target: Path | IO[bytes]) -> None:
    """Write ``img`` as a PNG (to a path or a binary stream) at ``PNG_LEVEL``."""
    img.save(target, "PNG", compress_level=PNG_LEVEL)


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    # lazy: matplotlib takes a third of a second to import; only the commands that draw need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above, after the backend is chosen

    return plt


def _save(fig: Any, path: Path, dpi: int) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def heat_overlay(
    image: np.ndarray,
    values: np.ndarray,
    path: Path,
    alpha: float = 0.55,
    mask: np.ndarray | None = None,
    title: str = "",
    label: str = "",
    aspect: tuple[int, int] | None = None,
) -> Path:
    """Blend ``values`` (H, W; min..max of the map -> blue..red) over ``image`` (H, W, 3 uint8) and write a PNG that
    a person can read: the image 484 px on its long side, a colour bar with the map's range in its units (``label``),
    the outline of ``mask`` (H, W bool, the object; white) when given, and ``title`` above. ``aspect`` (w, h): draw
    the picture at that aspect (a whole image that was resized to the square input, shown as it was)."""
    plt = _pyplot()
    from matplotlib.colors import Normalize  # lazy: as matplotlib

    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi <= lo:
        hi = lo + 1e-6
    norm = Normalize(lo, hi)
    cmap = plt.get_cmap("jet")
    rgb = (cmap(norm(np.nan_to_num(values, nan=lo)))[..., :3] * 255).astype(np.float32)
    if rgb.shape[:2] != image.shape[:2]:
        rgb = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(image.shape[1::-1]), np.float32)
    out = ((1 - alpha) * image.astype(np.float32) + alpha * rgb).clip(0, 255).astype(np.uint8)
    if aspect is not None and aspect[0] > 0 and aspect[1] > 0:
        px = max(out.shape[:2])
        size = (max(1, round(px * aspect[0] / max(aspect))), max(1, round(px * aspect[1] / max(aspect))))
        out = np.asarray(Image.fromarray(out).resize(size, Image.Resampling.BILINEAR))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    h, w = out.shape[:2]
    side = 4.4  # inches for the image's long side: 484 px at the dpi below
    # At least 3.2 inches wide, the title wrapped to the width (0.068 inch a character at size 8): a narrow strip
    # of a photo (300 x 4000) was drawn 0.3 inch wide, under a title cut off at both ends. Over a picture narrower
    # than 2.5 inches the title is the figure's, centred on it, rather than the picture's.
    pic_w = side * w / max(h, w)
    fig_w = max(pic_w + 1.3, 3.2)
    lines = textwrap.wrap(title, width=max(20, int((fig_w - 0.2) / 0.068))) if title else []
    fig, ax = plt.subplots(figsize=(fig_w, side * h / max(h, w) + (0.3 + 0.15 * len(lines) if lines else 0.15)))
    ax.imshow(out, interpolation="nearest")
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.2)
    ax.set_axis_off()
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=7)
    if label:
        bar.set_label(label, fontsize=8)
    if lines and pic_w < 2.5:
        fig.suptitle("\n".join(lines), fontsize=8)
    elif lines:
        ax.set_title("\n".join(lines), fontsize=8)
    return _save(fig, path, 110)


def curves(
    series: Mapping[str, Mapping[str, Sequence[float | None]]],
    x_labels: Sequence[str],
    path: Path,
    title: str = "",
    empty: Mapping[str, str] | None = None,
) -> Path:
    """One panel per metric (``series[metric][line] = values over x_labels``), one line per model/checkpoint; a
    panel without a single value says so (``empty[metric]``, or "no values") rather than stay blank."""
    plt = _pyplot()
    metrics = list(series)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        shown = False
        for name, values in series[metric].items():
            y = [np.nan if v is None else float(v) for v in values]
            ax.plot(range(len(x_labels)), y, marker="o", label=name)
            shown = shown or bool(np.isfinite(y).any())
        if not shown:
            note = (empty or {}).get(metric, "no values")
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.35")
        ax.set_xticks(range(len(x_labels)), list(x_labels), rotation=45, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path, 110)


def _class_colours(n: int) -> np.ndarray:
    plt = _pyplot()
    return np.asarray(plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n) % (10 if n <= 10 else 20)))


def embedding_3d(
    points: np.ndarray,
    classes: np.ndarray,
    directions: np.ndarray,
    names: Sequence[str],
    path: Path,
    title: str = "",
    faint: np.ndarray | None = None,
) -> Path:
    """3-D scatter of embedded features coloured by class, with each class's unit direction drawn as an arrow
    scaled to the data; ``faint`` (bool per point) draws those points lighter (e.g. regions that are no knowledge
    points). Only the first three coordinates are shown."""
    plt = _pyplot()
    pts = np.asarray(points, np.float64)[:, :3]
    colours = _class_colours(len(names))
    fig = plt.figure(figsize=(5.6, 5.0))
    ax = fig.add_subplot(projection="3d")
    alpha = np.where(faint, 0.12, 0.75) if faint is not None else np.full(len(pts), 0.7)
    rgba = colours[np.clip(classes, 0, len(names) - 1)].copy()
    rgba[:, 3] = alpha
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=rgba, s=6, depthshade=False)
    reach = float(np.percentile(np.linalg.norm(pts, axis=1), 95)) if len(pts) else 1.0
    for c, name in enumerate(names):
        d = np.asarray(directions[c], np.float64)[:3] * reach * 1.15
        ax.plot([0, d[0]], [0, d[1]], [0, d[2]], color=colours[c], lw=2)
        ax.text(d[0], d[1], d[2], name, color=colours[c], fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path, 110)


def region_boxes(
    image: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float, int]],
    names: Sequence[str],
    path: Path,
    caption: str = "",
) -> Path:
    """Draw (x0, y0, x1, y1, class) rectangles on ``image`` in the class colours, shown at 320 px on the long side
    under a title strip: ``caption`` (what the boxes are), then the classes drawn; writes a PNG. Drawn with Pillow:
    a build of knowledge points writes dozens of these, and a matplotlib figure each cost ten times as long."""
    # lazy: ImageDraw and ImageFont load only for drawing
    from PIL import ImageDraw, ImageFont

    colours = (_class_colours(len(names))[:, :3] * 255).round().astype(int)
    h, w = image.shape[:2]
    scale = 320 / max(h, w)
    shown = Image.fromarray(np.asarray(image, np.uint8)).resize(
        (round(w * scale), round(h * scale)), Image.Resampling.BILINEAR
    )
    strip = 22
    canvas = Image.new("RGB", (shown.width, shown.height + strip), "white")
    canvas.paste(shown, (0, strip))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1, c in boxes:
        rect = [x0 * scale, y0 * scale + strip, x1 * scale - 1, y1 * scale + strip - 1]
        draw.rectangle(rect, outline=tuple(int(v) for v in colours[c]), width=2)
    seen = sorted({int(b[4]) for b in boxes})
    classes = ", ".join(names[c] for c in seen)
    title = f"{caption}: {classes}" if caption and classes else caption or classes or "no knowledge points"
    draw.text((6, 5), title, fill="black", font=ImageFont.load_default())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(canvas, path)
    return path
