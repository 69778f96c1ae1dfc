"""Procedural animal-like objects: six categories that differ in their parts.

Every builder draws one individual in *body-local* units: the body is an ellipse centred at the origin with
half-length 1 along +x (towards the head) and y pointing down (so "up", the animal's back, is -y). A builder
returns the parts to paint (back to front) and the keypoints in the same units; ``scene.py`` places the animal
in the image with a similarity transform (scale, rotation, mirror, translation).

The categories differ in head shape, head ornaments (ears, horns, beak, nose horn), tail, legs and markings,
so a classifier has to look at parts, and every part has a keypoint a localiser can be scored on.
"""

from __future__ import annotations

import colorsys
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kgexplain.data.synth.raster import Capsule, Ellipse, Polygon, Shape

# Names of the keypoints every animal has (all are inside the object's mask).
KEYPOINTS = ("head", "back", "tail", "belly", "nose", "neck", "front_foot", "hind_foot")

LocalField = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x_local, y_local) -> (h, w, 3)


@dataclass
class Part:
    name: str
    shape: Shape  # in body-local units
    colour: np.ndarray | LocalField


@dataclass
class Animal:
    category: str
    parts: list[Part]
    keypoints: dict[str, tuple[float, float]]
    palette: dict[str, np.ndarray] = field(default_factory=dict)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _shade(c: np.ndarray, k: float) -> np.ndarray:
    return np.clip(c * k, 0.0, 1.0).astype(np.float32)


def _direction(deg: float) -> np.ndarray:
    """Unit vector at ``deg`` degrees, measured counter-clockwise *as seen on screen* (so +90 is up, -y)."""
    r = np.deg2rad(deg)
    return np.array([np.cos(r), -np.sin(r)])


def _along(p: np.ndarray, deg: float, length: float) -> np.ndarray:
    return p + length * _direction(deg)


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> Capsule:
    return Capsule(float(p0[0]), float(p0[1]), float(p1[0]), float(p1[1]), r0, r1)


def _ellipse(c: np.ndarray, a: float, b: float, deg: float) -> Ellipse:
    # Ellipse.angle is in image axes (y down); screen-counter-clockwise degrees map to a negative angle.
    return Ellipse(float(c[0]), float(c[1]), a, b, -np.deg2rad(deg))


def _polygon(points: list[np.ndarray]) -> Polygon:
    return Polygon(tuple(float(p[0]) for p in points), tuple(float(p[1]) for p in points))


def _triangle(base: np.ndarray, deg: float, height: float, width: float) -> Polygon:
    """An isosceles triangle standing on ``base`` and pointing in direction ``deg``."""
    d = _direction(deg)
    n = np.array([-d[1], d[0]])
    return _polygon([base + n * width / 2, base - n * width / 2, base + d * height])


def _curve(
    p0: np.ndarray, deg: float, length: float, bend: float, r0: float, r1: float, n: int
) -> tuple[list[Capsule], list[np.ndarray]]:
    """A bent, tapering limb made of ``n`` capsules; returns the capsules and the joint points."""
    pts = [p0]
    caps = []
    for i in range(n):
        a = deg + bend * (i + 0.5) / n
        p1 = _along(pts[-1], a, length / n)
        ra = r0 + (r1 - r0) * i / n
        rb = r0 + (r1 - r0) * (i + 1) / n
        caps.append(_capsule(pts[-1], p1, ra, rb))
        pts.append(p1)
    return caps, pts


def _point_on(pts: list[np.ndarray], frac: float) -> np.ndarray:
    """The point at ``frac`` of the polyline's length."""
    target = frac * sum(float(np.linalg.norm(b - a)) for a, b in itertools.pairwise(pts))
    for a, b in itertools.pairwise(pts):
        s = float(np.linalg.norm(b - a))
        if target <= s:
            return a + (target / s if s > 0 else 0.0) * (b - a)
        target -= s
    return pts[-1]


# --------------------------------------------------------------------------------------------------------------
# Colours and markings


