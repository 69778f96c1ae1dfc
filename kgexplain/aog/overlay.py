"""An overlay PNG per localisation: the object's box (when it was searched for), the part's box and centre, where
its strongest voters fired, and a label with the facing and the confidence, or "not found". Drawn at least
OVERLAY_SIDE pixels on the long side (the toy net's images are 128 px)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from kgexplain.data.base import Affine

OVERLAY_SIDE = 512


def overlay(
    image: Image.Image,
    result: dict[str, Any],
    voters: Sequence[tuple[int, float, float, float]],
    affine: Affine,
    needed: float | None = None,
) -> Image.Image:
    """``result`` in source pixels (from :func:`kgexplain.aog.run.to_source`); voters in framed pixels; ``needed``:
    the confidence a detection must reach to be reported found (the part's calibrated precision), named in the
    label of one that is not."""
    src = image.convert("RGB")
    z = max(1.0, OVERLAY_SIDE / max(src.size))
    img = (
        src.resize((round(src.size[0] * z), round(src.size[1] * z)), Image.Resampling.LANCZOS) if z > 1 else src.copy()
    )
    draw = ImageDraw.Draw(img)
    w = max(2, round(max(img.size) / 200))
    found = bool(result.get("found", True))
    colour = (255, 40, 40) if found else (150, 150, 150)
    if result.get("object_box"):
        ox0, oy0, ox1, oy1 = (v * z for v in result["object_box"])
        draw.rectangle((ox0, oy0, ox1, oy1), outline=(255, 210, 0), width=max(1, w // 2))
    x0, y0, x1, y1 = (v * z for v in result["box"])
    cx, cy = result["x"] * z, result["y"] * z
    r = 2 * w
    if found:
        for _col, vx, vy, _weight in voters:
            sx, sy = (v * z for v in affine.inverse_point(vx, vy))
            draw.ellipse((sx - r, sy - r, sx + r, sy + r), outline=(40, 200, 255), width=max(1, w // 2))
            draw.line((sx, sy, cx, cy), fill=(40, 200, 255), width=1)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=w)
    draw.line((cx - 2 * r, cy, cx + 2 * r, cy), fill=colour, width=w)
    draw.line((cx, cy - 2 * r, cx, cy + 2 * r), fill=colour, width=w)
    conf = result.get("confidence")
    facing = "mirrored" if result.get("flipped") else "as learnt"
    label = f"{result['part']}: {'found' if found else 'not found'}"
    if conf is not None:
        label += f", confidence {conf:.2f}" + (f" ({needed:.2f} needed)" if not found and needed is not None else "")
    label += f", facing {facing}, score {result['score']:.2f}"
    if result.get("from_prior"):  # those coordinates are the part's usual place in the box, not the votes'
        label += f", {result['from_prior']} from the prior"
    bar = 14 + 2 * w  # the label goes on a strip above the image, so it hides nothing
    out = Image.new("RGB", (img.size[0], img.size[1] + bar), (0, 0, 0))
    out.paste(img, (0, bar))
    ImageDraw.Draw(out).text((w, w), label, fill=colour if found else (220, 220, 220))
    return out
