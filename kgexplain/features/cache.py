"""Feature maps of one layer over a data set, in float16 shards: on disk (the cache) or in memory.

A cache entry is a folder named by a hash of everything that determines the features (model and weights,
layer, pre/post ReLU, data set fingerprint, framing, normalisation, format version)::

    <cache>/features/<key>/entry.json          what the key was made of, and the shard layout
    <cache>/features/<key>/shard-000003.npy    float16 (n, C, H, W) for source indices [3*S, 4*S)
    <cache>/features/<key>/shard-000003.json   which source indices are in it, their ids, which were skipped,
                                               and the power of two its values were multiplied by (``fp16_scale``)
    <cache>/features/<key>/manifest.json       written last: the entry is complete

Every file is written to a temporary name and renamed, so an interrupted extraction leaves only whole shards,
and the next run resumes after them. Reading is streamed: shards are memory-mapped one at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgexplain.errors import CacheError, DataError
from kgexplain.features.geometry import LayerGeometry
from kgexplain.workspace import temporary_beside

FORMAT_VERSION = 2  # 2: shards may be scaled (fp16_scale); entries of 1 held tiny maps as zeros
FP16_COMFORT = (2.0**-4, 2.0**12)  # a batch whose largest |value| lies here is stored as it is (``fp16_scale``)


def fp16_scale(t: torch.Tensor) -> float:
    """The power of two a layer's values are multiplied by before they are stored in float16 (and divided by when
    read): 1 while the batch's largest |value| lies in ``FP16_COMFORT``, as for every network the figures were
    measured on, else the one that brings it into (128, 256]. Maps of tiny or huge values then keep float16's
    precision instead of underflowing to zero (MobileNet-V2 with random weights: |x| about 5e-9 at features.17)
    or overflowing past 65,504. A power of two, so the scaling itself is exact."""
    m = float(t.detach().abs().amax()) if t.numel() else 0.0
    if not math.isfinite(m) or m == 0.0 or FP16_COMFORT[0] <= m <= FP16_COMFORT[1]:
        return 1.0
    return float(2.0 ** (8 - math.ceil(math.log2(m))))


def cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _atomic_bytes(path: Path, write: Any) -> None:
    tmp = temporary_beside(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: Any) -> None:
    _atomic_bytes(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


@dataclass
class Shard:
    number: int
    indices: np.ndarray  # source indices of the images in this shard, in order
    ids: list[str]
    skipped: list[tuple[str, str]]  # (id, reason)
    data: np.ndarray | None = None  # in-memory shards
    path: Path | None = None  # on-disk shards
    scale: float = 1.0  # the stored values are the features times this (``fp16_scale``); reading divides

    def array(self) -> np.ndarray:
        """The stored float16 values (the features times ``scale``)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CacheError(
                f"feature shard {self.path} is unreadable: {e}", hint="delete that cache folder and run again"
            ) from e


