from __future__ import annotations

import csv
import json
from pathlib import Path

import networkx as nx
import pytest

from kgexplain.errors import UsageError
from kgexplain.store import GraphStore, open_store
from kgexplain.store.sample_graph import SampleGraph, sample_graph, small
from kgexplain.store.transfer import export, push


def test_export_jsonl_csv_graphml(store: GraphStore, graph: SampleGraph, tmp_path: Path) -> None:
    graph.write(store)
    n_nodes = sum(len(t) for t in graph.shared_nodes.values()) + len(graph.nodes["Pattern"]) + 1  # + Run
    n_rels = sum(len(t) for t in (*graph.shared_rels.values(), *graph.rels.values())) + 1  # + USED_MODEL

    counts = export(store, "jsonl", tmp_path / "g.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert sum(1 for x in lines if x["kind"] == "node") == n_nodes
    assert sum(1 for x in lines if x["kind"] == "rel") == n_rels
    assert counts["PARENT"] == len(graph.rels["PARENT"])
    parent = next(x for x in lines if x["kind"] == "rel" and x["type"] == "PARENT")
    assert set(parent["props"]) >= {"dx", "dy", "weight"}

    export(store, "csv", tmp_path / "csv")
    with open(tmp_path / "csv" / "rels_PARENT.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(graph.rels["PARENT"]) and {"from", "to", "weight"} <= set(rows[0])

    export(store, "graphml", tmp_path / "g.graphml")
    g = nx.read_graphml(tmp_path / "g.graphml")
    assert g.number_of_nodes() == n_nodes and g.number_of_edges() == n_rels
    assert {d["_label"] for _, d in g.nodes(data=True)} >= {"Pattern", "Image", "Layer"}
    # Written as a stream, typed from the schema: numbers come back as numbers, JSON text (a run's config, with
    # quotes, <, > and &) as the same text.
    pattern = graph.nodes["Pattern"].to_pylist()[0]
    back = g.nodes[pattern["id"]]
    assert back["mu_x"] == pytest.approx(pattern["mu_x"]) and isinstance(back["mu_x"], float)
    assert back["k"] == pattern["k"] and isinstance(back["k"], int)
    run = store.fetch_table("MATCH (r:Run) RETURN r.id AS id, r.config AS config", {}, ["id", "config"]).to_pylist()[0]
    assert g.nodes[run["id"]]["config"] == run["config"] and '"' in run["config"]

    with pytest.raises(UsageError, match="unknown export format"):
        export(store, "xml", tmp_path / "x")


def test_export_one_run(store: GraphStore, tmp_path: Path) -> None:
    a, b = sample_graph(small(), seed=1, run_name="a"), sample_graph(small(), seed=2, run_name="b")
    a.write(store)
    b.write(store)
    counts = export(store, "jsonl", tmp_path / "a.jsonl", run=a.run.id)
    assert counts["Pattern"] == len(a.nodes["Pattern"]) and counts["Run"] == 1
    text = (tmp_path / "a.jsonl").read_text()
    assert a.run.id in text and b.run.id not in text


def test_push_is_idempotent(graph: SampleGraph, tmp_path: Path) -> None:
    with open_store(tmp_path / "src") as src:
        graph.write(src)
        with open_store(tmp_path / "dst") as dst:
            push(src, dst)
            first = dst.counts()
            push(src, dst)
            again = dst.counts()
            assert {k: v for k, v in again.items() if k != "Meta"} == {k: v for k, v in first.items() if k != "Meta"}
            assert first["Pattern"] == len(graph.nodes["Pattern"]) and first["PARENT"] == len(graph.rels["PARENT"])
            assert dst.run_status(graph.run.id) == "complete"
