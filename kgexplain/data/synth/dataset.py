"""The synthetic reference data set: in memory (:class:`SynthSource`) or written to disk (:func:`write_synth`).

Image ``i`` of data set ``seed`` is a pure function of ``(seed, i, size)``; its category is
``categories[i % len(categories)]`` so every data set is balanced. Written data sets are PNG images, PNG masks
and an annotations JSON (the format of :mod:`kgexplain.data.annotations`) that is written last, so a folder with
an ``annotations.json`` is complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kgexplain.data.annotations import ANNOTATIONS_FILE, AnnotatedImages, write_annotations
from kgexplain.data.base import ImageSource, Record
from kgexplain.data.synth.animals import KEYPOINTS
from kgexplain.data.synth.scene import BACKGROUND, CATEGORIES, SynthImage, render
from kgexplain.errors import DataError
from kgexplain.progress import Progress, task

# Bump whenever rendering changes: it is part of every fingerprint, so stale caches are never reused.
GENERATOR_VERSION = 2  # 2: keypoints along multi-segment limbs fixed (images unchanged)


def check_categories(categories: Sequence[str] | None) -> tuple[str, ...]:
    if not categories:
        return CATEGORIES
    bad = [c for c in categories if c not in CATEGORIES]
    if bad:
        raise DataError(f"unknown synthetic categories: {', '.join(bad)}", hint=f"choose from {', '.join(CATEGORIES)}")
    return tuple(dict.fromkeys(categories))


@lru_cache(maxsize=16)
def _render_cached(seed: int, index: int, category: str, size: int) -> SynthImage:
    return render(seed, index, category, size)


class SynthSource(ImageSource):
    """``n`` synthetic images of data set ``seed``, rendered on demand (nothing is written to disk)."""

    def __init__(self, n: int, seed: int = 0, size: int = 128, categories: Sequence[str] | None = None) -> None:
        if n <= 0:
            raise DataError("a synthetic data set needs at least one image", hint="pass --n 1 or more")
        if size < 32:
            raise DataError(f"synthetic images must be at least 32 px, not {size}")
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.categories = check_categories(categories)
        self.name = f"synth:seed{seed}:n{n}:{size}px"

    def __len__(self) -> int:
        return self.n

    def category(self, index: int) -> str:
        return self.categories[index % len(self.categories)]

    def sample(self, index: int) -> SynthImage:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return _render_cached(self.seed, index, self.category(index), self.size)

    def record(self, index: int) -> Record:
        s = self.sample(index)
        return Record(
            id=f"synth/{self.seed}/{index:06d}",
            label=s.category,
            box=s.box,
            keypoints=dict(s.keypoints),
            meta={"pose": s.pose},
        )

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.sample(index).image)

    def mask_array(self, index: int) -> np.ndarray:
        return self.sample(index).mask

    def fingerprint(self) -> str:
        return f"synth-v{GENERATOR_VERSION}-{self.seed}-{self.n}-{self.size}-{'+'.join(self.categories)}"

    def labels(self) -> list[str]:
        return list(self.categories)


def _write_range(args: tuple[int, int, int, int, tuple[str, ...], str]) -> list[dict[str, Any]]:
    seed, lo, hi, size, categories, out = args
    root = Path(out)
    entries = []
    for i in range(lo, hi):
        category = categories[i % len(categories)]
        s = render(seed, i, category, size)
        name = f"{i:06d}.png"
        Image.fromarray(s.image).save(root / "images" / name, compress_level=1)
        entry: dict[str, Any] = {"path": f"images/{name}", "label": category, "index": i}
        if category != BACKGROUND:
            Image.fromarray(s.mask.astype(np.uint8) * 255).save(root / "masks" / name, compress_level=1)
            entry["mask"] = f"masks/{name}"
            entry["box"] = [round(v, 2) for v in s.box] if s.box else None
            entry["keypoints"] = {k: [round(s.keypoints[k][0], 3), round(s.keypoints[k][1], 3)] for k in KEYPOINTS}
            entry["pose"] = {k: round(v, 4) for k, v in s.pose.items()}
        entries.append(entry)
    return entries


def synth_spec(n: int, seed: int, size: int, categories: Sequence[str]) -> dict[str, Any]:
    return {
        "generator": "kgexplain.synth",
        "version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "size": size,
        "categories": list(categories),
    }


def write_synth(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 128,
    categories: Sequence[str] | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> AnnotatedImages:
    """Write a synthetic data set to ``out`` (reused when a complete one with the same parameters is there)."""
    cats = check_categories(categories)
    SynthSource(n, seed, size, cats)  # validates the arguments
    out = Path(out).expanduser()
    spec = synth_spec(n, seed, size, cats)
    try:
        return _write_synth(out, n, seed, size, cats, spec, overwrite, workers, progress)
    except OSError as e:  # a folder that cannot be made or written (a file in its path, no space, no permission)
        raise DataError(
            f"cannot write the data set to {out}: {e.strerror or e}",
            hint="choose a writable folder (--out, or the store's --store / --artifacts)",
        ) from e


def _write_synth(
    out: Path,
    n: int,
    seed: int,
    size: int,
    cats: tuple[str, ...],
    spec: dict[str, Any],
    overwrite: bool,
    workers: int,
    progress: Progress | None,
) -> AnnotatedImages:
    ann = out / ANNOTATIONS_FILE
    if ann.exists() and not overwrite:
        try:
            existing = json.loads(ann.read_text(encoding="utf-8")).get("synth")
        except (OSError, json.JSONDecodeError):
            existing = None
        if existing == spec:
            return AnnotatedImages(ann)
        raise DataError(
            f"{out} already holds a different data set",
            hint="choose another --out, or pass --overwrite to replace it",
        )
    if out.exists() and any(out.iterdir()) and not ann.exists() and not (out / "images").exists():
        raise DataError(f"{out} is not empty", hint="choose an empty or new folder for --out")
    for sub in ("images", "masks"):
        if (out / sub).exists() and overwrite:
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True, exist_ok=True)
    if ann.exists():
        ann.unlink()
    chunk = 64
    jobs = [(seed, lo, min(lo + chunk, n), size, cats, str(out)) for lo in range(0, n, chunk)]
    entries: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with task(progress, "synth", n, "img") as advance:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(_write_range, jobs):
                    entries.extend(part)
                    advance(len(part))
        else:
            for job in jobs:
                part = _write_range(job)
                entries.extend(part)
                advance(len(part))
    write_annotations(
        ann, entries, synth=spec, keypoint_names=list(KEYPOINTS), seconds=round(time.perf_counter() - t0, 3)
    )
    return AnnotatedImages(ann)


def _render_range(args: tuple[int, int, int, int, tuple[str, ...]]) -> np.ndarray:
    seed, lo, hi, size, categories = args
    return np.stack([render(seed, i, categories[i % len(categories)], size).image for i in range(lo, hi)])


def render_arrays(
    n: int, seed: int = 0, size: int = 128, categories: Sequence[str] | None = None, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, size, size, 3)`` uint8 and class indices (into ``categories``) of a synthetic set, in memory."""
    cats = check_categories(categories)
    SynthSource(n, seed, size, cats)
    chunk = 128
    jobs = [(seed, lo, min(lo + chunk, n), size, cats) for lo in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_render_range, jobs))
    else:
        parts = [_render_range(j) for j in jobs]
    return np.concatenate(parts), np.arange(n) % len(cats)