class FeatureSet:
    """Features of one layer for every image of a source that could be decoded."""

    def __init__(
        self,
        layer: str,
        relu: str,
        geometry: LayerGeometry,
        shape: tuple[int, int, int],
        shards: list[Shard],
        key: str | None = None,
        directory: Path | None = None,
    ) -> None:
        self.layer, self.relu, self.geometry, self.shape = layer, relu, geometry, shape
        self.shards = [s for s in shards if len(s.indices)]
        self.key, self.directory = key, directory
        self.indices = np.concatenate([s.indices for s in self.shards]) if self.shards else np.zeros(0, np.int64)
        self.ids = [i for s in self.shards for i in s.ids]
        self._offsets = np.cumsum([0] + [len(s.indices) for s in self.shards])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.shape)) * 2

    def chunks(
        self, size: int | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Stream ``(positions, features)`` in chunks of at most ``size`` images (default: one shard)."""
        for k, shard in enumerate(self.shards):
            arr = shard.array()
            step = size or len(arr)
            for lo in range(0, len(arr), step):
                hi = min(lo + step, len(arr))
                # a copy (shards are read-only), converted on the way: 3x faster than copying, then converting
                t = torch.tensor(arr[lo:hi], dtype=dtype, device=device or "cpu")
                if shard.scale != 1.0:
                    t.div_(shard.scale)
                base = int(self._offsets[k])
                yield slice(base + lo, base + hi), t

    def get(
        self, positions: Any, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Features of the given positions (0..len-1), in that order."""
        pos = np.atleast_1d(np.asarray(positions, np.int64))
        out = torch.empty((len(pos), *self.shape), dtype=dtype)
        shard_of = np.searchsorted(self._offsets, pos, side="right") - 1
        for k in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == k)
            shard = self.shards[int(k)]
            local = pos[sel] - self._offsets[k]
            t = torch.tensor(shard.array()[local], dtype=dtype)  # converted in one copy, as chunks
            out[torch.from_numpy(sel)] = t.div_(shard.scale) if shard.scale != 1.0 else t
        return out.to(device or "cpu")

    def tensor(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All features at once (only for sets that fit in memory)."""
        return self.get(np.arange(len(self)), device, dtype)

    def position_of(self, source_index: int) -> int:
        hits = np.flatnonzero(self.indices == source_index)
        if not len(hits):
            raise DataError(f"image {source_index} of the source is not in this feature set (skipped or not there)")
        return int(hits[0])


class ShardWriter:
    """Collects the shards of one layer, on disk (``directory``) or in memory (``directory=None``)."""

    def __init__(
        self, layer: str, relu: str, key: str, directory: Path | None, meta: dict[str, Any], shard_images: int
    ) -> None:
        self.layer, self.relu, self.key, self.directory, self.meta = layer, relu, key, directory, meta
        self.shard_images = shard_images
        self.shards: dict[int, Shard] = {}
        if directory is not None:
            self._open_dir()

    def _open_dir(self) -> None:
        d = self.directory
        assert d is not None
        entry = d / "entry.json"
        if entry.exists():
            try:
                old = json.loads(entry.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("shard_images") != self.shard_images or old.get("key") != self.key:
                shutil.rmtree(d)  # a different layout: start afresh
        d.mkdir(parents=True, exist_ok=True)
        if not entry.exists():
            _atomic_json(entry, {"key": self.key, "shard_images": self.shard_images, **self.meta})
        for side in sorted(d.glob("shard-*.json")):
            npy = side.with_suffix(".npy")
            if not npy.exists():
                continue
            try:
                info = json.loads(side.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            self.shards[int(info["number"])] = _shard_of(info, npy)

    def done(self, number: int) -> bool:
        return number in self.shards

    def write(
        self,
        number: int,
        data: np.ndarray,
        indices: list[int],
        ids: list[str],
        skipped: list[tuple[str, str]],
        scale: float = 1.0,
    ) -> None:
        """Store shard ``number``: ``data`` holds its features times ``scale`` (``fp16_scale``)."""
        arr = np.ascontiguousarray(data, dtype=np.float16)
        shard = Shard(number, np.asarray(indices, np.int64), list(ids), list(skipped), scale=scale)
        if self.directory is None:
            shard.data = arr
        else:
            npy = self.directory / f"shard-{number:06d}.npy"
            _atomic_bytes(npy, lambda f: np.save(f, arr))
            _atomic_json(
                npy.with_suffix(".json"),
                {
                    "number": number,
                    "indices": [int(i) for i in indices],
                    "ids": list(ids),
                    "skipped": [list(s) for s in skipped],
                    "scale": scale,
                },
            )
            shard.path = npy
        self.shards[number] = shard

    def finish(self, geometry: LayerGeometry, shape: tuple[int, int, int], n_shards: int) -> FeatureSet:
        missing = [k for k in range(n_shards) if k not in self.shards]
        if missing:
            raise CacheError(f"features of {self.layer} are incomplete (shards {missing[:5]} missing)")
        shards = [self.shards[k] for k in range(n_shards)]
        if self.directory is not None:
            _atomic_json(
                self.directory / "manifest.json",
                {
                    "key": self.key,
                    "layer": self.layer,
                    "relu": self.relu,
                    "shape": list(shape),
                    "geometry": geometry.to_dict(),
                    "n_shards": n_shards,
                    "n": int(sum(len(s.indices) for s in shards)),
                    **self.meta,
                },
            )
        return FeatureSet(self.layer, self.relu, geometry, shape, shards, self.key, self.directory)

    def skipped(self) -> list[tuple[str, str]]:
        return [s for k in sorted(self.shards) for s in self.shards[k].skipped]


def _shard_of(info: dict[str, Any], npy: Path) -> Shard:
    """An on-disk shard from its side file (entries written before ``scale`` existed hold unscaled values)."""
    return Shard(
        int(info["number"]),
        np.asarray(info["indices"], np.int64),
        list(info["ids"]),
        [tuple(s) for s in info["skipped"]],
        path=npy,
        scale=float(info.get("scale", 1.0)),
    )


def load_complete(directory: Path) -> FeatureSet | None:
    """The cached features in ``directory`` if the entry is complete, else None."""
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    try:
        m = json.loads(manifest.read_text())
        shards = []
        for k in range(int(m["n_shards"])):
            info = json.loads((directory / f"shard-{k:06d}.json").read_text())
            npy = directory / f"shard-{k:06d}.npy"
            if not npy.exists():
                return None
            shards.append(_shard_of(info, npy))
        geometry = LayerGeometry(**m["geometry"])
        c, h, w = (int(v) for v in m["shape"])
        return FeatureSet(m["layer"], m["relu"], geometry, (c, h, w), shards, m["key"], directory)
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError):
        return None  # unreadable: treated as absent and rebuilt


def cache_root() -> Path:
    """``$KGEXPLAIN_CACHE``, else ``$XDG_CACHE_HOME/kgexplain``, else ``~/.cache/kgexplain``."""
    env = os.environ.get("KGEXPLAIN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kgexplain"
