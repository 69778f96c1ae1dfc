"""Data-parallel builds on torch.distributed: two gloo ranks on the CPU mine the graph one process mines and store the
same run; a rank that dies ends the job with an error and stores nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgexplain.distributed import Group, launched, offsets
from kgexplain.explanatory_graph import ExplanatoryGraph
from kgexplain.jobs import BuildConfig, run_build
from kgexplain.store import StoreSpec
from kgexplain.store import queries as Q

# EM on a sample of 7 of the 12 images: it falls unevenly on the two ranks' blocks, which deal it evenly.
# conv4_2's 5 x 5 windows take stepwise EM's mini-batches (of 3 of the 7 EM images) in the first 2 of 8 iterations.
TINY = ["--n", "12", "--iterations", "8", "--patches", "1", "--layers", "conv4_2,conv5_2", "--em-images", "7"]
TINY += ["--em-batch", "3"]


def _kgx(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kgexplain", "-q", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )


def _forget_results(store: Path) -> None:
    """Keep the generated data (its path is part of the run id); drop the store and everything computed."""
    for p in store.glob("graph.lbdb*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for sub in ("cache", "patches", "sheets", "graphs"):
        shutil.rmtree(store / "artifacts" / sub, ignore_errors=True)


def _graph(store: Path, run: str) -> ExplanatoryGraph:
    return ExplanatoryGraph.load(store / "artifacts" / "cache" / "eg" / f"{run}.npz")


def test_one_process_group_is_the_identity() -> None:
    g = Group()
    t = torch.arange(6.0).view(3, 2)
    assert not launched() and g.main and not g.joined
    assert g.gather(t) is t and g.sum(t) is t and g.sizes(3) == [3] and g.objects("x") == ["x"]
    assert list(g.block(5)) == [0, 1, 2, 3, 4]
    blocks = [Group(r, 3, "gloo").block(10) for r in range(3)]
    assert [list(b) for b in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # contiguous, in rank order
    assert offsets([3, 3, 4]) == [0, 3, 6]


PATCHES = "MATCH (p:Pattern)-[f:FIRES_ON]->(i:Image) WHERE f.patch IS NOT NULL RETURN p.id, i.id, f.patch, f.patch_sha"


def _patches(store: Path) -> list[tuple[str, ...]]:
    """Every stored patch reference, after checking its file is there."""
    with StoreSpec(store).read() as db:
        rows = sorted(tuple(r) for r in db.query(PATCHES).rows)
    assert rows and all((store / "artifacts" / r[2]).is_file() for r in rows)
    return rows


def test_two_gloo_ranks_store_the_run_one_process_stores(tmp_path: Path) -> None:
    store = tmp_path / "s"
    cfg = BuildConfig(n=12, iterations=8, patches=1, layers=("conv4_2", "conv5_2"), em_images=7, em_batch=3)
    one = run_build(cfg, StoreSpec(store))
    graph_one = _graph(store, one.run)
    patches_one = _patches(store)
    _forget_results(store)

    out = _kgx("build", *TINY, "--store", str(store), "--nproc", "2", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    two = json.loads(out.stdout)  # rank 0 alone prints: one JSON document
    assert two["run"] == one.run
    assert two["stored"] == one.counts and two["patterns"] == graph_one.patterns and two["edges"] == graph_one.edges
    graph_two = _graph(store, two["run"])
    assert graph_two.stats["ranks"] == 2 and graph_two.stats["images"] == 12
    for a, b in zip(graph_one.layers, graph_two.layers, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.filter, b.filter)
        np.testing.assert_array_equal(a.k, b.k)
        np.testing.assert_array_equal(np.sort(a.parents, 1), np.sort(b.parents, 1))  # the same edge sets
        assert np.abs(a.mu - b.mu).max() <= 0.5  # positions within half a pixel
        np.testing.assert_array_equal(a.fires, b.fires)
    assert two["stability"]["ratio"] == pytest.approx(one.stability["ratio"], abs=1e-6)
    assert _patches(store) == patches_one  # each rank renders the patches on its own images: the same files
    assert {k: v["contact_sheet"] for k, v in two["layers"].items()} == one.sheets  # rank 0 draws the same sheets
    with StoreSpec(store).read() as db:
        runs = Q.runs(db)
    assert [(r["run"], r["status"]) for r in runs] == [(one.run, "complete")]


def test_a_rank_that_dies_mid_em_ends_the_job_and_stores_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s"
    out = _kgx(
        "build", *TINY, "--store", str(store), "--nproc", "2",
        cwd=tmp_path, env={"KGEXPLAIN_FAULT_RANK": "1:mining:conv4_2"},
    )  # fmt: skip
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert any("rank 1 of 2 failed (exit code 17)" in e and "nothing was stored" in e for e in errors), out.stderr
    assert "Traceback" not in out.stderr
    if (store / "graph.lbdb").exists():
        with StoreSpec(store).read() as db:
            assert Q.runs(db) == []


def test_the_commands_that_take_nproc_load_numba_only_in_their_workers() -> None:
    """`--nproc` forks its workers after the command's modules are loaded, and numba sizes its thread pool from the
    environment it is first imported in: a job module that imported it made every rank run numba's kernels on all
    the machine's cores (a ResNet-18 build on 17 photos, 2 ranks: mining 9-12 s against 2.8 s)."""
    mods = [f"kgexplain.jobs.{m}" for m in ("build", "aog", "info", "kp")]
    mods += [f"kgexplain.cli.{m}_cmd" for m in ("build", "info", "kp", "features", "aog")]
    code = f"import sys; import {', '.join(mods)}; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_a_rank_under_torchrun_gives_numba_the_threads_torchrun_gave_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun sets OMP_NUM_THREADS (1 for several processes) but not NUMBA_NUM_THREADS: a rank sets it alike when
    it joins the job, before numba loads (2 ranks on 2 cores with numba on both: mining 10.4 s against 2.8 s),
    unless the user set it. Joined here as a job of one process."""
    import socket

    from kgexplain.distributed import join, leave

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for given, wanted in ((None, "1"), ("3", "3")):
        if given is None:
            monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("NUMBA_NUM_THREADS", given)
        try:
            assert join("cpu").world == 1
        finally:
            leave()
        assert os.environ["NUMBA_NUM_THREADS"] == wanted


def test_a_rank_that_hits_a_bug_prints_its_traceback(tmp_path: Path) -> None:
    """An unexpected error in a rank (a bug) is printed by that rank, traceback and all: the launcher reports only
    its exit code, and the job's last line points to the rank's error above."""
    out = _kgx(
        "build", *TINY, "--store", str(tmp_path / "s"), "--nproc", "2",
        cwd=tmp_path, env={"KGEXPLAIN_FAULT_RANK": "1:features:raise"},
    )  # fmt: skip
    assert out.returncode != 0
    assert "rank 1: unexpected error (please report it with this traceback):" in out.stderr, out.stderr
    assert "AssertionError: a fault injected at features" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("Error: rank 1 of 2 failed (exit code 1)")
    assert "SignalException" not in out.stderr  # the rank the launcher stopped prints no traceback


@pytest.mark.slow
def test_a_failed_job_resumes_from_each_ranks_feature_cache(tmp_path: Path) -> None:
    store = tmp_path / "s"
    failed = _kgx(
        "build", *TINY, "--store", str(store), "--nproc", "2",
        cwd=tmp_path, env={"KGEXPLAIN_FAULT_RANK": "0:mining:conv5_2"},
    )  # fmt: skip
    assert failed.returncode != 0 and "rank 0 of 2 failed" in failed.stderr
    again = _kgx("build", *TINY, "--store", str(store), "--nproc", "2", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["images"]["loaded"] == 12 and result["timings"]["features_s"] < 1.0  # from the caches


@pytest.mark.slow
def test_info_and_kp_on_two_ranks_match_one_process(tmp_path: Path) -> None:
    info = ["info", "--n", "4", "--layers", "conv2_2,conv5_2", "--steps", "8", "--samples", "4", "--json"]
    one = _kgx(*info, "--store", str(tmp_path / "i1"), "--out", str(tmp_path / "m1"), cwd=tmp_path)
    two = _kgx(*info, "--store", str(tmp_path / "i2"), "--out", str(tmp_path / "m2"), "--nproc", "2", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert json.loads(one.stdout) == json.loads(two.stdout)
    maps = sorted(p.name for p in (tmp_path / "m1").glob("*.npy"))
    assert len(maps) == 8 and maps == sorted(p.name for p in (tmp_path / "m2").glob("*.npy"))
    for name in maps:  # whole batches per rank, each seeded alike: the same maps to the bit
        np.testing.assert_array_equal(np.load(tmp_path / "m1" / name), np.load(tmp_path / "m2" / name))
    kp = ["kp", "--n", "24", "--layers", "conv3_2,conv5_2", "--epochs", "20", "--json"]
    one = _kgx(*kp, "--store", str(tmp_path / "k1"), "--out", str(tmp_path / "o1"), cwd=tmp_path)
    two = _kgx(*kp, "--store", str(tmp_path / "k2"), "--out", str(tmp_path / "o2"), "--nproc", "2", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(o.stdout)] for o in (one, two)]
    assert untimed[0] == untimed[1] and [r["layer"] for r in untimed[0]] == ["conv3_2", "conv5_2"]
