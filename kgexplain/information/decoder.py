"""Decoders that invert a layer's feature back to the image, for reconstruction uncertainty (RU).

One architecture for every comparison (paper sec. 4), chosen by ``DecoderConfig.arch``:

* ``"subpixel"`` (default): a 1x1 stem to ``width`` channels, ``blocks`` residual blocks at the feature map's own
  resolution, and a 3x3 conv to 3 x stride^2 channels rearranged into stride x stride pixel blocks (sub-pixel
  convolution, ``PixelShuffle``), then a sigmoid ([0, 1] image). The capacity sits where the information is, so it
  trains faster and reconstructs better on this machine's budget (README: Information discarding).
* ``"paper"``: the paper's: a 1x1 stem, six residual blocks, the first log2(stride) of which upsample by two with
  a transposed conv on both tracks, and a 3x3 conv to RGB with a sigmoid. The width follows the resolution (16
  channels at full resolution, doubling per halving, at most 128).

Trained with MSE to the [0, 1] image; a tenth of the images (``holdout``) is kept out of training and the
reconstruction PSNR on it is recorded with the decoder, with the architecture it was built with (a decoder file
without one was written before the sub-pixel decoder existed, and is the paper's).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kgexplain.data.base import Framing, ImageSource
from kgexplain.errors import DataError, UsageError
from kgexplain.features.extract import normalise
from kgexplain.information.sid import NoiseProbe
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, say, task
from kgexplain.store.ids import digest
from kgexplain.workspace import temporary_beside

BLOCKS = 6


def _width(level: int) -> int:
    """Channels at resolution input / 2**level."""
    return int(min(128, 16 * 2**level))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, up: bool) -> None:
        super().__init__()
        if up:
            self.conv1: nn.Module = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
            self.skip: nn.Module = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.skip(x))


class PaperDecoder(nn.Module):
    """The paper's decoder (``arch="paper"``): six residual blocks, the first log2(stride) upsampling."""

    def __init__(self, in_channels: int, stride: int, out_channels: int = 3) -> None:
        super().__init__()
        ups = round(math.log2(max(1, stride)))
        if 2**ups != stride or ups > BLOCKS:
            raise UsageError(f"a decoder needs a power-of-two stride of at most {2**BLOCKS}, not {stride}")
        level = ups
        self.stem = nn.Conv2d(in_channels, _width(level), 1)
        blocks = []
        for i in range(BLOCKS):
            up = i < ups
            nxt = level - 1 if up else level
            blocks.append(ResBlock(_width(level), _width(nxt), up))
            level = nxt
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(_width(0), out_channels, 3, padding=1)
        self.in_channels, self.stride = in_channels, stride

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.blocks(F.relu(self.stem(f)))))


class SubpixelDecoder(nn.Module):
    """``arch="subpixel"``: residual blocks at the map's resolution, then a sub-pixel convolution to the image."""

    def __init__(self, in_channels: int, stride: int, width: int = 96, blocks: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 1)
        self.blocks = nn.Sequential(*(ResBlock(width, width, up=False) for _ in range(blocks)))
        self.head = nn.Conv2d(width, out_channels * stride * stride, 3, padding=1)
        self.shuffle = nn.PixelShuffle(stride)
        self.in_channels, self.stride = in_channels, stride

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shuffle(self.head(self.blocks(F.relu(self.stem(f))))))


Decoder = PaperDecoder | SubpixelDecoder
ARCHS = ("subpixel", "paper")


