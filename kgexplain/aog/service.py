"""`aog learn` and `localize` on a store: reload a build (model, graph, framing), learn a part's AOG from
annotated examples and persist it as Part / Template / USES, and localise parts on new images."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.aog.learn import learn_part
from kgexplain.aog.model import AOGConfig, PartModel, Template
from kgexplain.aog.run import Detector, FramedBatch, frame, to_source
from kgexplain.aog.vote import Localisation, localise
from kgexplain.data.base import Affine, Framing, ImageSource
from kgexplain.data.select import open_source
from kgexplain.data.subset import Subset
from kgexplain.data.synth import BACKGROUND
from kgexplain.errors import DataError, StoreError, UsageError
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraph, ExplanatoryGraphMiner
from kgexplain.models.registry import ModelHandle, load_model
from kgexplain.progress import Progress, say, task
from kgexplain.store import GraphStore, RunRecord
from kgexplain.store import ids as I


@dataclass
class Build:
    """A stored explanatory-graph build, ready to run on new images."""

    run: str
    model_id: str
    config: dict[str, Any]
    handle: ModelHandle
    graph: ExplanatoryGraph
    framing: Framing  # how the build framed its images
    detector: Detector

    def framing_for(self, has_boxes: bool) -> Framing:
        """Crop to the object box when the images come with one and the build did too; else the whole image."""
        return Framing(self.framing.size, "box" if has_boxes and self.framing.crop == "box" else "none")


def latest_build(store: GraphStore) -> str:
    rows = (
        store.query(
            "MATCH (r:Run) WHERE r.kind = 'eg' AND r.status = 'complete' RETURN r.id AS id ORDER BY r.finished DESC"
        ).records()
        if store._label_exists("Run")
        else []
    )
    if not rows:
        raise UsageError(f"no explanatory graph in {store.url}", hint="run `kgexplain build` first")
    return str(rows[0]["id"])


def _run_row(store: GraphStore, run: str) -> dict[str, Any]:
    rows = store.query(
        "MATCH (r:Run) WHERE r.id = $id RETURN r.kind AS kind, r.model AS model, r.status AS status, "
        "r.config AS config, r.stats AS stats",
        {"id": run},
    ).records()
    if not rows:
        raise UsageError(f"no run {run!r} in {store.url}", hint="`kgexplain runs` lists them")
    return rows[0]


def open_build(store: GraphStore, run: str | None = None, device: str = "cpu") -> Build:
    run = run or latest_build(store)
    row = _run_row(store, run)
    if row["kind"] != "eg" or row["status"] != "complete":
        raise UsageError(f"run {run!r} is not a complete explanatory-graph build", hint="`kgexplain runs` lists them")
    config = json.loads(row["config"] or "{}")
    stats = json.loads(row["stats"] or "{}")
    ref = stats.get("graph")
    load = config.get("load")
    if not ref or not load:
        raise StoreError(
            f"run {run!r} was built by an older kgexplain without its graph file", hint="run `kgexplain build` again"
        )
    path = store.artifacts.path(ref["path"])
    if not path.exists():
        raise StoreError(f"the graph file of run {run!r} is missing: {path}", hint="run `kgexplain build` again")
    handle = load_model(load["model"], load["weights"])
    if handle.identity != config.get("model"):
        raise UsageError(
            f"the weights of {load['model']} changed since run {run!r} was built",
            hint="rebuild with `kgexplain build`, or restore the checkpoint it used",
        )
    graph = ExplanatoryGraph.load(path)
    eg = EGConfig.from_dict(graph.config or config.get("config", {}))
    framing = Framing(int(config["input_size"]), "box" if "crop_box" in str(config.get("framing")) else "none")
    miner = ExplanatoryGraphMiner(eg, device=device)
    return Build(run, str(row["model"]), config, handle, graph, framing, Detector(handle, graph, miner, device))


def build_images(store: GraphStore, build: Build) -> ImageSource | None:
    """The images the build mined (the synthetic workload only: user data sets are not reopened)."""
    synth = build.config.get("synthetic")
    if not synth:
        return None
    both = open_source(
        synth=True,
        data_dir=Path(store.artifacts.root) / "data",  # where the build wrote them (Workspace.data)
        n=2 * int(synth["n"]),
        seed=int(synth["seed"]),
        categories=[synth["category"], BACKGROUND],
    )
    return Subset.by_label(both, [synth["category"]])


def aog_run_id(build: str, category: str, part: str) -> str:
    return f"aog-{I.slug(category)}-{I.slug(part)}-{I.digest(build)}"


@dataclass
class Learnt:
    part: PartModel
    run: str
    examples: list[str]
    unlabelled: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)


def pick_examples(source: ImageSource, part: str, k: int, seed: int | None) -> list[int]:
    """The first K records with the part annotated (in file order), or K of them chosen by ``seed``."""
    have = [i for i in range(len(source)) if part in source.record(i).keypoints]
    if not have:
        names = sorted({n for i in range(len(source)) for n in source.record(i).keypoints})
        raise DataError(
            f"no annotated '{part}' in {source.name}",
            hint=f"annotated parts: {', '.join(names) or 'none'}; add {part!r} keypoints to the examples",
        )
    if len(have) < k:
        raise DataError(
            f"only {len(have)} images have '{part}' annotated, {k} needed", hint="lower --k or annotate more"
        )
    if seed is None:
        return have[:k]
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(have, k, replace=False))


def learn(
    store: GraphStore,
    build: Build,
    part: str,
    examples: ImageSource | None = None,
    k: int = 3,
    category: str | None = None,
    seed: int | None = None,
    unlabelled: ImageSource | None = None,
    config: AOGConfig | None = None,
    progress: Progress | None = None,
) -> Learnt:
    """Learn ``part`` from K annotated examples (default: the build's own synthetic ground truth) and store it."""
    t0 = time.perf_counter()
    own = build_images(store, build)
    if examples is None:
        if own is None:
            raise UsageError("this build's images carry no annotations", hint="pass --examples FILE (annotations JSON)")
        examples = own
        seed = 0 if seed is None else seed
    chosen = pick_examples(examples, part, k, seed)
    has_boxes = all(examples.record(i).box is not None for i in chosen)
    framing = build.framing_for(has_boxes)
    ex = frame(examples, chosen, framing)
    centres = np.array([f[part] for f in ex.keypoints], np.float64)
    cat = (
        category
        or examples.record(chosen[0]).label
        or (build.config.get("synthetic") or {}).get("category")
        or "object"
    )
    pool = unlabelled if unlabelled is not None else (own if own is not None else examples)
    rows = list(range(len(pool)))
    say(progress, f"learning '{part}' ({cat}) from {k} examples; growing on {len(rows)} unlabelled images")
    pool_framing = build.framing_for(all(pool.record(i).box is not None for i in rows[:50]))
    batch = frame(pool, rows, pool_framing)
    det_ex = build.detector(ex.images, ex.ids)
    det_u, det_uf = build.detector.both(batch)
    model = learn_part(part, cat, det_ex, centres, ex.ids, framing.size, None, config, det_u, det_uf)
    run_id = aog_run_id(build.run, cat, part)
    counts = store_part(
        store, build, model, run_id, {"k": k, "seed": seed, "examples": ex.ids, "source": examples.name}
    )
    return Learnt(model, run_id, ex.ids, len(rows), time.perf_counter() - t0, counts)


def _pattern_ids(build: Build, tpl: Template) -> list[str]:
    out = []
    for li, idx in zip(tpl.layer.tolist(), tpl.index.tolist(), strict=True):
        lp = build.graph.layers[li]
        out.append(I.pattern_id(build.run, lp.name, int(lp.filter[idx]), int(lp.k[idx])))
    return out


def store_part(store: GraphStore, build: Build, part: PartModel, run_id: str, extra: dict[str, Any]) -> dict[str, int]:
    """Write the part's AOG as its own run (re-learning replaces it): Part -> Template -> USES -> Pattern."""
    part_id = f"{build.run}/part/{part.category}/{part.name}"
    templates, has, uses = [], [], []
    for tpl in part.templates:
        tid = f"{part_id}/t{tpl.k}"
        templates.append(
            {"id": tid, "run": run_id, "part": part_id, "k": tpl.k, "example": tpl.example, "flipped": tpl.flipped}
        )
        has.append({"from": part_id, "to": tid})
        for pid, (dx, dy), w in zip(_pattern_ids(build, tpl), tpl.offset.tolist(), tpl.weight.tolist(), strict=True):
            uses.append({"from": tid, "to": pid, "dx": float(dx), "dy": float(dy), "weight": float(w)})
    nodes = {
        "Part": pa.Table.from_pylist(
            [
                {
                    "id": part_id,
                    "run": run_id,
                    "name": part.name,
                    "category": part.category,
                    "box_w": float(part.box[0]),
                    "box_h": float(part.box[1]),
                }
            ]
        ),
        "Template": pa.Table.from_pylist(templates),
    }
    rels = {"HAS_TEMPLATE": pa.Table.from_pylist(has), "USES": pa.Table.from_pylist(uses)}
    record = RunRecord(
        run_id,
        "aog",
        build.model_id,
        str(extra.get("source", "")),
        {
            "build": build.run,
            "part": part.name,
            "category": part.category,
            "size": part.size,
            "layers": part.layers,
            "aog": part.config.to_dict(),
            **extra,
        },
        {"templates": len(templates), "uses": len(uses)},
    )
    store.write_run(record, nodes, rels)
    return {"parts": 1, "templates": len(templates), "uses": len(uses)}


def load_part(store: GraphStore, build: Build, part: str, category: str | None = None) -> PartModel:
    """The part's AOG as stored for this build."""
    rows = (
        store.query(
            "MATCH (r:Run) WHERE r.kind = 'aog' AND r.status = 'complete' RETURN r.id AS id, r.config AS config"
        ).records()
        if store._label_exists("Run")
        else []
    )
    configs = [(r["id"], json.loads(r["config"] or "{}")) for r in rows]
    mine = [(rid, c) for rid, c in configs if c.get("build") == build.run and c.get("part") == part]
    if category is not None:
        mine = [m for m in mine if m[1].get("category") == category]
    if not mine:
        raise UsageError(
            f"no AOG learnt for part {part!r} on run {build.run}", hint=f"run `kgexplain aog learn --part {part}` first"
        )
    if len(mine) > 1:
        cats = ", ".join(sorted(m[1]["category"] for m in mine))
        raise UsageError(f"part {part!r} is learnt for several categories ({cats})", hint="pass --category")
    run_id, cfg = mine[0]
    part_row = store.query(
        "MATCH (p:Part) WHERE p.run = $run RETURN p.id AS id, p.category AS category, p.box_w AS w, p.box_h AS h",
        {"run": run_id},
    ).records()[0]
    uses = store.query(
        "MATCH (t:Template)-[u:USES]->(q:Pattern) WHERE t.run = $run "
        "RETURN t.k AS k, t.example AS example, t.flipped AS flipped, q.layer AS layer, q.filter AS filter, "
        "q.k AS pk, u.dx AS dx, u.dy AS dy, u.weight AS weight ORDER BY k, weight DESC",
        {"run": run_id},
    ).records()
    index = {
        (lp.name, int(f), int(kk)): (li, j)
        for li, lp in enumerate(build.graph.layers)
        for j, (f, kk) in enumerate(zip(lp.filter.tolist(), lp.k.tolist(), strict=True))
    }
    known = {f.name for f in AOGConfig.__dataclass_fields__.values()}
    model = PartModel(
        part,
        str(part_row["category"]),
        int(cfg["size"]),
        (float(part_row["w"]), float(part_row["h"])),
        [lp.name for lp in build.graph.layers],
        [],
        AOGConfig(**{k: v for k, v in cfg.get("aog", {}).items() if k in known}),
    )
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in uses:
        by_k.setdefault(int(r["k"]), []).append(r)
    for kk, rs in sorted(by_k.items()):
        li_idx = np.array([index[(r["layer"], int(r["filter"]), int(r["pk"]))] for r in rs], np.int64)
        model.templates.append(
            Template(
                kk,
                str(rs[0]["example"]),
                bool(rs[0]["flipped"]),
                li_idx[:, 0],
                li_idx[:, 1],
                np.array([[r["dx"], r["dy"]] for r in rs], np.float32),
                np.array([r["weight"] for r in rs], np.float32),
            )
        )
    return model


@dataclass
class Located:
    image: str
    result: dict[str, Any]  # JSON-ready, source-image pixels
    loc: Localisation
    affine: Affine  # source -> framed pixels of this image


def localise_source(
    build: Build, part: PartModel, source: ImageSource, chunk: int = 64, progress: Progress | None = None
) -> tuple[list[Located], FramedBatch | None, dict[str, float]]:
    """Localise ``part`` on every image of ``source`` (cropped to its box when it has one)."""
    out: list[Located] = []
    timings = {"frame_s": 0.0, "detect_s": 0.0, "vote_s": 0.0}
    last: FramedBatch | None = None
    with task(progress, "localise", len(source), "img") as advance:
        for lo in range(0, len(source), chunk):
            idx = list(range(lo, min(lo + chunk, len(source))))
            t = time.perf_counter()
            has_boxes = all(source.record(i).box is not None for i in idx)
            batch = frame(source, idx, build.framing_for(has_boxes))
            timings["frame_s"] += time.perf_counter() - t
            t = time.perf_counter()
            det, det_f = build.detector.both(batch)
            timings["detect_s"] += time.perf_counter() - t
            t = time.perf_counter()
            locs = localise(det, part, det_f if part.config.flip else None)
            timings["vote_s"] += time.perf_counter() - t
            for j, loc in enumerate(locs):
                out.append(Located(batch.ids[j], to_source(loc, batch.affines[j]), loc, batch.affines[j]))
            last = batch
            advance(len(idx))
    return out, last, timings
