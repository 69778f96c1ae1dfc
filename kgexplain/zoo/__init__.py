"""The model zoo: the toy net trained on the synthetic workload, its shipped checkpoints, training and evaluation."""

from __future__ import annotations

from pathlib import Path

from kgexplain.data.synth.scene import CATEGORIES
from kgexplain.errors import ModelError

SYNTH_CLASSES = CATEGORIES
WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_checkpoint() -> Path:
    """The packaged final checkpoint of the toy net."""
    path = WEIGHTS_DIR / "toynet.pt"
    if not path.exists():
        raise ModelError(
            f"the shipped toy-net checkpoint is missing ({path})",
            hint="reinstall kgexplain, or train one with `kgexplain zoo train` and pass --weights PATH",
        )
    return path


def shipped_checkpoints() -> list[Path]:
    """The packaged per-epoch checkpoints of the same training run, first to last."""
    return sorted(WEIGHTS_DIR.glob("toynet-epoch*.pt"), key=lambda p: int(p.stem.split("epoch")[1]))


def training_series() -> list[Path]:
    """The per-epoch checkpoints then the final one, the final left out when it is the last epoch's file."""
    epochs = shipped_checkpoints()
    final = shipped_checkpoint()
    if epochs and epochs[-1].read_bytes() == final.read_bytes():
        return epochs
    return [*epochs, final]
