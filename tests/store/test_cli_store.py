from __future__ import annotations

import io
import json
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner
from kgexplain.cli.main import cli

from kgexplain.store import open_store
from kgexplain.store.sample_graph import SampleGraph, sample_graph, small


@pytest.fixture
def built(tmp_path: Path) -> tuple[str, SampleGraph]:
    g = sample_graph(small(), seed=5)
    folder = tmp_path / "store"
    with open_store(folder) as s:
        g.write(s)
    return str(folder), g


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_query_outputs_and_parameters(built) -> None:
    store, g = built
    pid = g.nodes["Pattern"].column("id")[0].as_py()
    out = json.loads(
        run(
            "query",
            "MATCH (p:Pattern) WHERE p.id = $id RETURN p.layer AS layer",
            "-p",
            f"id={pid}",
            "--store",
            store,
            "--json",
        ).stdout
    )
    assert out == [{"layer": "conv4_1"}]
    csv = run(
        "query", "MATCH (p:Pattern) WHERE p.filter = $f RETURN count(p) AS n", "-p", "f=2", "--store", store, "--csv"
    ).stdout.splitlines()
    assert csv[0] == "n" and int(csv[1]) > 0
    table = run("query", "MATCH (a)-[r]->(b) RETURN type(r) AS t, count(*) AS n ORDER BY t", "--store", store).stdout
    assert "PARENT" in table and "FIRES_ON" in table
    # Columns without AS are named by their text, as Neo4j names them (the engine's names were "COUNT(p._ID)",
    # "+(TO_INT64(p.k),1)", "PARENT" for type(r)), so --json keys are the same on both backends.
    rows = json.loads(
        run(
            "query",
            "MATCH (p:Pattern)-[r:PARENT]->(q) RETURN DISTINCT type(r), p.layer, count(p), toInteger(p.k) + 1,"
            " p.k AS k ORDER BY count(p) DESC, p.layer LIMIT 1",
            "--store",
            store,
            "--json",
        ).stdout
    )
    assert list(rows[0]) == ["type(r)", "p.layer", "count(p)", "toInteger(p.k) + 1", "k"]
    assert rows[0]["type(r)"] == "PARENT" and rows[0]["toInteger(p.k) + 1"] == rows[0]["k"] + 1


def test_query_errors_are_one_line(built) -> None:
    store, _ = built
    for args, message in [
        (["MATCH (p:Pattern RETURN p"], "Cypher syntax error at line 1, column 18"),
        (["MATCH (p:Pattern) DETACH DELETE p"], "this query writes to the store (pass --write to allow it)"),
        (["MATCH (p:Pattern) RETURN p", "-p", "oops"], "bad parameter 'oops'"),
    ]:
        result = run("query", *args, "--store", store, ok=False)
        assert result.exit_code != 0 and message in result.output
        assert len([x for x in result.output.splitlines() if x.startswith("Error")]) == 1
        assert "Traceback" not in result.output


def test_query_write_needs_the_flag_and_works_with_it(built) -> None:
    store, _g = built
    run("query", "MATCH (p:Pattern) WHERE p.layer = 'conv5_1' SET p.fires = 0", "--write", "--store", store)
    out = json.loads(
        run(
            "query", "MATCH (p:Pattern) WHERE p.layer = 'conv5_1' RETURN max(p.fires) AS m", "--store", store, "--json"
        ).stdout
    )
    assert out == [{"m": 0}]


