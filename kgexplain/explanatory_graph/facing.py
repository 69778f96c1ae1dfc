"""The object's facing as a latent variable per image (the authors' intent; their flip branch is a no-op).

Each image is mined either as it is or mirrored, whichever the graph explains better: a graph is mined on the
images as they are, every image is scored by the graph as it is and mirrored (the sum of all its patterns'
inference scores), each takes the better of the two, the graph is mined again on the chosen images, and so on for
a few rounds. Measured in bench/facing.py (README: explanatory graphs, ablation): three rounds recover the
generator's facing on 99-100 % of the reference workload's birds on three seeds of four and make the patterns more
stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np

from kgexplain.explanatory_graph.graph import ExplanatoryGraph, Inference
from kgexplain.explanatory_graph.miner import ExplanatoryGraphMiner
from kgexplain.features.cache import FeatureSet, Shard
from kgexplain.progress import Progress, say

Features: TypeAlias = Mapping[str, FeatureSet]  # layer -> its features


def mixed(plain: FeatureSet, mirror: FeatureSet, flip: np.ndarray) -> FeatureSet:
    """One layer's features with image i taken from ``mirror`` where ``flip[i]`` (else from ``plain``), in
    memory; both sets hold the same images in the same order (of which ``flip`` has one entry each)."""
    if len(plain) != len(mirror) or not np.array_equal(plain.indices, mirror.indices) or len(flip) != len(plain):
        raise ValueError("the plain and mirrored features must hold the same images")
    shards, at = [], 0
    for a, b in zip(plain.shards, mirror.shards, strict=True):
        n = len(a.indices)
        f = flip[at : at + n].reshape(-1, 1, 1, 1)
        other = b.array() if b.scale == a.scale else (b.array() * np.float32(a.scale / b.scale)).astype(np.float16)
        shards.append(Shard(a.number, a.indices, a.ids, a.skipped, np.where(f, other, a.array()), scale=a.scale))
        at += n
    return FeatureSet(plain.layer, plain.relu, plain.geometry, plain.shape, shards)


def choose_facing(
    miner: ExplanatoryGraphMiner,
    plain: Mapping[str, FeatureSet],
    mirror: Mapping[str, FeatureSet],
    negatives: Mapping[str, FeatureSet] | None,
    rounds: int,
    model: str = "",
    progress: Progress | None = None,
) -> tuple[ExplanatoryGraph, Inference, np.ndarray, Features]:
    """Mine with the facing chosen per image in ``rounds`` rounds: (the graph mined on the last choice, its
    inference on the chosen images, the choice: True where the image is mined mirrored, the features it was mined
    on: each layer's :func:`mixed` of ``plain`` and ``mirror`` by the choice)."""
    names = list(plain)
    flip = np.zeros(len(plain[names[0]]), bool)
    mined_on: Features = plain
    graph, inference = miner.fit_infer(plain, negatives, model=model, progress=progress)
    for k in range(rounds):
        as_is = miner.infer(graph, plain) if k else inference  # round 0's graph was mined on the plain images
        mirrored = miner.infer(graph, mirror)
        score_plain = sum(as_is.layers[n].score.sum(1) for n in names)
        score_mirror = sum(mirrored.layers[n].score.sum(1) for n in names)
        new = np.asarray(score_mirror > score_plain, bool)
        say(progress, f"facing, round {k + 1} of {rounds}: {int(new.sum())} of {len(new)} images mined mirrored")
        if np.array_equal(new, flip):
            break  # the choice no longer changes: the graph mined on it is the answer
        flip = new
        mined_on = {n: mixed(plain[n], mirror[n], flip) for n in names}
        graph, inference = miner.fit_infer(mined_on, negatives, model=model, progress=progress)
    return graph, inference, flip, mined_on
