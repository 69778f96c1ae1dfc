"""Local graph algorithms on subgraphs pulled from the store into networkx.

Co-activation paths follow PARENT edges (child pattern -> parent pattern, one layer up). An edge's strength is
its co-activation weight normalised over the child's parents (so it reads as "how much of the child's support
comes from this parent"); a path's score is the product of its edges' strengths, and the best paths are those
with the highest score (the lowest sum of -log strength).
"""

from __future__ import annotations

import heapq
import itertools
import math
import pathlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pyarrow as pa

from kgexplain.errors import StoreError, UsageError
from kgexplain.store import browse
from kgexplain.store.base import GraphStore
from kgexplain.workspace import temporary_beside

EDGE_COLUMNS = ["child", "parent", "weight", "dx", "dy"]


def _up_query(hops: int) -> str:
    # Variable-length bounds cannot be parameters in Cypher; ``hops`` is a validated int.
    return (
        f"MATCH (a:Pattern {{id: $id}})-[:PARENT*0..{hops - 1}]->(b:Pattern)-[e:PARENT]->(c:Pattern) "
        "RETURN DISTINCT b.id AS child, c.id AS parent, e.weight AS weight, e.dx AS dx, e.dy AS dy"
    )


def _down_query(hops: int) -> str:
    return (
        f"MATCH (c:Pattern)-[e:PARENT]->(b:Pattern)-[:PARENT*0..{hops - 1}]->(a:Pattern {{id: $id}}) "
        "RETURN DISTINCT c.id AS child, b.id AS parent, e.weight AS weight, e.dx AS dx, e.dy AS dy"
    )


def _down_totals_query(hops: int) -> str:
    return (
        f"MATCH (c:Pattern)-[:PARENT*1..{hops}]->(a:Pattern {{id: $id}}) WITH DISTINCT c "
        "MATCH (c)-[e:PARENT]->(:Pattern) RETURN c.id AS child, sum(e.weight) AS total"
    )


@dataclass
class Path:
    nodes: list[str]
    score: float  # product of edge strengths, in (0, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"hops": len(self.nodes) - 1, "score": self.score, "path": " -> ".join(self.nodes)}


def _layer_of(store: GraphStore, pattern_id: str) -> tuple[str, str]:
    rows = store.query("MATCH (p:Pattern) WHERE p.id = $id RETURN p.layer, p.run", {"id": pattern_id}).rows
    if not rows:
        raise StoreError(f"no pattern {pattern_id!r} in the store", hint="`kgexplain patterns` lists pattern ids")
    return rows[0][0], rows[0][1]


