"""Location stability of a full build on the reference workload (the paper's §4.4 measure), on a seed of its own.

Slow (about a minute on 2 cores): run with ``pytest -m slow``. The README's figures come from bench/stability.py
over other seeds; this guards the method against regressions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kgexplain import BuildConfig, StoreSpec, run_build


@pytest.mark.slow
def test_patterns_are_more_stable_than_raw_filters_on_the_reference_workload(tmp_path: Path) -> None:
    res = run_build(BuildConfig(seed=101, n=300, patches=0, device="cpu"), StoreSpec(tmp_path / "store"))
    st = res.stability
    assert st["ratio"] < 0.6, st
    assert max(st["per_layer"].values()) < 0.85, st
    assert st["patterns"] < st["random"] / 2