PALETTES = {
    # (hue range, saturation range, value range) of the main coat
    "fox": ((0.03, 0.09), (0.6, 0.95), (0.6, 0.95)),
    "bird": ((0.5, 0.7), (0.4, 0.9), (0.45, 0.95)),
    "goat": ((0.08, 0.14), (0.05, 0.35), (0.55, 0.95)),
    "lizard": ((0.22, 0.38), (0.45, 0.9), (0.35, 0.8)),
    "mouse": ((0.05, 0.1), (0.05, 0.3), (0.35, 0.7)),
    "rhino": ((0.55, 0.65), (0.02, 0.15), (0.35, 0.7)),
}


def coat_colour(rng: np.random.Generator, category: str) -> np.ndarray:
    """The main colour: usually from the category's palette, sometimes anything (so colour alone never decides)."""
    if rng.random() < 0.35:
        return hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.35, 0.95))
    (h0, h1), (s0, s1), (v0, v1) = PALETTES[category]
    return hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))


def contrast_colour(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*base.tolist())
    if rng.random() < 0.5:
        return hsv(h + rng.uniform(-0.05, 0.05), s * 0.5, min(1.0, v + 0.35))
    return hsv(h + rng.uniform(-0.1, 0.1), min(1.0, s + 0.1), v * 0.45)


