"""Reliability of the embedded store: locks, concurrent readers, kill -9, schema versions, crash isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kgexplain.errors import StoreError, UsageError
from kgexplain.store import open_store
from kgexplain.store.isolated import run_isolated
from kgexplain.store.sample_graph import Shape, sample_graph, small

# ~20k patterns and ~250k edges: a write that takes a few seconds, long enough to be interrupted.
MEDIUM = Shape((("conv4_1", 128, 40), ("conv4_2", 128, 40), ("conv5_1", 128, 20)), parents=10, top=5, images=200)

WRITER = textwrap.dedent("""
    import sys, time
    from kgexplain.store import open_store
    from kgexplain.store.sample_graph import Shape, sample_graph
    shape = Shape((("conv4_1", 128, 40), ("conv4_2", 128, 40), ("conv5_1", 128, 20)), parents=10, top=5, images=200)
    g = sample_graph(shape, seed=1)
    with open_store(sys.argv[1]) as s:
        print("start", flush=True)
        g.write(s)
        print("done", flush=True)
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
""")

READER = textwrap.dedent("""
    import json, sys, time
    from kgexplain.store import open_store
    out = []
    deadline = time.time() + float(sys.argv[2])
    while time.time() < deadline:
        with open_store(sys.argv[1], read_only=True) as s:
            out.append(s.query("MATCH (p:Pattern) RETURN count(p)").scalar())
        time.sleep(0.2)
    print(json.dumps(out))
