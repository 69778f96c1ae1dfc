"""Random graphs with the *shape* of an explanatory graph, for store benchmarks and tests.

Layers x filters x patterns, each pattern of a lower layer linked to ``parents`` patterns of the layer above, and
``top`` inferences per pattern on ``images`` images. Nothing here is mined from a model; the miners write real
graphs through the same store interface. ``vgg16_scale()`` gives the size of the paper's VGG-16 graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from kgexplain.store import ids as I
from kgexplain.store.base import GraphStore, RunRecord


@dataclass(frozen=True)
class Shape:
    layers: tuple[tuple[str, int, int], ...]  # (name, filters, patterns per filter), bottom to top
    parents: int = 15
    top: int = 10
    images: int = 1000


def vgg16_scale() -> Shape:
    """61,440 patterns; 921,600 parent edges (18 per pattern below the top layer); 614,400 top inferences."""
    return Shape(
        (("conv4_2", 512, 40), ("conv4_3", 512, 40), ("conv5_2", 512, 20), ("conv5_3", 512, 20)),
        parents=18,
        top=10,
        images=1000,
    )


def small() -> Shape:
    return Shape((("conv4_1", 6, 3), ("conv4_2", 6, 3), ("conv5_1", 4, 2)), parents=3, top=4, images=12)


@dataclass
class SampleGraph:
    model: str
    run: RunRecord
    shared_nodes: dict[str, pa.Table]
    shared_rels: dict[str, pa.Table]
    nodes: dict[str, pa.Table]
    rels: dict[str, pa.Table]

    @property
    def rows(self) -> int:
        return sum(len(t) for t in (*self.nodes.values(), *self.rels.values()))

    def write(self, store: GraphStore) -> None:
        for label in ("Model", "Layer", "Filter", "Image"):
            store.ensure_nodes(label, self.shared_nodes[label])
        for rel, t in self.shared_rels.items():
            store.ensure_rels(rel, t)
        store.write_run(self.run, self.nodes, self.rels)


def sample_graph(
    shape: Shape | None = None, seed: int = 0, run_name: str = "sample", arch: str = "vgg16"
) -> SampleGraph:
    shape = shape or small()
    rng = np.random.default_rng(seed)
    model = I.model_id(arch, "none:seed0", None)
    run_id = I.run_id("eg", arch, run_name, {"seed": seed, "shape": repr(shape)})
    layer_rows, filter_ids, filter_layer = [], [], []
    pattern_ids: list[list[str]] = []
    layer_col: list[str] = []
    filter_col: list[int] = []
    cols: dict[str, list[object]] = {
        k: [] for k in ("id", "model", "layer", "filter", "k", "mu_x", "mu_y", "sigma", "score", "fires")
    }
    for li, (name, n_filters, n_patterns) in enumerate(shape.layers):
        layer_rows.append(
            {
                "id": I.layer_id(model, name),
                "model": model,
                "name": name,
                "module": name,
                "idx": li,
                "channels": n_filters,
                "stride": 8.0 * 2 ** (li // 2),
                "centre": 3.5,
                "rf": 60.0,
                "map_h": 28,
                "map_w": 28,
            }
        )
        ids_here = []
        for f in range(n_filters):
            filter_ids.append(I.filter_id(model, name, f))
            filter_layer.append(I.layer_id(model, name))
            for k in range(n_patterns):
                pid = I.pattern_id(run_id, name, f, k)
                ids_here.append(pid)
                cols["id"].append(pid)
                cols["model"].append(model)
                cols["layer"].append(name)
                cols["filter"].append(f)
                layer_col.append(name)
                filter_col.append(f)
                cols["k"].append(k)
        pattern_ids.append(ids_here)
    n = len(cols["id"])
    cols["mu_x"] = list(rng.uniform(0, 224, n))
    cols["mu_y"] = list(rng.uniform(0, 224, n))
    cols["sigma"] = list(rng.uniform(5, 40, n))
    cols["score"] = list(rng.gamma(2.0, 1.0, n))
    cols["fires"] = list(rng.integers(0, shape.images, n))
    patterns = pa.table(cols)
    of_filter = pa.table(
        {
            "from": cols["id"],
            "to": [I.filter_id(model, layer, f) for layer, f in zip(layer_col, filter_col, strict=True)],
        }
    )

    src, dst = [], []
    for lower, upper in itertools.pairwise(pattern_ids):
        up = np.asarray(upper)
        for child in lower:
            src.extend([child] * shape.parents)
            dst.extend(up[rng.choice(len(up), size=min(shape.parents, len(up)), replace=False)].tolist())
    m = len(src)
    parent = pa.table(
        {
            "from": src,
            "to": dst,
            "dx": rng.normal(0, 20, m),
            "dy": rng.normal(0, 20, m),
            "sigma": rng.uniform(5, 30, m),
            "weight": rng.gamma(2.0, 1.0, m),
        }
    )

    image_ids = [I.image_id(I.digest(f"image-{seed}-{i}", 64)) for i in range(shape.images)]
    images = pa.table(
        {
            "id": image_ids,
            "path": [f"images/{i:06d}.png" for i in range(shape.images)],
            "w": [224] * shape.images,
            "h": [224] * shape.images,
            "label": ["bird"] * shape.images,
        }
    )
    k = shape.top
    fires = pa.table(
        {
            "from": np.repeat(np.asarray(cols["id"], dtype=object), k).tolist(),
            "to": [image_ids[i] for i in rng.integers(0, shape.images, n * k)],
            "x": rng.uniform(0, 224, n * k),
            "y": rng.uniform(0, 224, n * k),
            "score": rng.gamma(2.0, 1.0, n * k),
            "rank": np.tile(np.arange(k), n),
        }
    )
    run = RunRecord(run_id, "eg", model, run_name, {"seed": seed, "sample": True})
    return SampleGraph(
        model=model,
        run=run,
        shared_nodes={
            "Model": pa.table({"id": [model], "arch": [arch], "weights": ["none:seed0"], "input_size": [224]}),
            "Layer": pa.Table.from_pylist(layer_rows),
            "Filter": pa.table(
                {"id": filter_ids, "layer": filter_layer, "channel": [int(f.rsplit("/f", 1)[1]) for f in filter_ids]}
            ),
            "Image": images,
        },
        shared_rels={
            "OF_MODEL": pa.table({"from": [r["id"] for r in layer_rows], "to": [model] * len(layer_rows)}),
            "IN_LAYER": pa.table({"from": filter_ids, "to": filter_layer}),
        },
        nodes={"Pattern": patterns},
        rels={"OF_FILTER": of_filter, "PARENT": parent, "FIRES_ON": fires},
    )