def markings(rng: np.random.Generator, kind: str, base: np.ndarray, body_b: float) -> LocalField | np.ndarray:
    """A colour field over the body in local units: plain, stripes, spots or two-tone."""
    if kind == "plain":
        return base
    second = contrast_colour(rng, base)
    if kind == "stripes":
        freq = rng.uniform(1.6, 2.6)
        phase = rng.uniform(0, 2 * np.pi)
        tilt = rng.uniform(-0.5, 0.5)

        def stripes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            t = np.sin(2 * np.pi * freq * (x + tilt * y) + phase)
            w = np.clip((t - 0.25) * 4, 0, 1)[..., None]
            return base * (1 - w) + second * w

        return stripes
    if kind == "spots":
        n = int(rng.integers(4, 9))
        cx = rng.uniform(-0.8, 0.8, n)
        cy = rng.uniform(-0.7, 0.7, n) * body_b
        r = rng.uniform(0.09, 0.18, n)

        def spots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            d = np.min(
                np.sqrt((x[..., None] - cx) ** 2 + (y[..., None] - cy) ** 2) - r,
                axis=-1,
            )
            w = np.clip(0.5 - d * 30, 0, 1)[..., None]
            return base * (1 - w) + second * w

        return spots
    if kind == "twotone":
        level = rng.uniform(0.05, 0.35) * body_b

        def twotone(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            w = np.clip((y - level) * 25, 0, 1)[..., None]
            return base * (1 - w) + second * w

        return twotone
    raise ValueError(kind)


MARKINGS = {
    "fox": {"plain": 0.5, "twotone": 0.4, "spots": 0.1},
    "bird": {"plain": 0.3, "twotone": 0.3, "spots": 0.4},
    "goat": {"plain": 0.4, "spots": 0.5, "twotone": 0.1},
    "lizard": {"stripes": 0.55, "spots": 0.3, "plain": 0.15},
    "mouse": {"plain": 0.7, "twotone": 0.3},
    "rhino": {"plain": 0.7, "twotone": 0.2, "stripes": 0.1},
}


def _choose(rng: np.random.Generator, table: dict[str, float]) -> str:
    names = list(table)
    p = np.array([table[n] for n in names])
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


# --------------------------------------------------------------------------------------------------------------
# The skeleton shared by all categories


@dataclass
class Skeleton:
    body_b: float
    neck_base: np.ndarray
    head: np.ndarray
    head_dir: float  # degrees the head points to (0 = forward)
    neck_pts: list[np.ndarray]


def _eye(parts: list[Part], head: np.ndarray, head_dir: float, dist: float, r: float) -> None:
    p = _along(head, head_dir + 35, dist)
    parts.append(Part("eye", _ellipse(p, r, r, 0), np.array([0.05, 0.05, 0.05], np.float32)))
    hl = p + np.array([r * 0.3, -r * 0.3])
    parts.append(Part("eye", _ellipse(hl, r * 0.35, r * 0.35, 0), np.array([0.95, 0.95, 0.95], np.float32)))


def _legs(
    rng: np.random.Generator,
    parts_far: list[Part],
    parts_near: list[Part],
    attach: list[float],
    body_b: float,
    length: float,
    radius: float,
    colour: np.ndarray,
    foot_colour: np.ndarray | None,
    splay: float = 0.0,
    bend: float = 0.0,
    segments: int = 2,
) -> dict[str, np.ndarray]:
    """Legs at the given x positions (near and far side); returns the near-side feet."""
    feet: dict[str, np.ndarray] = {}
    far = _shade(colour, 0.72)
    for side, target, col in (("far", parts_far, far), ("near", parts_near, colour)):
        for i, x in enumerate(attach):
            shift = 0.08 if side == "far" else -0.04
            top = np.array([x + shift, 0.45 * body_b])
            swing = rng.uniform(-22, 22) + (splay * (1 if i == 0 else -1))
            caps, pts = _curve(top, -90 + swing, length, bend * (1 if i == 0 else -1), radius, radius * 0.8, segments)
            target.extend(Part(f"leg_{side}", c, col) for c in caps)
            if foot_colour is not None:
                f = pts[-1]
                target.append(
                    Part(
                        f"foot_{side}",
                        _ellipse(f + np.array([0.04, 0.0]), radius * 1.5, radius * 0.9, 0),
                        foot_colour if side == "near" else _shade(foot_colour, 0.72),
                    )
                )
            if side == "near":
                feet["front_foot" if i == 0 else "hind_foot"] = _point_on(pts, 0.88)
    return feet


def _skeleton(
    rng: np.random.Generator, body_b: float, neck_dir: float, neck_len: float, neck_r: float, head_dir: float
) -> tuple[Skeleton, list[Part]]:
    neck_base = np.array([0.78, -0.35 * body_b])
    caps, pts = _curve(neck_base, neck_dir, neck_len, 0.0, neck_r, neck_r * 0.85, 1)
    return Skeleton(body_b, neck_base, pts[-1], head_dir, pts), [Part("neck", c, np.zeros(3)) for c in caps]


def build_fox(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.32, 0.4)
    coat = coat_colour(rng, "fox")
    light = hsv(0.1, 0.08, 0.95)
    head_dir = rng.uniform(-20, 25)
    sk, neck = _skeleton(rng, b, 40 + rng.uniform(-15, 25), rng.uniform(0.45, 0.6), 0.17, head_dir)
    far: list[Part] = []
    near: list[Part] = []
    feet = _legs(rng, far, near, [0.58, -0.62], b, rng.uniform(0.6, 0.8), 0.07, coat, _shade(coat, 0.35))
    tail_dir = 190 + rng.uniform(-25, 35)
    tail_len = rng.uniform(0.75, 0.95)
    tail_root = np.array([-0.9, -0.1 * b])
    tail_mid = _along(tail_root, tail_dir, tail_len * 0.5)
    tail_end = _along(tail_root, tail_dir, tail_len)
    tail = [
        Part("tail", _ellipse(tail_mid, tail_len * 0.55, rng.uniform(0.16, 0.22), tail_dir), coat),
        Part("tail", _ellipse(_along(tail_end, tail_dir, -0.08), 0.14, 0.12, tail_dir), light),
    ]
    head = [
        Part("ear", _triangle(_along(sk.head, head_dir + 100, 0.12), head_dir + 95, 0.33, 0.17), _shade(coat, 0.85)),
        Part("ear", _triangle(_along(sk.head, head_dir + 125, 0.14), head_dir + 110, 0.33, 0.17), coat),
        Part("head", _ellipse(sk.head, 0.3, 0.25, head_dir), coat),
    ]
    snout_tip = _along(sk.head, head_dir - 10, 0.5)
    head.append(Part("snout", _capsule(sk.head, snout_tip, 0.17, 0.06), coat))
    head.append(Part("nose", _ellipse(snout_tip, 0.06, 0.05, 0), np.array([0.05, 0.05, 0.05], np.float32)))
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), markings(rng, _choose(rng, MARKINGS["fox"]), coat, b))
    for p in neck:
        p.colour = coat
    parts = [*far, *tail, body, *near, *neck, *head]
    _eye(parts, sk.head, head_dir, 0.13, 0.045)
    kp = _keypoints(sk, b, _point_on([tail_root, tail_end], 0.4), _along(sk.head, head_dir - 10, 0.4), feet)
    return Animal("fox", parts, kp)


