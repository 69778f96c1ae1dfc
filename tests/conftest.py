"""Shared fixtures. Every test runs offline, with its own cache, store and torch home (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


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
    """A hand-written test model: two conv stages and a classifier (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
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
