"""Co-activation paths and graph algorithms against brute-force references."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import networkx as nx
import pyarrow as pa
import pytest

from kgexplain.store import GraphStore
from kgexplain.store.base import RunRecord
from kgexplain.store.graph import best_paths, centrality, groups, neighbourhood, run_subgraph, write_graphml
from kgexplain.store.sample_graph import SampleGraph


def reference_paths(graph: SampleGraph, start: str, max_hops: int, reverse: bool = False) -> list[tuple[float, list]]:
    rels = graph.rels["PARENT"].to_pylist()
    total: dict[str, float] = {}
    for r in rels:
        total[r["from"]] = total.get(r["from"], 0.0) + r["weight"]
    g = nx.DiGraph()
    for r in rels:
        s = r["weight"] / total[r["from"]]
        a, b = (r["to"], r["from"]) if reverse else (r["from"], r["to"])
        g.add_edge(a, b, strength=s)
    out = []
    if start not in g:
        return out
    for target in g.nodes:
        if target == start:
            continue
        for nodes in nx.all_simple_paths(g, start, target, cutoff=max_hops):
            score = math.prod(g.edges[a, b]["strength"] for a, b in itertools.pairwise(nodes))
            out.append((score, nodes))
    out.sort(key=lambda t: (-t[0], len(t[1])))
    return out


def test_best_paths_up_match_brute_force(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    start = graph.nodes["Pattern"].column("id")[1].as_py()  # a bottom-layer pattern
    ref = reference_paths(graph, start, 2)
    got = best_paths(store, start, max_hops=2, k=6)
    assert [p.score for p in got] == pytest.approx([s for s, _ in ref[:6]])
    assert got[0].nodes == ref[0][1]


def test_best_paths_down_match_brute_force(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    top = [i for i in graph.nodes["Pattern"].column("id").to_pylist() if "/conv5_1/" in i]
    start = max(top, key=lambda t: sum(1 for x in graph.rels["PARENT"].column("to").to_pylist() if x == t))
    ref = reference_paths(graph, start, 2, reverse=True)
    got = best_paths(store, start, max_hops=2, k=5, direction="down")
    assert [p.score for p in got] == pytest.approx([s for s, _ in ref[:5]])


def test_paths_to_a_target_and_to_a_layer(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    start = graph.nodes["Pattern"].column("id")[0].as_py()
    ref = reference_paths(graph, start, 2)
    target = ref[-1][1][-1]
    via_target = best_paths(store, start, target, max_hops=2, k=3)
    want = [s for s, nodes in ref if nodes[-1] == target][:3]
    assert [p.score for p in via_target] == pytest.approx(want)
    assert all(p.nodes[-1] == target for p in via_target)
    to_layer = best_paths(store, start, max_hops=2, k=0, to_layer="conv5_1")
    assert to_layer and all("/conv5_1/" in p.nodes[-1] for p in to_layer)
    assert len(to_layer) == sum(1 for _, nodes in ref if "/conv5_1/" in nodes[-1])


def test_neighbourhood_strengths_sum_to_one_per_child(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    start = graph.nodes["Pattern"].column("id")[0].as_py()
    hood = neighbourhood(store, start, 2, "up")
    sums: dict[str, float] = {}
    for child, s in zip(hood.child, hood.strength.tolist(), strict=True):
        sums[child] = sums.get(child, 0.0) + s
    assert sums and all(v == pytest.approx(1.0) for v in sums.values())


def _tiny_run(store: GraphStore) -> str:
    """A hub pattern with four children and a separate pair: centrality and groups are known."""
    store.ensure_nodes("Model", {"id": ["m@x"], "arch": ["m"]})
    ids = ["r/L2/f0/p0", "r/L1/f0/p0", "r/L1/f1/p0", "r/L1/f2/p0", "r/L1/f3/p0", "r/L2/f1/p0", "r/L1/f4/p0"]
    layers = ["L2", "L1", "L1", "L1", "L1", "L2", "L1"]
    nodes = {"Pattern": pa.table({"id": ids, "layer": layers, "score": [5.0, 1, 1, 1, 1, 2.0, 1]})}
    rels = {
        "PARENT": pa.table(
            {"from": [*ids[1:5], ids[6]], "to": [ids[0]] * 4 + [ids[5]], "weight": [1.0, 1.0, 1.0, 0.1, 1.0]}
        )
    }
    store.write_run(RunRecord("r", "eg", "m@x"), nodes, rels)
    return "r"


def test_centrality_and_groups(store: GraphStore, tmp_path: Path) -> None:
    run = _tiny_run(store)
    g = run_subgraph(store, run)
    assert centrality(g, top=1)[0]["pattern"] == "r/L2/f0/p0"
    assert centrality(g, top=1, method="degree")[0]["pattern"] == "r/L2/f0/p0"
    found = groups(g)
    assert [x["size"] for x in found] == [5, 2] and found[0]["top_pattern"] == "r/L2/f0/p0"
    assert [x["size"] for x in groups(g, min_weight=0.5)] == [4, 2]  # the weak edge no longer joins
    out = tmp_path / "g.graphml"
    write_graphml(g, str(out))
    back = nx.read_graphml(out)
    assert back.number_of_nodes() == 7 and back.number_of_edges() == 5
