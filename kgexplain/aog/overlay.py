"""An overlay PNG per localisation: the part's box and centre, and where its strongest voters fired."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from kgexplain.data.base import Affine


def overlay(
    image: Image.Image, result: dict[str, Any], voters: Sequence[tuple[int, float, float, float]], affine: Affine
) -> Image.Image:
    """``result`` in source pixels (from :func:`kgexplain.aog.run.to_source`); voters in framed pixels."""
    img = image.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    w = max(2, round(max(img.size) / 160))
    x0, y0, x1, y1 = result["box"]
    draw.rectangle((x0, y0, x1, y1), outline=(255, 40, 40), width=w)
    cx, cy = result["x"], result["y"]
    r = 2 * w
    draw.line((cx - 2 * r, cy, cx + 2 * r, cy), fill=(255, 40, 40), width=w)
    draw.line((cx, cy - 2 * r, cx, cy + 2 * r), fill=(255, 40, 40), width=w)
    for _col, vx, vy, _weight in voters:
        sx, sy = affine.inverse_point(vx, vy)
        draw.ellipse((sx - r, sy - r, sx + r, sy + r), outline=(40, 200, 255), width=max(1, w // 2))
        draw.line((sx, sy, cx, cy), fill=(40, 200, 255), width=1)
    label = f"{result['part']} {result['score']:.2f}" + (" (mirrored)" if result["flipped"] else "")
    draw.text((x0 + w, max(0, y0 - 12 - w)), label, fill=(255, 40, 40))
    return img