def build_bird(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.55, 0.68)
    coat = coat_colour(rng, "bird")
    head_dir = rng.uniform(-25, 30)
    sk, neck = _skeleton(rng, b, 35 + rng.uniform(-15, 20), rng.uniform(0.25, 0.38), 0.26, head_dir)
    far: list[Part] = []
    near: list[Part] = []
    leg_col = hsv(rng.uniform(0.05, 0.12), 0.7, 0.6)
    feet = _legs(rng, far, near, [0.25, -0.15], b, rng.uniform(0.45, 0.6), 0.035, leg_col, leg_col)
    tail_dir = 185 + rng.uniform(-20, 40)
    tail_len = rng.uniform(0.6, 0.8)
    tail_root = np.array([-0.8, -0.1 * b])
    d = _direction(tail_dir)
    n = np.array([-d[1], d[0]])
    tail_end = tail_root + d * tail_len
    spread = rng.uniform(0.22, 0.3)
    tail = [
        Part(
            "tail",
            _polygon([tail_root + n * 0.12, tail_end + n * spread, tail_end - n * spread, tail_root - n * 0.12]),
            _shade(coat, 0.8),
        )
    ]
    wing_col = contrast_colour(rng, coat)
    wing = Part("wing", _ellipse(np.array([-0.15, -0.05 * b]), 0.6, b * 0.55, rng.uniform(-15, 5)), wing_col)
    head = [Part("head", _ellipse(sk.head, 0.34, 0.32, head_dir), coat)]
    beak_col = hsv(rng.uniform(0.08, 0.15), 0.85, 0.9)
    beak_base = _along(sk.head, head_dir, 0.27)
    beak_len = rng.uniform(0.3, 0.42)
    head.append(Part("beak", _triangle(beak_base, head_dir - 5, beak_len, 0.2), beak_col))
    if rng.random() < 0.5:  # crest
        head.append(
            Part("crest", _triangle(_along(sk.head, head_dir + 100, 0.25), head_dir + 120, 0.22, 0.14), wing_col)
        )
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), markings(rng, _choose(rng, MARKINGS["bird"]), coat, b))
    for p in neck:
        p.colour = coat
    parts = [*far, *tail, body, wing, *near, *neck, *head]
    _eye(parts, sk.head, head_dir, 0.14, 0.055)
    nose = _along(beak_base, head_dir - 5, beak_len * 0.3)
    kp = _keypoints(sk, b, _point_on([tail_root, tail_end], 0.4), nose, feet)
    return Animal("bird", parts, kp)


def build_goat(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.38, 0.46)
    coat = coat_colour(rng, "goat")
    head_dir = rng.uniform(-45, -10)
    sk, neck = _skeleton(rng, b, 60 + rng.uniform(-15, 15), rng.uniform(0.55, 0.7), 0.16, head_dir)
    far: list[Part] = []
    near: list[Part] = []
    feet = _legs(
        rng, far, near, [0.62, -0.65], b, rng.uniform(0.9, 1.1), 0.065, coat, np.array([0.12, 0.1, 0.08], np.float32)
    )
    tail_root = np.array([-0.92, -0.3 * b])
    tail_dir = 150 + rng.uniform(-25, 25)
    tail_end = _along(tail_root, tail_dir, 0.24)
    tail = [Part("tail", _capsule(tail_root, tail_end, 0.085, 0.06), _shade(coat, 0.9))]
    horn_col = hsv(rng.uniform(0.08, 0.12), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.55))
    head = [Part("head", _ellipse(_along(sk.head, head_dir, 0.12), 0.36, 0.18, head_dir), coat)]
    horns: list[Part] = []
    for k, off in enumerate((0.0, 0.08)):
        base = _along(sk.head, head_dir + 110, 0.12) + np.array([off, 0])
        caps, _ = _curve(base, head_dir + 120 + 10 * k, rng.uniform(0.42, 0.55), 80, 0.065, 0.02, 3)
        horns.extend(Part("horn", c, horn_col if k else _shade(horn_col, 0.8)) for c in caps)
    ear = Part("ear", _ellipse(_along(sk.head, head_dir + 160, 0.12), 0.16, 0.06, head_dir + 200), _shade(coat, 0.85))
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), markings(rng, _choose(rng, MARKINGS["goat"]), coat, b))
    for p in neck:
        p.colour = coat
    parts = [*far, *tail, body, *near, *neck, *horns, *head, ear]
    _eye(parts, sk.head, head_dir, 0.09, 0.045)
    nose = _along(sk.head, head_dir, 0.4)
    kp = _keypoints(sk, b, _point_on([tail_root, tail_end], 0.35), nose, feet)
    return Animal("goat", parts, kp)


