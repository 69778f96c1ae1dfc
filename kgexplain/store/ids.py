"""Stable, readable ids: the same inputs always give the same ids, so every write is idempotent.

model    toynet@3f2a1b9c0d4e          (architecture @ weights: sha256-12 of the file, or the weights' name)
layer    toynet@3f2a1b9c0d4e/conv5_2
filter   toynet@3f2a1b9c0d4e/conv5_2/f17
run      eg-toynet-bird-1a2b3c4d      (kind - model - data - hash of everything that determines the result)
pattern  eg-toynet-bird-1a2b3c4d/conv5_2/f17/p3
image    img:9f86d081884c7d65         (sha256-16 of the image file or pixels)
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def slug(text: str, limit: int = 24) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:limit].strip("-") or "x"


def digest(obj: Any, n: int = 8) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def model_id(arch: str, weights: str, weights_sha: str | None) -> str:
    tag = weights_sha[:12] if weights_sha else slug(weights, 32)
    return f"{arch}@{tag}"


def layer_id(model: str, layer: str) -> str:
    return f"{model}/{layer}"


def filter_id(model: str, layer: str, channel: int) -> str:
    return f"{model}/{layer}/f{channel}"


def run_id(kind: str, model_name: str, data_name: str, determinants: Any) -> str:
    return f"{kind}-{slug(model_name)}-{slug(data_name)}-{digest(determinants)}"


def pattern_id(run: str, layer: str, channel: int, k: int) -> str:
    return f"{run}/{layer}/f{channel}/p{k}"


def image_id(sha256_hex: str) -> str:
    return f"img:{sha256_hex[:16]}"