""")


def _writer(folder: Path, linger: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), str(linger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], marker: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == marker, (line, proc.stderr.read() if proc.stderr else "")


def test_a_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_store(folder) as s:
        s.init_schema()
    w = _writer(folder, linger=10)
    try:
        _wait_for(w, "start")
        with pytest.raises(StoreError, match=r"open for writing by another process \(PID \d+\)"):
            open_store(folder)
    finally:
        w.kill()
        w.wait()


def test_two_readers_while_one_writer_works(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_store(folder) as s:
        s.init_schema()
    w = _writer(folder, linger=2)
    _wait_for(w, "start")
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(folder), "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [r.communicate(timeout=120) for r in readers]
    w.communicate(timeout=120)
    assert w.returncode == 0
    full = sum(40 * 128 if layer != "conv5_1" else 20 * 128 for layer in ("conv4_1", "conv4_2", "conv5_1"))
    for (stdout, stderr), r in zip(outs, readers, strict=True):
        assert r.returncode == 0, stderr
        counts = json.loads(stdout)
        assert counts and all(c in (0, full) for c in counts), counts  # never a half-written run
        assert counts == sorted(counts)


def test_kill_9_during_a_write_then_rerun(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with open_store(folder) as s:
        s.init_schema()
    w = _writer(folder)
    _wait_for(w, "start")
    time.sleep(0.8)
    os.kill(w.pid, signal.SIGKILL)
    w.wait()
    g = sample_graph(MEDIUM, seed=1)
    with open_store(folder) as s:
        assert s.run_status(g.run.id) != "complete"  # never marked complete half-written
        g.write(s)
        counts = s.counts()
        assert s.run_status(g.run.id) == "complete"
    assert counts["Pattern"] == len(g.nodes["Pattern"])
    assert counts["PARENT"] == len(g.rels["PARENT"]) and counts["FIRES_ON"] == len(g.rels["FIRES_ON"])
    assert counts["Image"] == len(g.shared_nodes["Image"]) and counts["Run"] == 1


def test_an_older_schema_says_so_and_upgrade_fixes_it(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    g = sample_graph(small())
    with open_store(folder) as s:
        g.write(s)
        s.query("MATCH (m:Meta) WHERE m.id = 'schema_version' SET m.value = '0'", write=True)
    with open_store(folder, read_only=True) as s, pytest.raises(StoreError, match=r"schema v0.*store upgrade"):
        s.check_schema()
    with open_store(folder) as s:
        with pytest.raises(StoreError, match="schema v0"):
            g.write(s)
        s.upgrade()
        g.write(s)
        s.check_schema()
    with open_store(folder) as s:
        s.query("MATCH (m:Meta) WHERE m.id = 'schema_version' SET m.value = '99'", write=True)
    with open_store(folder, read_only=True) as s, pytest.raises(StoreError, match="newer kgexplain"):
        s.check_schema()


def test_missing_and_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no kgexplain store at"):
        open_store(tmp_path / "nothing", read_only=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a store folder"):
        open_store(tmp_path / "file")
    with pytest.raises(StoreError, match="unsupported store URL scheme 'http'"):
        open_store("http://localhost:7474")
    with pytest.raises(StoreError, match="needs NEO4J_URI"):
        open_store("neo4j")


def test_a_query_that_crashes_the_engine_does_not_hurt_the_store(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    g = sample_graph(small())
    with open_store(folder) as s:
        g.write(s)
        before = s.counts()
    pid = g.nodes["Pattern"].column("id")[0].as_py()
    crash = (
        "MATCH p = (a:Pattern)-[e:PARENT* WSHORTEST(weight)]->(b:Pattern) "
        f"WHERE a.id = '{pid}' AND b.layer = 'conv5_1' RETURN cost(p) LIMIT 1"
    )
    with pytest.raises(StoreError, match=r"crashed the embedded database engine \(SIGSEGV\); the store is unchanged"):
        run_isolated(str(folder), crash)
    with open_store(folder, read_only=True) as s:
        assert s.counts() == before
    ok = run_isolated(str(folder), "MATCH (p:Pattern) WHERE p.id = $id RETURN p.layer", {"id": pid})
    assert ok.rows == [["conv4_1"]]


class _FlakyEngine:
    """Stands in for ladybug: the first open fails with an engine assertion, and meanwhile the writer's checkpoint
    ends (its shadow file goes away and the database file changes), as seen once in CI."""

    def __init__(self, folder: Path, effect_of_writer: bool) -> None:
        self.folder, self.effect_of_writer, self.calls = folder, effect_of_writer, 0

    def Database(self, path: str, read_only: bool) -> str:  # ladybug spells it so
        self.calls += 1
        if self.calls == 1:
            if self.effect_of_writer:
                (self.folder / "graph.lbdb.shadow").unlink()
                (self.folder / "graph.lbdb").write_bytes(b"checkpointed")
            raise RuntimeError("Assertion failed in file column_chunk_data.cpp on line 1080: UNREACHABLE_CODE")
        return "opened"


def test_a_reader_waits_out_an_assertion_only_while_a_writer_is_at_work(tmp_path: Path) -> None:
    from kgexplain.store.embedded import EmbeddedStore

    (tmp_path / "graph.lbdb").write_bytes(b"db")
    (tmp_path / "graph.lbdb.shadow").write_bytes(b"")
    engine = _FlakyEngine(tmp_path, effect_of_writer=True)
    assert EmbeddedStore._open_database(engine, tmp_path / "graph.lbdb", read_only=True, wait=5) == "opened"
    assert engine.calls == 2
    # no writer around: the same assertion is a broken store, reported at once
    engine = _FlakyEngine(tmp_path, effect_of_writer=False)
    with pytest.raises(RuntimeError, match="Assertion failed"):
        EmbeddedStore._open_database(engine, tmp_path / "graph.lbdb", read_only=True, wait=5)
    assert engine.calls == 1


def test_a_store_cut_short_is_reported_damaged_not_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database file cut short makes the engine say it "may be checkpointing": a reader waited 30 s and then said
    the store was being checkpointed by its writer, though none was there. With no writer's trace beside the file
    it is reported damaged (a writer at once: it holds the lock, so no checkpoint can be running)."""
    monkeypatch.setattr("kgexplain.store.embedded.QUIET", 0.3)
    with open_store(tmp_path / "s") as s:
        sample_graph(small()).write(s)
    graph = tmp_path / "s" / "graph.lbdb"
    with open(graph, "r+b") as f:
        f.truncate(1000)
    t = time.monotonic()
    with pytest.raises(StoreError, match="is damaged: its database file cannot be read") as e:
        open_store(tmp_path / "s", read_only=True)
    assert time.monotonic() - t < 5 and "checkpointing" not in str(e.value)
    with pytest.raises(StoreError, match="is damaged"):
        open_store(tmp_path / "s")