def test_patterns_show_and_paths(built) -> None:
    store, g = built
    rows = json.loads(run("patterns", "--layer", "conv4_2", "--top", "3", "--store", store, "--json").stdout)
    assert len(rows) == 3 and all(r["layer"] == "conv4_2" for r in rows)
    pid = g.nodes["Pattern"].column("id")[0].as_py()
    shown = json.loads(run("show", pid, "--store", store, "--json").stdout)
    assert shown["pattern"] == pid and len(shown["parents"]) == 3 and len(shown["images"]) == 4
    text = run("show", pid, "--store", store).stdout
    assert "parents (3):" in text and "images (4):" in text
    paths = json.loads(run("paths", pid, "--max-hops", "2", "--k", "4", "--store", store, "--json").stdout)
    assert len(paths) == 4 and paths[0]["score"] >= paths[-1]["score"] and paths[0]["path"].startswith(pid)
    none = CliRunner().invoke(cli, ["paths", pid, "--direction", "down", "--store", store, "--json"])  # lowest layer
    assert none.exit_code == 0 and json.loads(none.stdout) == []  # was "(no rows)" or [] with no word of why
    assert "no co-activation path from" in none.stderr and "--direction up searches the other way" in none.stderr
    missing = run("show", "nope/x", "--store", store, ok=False)
    assert missing.exit_code == 1 and "no pattern 'nope/x'" in missing.output


