"""Behaviour every backend must have (run against Neo4j too with -m neo4j)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kgexplain.errors import StoreError, UsageError
from kgexplain.store import GraphStore, queries
from kgexplain.store.base import RunRecord
from kgexplain.store.sample_graph import SampleGraph


def _expected(graph: SampleGraph) -> dict[str, int]:
    return {
        "Pattern": len(graph.nodes["Pattern"]),
        "PARENT": len(graph.rels["PARENT"]),
        "FIRES_ON": len(graph.rels["FIRES_ON"]),
        "OF_FILTER": len(graph.rels["OF_FILTER"]),
        "Filter": len(graph.shared_nodes["Filter"]),
        "Layer": len(graph.shared_nodes["Layer"]),
        "Image": len(graph.shared_nodes["Image"]),
        "Run": 1,
        "Model": 1,
    }


def test_write_then_read_back(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    counts = store.counts()
    for key, n in _expected(graph).items():
        assert counts[key] == n, key
    assert store.run_status(graph.run.id) == "complete"
    pid = graph.nodes["Pattern"].column("id")[0].as_py()
    p = queries.pattern(store, pid, limit=50)
    want = graph.rels["PARENT"].filter(pa.compute.equal(graph.rels["PARENT"].column("from"), pid))
    assert {r["pattern"] for r in p["parents"]} == set(want.column("to").to_pylist())
    assert len(p["images"]) == 4 and [r["rank"] for r in p["images"]] == [0, 1, 2, 3]


def test_writing_the_same_run_again_changes_nothing(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    first = store.counts()
    graph.write(store)
    second = store.counts()
    assert {k: v for k, v in second.items() if k != "Meta"} == {k: v for k, v in first.items() if k != "Meta"}
    assert store.run_status(graph.run.id) == "complete"


def test_a_rewritten_run_replaces_its_rows(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    fewer = graph.nodes["Pattern"].slice(0, 10)
    keep = set(fewer.column("id").to_pylist())
    rels = {
        name: t.filter(
            pa.array(
                [
                    f in keep and (name != "PARENT" or t2 in keep)
                    for f, t2 in zip(t.column("from").to_pylist(), t.column("to").to_pylist(), strict=True)
                ]
            )
        )
        for name, t in graph.rels.items()
    }
    store.write_run(graph.run, {"Pattern": fewer}, rels)
    counts = store.counts()
    assert counts["Pattern"] == 10
    assert counts["FIRES_ON"] == len(rels["FIRES_ON"]) and counts["PARENT"] == len(rels["PARENT"])
    assert counts["Filter"] == len(graph.shared_nodes["Filter"])  # shared nodes stay


def test_shared_nodes_are_inserted_once(store: GraphStore, graph: SampleGraph) -> None:
    images = graph.shared_nodes["Image"]
    store.ensure_nodes("Model", graph.shared_nodes["Model"])
    assert store.ensure_nodes("Image", images) == len(images)
    assert store.ensure_nodes("Image", images) == 0
    doubled = pa.concat_tables([images.slice(0, 3), images.slice(0, 3)])
    assert store.ensure_nodes("Image", doubled) == 0
    store.ensure_nodes("Layer", graph.shared_nodes["Layer"])
    assert store.ensure_rels("OF_MODEL", graph.shared_rels["OF_MODEL"]) == len(graph.shared_rels["OF_MODEL"])
    assert store.ensure_rels("OF_MODEL", graph.shared_rels["OF_MODEL"]) == 0


def test_deleting_a_run_keeps_shared_nodes(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    assert store.delete_run(graph.run.id)
    counts = store.counts()
    assert counts["Pattern"] == 0 and counts["PARENT"] == 0 and counts["Run"] == 0
    assert counts["Image"] == len(graph.shared_nodes["Image"])
    assert not store.delete_run(graph.run.id)
    graph.write(store)  # a deleted run can be written again
    assert store.counts()["Pattern"] == len(graph.nodes["Pattern"])


def test_batches_are_checked_against_the_schema(store: GraphStore, graph: SampleGraph) -> None:
    with pytest.raises(StoreError, match=r"columns \['colour'\] are not in the schema"):
        store.ensure_nodes("Image", {"id": ["a"], "colour": ["red"]})
    with pytest.raises(StoreError, match="unknown node label 'Pixel'"):
        store.ensure_nodes("Pixel", {"id": ["a"]})
    with pytest.raises(StoreError, match="rows have no 'id'"):
        store.ensure_nodes("Image", {"id": [None]})
    with pytest.raises(StoreError, match="Image is not run-scoped"):
        store.write_run(RunRecord("r", "eg"), {"Image": {"id": ["x"]}}, {})


def test_values_are_parameters_not_text(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    evil = "x' OR 1=1 RETURN 1 //"
    assert store.query("MATCH (p:Pattern) WHERE p.id = $id RETURN p.id", {"id": evil}).rows == []


def test_nodes_relationships_and_paths_come_back_alike_from_every_backend(
    store: GraphStore, graph: SampleGraph
) -> None:
    """A label or type, then the properties the object has: no engine ids, no null columns of other types."""
    graph.write(store)
    q = "MATCH path = (c:Pattern)-[e:PARENT]->(p:Pattern) RETURN c, e, path ORDER BY c.id, p.id LIMIT 1"
    [[child, edge, path]] = store.query(q).rows
    assert child["_label"] == "Pattern" and child["id"].startswith(graph.run.id) and "layer" in child
    assert edge["_type"] == "PARENT" and set(edge) >= {"dx", "dy", "weight"} and "patch" not in edge
    assert path["nodes"][0] == child and path["rels"] == [edge]
    assert not [k for obj in (child, edge) for k, v in obj.items() if v is None or k.lower() in ("_id", "_src")]


def test_read_queries_cannot_write(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    with pytest.raises(StoreError, match="writes to the store"):
        store.query("MATCH (p:Pattern) DETACH DELETE p")
    assert store.counts()["Pattern"] == len(graph.nodes["Pattern"])


def test_syntax_errors_are_one_line(store: GraphStore) -> None:
    with pytest.raises(StoreError) as info:
        store.query("MATCH (p:Pattern RETURN p")
    assert "syntax" in str(info.value).lower() and "\n" not in str(info.value)


def test_patterns_are_ranked_and_filtered(store: GraphStore, graph: SampleGraph) -> None:
    graph.write(store)
    rows = queries.patterns(store, layer="conv4_2", top=5)
    assert len(rows) == 5 and {r["layer"] for r in rows} == {"conv4_2"}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(r["filter"] == 2 for r in queries.patterns(store, filter=2, layer="conv4_1"))
    assert queries.patterns(store, model="vgg16", top=1)
    with pytest.raises(UsageError, match="no patterns of model 'resnet50'"):  # a name the store has no pattern of
        queries.patterns(store, model="resnet50")
    with pytest.raises(StoreError, match="no pattern"):
        queries.pattern(store, "nope")


def test_run_ids_spell_the_model_and_data_names_out() -> None:
    """A run id names its model and data readably (efficientnet_lite0 was cut to efficientnet-lit); only names past
    24 characters are shortened, and the hash still tells runs apart."""
    from kgexplain.store import ids as I

    assert I.run_id("eg", "efficientnet_lite0", "my-birds", {"a": 1}).startswith("eg-efficientnet-lite0-my-birds-")
    long = I.run_id("kp", "a-model-name-of-thirty-characters", "x", {})
    assert long == "kp-a-model-name-of-thirty-c-x-44136fa3"
    assert I.run_id("eg", "m", "d", {"a": 1}) != I.run_id("eg", "m", "d", {"a": 2})
