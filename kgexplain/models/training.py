"""Training and evaluating the toy net on the synthetic workload (``kgexplain zoo train`` / ``zoo eval``).

Training renders a fixed pool of images once (in parallel), then runs AdamW with a one-cycle learning rate on
the BN variant of the network; after every epoch the model is folded (BN into the convs) and saved as a
checkpoint, with its accuracy on a held-out seed. The data seeds are ``seed`` (training) and
``seed + 10_000`` (validation), so the default evaluation seed of ``zoo eval`` is never seen in training.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kgexplain.data.synth.dataset import GENERATOR_VERSION, render_arrays
from kgexplain.devices import resolve_device, torch_threads
from kgexplain.errors import ModelError
from kgexplain.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelHandle
from kgexplain.models.toynet import TOYNET_CHANNELS, TOYNET_DEPTHS, TOYNET_INPUT_SIZE, ToyVGG, fold_batch_norm
from kgexplain.progress import Progress, say
from kgexplain.workspace import output_folder
from kgexplain.zoo import SYNTH_CLASSES

VALIDATION_SEED_OFFSET = 10_000


@dataclass
class TrainConfig:
    n_train: int = 8000
    epochs: int = 5
    batch_size: int = 64
    max_lr: float = 4e-3
    weight_decay: float = 5e-4
    seed: int = 1
    n_val: int = 700
    size: int = TOYNET_INPUT_SIZE
    workers: int = 2
    threads: int | None = None
    device: str = "auto"


@dataclass
class EpochStats:
    epoch: int
    loss: float
    val_accuracy: float
    seconds: float
    checkpoint: str


@dataclass
class TrainResult:
    final: Path
    epochs: list[EpochStats]
    seconds: float
    data_seconds: float
    config: TrainConfig
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.epochs[-1].val_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "final": str(self.final),
            "accuracy": self.accuracy,
            "seconds": round(self.seconds, 1),
            "data_seconds": round(self.data_seconds, 1),
            "epochs": [asdict(e) for e in self.epochs],
            "config": asdict(self.config),
        }


def _batches_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 200) -> np.ndarray:
    model.eval()
    out = []
    for lo in range(0, len(images), batch_size):
        out.append(model(_batches_to_tensor(images[lo : lo + batch_size], device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def checkpoint_payload(model: ToyVGG, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": "toynet",
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": {
            "class_names": list(SYNTH_CLASSES),
            "input_size": TOYNET_INPUT_SIZE,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "channels": list(model.channels),
            "depths": list(model.depths),
            "generator_version": GENERATOR_VERSION,
            **meta,
        },
    }


def train_toynet(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train the toy net; writes ``toynet-epochN.pt`` per epoch, ``toynet.pt`` (final) and ``training.json``."""
    cfg = config or TrainConfig()
    out = output_folder(Path(out_dir).expanduser())
    device = resolve_device(cfg.device)
    t_start = time.perf_counter()
    with torch_threads(cfg.threads):
        say(progress, f"rendering {cfg.n_train} training and {cfg.n_val} validation images ({cfg.size} px)")
        x_train, y_train = render_arrays(cfg.n_train, cfg.seed, cfg.size, workers=cfg.workers)
        x_val, y_val = render_arrays(cfg.n_val, cfg.seed + VALIDATION_SEED_OFFSET, cfg.size, workers=cfg.workers)
        data_seconds = time.perf_counter() - t_start

        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = ToyVGG(len(SYNTH_CLASSES), TOYNET_CHANNELS, TOYNET_DEPTHS, batch_norm=True).to(device)
        steps_per_epoch = max(1, cfg.n_train // cfg.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.max_lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2
        )
        labels = torch.from_numpy(y_train).long()
        epochs: list[EpochStats] = []
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            perm = torch.randperm(cfg.n_train, generator=gen)
            losses = []
            for k in range(steps_per_epoch):
                idx = perm[k * cfg.batch_size : (k + 1) * cfg.batch_size]
                xb = _batches_to_tensor(x_train[idx.numpy()], device)
                loss = nn.functional.cross_entropy(model(xb), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            folded = fold_batch_norm(model.eval()).to(device)
            acc = float((predict(folded, x_val, device) == y_val).mean())
            path = out / f"toynet-epoch{epoch}.pt"
            meta = {"epoch": epoch, "val_accuracy": acc, "train": asdict(cfg)}
            torch.save(checkpoint_payload(folded.cpu(), meta), path)
            stats = EpochStats(epoch, float(np.mean(losses[-20:])), acc, time.perf_counter() - t_start, path.name)
            epochs.append(stats)
            say(
                progress,
                f"epoch {epoch}/{cfg.epochs}: loss {stats.loss:.3f}, validation accuracy {acc:.3f}, "
                f"{stats.seconds:.0f} s in",
            )
        final = out / "toynet.pt"
        shutil.copyfile(out / epochs[-1].checkpoint, final)
    result = TrainResult(final, epochs, time.perf_counter() - t_start, data_seconds, cfg)
    (out / "training.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


def evaluate_synth(
    handle: ModelHandle, n: int = 1000, seed: int = 12345, device: str = "auto", workers: int = 2
) -> dict[str, Any]:
    """Accuracy of ``handle`` on ``n`` freshly generated synthetic images of data set ``seed``."""
    dev = resolve_device(device)
    handle.to(dev)
    names = handle.class_names or list(SYNTH_CLASSES)
    if list(names) != list(SYNTH_CLASSES):
        raise ModelError(f"{handle.name} was not trained on the synthetic classes ({', '.join(SYNTH_CLASSES)})")
    t0 = time.perf_counter()
    x, y = render_arrays(n, seed, handle.input_size, workers=workers)
    pred = predict(handle.module, x, dev)
    per_class = {c: float((pred[y == i] == i).mean()) for i, c in enumerate(SYNTH_CLASSES) if (y == i).any()}
    return {
        "accuracy": float((pred == y).mean()),
        "n": int(n),
        "seed": int(seed),
        "per_class": per_class,
        "seconds": round(time.perf_counter() - t0, 2),
        "weights": handle.weights,
    }
