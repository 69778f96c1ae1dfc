"""A tiny anti-aliased rasteriser built on signed distance functions.

Shapes live in image pixel coordinates (the centre of pixel (col i, row j) is at (i, j)). Each shape gives a
signed distance (negative inside) on a window of the pixel grid; coverage is ``clip(0.5 - d, 0, 1)``, which is
a one-pixel anti-aliased edge. Only the shape's bounding window is evaluated, so painting is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Colour = np.ndarray  # (3,) float in [0, 1]
ColourField = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (X, Y) -> (h, w, 3)


class Shape(Protocol):
    def bbox(self) -> tuple[float, float, float, float]: ...

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    a: float  # semi-axis along the angle
    b: float  # semi-axis across it
    angle: float  # radians, counter-clockwise in image axes (x right, y down)

    def bbox(self) -> tuple[float, float, float, float]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        hx = float(np.hypot(self.a * c, self.b * s))
        hy = float(np.hypot(self.a * s, self.b * c))
        return self.cx - hx, self.cy - hy, self.cx + hx, self.cy + hy

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        u = (dx * c + dy * s) / self.a
        v = (-dx * s + dy * c) / self.b
        return (np.sqrt(u * u + v * v) - 1.0) * min(self.a, self.b)


@dataclass(frozen=True)
class Capsule:
    """A segment from p0 to p1 with a radius that tapers linearly from r0 to r1."""

    x0: float
    y0: float
    x1: float
    y1: float
    r0: float
    r1: float

    def bbox(self) -> tuple[float, float, float, float]:
        r = max(self.r0, self.r1)
        return (
            min(self.x0, self.x1) - r,
            min(self.y0, self.y1) - r,
            max(self.x0, self.x1) + r,
            max(self.y0, self.y1) + r,
        )

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ex, ey = self.x1 - self.x0, self.y1 - self.y0
        length2 = ex * ex + ey * ey
        px, py = x - self.x0, y - self.y0
        if length2 < 1e-9:
            return np.sqrt(px * px + py * py) - self.r0
        t = np.clip((px * ex + py * ey) / length2, 0.0, 1.0)
        qx, qy = px - t * ex, py - t * ey
        return np.sqrt(qx * qx + qy * qy) - (self.r0 + t * (self.r1 - self.r0))


@dataclass(frozen=True)
class Polygon:
    """A convex polygon (vertices in either winding order)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def bbox(self) -> tuple[float, float, float, float]:
        return min(self.xs), min(self.ys), max(self.xs), max(self.ys)

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xs, ys = np.asarray(self.xs), np.asarray(self.ys)
        # Orientation: make edge normals point outwards.
        area2 = float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))
        sign = 1.0 if area2 > 0 else -1.0
        d = np.full(np.broadcast(x, y).shape, -np.inf)
        for i in range(len(xs)):
            ax, ay = xs[i], ys[i]
            bx, by = xs[(i + 1) % len(xs)], ys[(i + 1) % len(ys)]
            nx, ny = (by - ay) * sign, -(bx - ax) * sign
            norm = float(np.hypot(nx, ny)) or 1.0
            d = np.maximum(d, ((x - ax) * nx + (y - ay) * ny) / norm)
        return d


class Canvas:
    """An RGB float image plus the coverage of the object painted on it."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.object_alpha = np.zeros((height, width), np.float32)
        self._xs = np.arange(width, dtype=np.float32)
        self._ys = np.arange(height, dtype=np.float32)

    def window(self, shape: Shape, pad: float = 1.5) -> tuple[slice, slice] | None:
        x0, y0, x1, y1 = shape.bbox()
        c0 = max(int(np.floor(x0 - pad)), 0)
        r0 = max(int(np.floor(y0 - pad)), 0)
        c1 = min(int(np.ceil(x1 + pad)) + 1, self.width)
        r1 = min(int(np.ceil(y1 + pad)) + 1, self.height)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(
        self,
        shape: Shape,
        colour: Colour | ColourField,
        *,
        is_object: bool = False,
        opacity: float = 1.0,
    ) -> None:
        win = self.window(shape)
        if win is None:
            return
        rows, cols = win
        x = self._xs[cols][None, :]
        y = self._ys[rows][:, None]
        alpha = np.clip(0.5 - shape.sdf(x, y), 0.0, 1.0).astype(np.float32)
        if opacity != 1.0:
            alpha *= opacity
        if not alpha.any():
            return
        col = (
            colour(np.broadcast_to(x, alpha.shape), np.broadcast_to(y, alpha.shape))
            if callable(colour)
            else np.asarray(colour, np.float32)
        )
        region = self.rgb[rows, cols]
        region += alpha[..., None] * (col - region)
        if is_object:
            obj = self.object_alpha[rows, cols]
            np.maximum(obj, alpha, out=obj)
