"""A tiny set of real photographs: the ones scikit-image ships in its wheel (an optional extra,
``pip install 'kgexplain[real]'``), with the ImageNet classes each shows, for checking a pretrained network
offline. The astronaut shows a person, which is no ImageNet class, so it has none; ImageNet has no "motorcycle"
either, and its nearest classes are moped and motor scooter."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kgexplain.data.annotations import ANNOTATIONS_FILE
from kgexplain.errors import DataError


@dataclass(frozen=True)
class Photo:
    name: str
    classes: tuple[str, ...]  # ImageNet class names the photo shows (any of them counts as right)
    load: Callable[[], np.ndarray]  # (H, W, 3) uint8
    mask: tuple[tuple[tuple[float, float], ...], ...] = ()  # rough object outlines drawn by hand (pixels)


def _skimage() -> object:
    try:
        from skimage import data  # lazy: an optional extra
    except ImportError as e:
        raise DataError("the real photographs come from scikit-image", hint="pip install 'kgexplain[real]'") from e
    return data


def _get(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        out = getattr(_skimage(), name)()
        return np.ascontiguousarray(out[index] if index is not None else out)

    return load


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> tuple[tuple[float, float], ...]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return tuple((float(cx + rx * np.cos(a)), float(cy + ry * np.sin(a))) for a in t)


# Rough outlines drawn by hand from looking at the photos (not annotations anyone published): the cat's head and
# shoulders (the out-of-focus background on the right left out), and the cup with its saucer and spoon.
CHELSEA_OUTLINE = (((0.0, 0.0), (395.0, 0.0), (390.0, 60.0), (370.0, 140.0), (380.0, 300.0), (0.0, 300.0)),)
COFFEE_OUTLINE = (_ellipse(278, 232, 203, 158), _ellipse(292, 95, 118, 80))  # saucer and spoon; the cup's rim

PHOTOS = (
    Photo("chelsea", ("tabby", "tiger cat", "Egyptian cat"), _get("chelsea"), CHELSEA_OUTLINE),
    Photo("coffee", ("espresso", "cup", "coffee mug"), _get("coffee"), COFFEE_OUTLINE),
    Photo("rocket", ("missile", "projectile", "space shuttle"), _get("rocket")),
    Photo("motorcycle_left", ("moped", "motor scooter"), _get("stereo_motorcycle", 0)),
    Photo("motorcycle_right", ("moped", "motor scooter"), _get("stereo_motorcycle", 1)),
    Photo("astronaut", (), _get("astronaut")),
)


def write_photos(out: str | Path) -> list[Path]:
    """Write the photos as ``out/images/NAME.png`` and the hand-drawn object masks as ``out/masks/NAME.png`` (the
    synthetic set's layout, so ``--images out/images`` holds photos only), an ``annotations.json`` that pairs each
    photo with its mask (``--annotations``), and ``labels.json`` ({name: [ImageNet classes]})."""
    folder = Path(out)
    try:
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder}: {e.strerror}", hint="choose another --out") from e
    written = []
    entries: list[dict[str, str]] = []
    for photo in PHOTOS:
        path = folder / "images" / f"{photo.name}.png"
        image = Image.fromarray(photo.load()).convert("RGB")
        image.save(path)
        written.append(path)
        entry = {"path": f"images/{photo.name}.png"}
        if photo.mask:  # white = object, for `kgexplain info IMAGE --mask FILE`
            mask = Image.new("L", image.size, 0)
            for outline in photo.mask:
                ImageDraw.Draw(mask).polygon([tuple(p) for p in outline], fill=255)
            mask.save(folder / "masks" / f"{photo.name}.png")
            written.append(folder / "masks" / f"{photo.name}.png")
            entry["mask"] = f"masks/{photo.name}.png"
        entries.append(entry)
    (folder / ANNOTATIONS_FILE).write_text(json.dumps({"images": entries}, indent=1) + "\n")
    (folder / "labels.json").write_text(json.dumps({p.name: list(p.classes) for p in PHOTOS}, indent=1) + "\n")
    return written