def build_lizard(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.22, 0.28)
    coat = coat_colour(rng, "lizard")
    head_dir = rng.uniform(-15, 15)
    sk, neck = _skeleton(rng, b, 8 + rng.uniform(-10, 10), rng.uniform(0.25, 0.35), 0.17, head_dir)
    sk.neck_pts[0] = np.array([0.8, 0.0])
    neck = [Part("neck", _capsule(np.array([0.8, 0.0]), sk.head, 0.18, 0.15), coat)]
    far: list[Part] = []
    near: list[Part] = []
    feet = _legs(
        rng, far, near, [0.55, -0.6], b, rng.uniform(0.4, 0.5), 0.07, coat, _shade(coat, 0.7), splay=35, bend=-70
    )
    tail_root = np.array([-0.9, 0.0])
    tail_caps, tail_pts = _curve(
        tail_root, 180 + rng.uniform(-25, 25), rng.uniform(1.3, 1.6), rng.uniform(-70, 70), 0.2, 0.03, 4
    )
    pattern = markings(rng, _choose(rng, MARKINGS["lizard"]), coat, b)
    tail = [Part("tail", c, coat) for c in tail_caps]
    head = [Part("head", _ellipse(_along(sk.head, head_dir, 0.08), 0.38, 0.19, head_dir), coat)]
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), pattern)
    parts = [*far, *tail, body, *near, *neck, *head]
    _eye(parts, sk.head, head_dir, 0.1, 0.05)
    nose = _along(sk.head, head_dir, 0.36)
    kp = _keypoints(sk, b, _point_on(tail_pts, 0.3), nose, feet)
    return Animal("lizard", parts, kp)


def build_mouse(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.45, 0.55)
    coat = coat_colour(rng, "mouse")
    head_dir = rng.uniform(-20, 20)
    sk, neck = _skeleton(rng, b, 25 + rng.uniform(-15, 15), rng.uniform(0.22, 0.32), 0.22, head_dir)
    far: list[Part] = []
    near: list[Part] = []
    feet = _legs(rng, far, near, [0.5, -0.55], b, rng.uniform(0.3, 0.4), 0.06, coat, hsv(0.95, 0.35, 0.9))
    tail_root = np.array([-0.95, 0.05 * b])
    tail_caps, tail_pts = _curve(
        tail_root, 185 + rng.uniform(-20, 35), rng.uniform(1.1, 1.4), rng.uniform(-120, 120), 0.065, 0.035, 4
    )
    pink = hsv(0.95, rng.uniform(0.25, 0.45), 0.9)
    tail = [Part("tail", c, pink) for c in tail_caps]
    ear_r = rng.uniform(0.16, 0.2)
    head = []
    for k, ang in enumerate((110, 140)):
        c = _along(sk.head, head_dir + ang, 0.24)
        head.append(Part("ear", _ellipse(c, ear_r, ear_r * 0.9, 0), coat if k else _shade(coat, 0.85)))
        head.append(Part("ear", _ellipse(c, ear_r * 0.55, ear_r * 0.5, 0), pink))
    head.append(Part("head", _ellipse(sk.head, 0.28, 0.22, head_dir), coat))
    snout_tip = _along(sk.head, head_dir - 5, 0.4)
    head.append(Part("snout", _capsule(sk.head, snout_tip, 0.16, 0.05), coat))
    head.append(Part("nose", _ellipse(snout_tip, 0.05, 0.045, 0), pink))
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), markings(rng, _choose(rng, MARKINGS["mouse"]), coat, b))
    for p in neck:
        p.colour = coat
    parts = [*far, *tail, body, *near, *neck, *head]
    _eye(parts, sk.head, head_dir, 0.11, 0.05)
    kp = _keypoints(sk, b, _point_on(tail_pts, 0.3), _along(sk.head, head_dir - 5, 0.32), feet)
    return Animal("mouse", parts, kp)


