"""And-Or graphs -> store rows and back: Part -> HAS_TEMPLATE -> Template -> USES (dx, dy, weight) -> Pattern, in a
run of its own that names the build it was learnt on."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from kgexplain.aog.model import AOGConfig, PartModel, Template
from kgexplain.errors import UsageError
from kgexplain.explanatory_graph.graph import ExplanatoryGraph
from kgexplain.store import GraphStore, RunRecord, queries
from kgexplain.store import ids as I


def aog_run_id(build: str, category: str, part: str) -> str:
    """``aog-<category>-<part>-<hash of the build>``. Where the readable form loses part of a name (characters other
    than lower-case letters, digits and '-', or more than 24 of them), the hash covers the names too: "tête" and
    "tôte" both read "t-te", and learning one replaced the other's run."""
    plain = all(I.slug(name) == name for name in (category, part))
    return f"aog-{I.slug(category)}-{I.slug(part)}-{I.digest(build if plain else [build, category, part])}"


def part_id(build: str, part: PartModel) -> str:
    return f"{build}/part/{part.category}/{part.name}"


def _pattern_ids(build: str, graph: ExplanatoryGraph, tpl: Template) -> list[str]:
    out = []
    for li, idx in zip(tpl.layer.tolist(), tpl.index.tolist(), strict=True):
        lp = graph.layers[li]
        out.append(I.pattern_id(build, lp.name, int(lp.filter[idx]), int(lp.k[idx])))
    return out


def part_rows(
    build: str, graph: ExplanatoryGraph, part: PartModel, run: str
) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """The Part and Template nodes and the HAS_TEMPLATE and USES relationships of a part learnt on ``build``."""
    pid = part_id(build, part)
    templates, has, uses = [], [], []
    for tpl in part.templates:
        tid = f"{pid}/t{tpl.k}"
        templates.append(
            {"id": tid, "run": run, "part": pid, "k": tpl.k, "example": tpl.example, "flipped": tpl.flipped}
        )
        has.append({"from": pid, "to": tid})
        for pat, (dx, dy), w in zip(
            _pattern_ids(build, graph, tpl), tpl.offset.tolist(), tpl.weight.tolist(), strict=True
        ):
            uses.append({"from": tid, "to": pat, "dx": float(dx), "dy": float(dy), "weight": float(w)})
    part_node = {
        "id": pid,
        "run": run,
        "name": part.name,
        "category": part.category,
        "box_w": float(part.box[0]),
        "box_h": float(part.box[1]),
    }
    nodes = {"Part": pa.Table.from_pylist([part_node]), "Template": pa.Table.from_pylist(templates)}
    rels = {"HAS_TEMPLATE": pa.Table.from_pylist(has), "USES": pa.Table.from_pylist(uses)}
    return nodes, rels


def _evidence(part: PartModel, graph: ExplanatoryGraph) -> dict[str, float]:
    """Each template pattern's evidence (a property of the pattern, shared by templates), by pattern key."""
    out: dict[str, float] = {}
    for t in part.templates:
        if t.evidence is None:
            continue
        for li, idx, e in zip(t.layer.tolist(), t.index.tolist(), t.evidence.tolist(), strict=True):
            lp = graph.layers[li]
            out[f"{lp.name}/{int(lp.filter[idx])}/{int(lp.k[idx])}"] = round(float(e), 5)
    return out


def part_record(
    run: str,
    build: str,
    model_id: str,
    part: PartModel,
    source: str,
    extra: dict[str, Any],
    counts: dict[str, int],
    graph: ExplanatoryGraph,
) -> RunRecord:
    """The Run node of a learnt part: the build, the part, the AOG settings and how it was learnt."""
    config = {
        "build": build,
        "part": part.name,
        "category": part.category,
        "size": part.size,
        "layers": part.layers,
        "aog": part.config.to_dict(),
        "facing": {str(t.k): t.faces for t in part.templates},
        "facing_from": part.facing_from,
        "dropped_templates": part.dropped,
        "evidence": _evidence(part, graph),
        "prior": part.prior,
        "calibration": part.calibration,
        "cues": part.cues,
        **extra,
    }
    return RunRecord(run, "aog", model_id, source, config, counts)


def _aog_configs(store: GraphStore) -> list[tuple[str, dict[str, Any]]]:
    """(run id, config) of every complete AOG run."""
    return [(str(r["id"]), json.loads(r["config"] or "{}")) for r in queries.complete_runs(store, "aog")]


def learnt_parts(store: GraphStore, build: str, category: str) -> list[str]:
    """Names of the parts learnt for ``category`` on ``build`` (sorted)."""
    configs = [c for _, c in _aog_configs(store)]
    return sorted({str(c["part"]) for c in configs if c.get("build") == build and c.get("category") == category})


def read_part(
    store: GraphStore, build: str, graph: ExplanatoryGraph, part: str, category: str | None = None
) -> PartModel:
    """The part's AOG as stored for ``build`` (whose mined graph is ``graph``)."""
    mine = [(rid, c) for rid, c in _aog_configs(store) if c.get("build") == build and c.get("part") == part]
    if category is not None:
        mine = [m for m in mine if m[1].get("category") == category]
    if not mine:
        raise UsageError(
            f"no AOG learnt for part {part!r} on run {build}", hint=f"run `kgexplain aog learn --part {part}` first"
        )
    if len(mine) > 1:
        cats = ", ".join(sorted(m[1]["category"] for m in mine))
        raise UsageError(f"part {part!r} is learnt for several categories ({cats})", hint="pass --category")
    run_id, cfg = mine[0]
    if "facing" not in cfg:
        raise UsageError(
            f"part {part!r} was learnt by an older kgexplain (one facing per template image, no calibration)",
            hint=f"learn it again with `kgexplain aog learn --part {part}`",
        )
    part_row = queries.part(store, run_id)
    if part_row is None:
        raise UsageError(f"the AOG run {run_id} holds no part", hint=f"run `kgexplain aog learn --part {part}` again")
    index = {
        (lp.name, int(f), int(kk)): (li, j)
        for li, lp in enumerate(graph.layers)
        for j, (f, kk) in enumerate(zip(lp.filter.tolist(), lp.k.tolist(), strict=True))
    }
    known = {f.name for f in AOGConfig.__dataclass_fields__.values()}
    model = PartModel(
        part,
        str(part_row["category"]),
        int(cfg["size"]),
        (float(part_row["w"]), float(part_row["h"])),
        [lp.name for lp in graph.layers],
        [],
        AOGConfig(**{k: v for k, v in cfg.get("aog", {}).items() if k in known}),
        dict(cfg.get("prior") or {}),
        dict(cfg.get("calibration") or {}),
        dict(cfg.get("cues") or {}),  # none from a part learnt before they were stored: the facing as before
        str(cfg.get("facing_from") or ""),
        list(cfg.get("dropped_templates") or []),
    )
    facing = cfg.get("facing") or {}
    evidence = cfg.get("evidence") or {}
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in queries.template_uses(store, run_id):
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
                facing.get(str(kk)),
                np.array([evidence[f"{r['layer']}/{int(r['filter'])}/{int(r['pk'])}"] for r in rs], np.float32)
                if evidence
                else None,
            )
        )
    return model
