"""Render one synthetic image: a cluttered background and (unless it is the background class) one animal.

Everything is a pure function of ``(seed, index)`` (and the requested size), so any image of any data set can be
regenerated on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kgexplain.data.synth.animals import ANIMALS, BUILDERS, Animal, LocalField, hsv
from kgexplain.data.synth.raster import Canvas, Capsule, Ellipse, Polygon, Shape

BACKGROUND = "background"
CATEGORIES = (*ANIMALS, BACKGROUND)


@dataclass(frozen=True)
class Placement:
    """Body-local units -> image pixels: p = t + s * R(theta) @ (flip * x, y)."""

    scale: float
    theta: float  # radians, image axes
    flip: int  # +1 facing right, -1 facing left
    tx: float
    ty: float

    def point(self, x: float, y: float) -> tuple[float, float]:
        c, s = np.cos(self.theta), np.sin(self.theta)
        fx = self.flip * x
        return (self.tx + self.scale * (c * fx - s * y), self.ty + self.scale * (s * fx + c * y))

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.theta), np.sin(self.theta)
        dx, dy = (x - self.tx) / self.scale, (y - self.ty) / self.scale
        return self.flip * (c * dx + s * dy), -s * dx + c * dy

    def shape(self, shape: Shape) -> Shape:
        if isinstance(shape, Ellipse):
            cx, cy = self.point(shape.cx, shape.cy)
            angle = shape.angle if self.flip > 0 else np.pi - shape.angle
            return Ellipse(cx, cy, shape.a * self.scale, shape.b * self.scale, angle + self.theta)
        if isinstance(shape, Capsule):
            x0, y0 = self.point(shape.x0, shape.y0)
            x1, y1 = self.point(shape.x1, shape.y1)
            return Capsule(x0, y0, x1, y1, shape.r0 * self.scale, shape.r1 * self.scale)
        if isinstance(shape, Polygon):
            pts = [self.point(x, y) for x, y in zip(shape.xs, shape.ys, strict=True)]
            return Polygon(tuple(p[0] for p in pts), tuple(p[1] for p in pts))
        raise TypeError(type(shape))


@dataclass
class SynthImage:
    """One rendered sample: pixels plus its ground truth (pixel coordinates, pixel centres at integers)."""

    index: int
    category: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, the object's pixels (all False for the background class)
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1 pixel edges around the mask
    keypoints: dict[str, tuple[float, float]]
    pose: dict[str, float]


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x6B67]))


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], bilinearly upsampled from a ``cells`` x ``cells`` grid."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img, np.float32), -1.5, 1.5)


def _background(rng: np.random.Generator, canvas: Canvas, clutter: int) -> None:
    w, h = canvas.width, canvas.height
    c0 = hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.95))
    c1 = hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.95))
    ang = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    t = np.clip(0.5 + np.float32(np.cos(ang)) * xs + np.float32(np.sin(ang)) * ys, 0, 1)
    canvas.rgb[:] = c0
    canvas.rgb += t[..., None] * (c1 - c0)
    canvas.rgb *= (1 + 0.18 * _smooth_noise(rng, w, h, int(rng.integers(3, 8))))[..., None]
    kind = rng.integers(0, 4)
    if kind == 1:  # stripes
        period = rng.uniform(0.04, 0.15) * w
        a = rng.uniform(0, np.pi)
        xx = np.arange(w, dtype=np.float32)[None, :]
        yy = np.arange(h, dtype=np.float32)[:, None]
        s = (np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period) > 0).astype(np.float32)
        canvas.rgb *= (1 - rng.uniform(0.08, 0.2) * s)[..., None]
    elif kind == 2:  # grainy texture
        canvas.rgb *= (1 + 0.12 * _smooth_noise(rng, w, h, max(8, w // 6)))[..., None]

    size = min(w, h)
    for _ in range(clutter):
        col = hsv(rng.random(), rng.uniform(0.05, 0.9), rng.uniform(0.15, 0.95))
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        kind = rng.integers(0, 4)
        shape: Shape
        if kind == 0:  # blob / stone
            shape = Ellipse(
                cx, cy, rng.uniform(0.03, 0.2) * size, rng.uniform(0.02, 0.12) * size, rng.uniform(0, np.pi)
            )
        elif kind == 1:  # stick / grass blade
            a = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 0.5) * size
            shape = Capsule(
                cx,
                cy,
                cx + np.cos(a) * length,
                cy + np.sin(a) * length,
                rng.uniform(0.004, 0.025) * size,
                rng.uniform(0.002, 0.02) * size,
            )
        elif kind == 2:  # rock polygon
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(0.03, 0.14) * size
            shape = Polygon(tuple(cx + r * np.cos(angles)), tuple(cy + r * np.sin(angles)))
        else:  # a leaf-like pointed ellipse (distractor with part-like edges)
            shape = Ellipse(
                cx, cy, rng.uniform(0.04, 0.1) * size, rng.uniform(0.01, 0.03) * size, rng.uniform(0, np.pi)
            )
        canvas.paint(shape, col, opacity=float(rng.uniform(0.5, 1.0)))


def _local_extent(animal: Animal, theta: float, flip: int) -> tuple[float, float, float, float]:
    unit = Placement(1.0, theta, flip, 0.0, 0.0)
    boxes = np.array([unit.shape(p.shape).bbox() for p in animal.parts])
    return boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()


def render(seed: int, index: int, category: str, width: int = 224, height: int | None = None) -> SynthImage:
    """Render image ``index`` of data set ``seed`` as ``category`` (deterministic)."""
    height = height or width
    rng = _rng(seed, index)
    canvas = Canvas(width, height)
    is_background = category == BACKGROUND
    _background(rng, canvas, clutter=int(rng.integers(10, 22) if is_background else rng.integers(5, 14)))

    if is_background:
        img = _finish(rng, canvas)
        return SynthImage(index, category, img, np.zeros((height, width), bool), None, {}, {})

    animal = BUILDERS[category](rng)
    theta = np.deg2rad(rng.uniform(-25, 25))
    flip = 1 if rng.random() < 0.5 else -1
    x0, y0, x1, y1 = _local_extent(animal, theta, flip)
    target = rng.uniform(0.55, 0.9) * min(width, height)
    margin = 3.0
    scale = min(
        target / max(x1 - x0, y1 - y0), (width - 1 - 2 * margin) / (x1 - x0), (height - 1 - 2 * margin) / (y1 - y0)
    )
    lo_x, lo_y = margin - scale * x0, margin - scale * y0
    tx = rng.uniform(lo_x, max(lo_x, width - 1 - margin - scale * x1))  # max(): rounding when the fit binds
    ty = rng.uniform(lo_y, max(lo_y, height - 1 - margin - scale * y1))
    place = Placement(float(scale), float(theta), flip, float(tx), float(ty))

    for part in animal.parts:
        colour = part.colour
        if callable(colour):
            field = colour

            def colour_in_image(x: np.ndarray, y: np.ndarray, field: LocalField = field) -> np.ndarray:
                return field(*place.inverse(x, y))

            canvas.paint(place.shape(part.shape), colour_in_image, is_object=True)
        else:
            canvas.paint(place.shape(part.shape), colour, is_object=True)

    # Fur / skin texture: gentle low-frequency shading on the object only.
    shade = 1 + 0.1 * _smooth_noise(rng, width, height, max(6, width // 16))
    obj = canvas.object_alpha[..., None]
    canvas.rgb *= 1 + obj * (shade[..., None] - 1)

    mask = canvas.object_alpha >= 0.5
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    keypoints = {name: place.point(*p) for name, p in animal.keypoints.items()}
    pose = {
        "scale": place.scale,
        "rotation_deg": float(np.rad2deg(theta)),
        "flip": float(flip),
    }
    img = _finish(rng, canvas)
    return SynthImage(index, category, img, mask, box, keypoints, pose)


def _finish(rng: np.random.Generator, canvas: Canvas) -> np.ndarray:
    out = rng.standard_normal(canvas.rgb.shape, dtype=np.float32)
    out *= 0.02 * 255.0
    out += canvas.rgb * 255.0 + 0.5
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)