HOLDER = textwrap.dedent("""
    import sys, time
    from kgexplain.store import open_store
    with open_store(sys.argv[1]) as s:
        s.init_schema()
        print("start", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(folder: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the store open for writing (an embedded store admits one writer) for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(proc, "start")
    return proc


def test_a_writer_waits_while_another_process_writes_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second build used to stop at once with "open for writing by another process"; a writer now waits for the
    other up to $KGEXPLAIN_STORE_WAIT seconds (0: not at all), with one status line."""
    from kgexplain.errors import StoreBusy
    from kgexplain.store import StoreSpec

    folder = tmp_path / "s"
    holder = _holder(folder, 2.0)
    try:
        monkeypatch.setenv("KGEXPLAIN_STORE_WAIT", "0")
        with pytest.raises(StoreBusy, match=rf"open for writing by another process \(PID {holder.pid}\)"):
            StoreSpec(str(folder)).open_for_writing()
        monkeypatch.setenv("KGEXPLAIN_STORE_WAIT", "60")
        said: list[str] = []
        with StoreSpec(str(folder)).open_for_writing(lambda e: said.append(e.message)) as db:
            assert holder.poll() is not None  # opened once the other process had finished
            db.ensure_writable()
        assert said == [
            f"the store {folder} is open for writing by another process (PID {holder.pid}): waiting for it (up to 60 s;"
            " KGEXPLAIN_STORE_WAIT)"
        ]
    finally:
        holder.kill()
        holder.wait()
    holder = _holder(folder, 1.5)  # `query --write` waits alike (it stopped at once)
    try:
        said.clear()
        spec = StoreSpec(str(folder))
        done = spec.query(
            "CREATE (m:Meta {id: 'note', value: 'x'})", write=True, progress=lambda e: said.append(e.message)
        )
        assert holder.poll() is not None and done.rows == [] and len(said) == 1
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setenv("KGEXPLAIN_STORE_WAIT", "soon")
    with pytest.raises(UsageError, match="KGEXPLAIN_STORE_WAIT='soon' is not a number of seconds"):
        StoreSpec(str(folder)).open_for_writing()
    from kgexplain.distributed import Group
    from kgexplain.jobs.common import check_writable

    with pytest.raises(UsageError, match="KGEXPLAIN_STORE_WAIT"):  # said before a job's work, not at its end
        check_writable(StoreSpec(str(folder)), Group(), None)


def test_a_build_works_while_another_process_writes_and_writes_its_run_after(tmp_path: Path) -> None:
    """The build opens the store to check it, then again only to write its run, so it mines while another process
    holds the store (before: it stopped at the first check), and waits for it only if it is still writing then."""
    from kgexplain import BuildConfig, StoreSpec, run_build

    folder = tmp_path / "s"
    holder = _holder(folder, 3.0)
    said: list[str] = []
    try:
        build = run_build(
            BuildConfig(n=12, iterations=1, patches=0, layers=("conv5_1", "conv5_2")),
            StoreSpec(str(folder)),
            progress=lambda e: e.message and said.append(e.message),
        )
    finally:
        holder.kill()
        holder.wait()
    busy = f"the store {folder} is open for writing by another process (PID {holder.pid})"
    assert f"{busy}: this job will write its results when it is free" in said
    with StoreSpec(str(folder)).read() as db:
        assert db.query("MATCH (r:Run) RETURN r.id, r.status").records() == [
            {"r.id": build.run, "r.status": "complete"}
        ]
