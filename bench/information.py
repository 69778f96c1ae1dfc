"""SID coherency, constraint, speed and concentration on the reference workload (toy net).

    python bench/information.py --seed 0 --n 8 --json
        {"sid_rel_change": ..., "grad_rel_change": ..., "constraint_rel_err_max": ..., "seconds_per_map": ...,
         "concentration_trained": ..., "concentration_untrained": ...}

With seed S: N synthetic object images (seed S, all six animals, whole image, masks as ground truth) and noise
seed S.
- Coherency (paper sec. 4): conv layer --coherency-layer gets weights and bias / 4, the next conv weights * 4.
  sid_rel_change = sum|sigma' - sigma| / sum|sigma| of the SID map at that layer on the first image;
  grad_rel_change the same for the gradient-magnitude map sqrt(sum_c (dy/df)^2) of the predicted class.
- constraint_rel_err_max: max |E|f'-f|^2 / (alpha delta_f^2) - 1| over every SID map measured here, on fresh
  noise (ru_constraint_rel_err_max: the same for the RU maps).
- seconds_per_map: wall time of all trained-net maps / their number (all layers of a batch of images fit in one
  batched pass); map_cost_passes: time of one fit call / time of one forward+backward pass of that call's noise
  batch (images x layers x samples per step) through every layer asked for, measured in the same run.
- concentration_{trained,untrained}: mean SID outside the object minus inside, at the last layer, averaged over
  the images, for the shipped toy net and the same architecture with random weights (`--weights none`);
  the per-layer values are under "concentration_by_layer".
- ru_psnr: {layer: dB}, the reconstruction PSNR of the RU decoders (trained here on --decoder-images synthetic
  images of seed S + 1000, --decoder-epochs epochs (30 by default: what reconstruction needs; `decoders train`
  runs 5 unless told), --decoder-arch) on the tenth of those images kept out of training;
  ru_concentration_by_layer / ru_by_layer: RU maps of the trained net on the bench images with those decoders,
  beside SID's (--no-ru skips decoders and RU).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kgexplain.data.base import Framing
from kgexplain.data.spec import DataSpec
from kgexplain.data.synth.animals import ANIMALS
from kgexplain.features.extract import normalise
from kgexplain.information import SIDConfig, SIDEstimator, measure
from kgexplain.information.decoder import ARCHS, DecoderConfig, load_decoder, train_decoders
from kgexplain.information.gradient import gradient_maps, rescaled_pair
from kgexplain.models import load_model


def fwd_bwd_seconds(est: SIDEstimator, x: torch.Tensor, batch: int, repeats: int = 7) -> float:
    """Median of ``repeats`` timed passes after one untimed warm-up (3 passes moved the median by 20 %)."""
    xb = x[:1].expand(batch, -1, -1, -1).clone().requires_grad_(True)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        feats = est.probe(xb)
        sum(f.pow(2).sum() for f in feats).backward()  # type: ignore[union-attr]
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=8, help="images")
    ap.add_argument("--layers", default="conv2_2,conv3_2,conv4_2,conv5_2")
    ap.add_argument("--coherency-layer", default="conv4_1")
    ap.add_argument("--batch", type=int, default=2, help="images per fit")
    ap.add_argument("--decoder-images", type=int, default=400, help="training images of the RU decoders")
    ap.add_argument(
        "--decoder-epochs", type=int, default=30, help="RU decoder training epochs (the command's default is fewer)"
    )
    ap.add_argument("--decoder-arch", choices=ARCHS, default=DecoderConfig.arch, help="the RU decoders' architecture")
    ap.add_argument("--no-ru", action="store_true", help="skip the RU decoders and maps")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    layers = args.layers.split(",")
    cfg = SIDConfig(seed=args.seed)
    with tempfile.TemporaryDirectory() as d:
        src = DataSpec(n=args.n, seed=args.seed, categories=ANIMALS).open(d)
        frames = [Framing(128, "none").apply(src, i) for i in range(len(src))]

    trained = load_model("toynet", "shipped")
    untrained = load_model("toynet", "none")

    # Coherency on the first image.
    x1 = normalise(torch.from_numpy(frames[0].image[None].copy()), trained)
    lay = args.coherency_layer
    scaled = rescaled_pair(trained, lay)
    with torch.no_grad():
        out_change = float((scaled.module(x1) - trained.module(x1)).abs().max() / trained.module(x1).abs().max())
    a = SIDEstimator(trained, [lay], cfg).fit(x1)
    b = SIDEstimator(scaled, [lay], cfg).fit(x1)
    sa, sb = np.exp(a.log_sigma), np.exp(b.log_sigma)
    ga, gb = gradient_maps(trained, x1, [lay])[lay], gradient_maps(scaled, x1, [lay])[lay]
    errs = [float(np.abs(a.constraint - 1).max()), float(np.abs(b.constraint - 1).max())]

    m_tr = measure(trained, frames, layers, cfg, batch=args.batch)
    m_un = measure(untrained, frames, layers, cfg, batch=args.batch)
    ru: dict[str, object] = {}
    if not args.no_ru:
        with tempfile.TemporaryDirectory() as d:
            src = DataSpec(n=args.decoder_images, seed=args.seed + 1000, categories=ANIMALS).open(d)
            t = time.perf_counter()
            rows = train_decoders(
                trained,
                layers,
                src,
                Framing(128, "none"),
                Path(d),
                DecoderConfig(epochs=args.decoder_epochs, arch=args.decoder_arch),
            )
            train_s = time.perf_counter() - t
            decoders = {n: load_decoder(Path(d), trained, n) for n in layers}
        m_ru = measure(trained, frames, layers, cfg, decoders=decoders, batch=args.batch)
        ru = {
            "ru_psnr": {r["layer"]: r["psnr_db"] for r in rows},
            "ru_decoder_seconds": round(train_s, 1),
            "ru_by_layer": {r["layer"]: r.get("ru") for r in m_ru.summary()},
            "ru_concentration_by_layer": {
                n: round(float(np.nanmean([r.ru_concentration for r in m_ru.records if r.layer == n])), 4)
                for n in layers
            },
        }
        ru_errs = [abs(r.ru_constraint - 1) for r in m_ru.records if r.ru_constraint is not None]
        ru["ru_constraint_rel_err_max"] = round(max(ru_errs), 4) if ru_errs else None
    for m in (m_tr, m_un):
        errs += [abs(r.constraint - 1) for r in m.records]
    est = SIDEstimator(trained, layers, cfg)
    x = normalise(torch.from_numpy(np.stack([f.image for f in frames[: args.batch]])), trained)
    one = fwd_bwd_seconds(est, x, m_tr.noise_batch)
    fits = math.ceil(len(frames) / args.batch)

    def conc(m, layer):  # type: ignore[no-untyped-def]
        v = [r.concentration for r in m.records if r.layer == layer and not math.isnan(r.concentration)]
        return round(float(np.mean(v)), 4) if v else None

    result = {
        "sid_rel_change": float(np.abs(sb - sa).sum() / np.abs(sa).sum()),
        "grad_rel_change": float(np.abs(gb - ga).sum() / np.abs(ga).sum()),
        "output_rel_change": out_change,
        "constraint_rel_err_max": round(max(errs), 4),
        "seconds_per_map": round(m_tr.seconds / len(m_tr.records), 3),
        "map_cost_passes": round((m_tr.seconds / fits) / one, 1),
        "fwd_bwd_seconds": round(one, 4),
        "noise_batch": m_tr.noise_batch,
        "concentration_trained": conc(m_tr, layers[-1]),
        "concentration_untrained": conc(m_un, layers[-1]),
        "concentration_by_layer": {
            "trained": {n: conc(m_tr, n) for n in layers},
            "untrained": {n: conc(m_un, n) for n in layers},
        },
        "sid_by_layer": {
            "trained": {r["layer"]: r["sid"] for r in m_tr.summary()},
            "untrained": {r["layer"]: r["sid"] for r in m_un.summary()},
        },
        **ru,
        "images": len(frames),
        "layers": layers,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
