"""An overlay PNG per localisation: the object's box (when it was searched for), the part's box and centre, where
its strongest voters fired, and a label with the facing and the confidence, or "not found". Drawn at OVERLAY_SIDE
to OVERLAY_MAX pixels on the long side: small images enlarged (the toy net's are 128 px), large ones reduced (a
6000 x 4000 photo drawn as it was gave an 11 MB PNG whose label was a tenth of a percent of its height); a narrow
strip is kept OVERLAY_SHORT wide, and the label wraps to the width."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from kgexplain.data.base import Affine

OVERLAY_SIDE = 512
OVERLAY_MAX = 1024
OVERLAY_SHORT, OVERLAY_HARD = 256, 4096  # the short side at least (unless the long one would pass the hard limit)


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
    long, short = max(src.size), min(src.size)
    z = OVERLAY_SIDE / long if long < OVERLAY_SIDE else min(1.0, OVERLAY_MAX / long)
    if short * z < OVERLAY_SHORT:  # a strip of a photo: wide enough for its label, within OVERLAY_HARD
        z = max(z, min(OVERLAY_SHORT / short, OVERLAY_HARD / long))
    size = (max(1, round(src.size[0] * z)), max(1, round(src.size[1] * z)))
    img = src.resize(size, Image.Resampling.LANCZOS) if z != 1.0 else src.copy()
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
    # The label goes on a strip above the image, so it hides nothing, in lines as wide as the image allows.
    font = ImageFont.load_default(size=max(12, round(img.size[0] / 48)))
    lines = _wrap(label.split(", "), font, img.size[0] - 2 * w)
    step = round(font.size * 1.25) if isinstance(font, ImageFont.FreeTypeFont) else 12
    bar = 2 * w + step * len(lines)
    out = Image.new("RGB", (img.size[0], img.size[1] + bar), (0, 0, 0))
    out.paste(img, (0, bar))
    text = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        text.text((w, w + k * step), line, fill=colour if found else (220, 220, 220), font=font)
    return out


def _wrap(pieces: Sequence[str], font: Any, width: float) -> list[str]:
    """The label's comma-separated pieces packed into lines no wider than ``width`` (a piece wider than that
    alone gets its own line)."""
    lines: list[str] = []
    for piece in pieces:
        joined = f"{lines[-1]}, {piece}" if lines else piece
        if lines and font.getlength(joined) <= width:
            lines[-1] = joined
        else:
            if lines:
                lines[-1] += ","
            lines.append(piece)
    return lines