@dataclass
class Neighbourhood:
    """PARENT edges around a pattern, as columns; ``strength`` = weight / the child's total parent weight."""

    child: list[str]
    parent: list[str]
    weight: np.ndarray
    dx: list[Any]
    dy: list[Any]
    strength: np.ndarray

    @property
    def cost(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return -np.log(self.strength)

    def successors(self, reverse: bool = False) -> dict[str, list[tuple[str, float]]]:
        out: dict[str, list[tuple[str, float]]] = {}
        src, dst = (self.parent, self.child) if reverse else (self.child, self.parent)
        for a, b, c in zip(src, dst, self.cost.tolist(), strict=True):
            out.setdefault(a, []).append((b, c))
        return out

    def to_networkx(self, start: str | None = None) -> nx.DiGraph:
        g = nx.DiGraph()
        if start is not None:
            g.add_node(start)
        cost = self.cost.tolist()
        g.add_edges_from(
            (a, b, {"weight": float(w), "dx": x, "dy": y, "strength": float(s), "cost": c})
            for a, b, w, x, y, s, c in zip(
                self.child,
                self.parent,
                self.weight.tolist(),
                self.dx,
                self.dy,
                self.strength.tolist(),
                cost,
                strict=True,
            )
        )
        return g


def neighbourhood(store: GraphStore, start: str, hops: int, direction: str = "up") -> Neighbourhood:
    """PARENT edges within ``hops`` of ``start`` (``up``: towards parents, ``down``: children, ``both``).

    One variable-length query per direction, read as Arrow columns.
    """
    if direction not in ("up", "down", "both"):
        raise UsageError("direction must be up, down or both")
    hops = int(hops)
    if hops < 1:
        raise UsageError("--max-hops must be at least 1")
    _layer_of(store, start)  # an unknown id is an error, not a graph of one node (`graph graphml --around`)
    tables = []
    totals_child: list[str] = []
    totals_value: list[float] = []
    if direction in ("up", "both"):
        tables.append(store.fetch_table(_up_query(hops), {"id": start}, EDGE_COLUMNS))
    if direction in ("down", "both"):
        tables.append(store.fetch_table(_down_query(hops), {"id": start}, EDGE_COLUMNS))
        t = store.fetch_table(_down_totals_query(hops), {"id": start}, ["child", "total"])
        totals_child, totals_value = (
            t.column("child").to_pylist(),
            [float(v or 0) for v in t.column("total").to_pylist()],
        )
    if len(tables) == 1:
        t = tables[0]  # DISTINCT: no duplicate edges
    else:
        both = pa.concat_tables(tables)
        t = both.group_by(["child", "parent"]).aggregate([(c, "max") for c in ("weight", "dx", "dy")])
        t = t.rename_columns(
            [{"weight_max": "weight", "dx_max": "dx", "dy_max": "dy"}.get(c, c) for c in t.column_names]
        )
    cols = {c: t.column(c).to_pylist() for c in ("child", "parent", "dx", "dy")}
    weight = np.nan_to_num(np.maximum(np.asarray(t.column("weight").to_numpy(zero_copy_only=False), np.float64), 0.0))
    # Total parent weight per child: from the edges themselves (going up, a child's parents are all here),
    # overridden by the queried totals for children found going down.
    names, inverse = (
        np.unique(np.asarray(cols["child"], dtype=object), return_inverse=True)
        if cols["child"]
        else (np.zeros(0, object), np.zeros(0, np.int64))
    )
    sums = np.bincount(inverse, weights=weight, minlength=len(names)) if len(names) else np.zeros(0)
    queried = dict(zip(totals_child, totals_value, strict=True))
    if queried:
        sums = np.asarray([queried.get(n, s) for n, s in zip(names.tolist(), sums.tolist(), strict=True)])
    total = sums[inverse] if len(names) else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(total > 0, weight / np.where(total > 0, total, 1.0), 0.0)
    return Neighbourhood(cols["child"], cols["parent"], weight, cols["dx"], cols["dy"], strength)


def best_paths(
    store: GraphStore,
    start: str,
    target: str | None = None,
    *,
    max_hops: int = 3,
    k: int = 5,
    direction: str = "up",
    to_layer: str | None = None,
    beam: int = 2000,
) -> list[Path]:
    """The ``k`` strongest co-activation paths from ``start`` (to ``target`` / ending in ``to_layer``); k <= 0: all."""
    if max_hops < 1:
        raise UsageError("--max-hops must be at least 1")
    _layer_of(store, start)
    if target is not None:
        _layer_of(store, target)
        for d in ("up", "down") if direction != "down" else ("down", "up"):
            hood = neighbourhood(store, start, max_hops, d)
            g = hood.to_networkx(start)
            if target in g:
                return _k_shortest(g if d == "up" else g.reverse(copy=True), start, target, k, max_hops)
        return []
    if to_layer is not None:
        known = [str(lay["layer"]) for lay in browse.run_layers(store, _layer_of(store, start)[1])]
        if to_layer not in known:
            raise UsageError(f"no layer {to_layer!r} in this run", hint=f"its layers: {', '.join(known)}")
    hood = neighbourhood(store, start, max_hops, direction)
    succ = hood.successors(reverse=direction == "down")
    layers = _layers(store, set(hood.child) | set(hood.parent)) if to_layer else {}
    found: list[tuple[float, int, tuple[str, ...]]] = []
    level: list[tuple[float, tuple[str, ...]]] = [(0.0, (start,))]
    for _ in range(max_hops):
        nxt = [
            (cost + c, (*nodes, nb))
            for cost, nodes in level
            for nb, c in succ.get(nodes[-1], ())
            if nb not in nodes and not math.isinf(c)
        ]
        level = heapq.nsmallest(beam, nxt, key=lambda t: t[0]) if len(nxt) > beam else nxt
        found.extend(
            (cost, len(nodes), nodes) for cost, nodes in level if to_layer is None or layers.get(nodes[-1]) == to_layer
        )
        if not level:
            break
    keep = found if k <= 0 else heapq.nsmallest(k, found, key=lambda t: (t[0], t[1]))  # k <= 0: all
    keep = sorted(keep, key=lambda t: (t[0], t[1]))
    return [Path(list(nodes), math.exp(-cost)) for cost, _n, nodes in keep]


def _k_shortest(g: nx.DiGraph, start: str, target: str, k: int, max_hops: int) -> list[Path]:
    out = []
    try:
        for nodes in nx.shortest_simple_paths(g, start, target, weight="cost"):
            if len(nodes) - 1 > max_hops:
                continue
            cost = sum(g.edges[a, b]["cost"] for a, b in itertools.pairwise(nodes))
            out.append(Path(list(nodes), math.exp(-cost)))
            if len(out) >= k:
                break
    except nx.NetworkXNoPath:
        return []
    return out


def _layers(store: GraphStore, ids: Iterable[str]) -> dict[str, str]:
    ids = list(ids)
    if not ids:
        return {}
    return {
        r[0]: r[1]
        for r in store.query("UNWIND $ids AS i MATCH (p:Pattern {id: i}) RETURN p.id, p.layer", {"ids": ids}).rows
    }


def run_subgraph(store: GraphStore, run: str, layers: list[str] | None = None) -> nx.DiGraph:
    """All patterns (optionally of some layers) of a run and the PARENT edges among them."""
    params: dict[str, Any] = {"run": run}
    where = "p.run = $run"
    if layers:
        where += " AND p.layer IN $layers"
        params["layers"] = list(layers)
    g = nx.DiGraph()
    for r in store.query(f"MATCH (p:Pattern) WHERE {where} RETURN p.id, p.layer, p.filter, p.score", params).rows:
        g.add_node(r[0], layer=r[1], filter=r[2], score=r[3])
    if not g.number_of_nodes():
        raise StoreError(
            f"no patterns for run {run!r}" + (f" in layers {layers}" if layers else ""),
            hint="`kgexplain runs` lists runs; `kgexplain stats` the layers",
        )
    edge_where = "a.run = $run" + (" AND a.layer IN $layers AND b.layer IN $layers" if layers else "")
    for r in store.query(
        f"MATCH (a:Pattern)-[e:PARENT]->(b:Pattern) WHERE {edge_where} RETURN a.id, b.id, e.weight, e.dx, e.dy", params
    ).rows:
        g.add_edge(r[0], r[1], weight=float(r[2] or 0.0), dx=r[3], dy=r[4])
    return g


def centrality(g: nx.DiGraph, top: int = 20, method: str = "pagerank") -> list[dict[str, Any]]:
    """The most central patterns: PageRank over co-activation weights (or weighted in-degree)."""
    if method == "pagerank":
        scores = nx.pagerank(g, weight="weight") if g.number_of_edges() else {n: 0.0 for n in g}
    elif method == "degree":
        scores = dict(g.in_degree(weight="weight"))
    else:
        raise UsageError(f"unknown centrality {method!r}", hint="use pagerank or degree")
    best = sorted(scores.items(), key=lambda kv: -kv[1])[:top]
    return [
        {
            "pattern": n,
            "layer": g.nodes[n].get("layer"),
            "centrality": s,
            "children": g.in_degree(n),
            "parents": g.out_degree(n),
        }
        for n, s in best
    ]


def groups(g: nx.DiGraph, min_weight: float = 0.0, min_size: int = 2) -> list[dict[str, Any]]:
    """Connected groups of co-activating patterns (edges with weight >= ``min_weight``), largest first."""
    h = nx.Graph()
    h.add_nodes_from(g.nodes(data=True))
    h.add_edges_from((a, b) for a, b, d in g.edges(data=True) if (d.get("weight") or 0.0) >= min_weight)
    comps = [c for c in nx.connected_components(h) if len(c) >= min_size]
    comps.sort(key=len, reverse=True)
    out = []
    for i, c in enumerate(comps):
        layers: dict[str, int] = {}
        for n in c:
            layer = str(g.nodes[n].get("layer"))
            layers[layer] = layers.get(layer, 0) + 1
        top = max(c, key=lambda n: g.nodes[n].get("score") or 0.0)
        out.append({"group": i, "size": len(c), "layers": layers, "top_pattern": top})
    return out


def write_graphml(g: nx.DiGraph, path: str) -> None:
    """GraphML of a subgraph (attributes that are None are dropped: GraphML has no null), written whole to
    ``path`` or streamed to standard output for ``-``."""
    clean = nx.DiGraph()
    for n, d in g.nodes(data=True):
        clean.add_node(n, **{k: v for k, v in d.items() if v is not None})
    for a, b, d in g.edges(data=True):
        clean.add_edge(
            a, b, **{k: v for k, v in d.items() if v is not None and not (isinstance(v, float) and math.isinf(v))}
        )
    if path == "-":
        nx.write_graphml(clean, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    out = pathlib.Path(path).expanduser()
    try:
        tmp = temporary_beside(out)
        nx.write_graphml(clean, tmp)
        tmp.replace(out)
    except OSError as e:
        raise StoreError(f"cannot write {out}: {e.strerror or e}", hint="pass a writable file as OUT") from e