def test_runs_stats_store_and_export(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, g = built
    runs = json.loads(run("runs", "--store", store, "--json").stdout)
    assert [r["run"] for r in runs] == [g.run.id] and runs[0]["status"] == "complete"
    stats = json.loads(run("stats", "--store", store, "--json").stdout)
    assert stats["counts"]["Pattern"] == len(g.nodes["Pattern"])
    info = json.loads(run("store", "info", "--store", store, "--json").stdout)
    assert info["backend"] == "embedded" and info["schema_version"] == info["code_schema_version"]
    assert "ready" in run("store", "init", "--store", store).stdout
    run("export", "--format", "graphml", "--out", str(tmp_path / "all.graphml"), "--store", store)
    assert nx.read_graphml(tmp_path / "all.graphml").number_of_nodes() > len(g.nodes["Pattern"])
    monkeypatch.chdir(tmp_path)
    piped = run("export", "--format", "jsonl", "--out", "-", "--store", store).stdout.splitlines()  # a file "-" before
    assert sum(json.loads(line).get("label") == "Pattern" for line in piped) == len(g.nodes["Pattern"])
    assert not (tmp_path / "-").exists()
    assert "csv writes a folder" in run("export", "--format", "csv", "--out", "-", "--store", store, ok=False).output
    run("runs", "delete", g.run.id, "--store", store)
    assert json.loads(run("runs", "--store", store, "--json").stdout) == []
    run("store", "drop", "--yes", "--store", store)
    gone = run("stats", "--store", store, ok=False)
    assert "not an initialised kgexplain store" in gone.output


def test_a_build_with_part_graphs_on_it_is_deleted_only_with_them(built) -> None:
    """Deleting a build that a part graph was learnt on left the part's templates using patterns that were gone
    (`store check`: the part graph "damaged"); it is refused with the runs named, or deletes them too."""
    import pyarrow as pa

    from kgexplain.store.base import RunRecord

    store, g = built
    with open_store(store) as db:
        for run_id, kind in (("aog-bird-head-1", "aog"), ("localize-toynet-x-2", "localize")):
            record = RunRecord(run_id, kind, g.run.model, "examples", {"build": g.run.id}, {})
            db.write_run(record, {"Metric": pa.Table.from_pylist([{"id": f"{run_id}/m", "run": run_id}])}, {})
    refused = run("runs", "delete", g.run.id, "--store", store, ok=False)
    assert refused.exit_code == 2 and f"2 run(s) were made on {g.run.id}: aog-bird-head-1, localize-toynet-x-2" in (
        refused.output
    )
    assert len(json.loads(run("runs", "--store", store, "--json").stdout)) == 3  # nothing deleted
    out = run("runs", "delete", g.run.id, "--with-dependents", "--store", store).stdout
    assert out.splitlines() == [f"deleted run {r}" for r in ("aog-bird-head-1", "localize-toynet-x-2", g.run.id)]
    assert json.loads(run("runs", "--store", store, "--json").stdout) == []


def test_graph_commands(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, g = built
    cen = json.loads(run("graph", "centrality", "--run", g.run.id, "--top", "3", "--store", store, "--json").stdout)
    assert len(cen) == 3 and cen[0]["centrality"] >= cen[-1]["centrality"]
    grp = json.loads(run("graph", "groups", "--run", g.run.id, "--store", store, "--json").stdout)
    assert grp and grp[0]["size"] >= grp[-1]["size"]
    # Without --run: the latest build, as `aog learn` and `localize` take it
    assert json.loads(run("graph", "centrality", "--top", "3", "--store", store, "--json").stdout) == cen
    assert json.loads(run("graph", "groups", "--store", store, "--json").stdout) == grp
    pid = g.nodes["Pattern"].column("id")[0].as_py()
    out = tmp_path / "around.graphml"
    run("graph", "graphml", str(out), "--around", pid, "--hops", "2", "--store", store)
    assert pid in nx.read_graphml(out)
    monkeypatch.chdir(tmp_path)
    piped = run("graph", "graphml", "-", "--around", pid, "--hops", "2", "--store", store).stdout  # a file "-" before
    assert nx.read_graphml(io.BytesIO(piped.encode())).number_of_nodes() == nx.read_graphml(out).number_of_nodes()
    assert not (tmp_path / "-").exists()
    below_a_file = run("graph", "graphml", str(out / "x.graphml"), "--around", pid, "--store", store, ok=False)
    assert below_a_file.exit_code == 1 and "Error: cannot write" in below_a_file.output  # was a traceback
    bad = run("graph", "graphml", str(out), "--store", store, ok=False)
    assert "give either --run or --around" in bad.output
    # A wrong pattern id wrote a graph of that one name and said nothing: now one line, exit 1, no file.
    typo = tmp_path / "typo.graphml"
    wrong = run("graph", "graphml", str(typo), "--around", pid + "x", "--store", store, ok=False)
    assert wrong.exit_code == 1 and f"no pattern '{pid}x' in the store" in wrong.output and not typo.exists()
    # A layer or run that is not there: an error, not "(no rows)" or an export of the shared nodes alone.
    layer = run("paths", pid, "--to-layer", "conv9", "--store", store, ok=False)
    assert layer.exit_code != 0 and "no layer 'conv9' in this run (its layers: conv4_1" in layer.output
    gone = tmp_path / "gone"
    nope = run("export", "--format", "csv", "--out", str(gone), "--run", "nope", "--store", store, ok=False)
    assert nope.exit_code != 0 and "no run 'nope'" in nope.output and not gone.exists()


def test_bad_store_locations_are_one_line_errors(tmp_path: Path) -> None:
    for args, message in [
        (["stats", "--store", str(tmp_path / "none")], "no kgexplain store at"),
        (["stats", "--store", "bolt://127.0.0.1:1"], "cannot reach Neo4j at bolt://127.0.0.1:1 (start one with"),
        (["stats", "--store", "ftp://x"], "unsupported store URL scheme 'ftp'"),
        (["push", "--to", str(tmp_path), "--store", str(tmp_path)], "--to must be a bolt:// or neo4j:// URL"),
    ]:
        result = run(*args, ok=False)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_reading_a_store_another_process_is_creating_says_so(tmp_path: Path) -> None:
    from kgexplain.store.embedded import EmbeddedStore

    writer = EmbeddedStore(tmp_path / "new")  # a first build's store: open for writing, its schema not yet committed
    try:
        writer._apply_ddl()
        busy = run("runs", "--store", str(tmp_path / "new"), ok=False)
        assert busy.exit_code == 1 and "is being created by another process" in busy.output
    finally:
        writer.close()
    empty = run("runs", "--store", str(tmp_path / "new"), ok=False)
    assert empty.exit_code == 1 and "not an initialised kgexplain store" in empty.output
