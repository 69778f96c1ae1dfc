"""Shared fixtures. Every test runs offline, with its own cache, store and torch home (nothing downloads)."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of the README's two test processes (pytest -n 2): one thread
    # each for torch, OpenMP and numba (set before they load; the CLI's subprocesses inherit it), so that two
    # workers on two cores do not oversubscribe them (the suite took 363 s so, 197 s with one thread each)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# The longest files first (seconds on 2 cores), so that `-n 2 --dist loadfile` does not leave one worker idle while
# the other runs the README's sessions alone at the end: xdist would order the files by their number of tests, which
# put the longest file (few tests) last and made the suite ~25 s longer than its two halves.
LONGEST_FIRST = ("test_readme.py", "test_information.py", "test_knowledge_points.py", "test_aog.py", "test_models.py")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # keep the order below


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("KGEXPLAIN_OFFLINE", "1")
    monkeypatch.setenv("KGEXPLAIN_CACHE", str(home / "cache"))
    monkeypatch.setenv("KGEXPLAIN_STORE", str(home / "store"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.delenv("KGEXPLAIN_DEVICE", raising=False)
    torch.manual_seed(0)


class TinyNet(nn.Module):
    """A hand-written test model: two conv stages and a classifier (3 classes), on RGB or one-channel input."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def write_png(path: Path, size: tuple[int, int] = (40, 32), mode: str = "RGB", seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    elif mode == "RGBA":
        arr = rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    else:
        arr = rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def gone_pid() -> int:
    """The process id of a process that has ended (what a process killed hard leaves in its temporary names)."""
    import subprocess  # lazy: two tests use it
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)
