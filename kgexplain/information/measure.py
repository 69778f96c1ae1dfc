"""Measure SID (and RU) maps and concentration for framed images and several layers; summarise per layer."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kgexplain.data.base import Framed
from kgexplain.distributed import Group
from kgexplain.features.extract import normalise
from kgexplain.information.decoder import Decoder
from kgexplain.information.ru import fit_ru
from kgexplain.information.sid import SIDConfig, SIDEstimator, concentration
from kgexplain.models.registry import ModelHandle
from kgexplain.progress import Progress, task


def object_mask(frame: Framed) -> np.ndarray | None:
    """The object's mask in framed pixels, else its box; None when the image has neither."""
    if frame.mask is not None:
        return frame.mask.astype(bool)
    if frame.box is None:
        return None
    size = frame.image.shape[0]
    x0, y0, x1, y1 = (round(v) for v in frame.box)
    m = np.zeros((size, size), bool)
    m[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return m


@dataclass
class MapRecord:
    """One image and layer."""

    image: int  # position in the frames given
    layer: str
    sid: float  # mean pixel-level SID (nats per pixel)
    concentration: float  # mean SID outside the object minus inside (nan without a mask or box)
    constraint: float  # E|f'-f|^2 / (alpha delta_f^2) reached (1 = on the constraint)
    lam: float  # the paper's lambda for this map
    sid_map: np.ndarray  # (S, S) pixel-level SID
    ru: float | None = None
    ru_concentration: float | None = None
    ru_constraint: float | None = None
    ru_map: np.ndarray | None = None

    def row(self) -> dict[str, object]:
        out: dict[str, object] = {
            "layer": self.layer,
            "sid": round(self.sid, 4),
            "concentration": None if math.isnan(self.concentration) else round(self.concentration, 4),
            "constraint": round(self.constraint, 4),
            "lambda": float(f"{self.lam:.4g}"),
        }
        if self.ru is not None:
            out["ru"] = round(self.ru, 4)
            out["ru_concentration"] = (
                None
                if self.ru_concentration is None or math.isnan(self.ru_concentration)
                else round(self.ru_concentration, 4)
            )
            out["ru_constraint"] = None if self.ru_constraint is None else round(self.ru_constraint, 4)
        return out


@dataclass
class Measurement:
    layers: list[str]
    records: list[MapRecord]
    seconds: float
    passes: int
    noise_batch: int  # images in one optimisation step's batch (images x layers x samples)
    delta2: dict[str, float] = field(default_factory=dict)

    def summary(self) -> list[dict[str, object]]:
        """Per layer: means over images (SID, RU, concentration) and the worst constraint error."""
        out = []
        for layer in self.layers:
            rs = [r for r in self.records if r.layer == layer]
            conc = [r.concentration for r in rs if not math.isnan(r.concentration)]
            row: dict[str, object] = {
                "layer": layer,
                "images": len(rs),
                "sid": round(float(np.mean([r.sid for r in rs])), 4),
                "concentration": round(float(np.mean(conc)), 4) if conc else None,
                "constraint_rel_err_max": round(max(abs(r.constraint - 1) for r in rs), 4),
            }
            if rs and rs[0].ru is not None:
                row["ru"] = round(float(np.mean([r.ru for r in rs if r.ru is not None])), 4)
                rc = [r.ru_concentration for r in rs if r.ru_concentration is not None]
                rc = [v for v in rc if not math.isnan(v)]
                row["ru_concentration"] = round(float(np.mean(rc)), 4) if rc else None
            out.append(row)
        return out


def measure(
    handle: ModelHandle,
    frames: Sequence[Framed],
    layers: Sequence[str],
    config: SIDConfig | None = None,
    decoders: Mapping[str, Decoder] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    batch: int = 2,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    group: Group | None = None,
) -> Measurement:
    """SID maps (and RU maps when ``decoders`` are given) for every frame and layer.

    delta_f^2 is measured on every image first and, with ``config.delta == "images"``, averaged over them (the
    paper), so the maps of one image depend on the set it is measured with; ``"image"`` keeps it per image.

    With a distributed ``group`` each rank fits its block of the batches (whole batches: a fit's noise is seeded
    per batch, so a map depends on the images it is fitted with) and every rank gets every record.
    """
    g = group or Group()
    cfg = config or SIDConfig()
    t0 = time.perf_counter()
    layers = list(layers)
    est = SIDEstimator(handle, layers, cfg)
    x_all = normalise(torch.from_numpy(np.stack([f.image for f in frames])), handle)
    size = x_all.shape[-1]
    masks = list(masks) if masks is not None else [object_mask(f) for f in frames]
    d2 = est.reference_delta2(x_all, batch, g)
    records: list[MapRecord] = []
    passes = 0
    mine = g.batches(len(frames), batch)
    with task(progress, "information", sum(min(batch, len(frames) - s) for s in mine), "img") as advance:
        for start in mine:
            xb = x_all[start : start + batch].to(device)
            res = est.fit(xb, delta2=d2[start : start + batch])
            passes += res.passes
            ru = fit_ru(est, decoders, xb, delta2=d2[start : start + batch]) if decoders else None
            if ru is not None:
                passes += ru.passes
            for b in range(xb.shape[0]):
                i = start + b
                for j, layer in enumerate(layers):
                    smap = res.pixel_map(b, j, size)
                    mask = masks[i]
                    rec = MapRecord(
                        image=i,
                        layer=layer,
                        sid=float(smap.mean()),
                        concentration=concentration(smap, mask) if mask is not None else float("nan"),
                        constraint=float(res.constraint[b, j]),
                        lam=float(res.lam[b, j]),
                        sid_map=smap.astype(np.float32),
                    )
                    if ru is not None and ru.extra is not None:
                        rmap = ru.extra["ru"][b, j].astype(np.float32)
                        rec.ru, rec.ru_map = float(rmap.mean()), rmap
                        rec.ru_constraint = float(ru.constraint[b, j])
                        rec.ru_concentration = concentration(rmap, mask) if mask is not None else float("nan")
                    records.append(rec)
            advance(int(xb.shape[0]))
    if g.joined:  # every rank's records, in image order (the blocks are in rank order)
        records = [r for part in g.objects(records, "information maps") for r in part]
        passes = sum(g.objects(passes, "information maps"))
    return Measurement(
        layers=layers,
        records=records,
        seconds=time.perf_counter() - t0,
        passes=passes,
        noise_batch=min(batch, len(frames)) * len(layers) * cfg.samples,
        delta2={n: float(d2[:, j].mean()) for j, n in enumerate(layers)},
    )