def build_rhino(rng: np.random.Generator) -> Animal:
    b = rng.uniform(0.48, 0.56)
    coat = coat_colour(rng, "rhino")
    head_dir = rng.uniform(-35, 0)
    sk, neck = _skeleton(rng, b, 20 + rng.uniform(-10, 10), rng.uniform(0.3, 0.4), 0.3, head_dir)
    far: list[Part] = []
    near: list[Part] = []
    feet = _legs(rng, far, near, [0.55, -0.6], b, rng.uniform(0.45, 0.6), 0.15, coat, _shade(coat, 0.6), segments=1)
    tail_root = np.array([-0.97, -0.2 * b])
    tail_dir = 220 + rng.uniform(-20, 20)
    tail_end = _along(tail_root, tail_dir, rng.uniform(0.35, 0.45))
    tail = [
        Part("tail", _capsule(tail_root, tail_end, 0.06, 0.045), _shade(coat, 0.85)),
        Part("tail", _ellipse(tail_end, 0.09, 0.06, tail_dir), _shade(coat, 0.4)),
    ]
    head_c = _along(sk.head, head_dir, 0.1)
    horn_col = hsv(0.1, rng.uniform(0.05, 0.25), rng.uniform(0.7, 0.95))
    snout = _along(head_c, head_dir, 0.34)
    head = [
        Part("ear", _triangle(_along(sk.head, head_dir + 130, 0.2), head_dir + 115, 0.2, 0.12), _shade(coat, 0.85)),
        Part("head", _ellipse(head_c, 0.44, 0.26, head_dir), coat),
        Part(
            "horn", _triangle(_along(snout, head_dir + 90, 0.1), head_dir + 75, rng.uniform(0.3, 0.42), 0.2), horn_col
        ),
        Part("horn", _triangle(_along(head_c, head_dir + 90, 0.2), head_dir + 90, 0.15, 0.12), horn_col),
    ]
    body = Part("body", _ellipse(np.zeros(2), 1.0, b, 0), markings(rng, _choose(rng, MARKINGS["rhino"]), coat, b))
    for p in neck:
        p.colour = coat
    parts = [*far, *tail, body, *near, *neck, *head]
    _eye(parts, sk.head, head_dir, 0.05, 0.04)
    nose = _along(head_c, head_dir, 0.3)
    kp = _keypoints(sk, b, _point_on([tail_root, tail_end], 0.35), nose, feet)
    return Animal("rhino", parts, kp)


def _keypoints(
    sk: Skeleton, b: float, tail: np.ndarray, nose: np.ndarray, feet: dict[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    pts = {
        "head": sk.head,
        "back": np.array([-0.05, -0.6 * b]),
        "tail": tail,
        "belly": np.array([0.0, 0.55 * b]),
        "nose": nose,
        "neck": _point_on(sk.neck_pts, 0.5),
        **feet,
    }
    return {k: (float(v[0]), float(v[1])) for k, v in pts.items()}


BUILDERS: dict[str, Callable[[np.random.Generator], Animal]] = {
    "fox": build_fox,
    "bird": build_bird,
    "goat": build_goat,
    "lizard": build_lizard,
    "mouse": build_mouse,
    "rhino": build_rhino,
}
ANIMALS = tuple(BUILDERS)
