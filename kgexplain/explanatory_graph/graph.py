"""The mined explanatory graph and its inferences: plain typed data (numpy), saved as one .npz file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgexplain.errors import LayerError
from kgexplain.features.geometry import LayerGeometry
from kgexplain.workspace import temporary_beside


@dataclass
class LayerPatterns:
    """The patterns of one layer. Positions and spreads are image-plane pixels."""

    name: str
    geometry: LayerGeometry
    filter: np.ndarray  # (P,) channel of each pattern
    k: np.ndarray  # (P,) index of the pattern within its filter
    mu: np.ndarray  # (P, 2) prior position (x, y)
    sigma: np.ndarray  # (P,) spread of the position given the parents
    parents: np.ndarray  # (P, M) indices into the layer above (-1: none; the top layer has none)
    parent_weight: np.ndarray  # (P, M) co-activation x spatial consistency
    parent_spread: np.ndarray  # (P, M) deviation of the displacement to the parent
    score: np.ndarray  # (P,) mean of the pattern's best image scores on the mining images
    fires: np.ndarray  # (P,) images of the mining set on which the pattern fires
    std: np.ndarray  # (D, h, w) background standard deviation used to normalise the layer
    shift_gain: np.ndarray | None = None  # (P,) share of the parents' shift taken (None: all of it)

    @property
    def count(self) -> int:
        return int(self.filter.shape[0])

    def gain(self) -> np.ndarray:
        """(P,) the share of the parents' shift each pattern takes (ones unless mined with shift="shrunk")."""
        return np.ones(self.count, np.float32) if self.shift_gain is None else self.shift_gain

    def parent_offsets(self, upper: LayerPatterns) -> np.ndarray:
        """(P, M, 2): the child's prior position relative to each parent's, mu_V - mu_V'."""
        safe = np.where(self.parents >= 0, self.parents, 0)
        return self.mu[:, None, :] - upper.mu[safe]


# LayerPatterns' arrays as saved, one .npz entry each (``shift_gain`` too, optional on load)
ARRAYS = ("filter", "k", "mu", "sigma", "parents", "parent_weight", "parent_spread", "score", "fires", "std")


@dataclass
class ExplanatoryGraph:
    """Layers bottom to top; layer i's parents are in layer i + 1."""

    model: str
    layers: list[LayerPatterns]
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerPatterns:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerError(
            f"the graph has no layer {name!r}", hint=f"its layers: {', '.join(lp.name for lp in self.layers)}"
        )

    @property
    def patterns(self) -> int:
        return sum(layer.count for layer in self.layers)

    @property
    def edges(self) -> int:
        return int(sum((layer.parents >= 0).sum() for layer in self.layers))

    def ancestors(self, chosen: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per layer, (P,) bool: the ``chosen`` patterns (layer name -> bool mask or indices; layers left out: none)
        and every pattern above them through parent edges, top layer included."""
        out = {lp.name: np.zeros(lp.count, bool) for lp in self.layers}
        for name, sel in chosen.items():
            out[self.layer(name).name][np.asarray(sel)] = True
        for i in range(len(self.layers) - 1):  # bottom to top: a layer's mask is final before its parents are read
            parents = self.layers[i].parents[out[self.layers[i].name]]
            out[self.layers[i + 1].name][parents[parents >= 0]] = True
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays: dict[str, Any] = {}
        meta: dict[str, Any] = {"model": self.model, "config": self.config, "stats": self.stats, "layers": []}
        for i, layer in enumerate(self.layers):
            meta["layers"].append({"name": layer.name, "geometry": layer.geometry.to_dict()})
            for key in ARRAYS:
                arrays[f"{i}/{key}"] = getattr(layer, key)
            arrays[f"{i}/shift_gain"] = layer.gain()
        arrays["meta"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
        tmp = temporary_beside(path, ".npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExplanatoryGraph:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            layers = []
            for i, info in enumerate(meta["layers"]):
                g = LayerGeometry(**info["geometry"])
                arrays = {k: z[f"{i}/{k}"] for k in ARRAYS}
                gain = z[f"{i}/shift_gain"] if f"{i}/shift_gain" in z.files else None
                layers.append(LayerPatterns(info["name"], g, **arrays, shift_gain=gain))
        return cls(meta["model"], layers, meta.get("config", {}), meta.get("stats", {}))


@dataclass
class LayerInference:
    position: np.ndarray  # (n, P, 2) inferred position per image, px
    score: np.ndarray  # (n, P) S = F(x) P(p_x | V, parents)^2 at that position
    fires: np.ndarray  # (n, P) bool


@dataclass
class Inference:
    """Pattern inferences on a set of images (rows follow the feature set's images)."""

    layers: dict[str, LayerInference]
    image_ids: list[str]

    def top_images(self, layer: str, k: int, patterns: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(P, k) image rows and scores of each pattern's best images, best first (ties: the lower row); with
        ``patterns``, (len(patterns), k) for those patterns only, in their order."""
        s = self.layers[layer].score
        if patterns is not None:
            s = s[:, np.asarray(patterns, np.int64)]
        k = min(k, s.shape[0])
        order = np.argsort(-s, axis=0, kind="stable")[:k].T  # (P, k)
        return order, np.take_along_axis(s.T, order, axis=1)
