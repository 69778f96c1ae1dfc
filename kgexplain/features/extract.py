"""Batched feature extraction for several layers in one forward pass, with the disk cache.

Only layers that are not cached are computed; shards already on disk are skipped (an interrupted run resumes).
Images that cannot be decoded are skipped and counted, never fatal. Batches never cross a shard boundary, so
every shard is written as soon as its last batch is done and memory stays bounded by one shard per layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.images import LoadReport, reason_of
from kgexplain.devices import autocast, resolve_device
from kgexplain.errors import ImageDecodeError, LayerError, UsageError
from kgexplain.features.cache import FeatureSet, Shard, ShardWriter, cache_key, fp16_scale, load_complete
from kgexplain.features.geometry import LayerGeometry, geometries
from kgexplain.features.hooks import capture_layers, forward
from kgexplain.models.layers import LayerSpec
from kgexplain.models.registry import LUMA, ModelHandle
from kgexplain.progress import Progress, task

SHARD_BYTES = 128 << 20  # target size of one shard of the largest layer


@dataclass
class Extraction:
    """The features of each requested layer plus how the images went."""

    features: dict[str, FeatureSet]
    report: LoadReport
    seconds: float = 0.0  # wall time spent computing (0 when everything came from the cache)
    images_computed: int = 0
    from_cache: dict[str, bool] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> FeatureSet:
        return self.features[layer]


class _Frames(torch.utils.data.Dataset[Any]):
    def __init__(self, source: ImageSource, framing: Framing) -> None:
        self.source, self.framing = source, framing

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, str, np.ndarray | None, str | None]:
        try:
            f = self.framing.apply(self.source, i, with_mask=False)
            return i, f.id, f.image, None
        except ImageDecodeError as e:
            return i, self.source.record(i).id, None, reason_of(e)


def _collate(items: list[tuple[int, str, np.ndarray | None, str | None]]) -> dict[str, Any]:
    good = [it for it in items if it[2] is not None]
    return {
        "all_indices": [it[0] for it in items],
        "indices": [it[0] for it in good],
        "ids": [it[1] for it in good],
        "images": torch.from_numpy(np.stack([it[2] for it in good])) if good else None,  # type: ignore[misc]
        "skipped": [(it[1], it[3]) for it in items if it[2] is None],
    }


class _Float16:
    """What extraction keeps of each layer's captured maps: float16 copies, multiplied by the layer's
    ``fp16_scale``, which the first batch of a shard chooses (``reset`` at each shard)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.scales: dict[str, float] = {}

    def reset(self) -> None:
        self.scales = {}

    def capture_dtype(self) -> torch.dtype:
        """float16 straight from the hooks once every layer is known to need no scale; float32 to choose one, or
        to scale before rounding."""
        known = len(self.scales) == len(self.names)
        return torch.float16 if known and all(v == 1.0 for v in self.scales.values()) else torch.float32

    def keep(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if name not in self.scales:
            self.scales[name] = fp16_scale(t)
        scale = self.scales[name]
        return (t if scale == 1.0 else t.float().mul(scale)).to(torch.float16).cpu()


def normalise(images_uint8: torch.Tensor, handle: ModelHandle) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, C, H, W) float normalised with the model's mean and std.

    C is the model's input channels: 3, or 1 for a grayscale model (the luma of the RGB image, as PIL's "L").
    """
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    if handle.channels == 1:
        x = torch.einsum("bchw,c->bhw", x, torch.tensor(LUMA, device=x.device))[:, None]
    mean = torch.tensor(handle.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(handle.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


_GEOMETRY_MEMO: dict[tuple[str, str, str, int], LayerGeometry] = {}


def geometries_for(handle: ModelHandle, specs: Sequence[LayerSpec], size: int) -> dict[str, LayerGeometry]:
    """Geometry of the given layers at input ``size`` (memoised per model identity)."""

    def key(s: LayerSpec) -> tuple[str, str, str, int]:
        return (handle.identity, s.module, s.name, size)

    missing = [s for s in specs if key(s) not in _GEOMETRY_MEMO]
    if missing:
        found = geometries(handle.module, missing, size, size)
        for s in missing:
            if s.name not in found:
                raise LayerError(
                    f"layer {s.name!r} does not output a spatial feature map",
                    hint=f"`kgexplain layers {handle.name}` lists the conv layers",
                )
            _GEOMETRY_MEMO[key(s)] = found[s.name]
    return {s.name: _GEOMETRY_MEMO[key(s)] for s in specs}


def default_framing(handle: ModelHandle, source: ImageSource) -> Framing:
    return Framing(handle.input_size, crop=str(getattr(source, "preferred_crop", "none")))


def extract_features(
    handle: ModelHandle,
    source: ImageSource,
    layers: Sequence[str] | None = None,
    *,
    framing: Framing | None = None,
    relu: str = "pre",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    cache_dir: str | Path | None = None,
    amp: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
    shard_images: int | None = None,
) -> Extraction:
    """Feature maps of ``layers`` (default: the model's default layers) for every decodable image of ``source``.

    With ``cache_dir`` the features go to (and come from) the disk cache; without it they are kept in memory.
    ``relu`` is ``"pre"`` (before the nonlinearity, as the explanatory graph wants) or ``"post"``.
    """
    if relu not in ("pre", "post"):
        raise UsageError(f"relu must be 'pre' or 'post', not {relu!r}")
    specs = [handle.layer(n) for n in (layers or handle.default_layers)]
    if not specs:
        raise UsageError(
            "no layers requested and the model has no default layers", hint="pass --layers (see `kgexplain layers`)"
        )
    framing = framing or default_framing(handle, source)
    dev = resolve_device(device)
    handle.to(dev)
    layer_geo = geometries_for(handle, specs, framing.size)

    common = {
        "model": handle.identity,
        "relu": relu,
        "data": source.fingerprint(),
        "framing": framing.describe(),
        "exif": "upright",  # images with an EXIF orientation are read turned upright (earlier caches: as stored)
        "mean": list(handle.mean),
        "std": list(handle.std),
        "dtype": "float16",
    }
    keys = {s.name: cache_key({**common, "layer": [s.name, s.module, s.rectified, s.pre_module]}) for s in specs}
    root = Path(cache_dir).expanduser() / "features" if cache_dir is not None else None

    features: dict[str, FeatureSet] = {}
    from_cache: dict[str, bool] = {}
    todo: list[LayerSpec] = []
    for s in specs:
        hit = load_complete(root / keys[s.name]) if root is not None else None
        if hit is not None:
            features[s.name] = hit
            from_cache[s.name] = True
        else:
            todo.append(s)
            from_cache[s.name] = False

    n = len(source)
    report = LoadReport(total=n)
    if not todo:
        skipped = [sk for sh in next(iter(features.values())).shards for sk in sh.skipped]
        for item_id, reason in skipped:
            report.add_skip(item_id, reason)
        report.loaded = len(next(iter(features.values())))
        return Extraction(features, report, 0.0, 0, from_cache)

    sizes: dict[str, tuple[int, ...] | None] = {s.name: None for s in todo}
    per_image = max(int(np.prod(layer_shape(handle, s, framing.size))) * 2 for s in todo)
    bs = batch_size or (64 if dev.type == "cuda" else 32)
    shard_n = shard_images or max(bs, (SHARD_BYTES // per_image) // bs * bs)
    shard_n = max(1, min(shard_n, max(n, 1)))
    n_shards = (n + shard_n - 1) // shard_n
    writers = {
        s.name: ShardWriter(
            s.name,
            relu,
            keys[s.name],
            (root / keys[s.name]) if root is not None else None,
            {**common, "layer": s.name, "module": s.module, "source": source.name, "n_source": n},
            shard_n,
        )
        for s in todo
    }
    pending = [k for k in range(n_shards) if not all(w.done(k) for w in writers.values())]
    batches = [
        list(range(lo, min(lo + bs, (k + 1) * shard_n, n)))
        for k in pending
        for lo in range(k * shard_n, min((k + 1) * shard_n, n), bs)
    ]
    n_workers = (
        workers
        if workers is not None
        else (min(4, max(0, (torch.get_num_threads() or 1) - 1)) if dev.type == "cuda" else 0)
    )
    loader = torch.utils.data.DataLoader(
        _Frames(source, framing),
        batch_sampler=batches,
        collate_fn=_collate,
        num_workers=n_workers,
        pin_memory=dev.type == "cuda",
    )
    todo_images = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    buffers: dict[str, list[torch.Tensor]] = {s.name: [] for s in todo}
    shard_indices: list[int] = []
    shard_ids: list[str] = []
    shard_skips: list[tuple[str, str]] = []
    current = pending[0] if pending else -1
    model = handle.module
    kept = _Float16([s.name for s in todo])
    with task(progress, "features", todo_images, "img") as advance:

        def flush(k: int) -> None:
            for s in todo:
                w = writers[s.name]
                if w.done(k):
                    continue
                parts = buffers[s.name]
                shape = sizes[s.name] or layer_shape(handle, s, framing.size)
                data = torch.cat(parts).numpy() if parts else np.zeros((0, *shape), np.float16)
                w.write(k, data, shard_indices, shard_ids, shard_skips, kept.scales.get(s.name, 1.0))
            for s in todo:
                buffers[s.name] = []
            kept.reset()
            shard_indices.clear()
            shard_ids.clear()
            shard_skips.clear()

        for batch in loader:
            k = batch["all_indices"][0] // shard_n
            if k != current:
                flush(current)
                current = k
            shard_skips.extend(batch["skipped"])
            if batch["images"] is not None:
                x = normalise(batch["images"].to(dev, non_blocking=True), handle)
                capture = capture_layers(model, todo, stop=True, dtype=kept.capture_dtype())
                with torch.no_grad(), autocast(dev, amp), capture as cap:
                    forward(model, x)
                    for s in todo:
                        t = cap[s.name].get(relu)
                        sizes[s.name] = tuple(t.shape[1:])
                        buffers[s.name].append(kept.keep(s.name, t))
                shard_indices.extend(batch["indices"])
                shard_ids.extend(batch["ids"])
            advance(len(batch["indices"]) + len(batch["skipped"]))
        if current >= 0:
            flush(current)
    seconds = time.perf_counter() - t0

    shapes = {s.name: sizes[s.name] or layer_shape(handle, s, framing.size) for s in todo}
    for s in todo:
        features[s.name] = writers[s.name].finish(layer_geo[s.name], shapes[s.name], n_shards)  # type: ignore[arg-type]
    first = writers[todo[0].name]
    for item_id, reason in first.skipped():
        report.add_skip(item_id, reason)
    report.loaded = len(features[todo[0].name])
    ordered = {s.name: features[s.name] for s in specs}
    return Extraction(ordered, report, seconds, todo_images, from_cache)


_SHAPE_MEMO: dict[tuple[str, str, int], tuple[int, int, int]] = {}


def layer_shape(handle: ModelHandle, spec: LayerSpec, size: int) -> tuple[int, int, int]:
    """(C, H, W) of a layer at input ``size`` (memoised per model identity)."""
    key = (handle.identity, spec.name, size)
    if key not in _SHAPE_MEMO:
        dev = next(iter(handle.module.parameters()), torch.empty(0)).device
        with torch.no_grad(), capture_layers(handle.module, [spec], stop=True) as cap:
            forward(handle.module, torch.zeros(1, handle.channels, size, size, device=dev))
        c, h, w = cap[spec.name].pre.shape[1:]
        _SHAPE_MEMO[key] = (int(c), int(h), int(w))
    return _SHAPE_MEMO[key]


def features_of(
    handle: ModelHandle,
    images: np.ndarray,
    layers: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    relu: str = "pre",
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    amp: bool = True,
) -> dict[str, FeatureSet]:
    """Features of framed images already in memory ((n, H, W, 3) uint8, all one size), kept in memory.

    For a handful of images (localisation, tests) where a data source and the disk cache are overkill.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise UsageError(f"expected (n, S, S, 3) uint8 images, got shape {images.shape}")
    specs = [handle.layer(n) for n in layers]
    dev = resolve_device(device)
    handle.to(dev)
    size = int(images.shape[1])
    geo = geometries_for(handle, specs, size)
    bs = batch_size or (64 if dev.type == "cuda" else 32)
    parts: dict[str, list[torch.Tensor]] = {s.name: [] for s in specs}
    kept = _Float16([s.name for s in specs])  # one shard: the first batch chooses each layer's scale
    for lo in range(0, len(images), bs):
        x = normalise(torch.from_numpy(np.ascontiguousarray(images[lo : lo + bs])).to(dev), handle)
        # float16 as the cache stores them, and in plain (B, C, H, W) order as the cache reads back (a CPU conv's
        # output is channels-last; the miner's arithmetic on such chunks ran at half speed), copied so at capture
        capture = capture_layers(handle.module, specs, stop=True, dtype=kept.capture_dtype())
        with torch.no_grad(), autocast(dev, amp), capture as cap:
            forward(handle.module, x)
            for s in specs:
                parts[s.name].append(kept.keep(s.name, cap[s.name].get(relu)))
    n = len(images)
    names = list(ids) if ids is not None else [str(i) for i in range(n)]
    out: dict[str, FeatureSet] = {}
    for s in specs:
        data = torch.cat(parts[s.name]).numpy() if n else np.zeros((0, *layer_shape(handle, s, size)), np.float16)
        shard = Shard(0, np.arange(n, dtype=np.int64), names, [], data=data, scale=kept.scales.get(s.name, 1.0))
        out[s.name] = FeatureSet(s.name, relu, geo[s.name], tuple(data.shape[1:]), [shard])
    return out
