"""What a run wrote is recorded, `store check` (and `doctor`) find damage, and an identical re-run writes nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from click.testing import CliRunner
from kgexplain.cli.main import cli

from kgexplain.store import StoreSpec, open_store
from kgexplain.store.integrity import check_store
from kgexplain.store.sample_graph import Shape, sample_graph

SHAPE = Shape((("conv4_1", 32, 8), ("conv4_2", 32, 8), ("conv5_1", 32, 4)), parents=6, top=4, images=40)


def _written(folder: Path) -> tuple[str, dict]:  # type: ignore[type-arg]
    with open_store(folder, read_only=True) as s:
        run, stats = s.query("MATCH (r:Run) RETURN r.id, r.stats").rows[0]
    return run, json.loads(stats)["written"]


def _damage_the_page_holding(folder: Path, text: str) -> None:
    """Overwrite the 4 KiB page of the database file that holds ``text`` (a pattern id)."""
    path = folder / "graph.lbdb"
    data = path.read_bytes()
    at = data.find(text.encode())
    assert at >= 0, "the id is not stored as plain text"
    with path.open("r+b") as f:
        f.seek(at // 4096 * 4096)
        f.write(os.urandom(4096))


def test_a_complete_run_records_what_it_wrote_and_checks_ok(tmp_path: Path) -> None:
    g = sample_graph(SHAPE, seed=2)
    with open_store(tmp_path / "s") as s:
        g.write(s)
        checks = check_store(s)
    run, written = _written(tmp_path / "s")
    assert written["nodes"]["Pattern"]["count"] == len(g.nodes["Pattern"])
    assert written["rels"]["PARENT"] == len(g.rels["PARENT"]) and len(written["content"]) == 16
    assert [(c.run, c.status) for c in checks] == [(run, "ok")]


def test_store_check_and_doctor_find_an_overwritten_page(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    g = sample_graph(SHAPE, seed=2)
    with open_store(folder) as s:
        g.write(s)
    ok = CliRunner().invoke(cli, ["store", "check", "--store", str(folder)])
    assert ok.exit_code == 0 and " ok" in ok.output
    victim = g.nodes["Pattern"].column("id")[len(g.nodes["Pattern"]) // 2].as_py()
    _damage_the_page_holding(folder, victim)

    bad = CliRunner().invoke(cli, ["store", "check", "--store", str(folder)])
    assert bad.exit_code == 1, bad.output
    assert g.run.id in bad.output and "damaged" in bad.output and "runs delete" in bad.output
    assert "Traceback" not in bad.output
    doctor = CliRunner().invoke(cli, ["doctor", "--store", str(folder)])
    assert doctor.exit_code == 1 and re.search(r"store\s+damaged", doctor.output), doctor.output
    assert [c.status for c in StoreSpec(str(folder)).check()] == ["damaged"]


def test_running_the_same_write_again_keeps_the_rows(tmp_path: Path) -> None:
    g = sample_graph(SHAPE, seed=2)
    with open_store(tmp_path / "s") as s:
        g.write(s)
        finished = s.query("MATCH (r:Run) RETURN r.finished").scalar()
        g.write(s)  # the same rows: nothing is deleted or written again
        markers = s.query("MATCH (m:Meta) WHERE m.id STARTS WITH 'deleted:' RETURN count(m)").scalar()
        assert markers == 0 and s.query("MATCH (r:Run) RETURN r.finished").scalar() == finished
        other = sample_graph(SHAPE, seed=2)
        other.nodes["Pattern"] = other.nodes["Pattern"].slice(0, 10)  # different rows under the same run id
        other.rels = {}
        other.write(s)
        assert s.query("MATCH (p:Pattern) RETURN count(p)").scalar() == 10
        assert [c.status for c in check_store(s)] == ["ok"]


def test_store_check_finds_a_runs_files_missing_or_altered(tmp_path: Path) -> None:
    """A store copied without (part of) its artifacts folder answered every query and `store check` said ok, while
    its pages and `aog learn` found nothing: the files a run refers to must be there as written."""
    import pyarrow as pa

    folder = tmp_path / "s"
    g = sample_graph(SHAPE, seed=2)
    with open_store(folder) as s:
        patch = s.artifacts.put_bytes(b"a patch", "png", "patches")
        fires = g.rels["FIRES_ON"]
        g.rels["FIRES_ON"] = fires.append_column("patch", pa.array([patch.path] * len(fires))).append_column(
            "patch_sha", pa.array([patch.sha256] * len(fires))
        )
        g.write(s)
        assert [c.status for c in check_store(s)] == ["ok"]
    target = folder / "artifacts" / patch.path
    target.write_bytes(b"another patch")
    assert StoreSpec(str(folder)).check()[0].problems == [
        f"1 of 1 files it refers to differ from what was written (e.g. {patch.path})"
    ]
    target.unlink()
    bad = CliRunner().invoke(cli, ["store", "check", "--store", str(folder)])
    assert bad.exit_code == 1 and "damaged" in bad.output and "1 of 1 files it refers to are not in" in bad.output


def test_store_check_looks_for_the_files_where_the_store_keeps_them(tmp_path: Path) -> None:
    """An embedded store may keep its files elsewhere (`--artifacts`): the check (in a child process) looks there."""
    import pyarrow as pa

    folder, art = tmp_path / "s", tmp_path / "elsewhere"
    g = sample_graph(SHAPE, seed=3)
    with open_store(folder, artifacts=art) as s:
        patch = s.artifacts.put_bytes(b"a patch", "png", "patches")
        fires = g.rels["FIRES_ON"]
        g.rels["FIRES_ON"] = fires.append_column("patch", pa.array([patch.path] * len(fires)))
        g.write(s)
    assert [c.status for c in StoreSpec(str(folder), artifacts=str(art)).check()] == ["ok"]
    assert [c.status for c in StoreSpec(str(folder)).check()] == ["damaged"]  # not in the store's own folder
