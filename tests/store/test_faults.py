"""Fault injection: a run's write is killed (SIGKILL, as ``kill -9`` or a crash) at each point of its write and
during the checkpoint that follows; after each kill a reader opens the store at once, and running the write again
gives exactly the store a clean write gives (sorted export compared). ``-m slow`` does it at 20 random moments.

The kills come from ``kgexplain.store.faults`` (``KGEXPLAIN_FAULT=<point>``), so each lands where it is meant to;
the checkpoint kill comes from outside, when the engine's checkpoint marker appears.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kgexplain.store import open_store
from kgexplain.store.integrity import check_store
from kgexplain.store.transfer import export

WRITER = textwrap.dedent("""
    import sys
    from kgexplain.store import open_store
    from kgexplain.store.sample_graph import Shape, sample_graph
    shape = Shape((("conv4_1", 64, 12), ("conv4_2", 64, 12), ("conv5_1", 64, 8)), parents=8, top=5, images=100)
    with open_store(sys.argv[1]) as s:
        sample_graph(shape, seed=3).write(s)
        print("written", flush=True)  # the run is complete; closing the store checkpoints it
    print("done", flush=True)
""")

POINTS = ("write:started", "write:nodes", "write:deleted", "write:complete")


def _write(folder: Path, fault: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "KGEXPLAIN_FAULT"}
    if fault:
        env["KGEXPLAIN_FAULT"] = fault
    proc = subprocess.run([sys.executable, "-c", WRITER, str(folder)], env=env, capture_output=True, text=True)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr)
    return proc.returncode


def _snapshot(folder: Path, tmp: Path) -> list[str]:
    """The store's content as sorted lines, without what differs between two writes of the same rows (times,
    the internal rewrite markers)."""
    out = tmp / f"export-{time.monotonic_ns()}.jsonl"
    with open_store(folder, read_only=True) as s:
        export(s, "jsonl", out)
    lines = []
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if row.get("label") == "Meta":
            continue
        for volatile in ("started", "finished", "code_version"):
            row.get("props", {}).pop(volatile, None)
        lines.append(json.dumps(row, sort_keys=True))
    return sorted(lines)


def _read_at_once(folder: Path) -> str | None:
    """A reader opens the store right after the kill, without waiting for a writer that is gone."""
    t = time.monotonic()
    with open_store(folder, read_only=True) as s:
        status = s.query("MATCH (r:Run) RETURN r.status").scalar() if s.has_label("Run") else None
    assert time.monotonic() - t < 10, "the reader waited for a writer that is gone"
    return status


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("clean") / "s"
    assert _write(folder) == 0
    return _snapshot(folder, folder.parent)


def test_a_write_killed_at_each_point_is_finished_by_running_it_again(tmp_path: Path, clean: list[str]) -> None:
    folder = tmp_path / "s"
    for point in POINTS:  # one after another on the same store: each kill leaves what the next write meets
        assert _write(folder, point) == -signal.SIGKILL, point
        status = _read_at_once(folder)
        assert status == ("complete" if point == "write:complete" else "writing"), point
    assert _write(folder) == 0
    assert _snapshot(folder, tmp_path) == clean
    with open_store(folder, read_only=True) as s:
        assert [c.status for c in check_store(s)] == ["ok"]


def _killed_in_checkpoint(folder: Path) -> bool:
    """Run the write and, once the run is complete, kill it from outside as soon as the engine's checkpoint marker
    appears (a timer inside the writer can fire too late on a busy machine). False when the checkpoint finished
    before the marker was seen."""
    env = {k: v for k, v in os.environ.items() if k != "KGEXPLAIN_FAULT"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    marker = folder / "graph.lbdb.wal.checkpoint"  # the engine's marker of an unfinished checkpoint
    while proc.poll() is None:
        if marker.exists():
            proc.kill()
            proc.wait()
            return marker.exists()
    assert proc.returncode == 0
    return False


def test_a_write_killed_during_its_checkpoint_is_recovered_by_the_next_reader(tmp_path: Path, clean: list[str]) -> None:
    for attempt in range(5):
        folder = tmp_path / f"s{attempt}"
        if _killed_in_checkpoint(folder):
            break
    else:
        pytest.fail("in 5 writes the checkpoint finished before its marker was seen: the recovery was not exercised")
    assert _read_at_once(folder) == "complete"
    assert not (folder / "graph.lbdb.wal.checkpoint").exists()
    assert _snapshot(folder, tmp_path) == clean
    assert _write(folder) == 0  # and running it again changes nothing
    assert _snapshot(folder, tmp_path) == clean


@pytest.mark.slow
def test_soak_kills_at_20_random_moments(tmp_path: Path, clean: list[str]) -> None:
    folder = tmp_path / "s"
    rng = random.Random(20)
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 3.0))
        proc.kill()
        proc.wait()
        _read_at_once(folder)
    assert _write(folder) == 0
    assert _snapshot(folder, tmp_path) == clean
    with open_store(folder, read_only=True) as s:
        assert [c.status for c in check_store(s)] == ["ok"]


@pytest.mark.slow
@pytest.mark.parametrize("point", [*POINTS, "checkpoint"])
def test_a_real_build_killed_at_each_point_then_run_again_equals_a_clean_build(tmp_path: Path, point: str) -> None:
    """The same with `kgexplain build` itself (a small reference build) in place of a sample graph."""
    args = [sys.executable, "-m", "kgexplain", "-q", "build", "--n", "8", "--iterations", "2"]
    args += ["--patches", "1"]

    def build(folder: Path, fault: str | None = None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "KGEXPLAIN_FAULT"} | (
            {"KGEXPLAIN_FAULT": fault} if fault else {}
        )
        return subprocess.run([*args, "--store", str(folder)], env=env, capture_output=True).returncode

    folder = tmp_path / "s"
    assert build(folder, "write:nodes") == -signal.SIGKILL  # a first, half-written run for the point to meet
    assert build(folder, point) == -signal.SIGKILL
    _read_at_once(folder)
    assert build(folder) == 0
    clean = tmp_path / "clean"
    assert build(clean) == 0
    # Run ids hash where the data files are, so the two stores' ids differ; everything else must not.
    assert _same_rows(_snapshot(folder, tmp_path)) == _same_rows(_snapshot(clean, tmp_path))


def _same_rows(lines: list[str]) -> list[str]:
    """Run ids replaced, the Run node's config and stats (data locations, timings) left out."""
    out = []
    for line in lines:
        row = json.loads(re.sub(r"eg-toynet-bird-[0-9a-f]{8}", "RUN", line))
        if row.get("label") == "Run":
            row["props"] = {k: v for k, v in row["props"].items() if k not in ("config", "stats")}
        out.append(json.dumps(row, sort_keys=True))
    return sorted(out)