@dataclass(frozen=True)
class DecoderConfig:
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    holdout: float = 0.1  # fraction of the images kept out of training to measure reconstruction PSNR on
    seed: int = 0
    arch: str = "subpixel"  # or "paper" (module docstring)
    width: int = 96  # subpixel: channels of its residual blocks
    blocks: int = 3  # subpixel: residual blocks

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UsageError(f"decoder architecture must be one of {', '.join(ARCHS)}, not {self.arch!r}")

    @classmethod
    def of_file(cls, blob: dict[str, Any]) -> DecoderConfig:
        """The architecture a decoder file was trained with, from the config it records; a file written before
        the sub-pixel decoder existed records none and holds the paper's."""
        c = blob.get("config") or {}
        return cls(arch=c.get("arch", "paper"), width=c.get("width", cls.width), blocks=c.get("blocks", cls.blocks))

    def build(self, in_channels: int, stride: int, out_channels: int = 3) -> Decoder:
        """A decoder from a layer's ``in_channels`` maps to images of ``out_channels`` (the model's input's)."""
        if self.arch == "paper":
            return PaperDecoder(in_channels, stride, out_channels)
        return SubpixelDecoder(in_channels, stride, self.width, self.blocks, out_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_unit(x: torch.Tensor, handle: ModelHandle) -> torch.Tensor:
    """Normalised images back to [0, 1]."""
    mean = torch.tensor(handle.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(handle.std, device=x.device).view(1, -1, 1, 1)
    return x * std + mean


def decoder_path(cache: Path, handle: ModelHandle, layer: str) -> Path:
    return cache / "decoders" / f"{handle.short_id}-{layer}.pt"


def load_decoder(cache: Path, handle: ModelHandle, layer: str, device: torch.device | str = "cpu") -> Decoder:
    path = decoder_path(cache, handle, layer)
    if not path.is_file():
        raise UsageError(
            f"no RU decoder for {handle.name} layer {layer!r} in {path.parent}",
            hint=f"train one: kgexplain decoders train --layers {layer} (same --model/--weights/--store)",
        )
    blob = torch.load(path, map_location=device, weights_only=True)
    dec = DecoderConfig.of_file(blob).build(int(blob["in_channels"]), int(blob["stride"]), handle.channels)
    dec.load_state_dict(blob["state"])
    return dec.to(device).eval()


def decoder_info(cache: Path, handle: ModelHandle, layer: str) -> dict[str, Any] | None:
    path = decoder_path(cache, handle, layer)
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    keys = ("layer", "model", "data", "config", "mse", "seconds", "images")
    arch = DecoderConfig.of_file(blob).arch
    extra = {"psnr": blob.get("psnr"), "held_out": blob.get("held_out", 0), "arch": arch, "path": str(path)}
    return {k: blob[k] for k in keys} | extra


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image PSNR in dB of [0, 1] images (B, 3, H, W): 10 log10(1 / MSE)."""
    mse = (reconstruction - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def held_out_psnr(
    decoders: dict[str, Decoder],
    probe: NoiseProbe,
    x: torch.Tensor,
    handle: ModelHandle,
    batch: int = 32,
) -> dict[str, float]:
    """Mean per-image PSNR (dB) of each layer's decoder on normalised images ``x`` it was not trained on."""
    scores: dict[str, list[torch.Tensor]] = {n: [] for n in decoders}
    dev = next(iter(decoders.values())).head.weight.device
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch].to(dev)
            target = to_unit(xb, handle)
            for (n, dec), f in zip(decoders.items(), probe(xb), strict=True):
                scores[n].append(psnr(dec.eval()(f), target).cpu())
    return {n: float(torch.cat(v).mean()) for n, v in scores.items()}


def _stride(layer: str, feat: torch.Tensor, size: int) -> int:
    stride = size // feat.shape[-1]
    if stride * feat.shape[-1] != size:
        raise UsageError(f"layer {layer!r}: a {feat.shape[-1]} px map does not divide the {size} px input")
    return stride


def train_decoders(
    handle: ModelHandle,
    layers: list[str],
    source: ImageSource,
    framing: Framing,
    cache: Path,
    config: DecoderConfig | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Train one decoder per layer on the source's images; saved under ``cache/decoders``. Returns their info."""
    cfg = config or DecoderConfig()
    torch.manual_seed(cfg.seed)
    frames, report = framing.apply_usable(source)  # unusable images are skipped and counted, as everywhere
    if not frames:
        raise DataError(f"no usable image in {source.name}", hint=report.summary())
    if report.skipped:
        say(progress, f"images: {report.summary()}")
    images = np.stack([f.image for f in frames])
    x_all = normalise(torch.from_numpy(images), handle)
    held = round(cfg.holdout * len(x_all)) if len(x_all) >= 10 else 0
    x_all, x_held = x_all[: len(x_all) - held], x_all[len(x_all) - held :]
    probe = NoiseProbe(handle, layers)
    with torch.no_grad():
        first = probe(x_all[:1].to(device))
    decoders = {
        n: cfg.build(f.shape[1], _stride(n, f, framing.size), handle.channels).to(device)
        for n, f in zip(layers, first, strict=True)
    }
    params = [p for d in decoders.values() for p in d.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    last = {n: float("nan") for n in layers}
    with task(progress, "decoders", len(x_all) * cfg.epochs, "img") as advance:
        for _epoch in range(cfg.epochs):
            order = torch.randperm(len(x_all), generator=gen)
            sums = {n: 0.0 for n in layers}
            for start in range(0, len(order), cfg.batch_size):
                xb = x_all[order[start : start + cfg.batch_size]].to(device)
                target = to_unit(xb, handle)
                with torch.no_grad():
                    feats = probe(xb)
                loss = torch.zeros((), device=device)
                for n, f in zip(layers, feats, strict=True):
                    mse = F.mse_loss(decoders[n](f), target)
                    sums[n] += float(mse.detach()) * len(xb)
                    loss = loss + mse
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(len(xb))
            last = {n: sums[n] / len(x_all) for n in layers}
    seconds = time.perf_counter() - t0
    scores = held_out_psnr(decoders, probe, x_held, handle) if held else {}
    out = []
    folder = cache / "decoders"
    folder.mkdir(parents=True, exist_ok=True)
    data = source.fingerprint()
    for n, dec in decoders.items():
        path = decoder_path(cache, handle, n)
        blob = {
            "state": dec.cpu().state_dict(),
            "in_channels": dec.in_channels,
            "stride": dec.stride,
            "layer": n,
            "model": handle.identity,
            "data": data,
            "config": cfg.to_dict() | {"framing": framing.describe(), "id": digest([data, cfg.to_dict()])},
            "mse": last[n],
            "psnr": scores.get(n),
            "held_out": held,
            "seconds": seconds,
            "images": len(x_all),
        }
        tmp = temporary_beside(path)
        torch.save(blob, tmp)
        tmp.replace(path)  # never a half-written decoder
        db = round(scores[n], 2) if n in scores else None
        out.append(
            {"layer": n, "arch": cfg.arch, "mse": round(last[n], 5), "psnr_db": db, "images": len(x_all),
             "held_out": held, "path": str(path)}
        )  # fmt: skip
    return out
