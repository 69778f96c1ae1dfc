"""Top-ranked image patches per pattern and a contact sheet per layer.

A patch is a square of ``patch`` pixels (70 at 224, scaled for other input sizes) around the pattern's inferred
position on one of its best images, clipped at the image border as in the authors' code. Patches are encoded as
PNG; the caller stores them (content-addressed) and references them from the graph.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from kgexplain.explanatory_graph.graph import Inference, LayerPatterns

ImageLoader = Callable[[int], np.ndarray]  # row of the inference -> (H, W, 3) uint8 as the model saw it


Box = tuple[int, int, int, int]  # x0, y0, width, height in the image's pixels


def crop_box(h: int, w: int, x: float, y: float, size: int) -> Box:
    """The ``size`` x ``size`` square centred at (x, y) in an h x w image, shifted inside it (smaller if it is)."""
    sw, sh = min(size, w), min(size, h)
    x0 = min(max(round(x - sw / 2 + 0.5), 0), w - sw)
    y0 = min(max(round(y - sh / 2 + 0.5), 0), h - sh)
    return x0, y0, sw, sh


def png(array: np.ndarray) -> bytes:
    """A PNG of an (H, W, 3) or (H, W) uint8 array: every row "Up"-filtered (the row minus the one above) and
    deflated at level 1. A build encodes tens of thousands of small patches: on 40-px patches this takes 0.11 ms
    against 0.28 ms through Pillow (whose adaptive filters make files 5 % smaller)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    h, w = a.shape[:2]
    colour = 2 if a.ndim == 3 else 0  # RGB or greyscale
    rows = a.reshape(h, -1)
    raw = np.empty((h, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = 2  # filter type Up ...
    raw[0, 0] = 0  # ... but the first row, which has none above
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # modulo 256, as PNG wants

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


@dataclass
class Patch:
    pattern: int  # index in the layer
    rank: int
    row: int  # image row in the inference
    x: float
    y: float
    score: float
    pixels: np.ndarray
    box: Box  # where the pixels are in the image: patches with the same row and box are the same pixels


def top_patches(
    inference: Inference,
    layer: LayerPatterns,
    load: ImageLoader,
    k: int,
    size: int,
    patterns: Iterable[int] | None = None,
    rows: Callable[[int], bool] | None = None,
) -> list[Patch]:
    """The ``k`` best patches of every pattern (or of ``patterns``), best first; with ``rows``, only the patches
    on the images (rows of the inference) it accepts, and only those images are loaded."""
    li = inference.layers[layer.name]
    which = list(range(layer.count) if patterns is None else patterns)
    top, scores = inference.top_images(layer.name, k, None if patterns is None else which)
    cache: dict[int, np.ndarray] = {}
    out = []
    for i, p in enumerate(which):
        for rank in range(top.shape[1]):
            row = int(top[i, rank])
            if rows is not None and not rows(row):
                continue
            if row not in cache:
                cache[row] = load(row)
            image = cache[row]
            x, y = (float(v) for v in li.position[row, p])
            box = crop_box(image.shape[0], image.shape[1], x, y, size)
            x0, y0, sw, sh = box
            pixels = image[y0 : y0 + sh, x0 : x0 + sw]
            out.append(Patch(p, rank, row, x, y, float(scores[i, rank]), pixels, box))
    return out


def contact_sheet(patches: list[Patch], layer: LayerPatterns, title: str, cell: int = 64) -> bytes:
    """A PNG grid: one row per pattern (best first), its patches left to right, labelled filter/pattern/score."""
    by_pattern: dict[int, list[Patch]] = {}
    for p in patches:
        by_pattern.setdefault(p.pattern, []).append(p)
    order = sorted(by_pattern, key=lambda v: -float(layer.score[v]))
    cols = max((len(v) for v in by_pattern.values()), default=1)
    label_w, head = 120, 20
    sheet = Image.new("RGB", (label_w + cols * (cell + 2), head + len(order) * (cell + 2)), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0))
    for i, v in enumerate(order):
        y = head + i * (cell + 2)
        draw.text((4, y + 4), f"f{int(layer.filter[v])} p{int(layer.k[v])}", fill=(0, 0, 0))
        draw.text((4, y + 18), f"score {float(layer.score[v]):.3g}", fill=(80, 80, 80))
        for j, patch in enumerate(sorted(by_pattern[v], key=lambda q: q.rank)):
            tile = Image.fromarray(patch.pixels).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + j * (cell + 2), y))
    return png(np.asarray(sheet))
