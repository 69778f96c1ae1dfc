"""And-Or graph part localisation: exact toy cases, mirroring, the store round trip and the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from kgexplain.cli.main import cli
from PIL import Image

from kgexplain.aog import AOGConfig, Detections, PartModel, Template, learn_part, localise
from kgexplain.aog.extent import best_box, shifted
from kgexplain.aog.learn import calibrate, facing_by_placement, placement_evidence, set_evidence, vote_shift
from kgexplain.aog.overlay import overlay
from kgexplain.aog.run import Detector, Located, held_out_errors, iou, score_points, to_source
from kgexplain.aog.vote import (
    Localisation,
    TemplateScores,
    cue_weights,
    decide_facing,
    facing_cues,
    presence_by_facing,
    weighted_facing,
)
from kgexplain.data.base import Affine, Framing, region_affine
from kgexplain.data.synth import SynthSource
from kgexplain.errors import DataError
from kgexplain.store import StoreSpec
from kgexplain.store.browse import image_localizations

SIZE = 64


def _det(positions: np.ndarray, fires: np.ndarray | None = None) -> Detections:
    """Detections of P candidates on n images; every candidate's reference score is 1."""
    n, p, _ = positions.shape
    fires = np.ones((n, p), bool) if fires is None else fires
    return Detections(
        positions.astype(np.float32),
        np.ones((n, p), np.float32),
        fires,
        ["l0", "l1"],
        np.array([0] * (p // 2) + [1] * (p - p // 2)),
        np.concatenate([np.arange(p // 2), np.arange(p - p // 2)]),
        np.ones(p, np.float32),
    )


def _scene(rng: np.random.Generator, part: np.ndarray, p: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Candidates 0-3 sit at fixed offsets from the part; 4-7 fire at random places (clutter)."""
    offsets = np.array([[-6, 0], [6, 0], [0, -6], [0, 6]], np.float32)
    pos = np.empty((p, 2), np.float32)
    pos[:4] = part[None] + offsets
    pos[4:] = rng.uniform(0, SIZE - 1, (p - 4, 2))
    return pos, offsets


CFG = AOGConfig(offset_scale=0.2, refine_rounds=0, flip=True)


def _mirror(det: Detections) -> Detections:
    """The detections of the mirrored images (mirrored coordinates)."""
    return det.flipped(SIZE)


def test_votes_land_on_the_part_exactly() -> None:
    rng = np.random.default_rng(0)
    parts = np.array([[20.0, 30.0], [25.0, 28.0], [18.0, 33.0]])
    ex = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG, mirrored=_mirror(ex))
    assert len(model.templates) == 6 and all(abs(t.weight.sum() - 1) < 1e-5 for t in model.templates)
    assert [t.flipped for t in model.templates] == [False] * 3 + [True] * 3
    new = np.array([[40.0, 12.0], [10.0, 50.0]])
    test = _det(np.stack([_scene(rng, c)[0] for c in new]))
    found = localise(test, model, voters=4)
    got = np.array([[f.x, f.y] for f in found])
    np.testing.assert_allclose(got, new, atol=0.6)
    assert all(f.voters and not f.flipped for f in found)
    assert score_points(got, new, SIZE, model.box).iou50 == 1.0


def test_the_prior_holds_the_coordinates_the_votes_do_not_follow() -> None:
    """Five examples: the patterns sit at fixed offsets from an anchor that does not move, while the part moves
    around it (its votes can only repeat where the part was on some example): left out in turn, the other examples'
    mean places each one better than the votes do, so the prior holds both coordinates. A part whose patterns move
    with it keeps the votes (they are exact)."""
    rng = np.random.default_rng(3)
    anchor = np.array([30.0, 28.0])
    parts = np.array([[24.0, 16.0], [36.0, 40.0], [30.0, 28.0], [26.0, 22.0], [34.0, 34.0]])
    ids = list("abcde")
    auto = replace(CFG, position="auto")
    still = _det(np.stack([_scene(rng, anchor)[0] for _ in parts]))
    model = learn_part("back", "toy", still, parts, ids, SIZE, config=auto, mirrored=_mirror(still))
    assert model.prior["axes"] == [True, True] and model.prior["loo_examples"] == 5
    sse = model.prior["loo_sse"]
    assert all(p < 0.9 * v for p, v in zip(sse["prior"], sse["votes"], strict=True))
    (f,) = localise(_det(_scene(rng, anchor)[0][None]), model, voters=4)
    assert f.from_prior == "xy" and (f.x, f.y) == pytest.approx(tuple(parts.mean(0)), abs=1e-6)
    votes_only = replace(model, config=CFG)  # the default: every coordinate from the votes
    (g,) = localise(_det(_scene(rng, anchor)[0][None]), votes_only, voters=4)
    assert g.from_prior == "" and np.abs(parts - [g.x, g.y]).max(1).min() < 1.1  # an example's position again
    moving = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("head", "toy", moving, parts, ids, SIZE, config=auto, mirrored=_mirror(moving))
    assert model.prior["axes"] == [False, False]
    # Examples that happen to sit alike: the mean of the others is exact, the votes off by sub-cell rounding; the
    # prior is credited with at least its floor of error, so the votes keep the part.
    alike = np.array([[30.0, 20.0]] * 5)
    moving = _det(np.stack([_scene(rng, c)[0] for c in alike]))
    model = learn_part("head", "toy", moving, alike, ids, SIZE, config=auto, mirrored=_mirror(moving))
    assert model.prior["loo_sse"]["prior"] == [0.0, 0.0] and model.prior["axes"] == [False, False]


def _asymmetric_scene(rng: np.random.Generator, part: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """Candidates 0-3 at offsets that are not mirror-symmetric; 4-7 clutter. ``mirrored``: the object faces the
    other way (offsets' x negated)."""
    offsets = np.array([[-8, 0], [-4, 5], [-12, -3], [3, -6]], np.float32)
    if mirrored:
        offsets[:, 0] *= -1
    pos = np.empty((8, 2), np.float32)
    pos[:4] = part[None] + offsets
    pos[4:] = rng.uniform(0, SIZE - 1, (4, 2))
    return pos


def test_a_mirrored_object_is_found_by_the_mirrored_templates_and_its_facing_recorded() -> None:
    rng = np.random.default_rng(1)
    parts = np.array([[30.0, 30.0], [32.0, 30.0], [31.0, 29.0]])
    ex = _det(np.stack([_asymmetric_scene(rng, c) for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG, mirrored=_mirror(ex))
    truth = np.array([24.0, 33.0])
    facing_right = _det(_asymmetric_scene(rng, truth)[None])
    facing_left = _det(_asymmetric_scene(rng, truth, mirrored=True)[None])
    (f,) = localise(facing_right, model, voters=4)
    (g,) = localise(facing_left, model, voters=4)
    assert not f.flipped and g.flipped  # the facing is recorded...
    for loc in (f, g):  # ...and both are found where the part is, with the voters in the image's own pixels
        assert abs(loc.x - truth[0]) < 1.1 and abs(loc.y - truth[1]) < 1.1
        assert loc.voters and all(0 <= col < 4 for col, *_ in loc.voters)
    assert model.templates[g.template].flipped and not model.templates[f.template].flipped


def test_votes_move_to_the_examples_mean_only_when_the_examples_own_errors_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A part that sits still in its box (spread 2 px) whose votes land 6 px above where the examples have it: the
    votes move by the difference when the examples, each placed by the others' templates, err the same way; they
    stay where the examples' errors say the votes are right (three examples that happen to lie apart from the
    average), and where the difference is within its standard error (shrunk by it otherwise). The move is mirrored
    with the facing."""
    import kgexplain.aog.learn as learn_module

    rng = np.random.default_rng(5)
    parts = np.array([[40.0, 30.0], [42.0, 31.0], [38.0, 29.0]])  # examples' mean (40, 30); all facing right
    ex = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("back", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG, mirrored=_mirror(ex))
    spread = rng.normal(0, 2, (200, 2))
    flipped = rng.random(200) < 0.5
    xs = np.where(flipped, (SIZE - 1) - (40 + spread[:, 0]), 40 + spread[:, 0])  # votes at (40, 24) as if right
    placed = [(float(x), float(24 + d), bool(f)) for x, d, f in zip(xs, spread[:, 1], flipped, strict=True)]

    def left_out(errors: list[tuple[float, float]]) -> None:
        out = [(k, False, parts[k] - np.array(e)) for k, e in enumerate(errors)]
        monkeypatch.setattr(learn_module, "_left_out", lambda *a: out)

    left_out([(0.5, 5.0), (-0.5, 7.0), (0.2, 4.0)])  # the examples' own votes are ~5 px too high as well
    moved = vote_shift(model, placed, ex, parts, ["a", "b", "c"])
    d, se = moved["delta"][1], moved["se"][1]
    assert d == pytest.approx(6.0, abs=0.5) and se == pytest.approx(2 / np.sqrt(3), abs=0.2)
    assert moved["shift"][1] == pytest.approx(d * (1 - se**2 / d**2), abs=1e-3)  # shrunk a little, by se
    assert moved["shift"][0] == 0.0  # x: the examples' errors (0.07 px) are not half the difference
    left_out([(0.5, 0.5), (-0.5, -1.0), (0.2, 1.0)])  # the votes place the examples well: they stay
    assert vote_shift(model, placed, ex, parts, ["a", "b", "c"])["shift"] == [0.0, 0.0]
    near = [(x, y + 5.5, f) for x, y, f in placed]  # votes 0.5 px off: within a standard error, not moved
    left_out([(0.5, 1.0), (-0.5, 1.0), (0.2, 1.0)])
    assert vote_shift(model, near, ex, parts, ["a", "b", "c"])["shift"][1] == 0.0
    # localise moves the point by the shift, x mirrored for a mirrored template
    shifted_model = replace(model, prior={"vote_shift": {"shift": [3.0, 6.0]}})
    test = _det(_scene(rng, np.array([30.0, 20.0]))[0][None])
    (plain,) = localise(test, model, voters=0)
    (moved_loc,) = localise(test, shifted_model, voters=0)
    sign = -1.0 if plain.flipped else 1.0
    assert (moved_loc.x - plain.x, moved_loc.y - plain.y) == pytest.approx((3.0 * sign, 6.0), abs=1e-6)
    (mirrored,) = localise(_mirror(test), shifted_model, voters=0)
    (mirrored_plain,) = localise(_mirror(test), model, voters=0)
    assert mirrored.flipped != moved_loc.flipped
    assert mirrored.x - mirrored_plain.x == pytest.approx(-3.0 * sign, abs=1e-6)


def test_the_examples_facings_come_from_where_their_templates_place_the_part() -> None:
    """Example c faces the other way from a and b, but every pattern fires alike on all three, so their strengths'
    cosine cannot tell: a's mirrored template places the part on c exactly and its own template does not, which
    decides c's facing. Where that evidence is too weak (a margin no placement reaches), another part's facings
    are taken when given, else the cosine's (which here gets c wrong)."""
    rng = np.random.default_rng(2)
    parts = np.array([[30.0, 30.0], [32.0, 30.0], [31.0, 29.0]])
    ex = _det(np.stack([_asymmetric_scene(rng, c, mirrored=i == 2) for i, c in enumerate(parts)]))
    ids = ["a", "b", "c"]
    placed = replace(CFG, facing_margin=0.05)  # the toy's offsets are small: the mirror misplaces by 6-7 px
    model = learn_part("head", "toy", ex, parts, ids, SIZE, config=placed, mirrored=_mirror(ex))
    own = {t.example: t.faces for t in model.templates if not t.flipped}
    assert model.facing_from == "placement" and own == {"a": False, "b": False, "c": True}
    assert all(t.faces != own[t.example] for t in model.templates if t.flipped)
    evidence = placement_evidence(model, ex, parts, ids)
    assert evidence[0, 1] > 5 and evidence[0, 2] < -5 and np.isnan(evidence[1, 1])
    blind = replace(CFG, facing_margin=10.0)
    model = learn_part("head", "toy", ex, parts, ids, SIZE, config=blind, mirrored=_mirror(ex))
    assert model.facing_from == "cosine" and not any(t.faces for t in model.templates if not t.flipped)
    given = {"a": True, "b": True, "c": False}  # another part's frame: only the relative facings matter
    model = learn_part("head", "toy", ex, parts, ids, SIZE, config=blind, mirrored=_mirror(ex), facings=given)
    own = {t.example: t.faces for t in model.templates if not t.flipped}
    assert model.facing_from == "given" and own == {"a": False, "b": False, "c": True}


def test_a_template_that_misplaces_the_other_examples_is_dropped() -> None:
    """The network need not be mirror-symmetric: on example a's mirror image the patterns near the part sit at
    other offsets than on the other examples' mirrors, so a's mirrored template places their part far off and is
    dropped (recorded with its error); every other template, and at least one per facing, stays. With
    ``template_error=0`` every template is kept."""
    rng = np.random.default_rng(4)
    parts = np.array([[30.0, 30.0], [32.0, 30.0], [31.0, 29.0]])
    ex = _det(np.stack([_asymmetric_scene(rng, c) for c in parts]))
    mirrored = _mirror(ex)
    odd = mirrored.position.copy()
    odd[0, :4] = odd[0, :4][[2, 3, 0, 1]]  # a's mirror: the part's patterns swapped about
    mirrored = replace(mirrored, position=odd)
    ids = ["a", "b", "c"]
    model = learn_part("head", "toy", ex, parts, ids, SIZE, config=CFG, mirrored=mirrored)
    assert [(d["example"], d["mirrored"]) for d in model.dropped] == [("a", True)]
    assert model.dropped[0]["error_px"] > CFG.template_error * SIZE
    assert len(model.templates) == 5 and [t.k for t in model.templates] == list(range(5))
    assert set(model.facings().tolist()) == {False, True} and model.example_facings()["a"] is False
    keep_all = learn_part("head", "toy", ex, parts, ids, SIZE, config=replace(CFG, template_error=0), mirrored=mirrored)
    assert len(keep_all.templates) == 6 and not keep_all.dropped


def test_the_facing_assignment_agrees_best_with_the_pairs() -> None:
    """Pairwise evidence (> 0: the same facing): one pair that disagrees with the two others is outvoted; the
    weakest example's mean evidence is reported."""
    ev = np.array([[np.nan, 50.0, -40.0], [50.0, np.nan, 5.0], [-40.0, 5.0, np.nan]])
    facing, margin = facing_by_placement(ev)
    assert facing.tolist() == [False, False, True]
    assert margin == pytest.approx((40.0 - 5.0) / 2)  # example 2: +40 with example 0, -5 with example 1
    _, unknown = facing_by_placement(np.full((2, 2), np.nan))
    assert np.isnan(unknown)


def test_one_facing_per_object_is_decided_by_every_part_and_shared() -> None:
    n = 4
    head = PartModel("head", "toy", SIZE, (8.0, 8.0), ["l0"], [_tpl(0, False), _tpl(1, True)])
    tail = PartModel("tail", "toy", SIZE, (8.0, 8.0), ["l0"], [_tpl(0, False), _tpl(1, True)])
    zeros = np.zeros((n, 2))
    # The head is sure the objects face the mirrored way (scores 0.1 vs 0.9); the tail leans weakly the other
    # way (0.55 vs 0.45) but its scores are ten times larger: the normalised evidence of both decides.
    sure = TemplateScores(zeros, zeros, np.tile([0.1, 0.9], (n, 1)), np.tile([0.1, 0.9], (n, 1)))
    weak = TemplateScores(zeros, zeros, np.tile([5.5, 4.5], (n, 1)), np.tile([5.5, 4.5], (n, 1)))
    assert decide_facing([(head, sure), (tail, weak)]).all()
    assert not decide_facing([(head, sure), (tail, weak)], rule="sum").any()  # raw sums let the tail's scale win
    assert not decide_facing([(tail, weak)]).any()


def test_the_facing_weighs_where_each_facings_patterns_fire_strongly() -> None:
    # Vote peaks tie; only the mirrored template's pattern (candidate 1) fires: its presence decides the facing.
    n = 3
    as_learnt, mirrored = _tpl(0, False), _tpl(1, True)
    mirrored.layer = np.ones(1, np.int64)  # candidate 1 (layer l1, index 0)
    for t in (as_learnt, mirrored):
        t.evidence = np.ones(1, np.float32)
    head = PartModel("head", "toy", SIZE, (8.0, 8.0), ["l0", "l1"], [as_learnt, mirrored])
    fires = np.zeros((n, 2), bool)
    fires[:, 1] = True
    det = _det(np.full((n, 2, 2), 30.0), fires=fires)
    tied = TemplateScores(np.zeros((n, 2)), np.zeros((n, 2)), np.full((n, 2), 0.5), None)
    presence = presence_by_facing(det, head)
    assert presence is not None and (presence[:, 1] > presence[:, 0]).all()
    assert decide_facing([(head, tied)], presence=[presence]).all()
    assert not decide_facing([(head, tied)]).any()  # vote peaks alone: a tie, read as the learnt facing
    mirrored.evidence = None  # while learning (no evidence yet) the presence says nothing
    assert presence_by_facing(det, head) is None


def test_facing_cues_are_weighted_by_how_often_they_agree_with_the_others() -> None:
    rng = np.random.default_rng(3)
    truth = rng.choice([-1.0, 1.0], 400)

    def right(p: float) -> np.ndarray:  # the truth's sign on a share p of the images, of random strength
        return np.where(rng.random(400) < p, truth, -truth) * rng.uniform(0.2, 1.0, 400)

    cues = np.stack([right(0.97), right(0.9), right(0.8), rng.uniform(-1, 1, 400), rng.uniform(-1, 1, 400)])
    w = cue_weights(cues)
    assert w[0] > w[2] > 1.0 and w[1] > 1.0 and (w[3:] < 0.3).all()  # the noise cues get (nearly) nothing
    accuracy = [np.mean(((cues * v[:, None]).sum(0) > 0) == (truth > 0)) for v in (w, np.ones(5))]
    assert accuracy[0] > accuracy[1]
    assert cue_weights(cues[:1]).tolist() == [1.0]  # one cue alone: nothing to weigh it against
    assert cue_weights(np.zeros((2, 5))).tolist() == [1.0, 1.0]  # no cue agrees with anything: all alike


def test_a_noisy_part_does_not_overrule_the_parts_that_agree_on_the_facing() -> None:
    # Unlabelled images: the head's and the tail's vote peaks agree on every one; the back's peaks are noise. On a
    # new image the back is sure of the mirrored facing, head and tail lean (less surely) the other way: the
    # weighted cues follow head and tail, equal weights the back.
    n, k = 40, 4
    rng = np.random.default_rng(5)
    sure = rng.choice([0.2, 0.8], n)
    peaks = {"head": np.stack([sure, 1 - sure], 1), "tail": np.stack([sure, 1 - sure], 1) * 2}
    peaks["back"] = rng.uniform(0.1, 0.9, (n, 2))
    new = {"head": [0.6, 0.4], "tail": [1.2, 0.8], "back": [0.05, 0.95]}
    ids = [f"u{i}" for i in range(n)]
    scored, plain = [], []
    for name in ("head", "back", "tail"):
        part = PartModel(name, "toy", SIZE, (8.0, 8.0), ["l0"], [_tpl(0, False), _tpl(1, True)])
        det = _det(np.zeros((n, 2, 2)))
        grown = TemplateScores(np.zeros((n, 2)), np.zeros((n, 2)), peaks[name], None)
        part.cues = {
            "ids": ids,
            **{c: None if v is None else v.tolist() for c, v in facing_cues(det, part, grown).items()},
        }
        now = TemplateScores(np.zeros((k, 2)), np.zeros((k, 2)), np.tile(new[name], (k, 1)), None)
        scored.append((part, now))
        plain.append((replace(part, cues={}), now))
    det = _det(np.zeros((k, 2, 2)))
    facing = weighted_facing(det, scored, ["head", "back", "tail"])
    assert facing is not None and not facing.any()
    assert decide_facing(scored).all()  # equal weights: the back's certainty wins
    assert weighted_facing(det, plain, ["head", "back", "tail"]) is None  # parts learnt without cues: as before
    assert weighted_facing(det, scored[:2], ["head", "back"]) is not None  # two cues: weighed alike


def _tpl(k: int, flipped: bool) -> Template:
    return Template(
        k,
        "a",
        flipped,
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros((1, 2), np.float32),
        np.ones(1, np.float32),
    )


def test_not_found_on_a_background_image_once_calibrated() -> None:
    rng = np.random.default_rng(3)
    parts = np.array([[30.0, 30.0], [32.0, 30.0], [31.0, 29.0]])
    ex = _det(np.stack([_asymmetric_scene(rng, c) for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG, mirrored=_mirror(ex))
    objects = _det(np.stack([_asymmetric_scene(rng, c) for c in rng.uniform(20, 44, (30, 2))]))
    clutter_fires = np.zeros((30, 8), bool)
    clutter_fires[:, 4:] = True  # on background only clutter fires
    background = _det(rng.uniform(0, SIZE - 1, (30, 8, 2)), fires=clutter_fires)
    uncalibrated = localise(background.rows([0]), model)[0]
    assert uncalibrated.found and uncalibrated.confidence is None
    set_evidence(model, objects, background)
    held_obj = _det(np.stack([_asymmetric_scene(rng, c) for c in rng.uniform(20, 44, (20, 2))]))
    held_bg = background.rows(range(20))
    calibrate(model, [f.presence for f in localise(held_obj, model)], [f.presence for f in localise(held_bg, model)])
    assert model.calibration["found_rate"] == 1.0 and model.calibration["false_rate"] == 0.0
    new_bg = _det(rng.uniform(0, SIZE - 1, (5, 8, 2)), fires=clutter_fires[:5])
    new_obj = _det(np.stack([_asymmetric_scene(rng, c) for c in rng.uniform(20, 44, (5, 2))]))
    assert not any(f.found for f in localise(new_bg, model))
    found = localise(new_obj, model)
    assert all(f.found for f in found)
    assert all(f.confidence is not None and f.confidence > 0.5 for f in found)


def test_held_out_errors_are_distances_over_the_diagonal_and_found_follows_the_calibration() -> None:
    source = SynthSource(4, seed=2, size=96, categories=["bird"])
    part = PartModel("head", "bird", 96, (10.0, 10.0), ["conv5_2"], calibration={"threshold": 0.3})
    located = []
    for i, presence in enumerate((0.5, 0.1, 0.4, 0.2)):
        x, y = source.record(i).keypoints["head"]
        loc = Localisation("head", x + 3, y + 4, (0, 0, 1, 1), 0.0, 0, False, presence=presence)
        result = {"x": x + 3 * (1 + (i == 2)), "y": y + 4 * (1 + (i == 2)), "found": True}  # 5 px off, 10 on image 2
        located.append(Located(f"im{i}", result, loc, Affine(1, 0, 1, 0)))
    got = held_out_errors(source, located, part)
    diag = float(np.hypot(96, 96))
    assert got == {"images": 4, "distance": round(25 / 4 / diag, 4), "found": 2, "distance_found": round(7.5 / diag, 4)}
    assert held_out_errors(source, located, replace(part, name="wing")) is None  # not annotated: nothing to say


def test_calibration_threshold_meets_the_stated_precision() -> None:
    part = PartModel("head", "toy", SIZE, (8.0, 8.0), ["l0"], [_tpl(0, False)], AOGConfig(precision=0.9))
    pos = np.linspace(0.5, 1.5, 100)
    neg = np.linspace(0.0, 1.0, 100)
    calibrate(part, pos, neg)
    t = part.calibration["threshold"]
    tpr, fpr = (pos >= t).mean(), (neg >= t).mean()
    assert tpr / (tpr + fpr) >= 0.9
    lower = pos[pos < t].max() if (pos < t).any() else None  # the next lower score would miss the precision
    if lower is not None:
        tpr2, fpr2 = (pos >= lower).mean(), (neg >= lower).mean()
        assert tpr2 / (tpr2 + fpr2) < 0.9
    conf = part.confidence(np.array([0.2, 0.8, 1.4]))
    assert conf is not None and conf[0] < conf[1] < conf[2]


def test_growing_on_unlabelled_images_drops_patterns_whose_offset_does_not_hold() -> None:
    rng = np.random.default_rng(2)
    parts = np.array([[20.0, 30.0], [26.0, 24.0], [30.0, 36.0]])
    ex = np.stack([_scene(rng, c)[0] for c in parts])
    ex[:, 4] = parts + np.array([3.0, 0.0])  # candidate 4 is next to the part on the examples only...
    cfg = AOGConfig(offset_scale=0.2, refine_rounds=2, patterns_per_template=8, flip=False)
    unl_parts = rng.uniform(15, 45, (40, 2))
    unl = np.stack([_scene(rng, c)[0] for c in unl_parts])  # ...and anywhere on the unlabelled images
    model = learn_part("head", "toy", _det(ex), parts, ["a", "b", "c"], SIZE, config=cfg, unlabelled=_det(unl))
    grown = []  # templates that won unlabelled images and were re-learnt there
    for t in model.templates:
        w = dict(zip((t.layer * 4 + t.index).tolist(), t.weight.tolist(), strict=True))  # column -> weight
        if w.get(4, 0.0) < 0.5 * min(w[j] for j in range(4)):
            grown.append(t.k)
    assert grown
    before = learn_part("head", "toy", _det(ex), parts, ["a", "b", "c"], SIZE, config=replace(cfg, refine_rounds=0))
    assert all(
        dict(zip((t.layer * 4 + t.index).tolist(), t.weight.tolist(), strict=True))[4] > 0.1 for t in before.templates
    )


def test_learning_needs_the_part_on_every_example() -> None:
    ex = _det(np.zeros((2, 8, 2)))
    with pytest.raises(DataError, match="every example"):
        learn_part("head", "toy", ex, np.array([[1.0, 2.0], [np.nan, 1.0]]), ["a", "b"], SIZE)


def test_a_part_no_pattern_fires_on_is_a_data_error_with_a_hint() -> None:
    far = _det(np.zeros((2, 8, 2)), fires=np.zeros((2, 8), bool))
    with pytest.raises(DataError, match="no pattern fires") as info:
        learn_part("head", "toy", far, np.array([[30.0, 30.0], [31.0, 29.0]]), ["a", "b"], SIZE)
    assert info.value.hint and "keypoints" in info.value.hint


def _best_box_by_brute_force(m: np.ndarray, tau: float) -> tuple[int, int, int, int]:
    """Every box's sum from the integral image, the first best in (y0, y1, x0, x1) order."""
    a = m - tau * float(m.max())
    integral = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    integral[1:, 1:] = a.cumsum(0).cumsum(1)
    best, box = -np.inf, (0, 0, 0, 0)
    for y0 in range(m.shape[0]):
        for y1 in range(y0 + 1, m.shape[0] + 1):
            r = integral[y1] - integral[y0]
            for x0 in range(m.shape[1]):
                for x1 in range(x0 + 1, m.shape[1] + 1):
                    if r[x1] - r[x0] > best:
                        best, box = r[x1] - r[x0], (x0, y0, x1, y1)
    return box


def test_the_object_box_is_the_best_sum_box_and_the_first_of_equal_ones() -> None:
    rng = np.random.default_rng(3)
    maps = [rng.random((int(rng.integers(1, 9)), int(rng.integers(1, 9)))) for _ in range(40)]
    maps += [rng.integers(0, 3, (int(rng.integers(1, 9)), int(rng.integers(1, 9)))).astype(float) for _ in range(40)]
    maps += [np.ones((4, 6)), np.zeros((3, 3)), np.array([[0.0, 5.0, 0.0, 5.0]])]  # ties, a flat map, two equal peaks
    for m in maps:
        for tau in (0.0, 0.35, 1.0):
            assert best_box(m, tau) == _best_box_by_brute_force(m, tau), (m, tau)
    m = np.zeros((5, 7))
    m[1:3, 2:6] = 1.0
    assert best_box(m, 0.35) == (2, 1, 6, 3)  # exactly the bright block


class _Redness(Detector):
    """A stand-in detector: one candidate whose score is how red the crop is; the object box is given."""

    def objects(self, source, indices, size):  # type: ignore[no-untyped-def]
        return [(20.0, 24.0, 68.0, 72.0)] * len(indices)

    def __call__(self, images, ids=None):  # type: ignore[no-untyped-def]
        red = (images[..., 0].mean((1, 2)) / 255).astype(np.float32)[:, None]  # below the strength cap of 2
        one = np.ones(1, np.float32)
        return Detections(
            np.zeros((len(images), 1, 2), np.float32), red, red > 0, ["l"], np.zeros(1, int), np.zeros(1, int), one
        )


def test_a_whole_image_is_cropped_where_the_detections_are_strongest_among_the_box_and_its_shifts() -> None:
    source = SynthSource(3, seed=4, size=96, categories=["bird", "background"])
    detector = object.__new__(_Redness)
    batch, det, boxes = detector.on_objects(source, [0, 1, 2], 48)
    for j in range(3):
        tried = shifted((20.0, 24.0, 68.0, 72.0), 96, 96)
        assert len(tried) == 9 and tried[0] == (20.0, 24.0, 68.0, 72.0)
        assert all(0 <= b[0] < b[2] <= 96 and 0 <= b[1] < b[3] <= 96 for b in tried)
        frames = [Framing(48).apply(source, j, with_mask=False, region=b).image for b in tried]
        red = [detector(f[None]).score[0, 0] for f in frames]
        best = int(np.argmax(red))  # the first of equals, as on_objects keeps it
        assert boxes[j] == tried[best]
        assert det.score[j, 0] == red[best]  # the detections of the chosen crop, not of the first or the last
        assert np.array_equal(batch.images[j], frames[best])
    assert len({tuple(b) for b in boxes}) > 1  # the images chose different shifts: the rows were merged


def test_an_object_box_overhanging_by_a_rounding_error_is_clipped_before_the_crop() -> None:
    """Mapped back from the object search's frame, a box began at y = -4e-16 on a 6000 x 4000 photo, and the crop
    refused it ("box offset can't be negative"): every box tried lies on the image, the box itself too."""
    source = SynthSource(1, seed=4, size=96, categories=["bird"])
    tried = shifted((10.0, -4.440892098500626e-16, 90.0, 96.00000000000001), 96, 96)
    assert tried[0] == (10.0, 0.0, 90.0, 96.0)
    assert all(0 <= b[0] < b[2] <= 96 and 0 <= b[1] < b[3] <= 96 for b in tried)
    for b in tried:
        assert Framing(48).apply(source, 0, with_mask=False, region=b).image.shape == (48, 48, 3)


@pytest.mark.parametrize(
    ("size", "drawn"),
    [((128, 128), (512, 512)), ((6000, 4000), (1024, 683)), ((300, 4000), (256, 3413)), ((640, 480), (640, 480))],
)
def test_overlays_are_drawn_at_a_readable_size_whatever_the_photo(
    size: tuple[int, int], drawn: tuple[int, int]
) -> None:
    """Small images enlarged, large ones reduced (a 6000 x 4000 photo gave an 11 MB PNG with an unreadable label),
    a narrow strip kept wide enough; the label strip above grows with the lines the label wraps into."""
    w, h = size
    result = {"part": "head", "x": w / 2, "y": h / 2, "box": [w / 4, h / 4, w / 2, h / 2], "score": 0.5}
    result |= {"found": False, "confidence": 0.4, "flipped": True, "object_box": [0, 0, w, h]}
    img = overlay(Image.new("RGB", size, (90, 120, 60)), result, [], region_affine((0, 0, w, h), 128, 128), 0.95)
    assert img.size[0] == drawn[0] and img.size[1] - drawn[1] in range(20, 120)
    label = np.asarray(img)[: img.size[1] - drawn[1]]
    assert (label > 150).any()  # the text is drawn in the strip


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def _run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_a_build_on_user_data_grows_on_its_images_and_calibrates_on_its_negatives_folder(tmp_path: Path) -> None:
    """`aog learn` on a build of the user's own data reads the build's images and --negatives again from where the
    build read them: the templates grow (and "not found" is calibrated) on the build's 15 birds, not on the 3 of the
    examples file; without them it says why it cannot calibrate. `localize --whole` says it changes nothing on such a
    build, which framed its images whole."""
    birds, background, store = tmp_path / "birds", tmp_path / "background", str(tmp_path / "store")
    _run("data", "synth", "--out", str(birds), "--n", "15", "--seed", "4", "--category", "bird")
    _run("data", "synth", "--out", str(background), "--n", "12", "--seed", "5", "--category", "background")
    data = birds / "annotations.json"
    doc = json.loads(data.read_text())
    examples = str(birds / "three.json")
    Path(examples).write_text(json.dumps({"images": doc["images"][:3]}))
    neg = ["--negatives", str(background / "images")]
    _run("build", "--annotations", str(data), *neg, "--iterations", "2", "--patches", "0", "--store", store)
    learn = ["aog", "learn", "--part", "head", "--store", store, "--json"]
    learnt = json.loads(_run(*learn, "--examples", examples).stdout)
    assert learnt["unlabelled_images"] == 10  # two thirds of the build's 15 birds; the rest calibrate
    assert learnt["calibration"]["positives"] == 5 and learnt["not_calibrated_because"] is None
    assert learnt["calibration"]["negatives"] > 0  # the build's --negatives folder, found again from the store
    own = json.loads(_run(*learn).stdout)  # no examples file: the build's own annotations
    assert own["unlabelled_images"] == 10 and own["calibration"]["positives"] == 5
    data.rename(birds / "elsewhere.json")
    res = CliRunner().invoke(cli, [*learn[:-1], "--examples", examples], catch_exceptions=False)
    assert res.exit_code == 0 and "note: the images of build" in res.output, res.output
    assert "not calibrated (3 unlabelled images, 9 needed to hold a third out: pass --unlabelled DIR)" in res.output
    (birds / "elsewhere.json").rename(data)
    (background / "images").rename(tmp_path / "moved")
    gone = _run("aog", "learn", "--part", "head", "--examples", examples, "--store", store, ok=False)
    assert gone.exit_code == 1 and "the background images of build" in gone.output and "--negatives" in gone.output
    # This build framed its images whole (no --crop box): so does localisation, and --whole is said to change nothing.
    image, note = str(birds / "images" / "000003.png"), "was mined on whole images (not cropped to object boxes)"
    for flags in ([], ["--whole"]):
        said = CliRunner().invoke(cli, ["localize", "--part", "head", *flags, image, "--store", store])
        assert said.exit_code == 0 and said.output.count(note) == len(flags), said.output


def test_parts_learnt_from_examples_they_do_not_share_are_put_in_one_facing_frame(tmp_path: Path) -> None:
    """The head learnt from three birds, the back from the same birds mirrored: the back's frame starts mirrored,
    and with no example in common it is aligned by localising the head on the back's examples, so both parts
    localise as they do when the back is learnt from the head's own examples. (Unaligned, the object's facing,
    decided by both parts, was wrong on more birds: head 4.3 -> 8.0 px, back 9.3 -> 12.7 px.)"""
    from PIL import Image

    birds, store = tmp_path / "birds", str(tmp_path / "store")
    _run("data", "synth", "--out", str(birds), "--n", "40", "--seed", "8", "--category", "bird")
    doc = json.loads((birds / "annotations.json").read_text())
    _run("build", "--annotations", str(birds / "annotations.json"), "--patches", "0", "--store", store)
    mirrored = []
    for e in doc["images"][:3]:
        img = Image.open(birds / e["path"])
        w = img.width
        path = f"images/mirrored-{Path(e['path']).name}"
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(birds / path)
        x0, y0, x1, y1 = e["box"]
        kps = {k: [w - 1 - v[0], v[1]] for k, v in e["keypoints"].items() if v}
        mirrored.append({"path": path, "label": "bird", "box": [w - x1, y0, w - x0, y1], "keypoints": kps})
    (birds / "a.json").write_text(json.dumps({"images": doc["images"][:3]}))
    (birds / "b.json").write_text(json.dumps({"images": mirrored}))
    test = birds / "test.json"
    test.write_text(json.dumps({"images": doc["images"][20:]}))
    _run("aog", "learn", "--part", "head", "--examples", str(birds / "a.json"), "--store", store)

    def errors(examples: str, aligned_by: str) -> list[float]:
        learn = ["aog", "learn", "--part", "back", "--examples", examples, "--store", store, "--json"]
        learnt = json.loads(_run(*learn).stdout)
        assert (learnt["facing_aligned_to"], learnt["facing_aligned_by"]) == ("head", aligned_by)
        args = ["localize", "--part", "head,back", "--annotations", str(test), "--store", store, "--json"]
        res = json.loads(_run(*args).stdout)["results"]
        out = []
        for part in ("head", "back"):
            found = [r for r in res if r["part"] == part]
            truth = [e["keypoints"][part] for e in doc["images"][20:]]
            dist = [np.hypot(r["x"] - t[0], r["y"] - t[1]) for r, t in zip(found, truth, strict=True)]
            out.append(float(np.mean(dist)))
        return out

    shared = errors(str(birds / "a.json"), "a shared example")
    aligned = errors(str(birds / "b.json"), "localising it on the examples")
    assert aligned[0] < shared[0] + 0.5 and aligned[1] < shared[1] + 1.0, (shared, aligned)


def _as_cub(annotations: Path, root: Path) -> Path:
    """An annotations file's images and boxes (head as CUB's forehead) in CUB-200-2011's layout, one class."""
    images = json.loads(annotations.read_text())["images"]
    (root / "images" / "001.Bird").mkdir(parents=True)
    (root / "parts").mkdir()
    (root / "classes.txt").write_text("1 001.Bird\n")
    (root / "parts" / "parts.txt").write_text("6 forehead\n")
    rows: dict[str, list[str]] = {"images": [], "labels": [], "boxes": [], "locs": []}
    birds = [e for e in images if e.get("box") and (e.get("keypoints") or {}).get("head")]  # no background image
    for k, entry in enumerate(birds, 1):
        name = Path(entry["path"]).name
        shutil.copy(annotations.parent / entry["path"], root / "images" / "001.Bird" / name)
        x0, y0, x1, y1 = entry["box"]
        hx, hy = entry["keypoints"]["head"]
        rows["images"].append(f"{k} 001.Bird/{name}")
        rows["labels"].append(f"{k} 1")
        rows["boxes"].append(f"{k} {x0} {y0} {x1 - x0} {y1 - y0}")
        rows["locs"].append(f"{k} 6 {hx} {hy} 1")
    for key, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                      ("boxes", "bounding_boxes.txt"), ("locs", "parts/part_locs.txt")):  # fmt: skip
        (root / file).write_text("\n".join(rows[key]) + "\n")
    return root


def test_cli_learn_relearn_and_localise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "store")
    build = ["build", "--n", "24", "--iterations", "3", "--patches", "0", "--store", store]
    _run(*build)
    missing = _run("localize", "--part", "head", "--store", store, "x.png", ok=False)
    assert missing.exit_code != 0 and "image not found: x.png" in missing.output
    none_yet = _run("localize", "--part", "head", "--store", store, "--annotations", "nope.json", ok=False)
    assert none_yet.exit_code != 0 and "Error:" in none_yet.output
    first = json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)
    assert first["templates"] == 6 and first["patterns_used"] > 0  # three examples and their mirrors
    assert first["facing_from"] in ("placement", "given", "cosine")
    shift = first["vote_shift"]  # measured on the unlabelled images the templates grew on, stored with the part
    assert shift["images"] > 0 and len(shift["shift"]) == 2 and len(shift["delta"]) == 2
    assert all(abs(s) <= abs(d) + 1e-9 for s, d in zip(shift["shift"], shift["delta"], strict=True))
    assert first["calibration"]["positives"] > 0 and first["calibration"]["negatives"] > 0
    held = first["calibration"]["localisation"]  # the held-out birds annotate the head: their errors are reported
    assert held["images"] == first["calibration"]["positives"] and 0 < held["distance"] < 0.5

    def counts() -> dict[str, int]:  # Meta gains a rewrite marker; everything else must not change
        c = json.loads(_run("stats", "--store", store, "--json").stdout)["counts"]
        return {k: v for k, v in c.items() if k != "Meta"}

    before = counts()
    again = json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)
    assert again["run"] == first["run"]
    assert counts() == before  # idempotent
    # A part learnt under another run id (an older kgexplain's scheme) is replaced, not a duplicated Part node.
    with monkeypatch.context() as m:
        m.setattr("kgexplain.jobs.aog.aog_run_id", lambda build, cat, part: "aog-bird-head-older000")
        assert json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)["run"] == (
            "aog-bird-head-older000"
        )
    assert json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)["run"] == first["run"]
    assert counts() == before
    runs = [r["run"] for r in json.loads(_run("runs", "--store", store, "--json").stdout)]
    assert "aog-bird-head-older000" not in runs and first["run"] in runs
    uses = _run(
        "query",
        "MATCH (:Part)-[:HAS_TEMPLATE]->(:Template)-[u:USES]->(:Pattern) RETURN count(u) AS n",
        "--store",
        store,
        "--json",
    ).stdout
    assert json.loads(uses)[0]["n"] == first["patterns_used"]

    data = next((tmp_path / "store" / "artifacts" / "data").glob("synth-*"))
    ann = data / "annotations.json"
    (tmp_path / "afile").write_text("x")  # an --out that cannot be made: one error line (a traceback before)
    blocked = _run("localize", "--part", "head", "--annotations", str(ann), "--out", str(tmp_path / "afile" / "o"),
                   "--store", store, ok=False)  # fmt: skip
    assert (
        blocked.exit_code != 0
        and "Error: cannot make the folder" in blocked.output
        and "Traceback" not in blocked.output
    )
    out = tmp_path / "overlays"
    res = json.loads(
        _run(
            "localize", "--part", "head", "--annotations", str(ann), "--out", str(out), "--store", store, "--json"
        ).stdout
    )
    assert len(res["results"]) == 48 and all(r["part"] == "head" for r in res["results"])
    assert all(Path(r["overlay"]).is_file() for r in res["results"])
    one = res["results"][0]
    assert len(one["box"]) == 4 and one["box"][0] < one["x"] < one["box"][2]
    assert isinstance(one["found"], bool) and 0.0 <= one["confidence"] <= 1.0 and one["object_box"] is None
    with Image.open(one["overlay"]) as im:
        assert max(im.size) >= 256
    # The same birds in CUB-200-2011's own layout: `localize --cub` (it had no way to read one) crops them to the
    # same boxes and finds the head where --annotations does.
    cub = _as_cub(ann, tmp_path / "CUB_200_2011")
    by_cub = json.loads(
        _run("localize", "--part", "head", "--cub", str(cub), "--limit", "4", "--store", store, "--json").stdout
    )["results"]
    same = {Path(r["image"]).name: (r["x"], r["y"]) for r in res["results"]}
    assert len(by_cub) == 4 and all(same[Path(r["image"]).name] == (r["x"], r["y"]) for r in by_cub)
    stray = _run("localize", "--part", "head", "--split", "test", *[r["image"] for r in by_cub[:1]], "--store", store,
                 ok=False)  # fmt: skip
    assert stray.exit_code == 2 and "--cub-class and --split go with --cub" in stray.output

    # Whole images (no box): the object is searched for; the table shows found and confidence.
    whole = [str(p) for p in sorted((data / "images").glob("*.png"))[:3]]
    table = _run("localize", "--part", "head", *whole, "--store", store).stdout
    assert "found" in table and "confidence" in table
    shown = tmp_path / "whole-overlays"
    res = json.loads(
        _run("localize", "--part", "head", *whole, "--out", str(shown), "--record", "--store", store, "--json").stdout
    )
    for r in res["results"]:
        x0, y0, x1, y1 = r["object_box"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        with Image.open(r["overlay"]) as im:
            assert im.size[0] == 512 and im.size[1] > 512  # drawn at 512 px, with the label strip above
    # --record stores them as a run; the browser's image page lists and marks them.
    assert res["recorded"].startswith("localize-toynet-")
    with StoreSpec(store).read() as db:
        image_id = db.query("MATCH (i:Image) WHERE i.path ENDS WITH $p RETURN i.id", {"p": Path(whole[0]).name}).rows
        [loc] = image_localizations(db, str(image_id[-1][0]))
    first, extra = res["results"][0], json.loads(loc["extra"])
    assert loc["part"] == "head" and loc["run"] == res["recorded"] and extra["found"] == first["found"]
    assert (extra["x"], extra["y"]) == (first["x"], first["y"]) and loc["confidence"] == first["confidence"]

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    broken = _run("localize", "--part", "head", str(bad), "--store", store, ok=False)
    assert broken.exit_code != 0 and "bad.png" in broken.output and "Traceback" not in broken.output
    # A folder: every image in it; one that does not decode is skipped and counted, as in the other jobs.
    folder = tmp_path / "new-photos"
    folder.mkdir()
    for p in whole[:2]:
        shutil.copy(p, folder)
    shutil.copy(bad, folder)
    in_folder = CliRunner().invoke(cli, ["localize", "--part", "head", str(folder), "--store", store, "--json"])
    assert in_folder.exit_code == 0, in_folder.output
    assert [Path(r["image"]).name for r in json.loads(in_folder.stdout)["results"]] == [Path(p).name for p in whole[:2]]
    assert "2 of 3 images used; skipped 1: 1 not an image (e.g. bad.png)" in in_folder.stderr
    mixed = _run("localize", "--part", "head", str(folder), whole[0], "--store", store, ok=False)
    assert mixed.exit_code == 2 and "is a folder (give one folder, or image files)" in mixed.output
    unknown = _run("aog", "learn", "--part", "wing", "--store", store, ok=False)
    assert unknown.exit_code != 0 and "no annotated 'wing'" in unknown.output
    other = _run("localize", "--part", "tail", "--annotations", str(ann), "--store", store, ok=False)
    assert "no AOG learnt for part 'tail'" in other.output


def test_a_part_box_reaching_past_the_image_is_clipped_to_it() -> None:
    from kgexplain.aog.vote import Localisation
    from kgexplain.data.base import Affine

    loc = Localisation("head", 4.0, 60.0, (-10.0, 50.0, 18.0, 70.0), 1.0, 0, False)
    half = Affine(0.5, 0.0, 0.5, 0.0)  # the source image at twice the framed size: 100 x 120 px
    result = to_source(loc, half, image_size=(100, 120))
    assert (result["x"], result["y"]) == (8.0, 120.0) and result["box"] == [0.0, 99.5, 35.5, 120.0]
    assert to_source(loc, half)["box"] == [-20.5, 99.5, 35.5, 139.5]  # no size given: as voted


def test_vote_maps_add_every_vote_on_the_grid_into_its_cell_and_nothing_else() -> None:
    from kgexplain.aog.vote import _blur_matrix, _grid, all_votes, prior_map, vote_maps

    rng = np.random.default_rng(3)
    parts = np.array([[20.0, 30.0], [25.0, 28.0], [18.0, 33.0]])
    ex = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG, mirrored=_mirror(ex))
    pos = np.stack([_scene(rng, c)[0] for c in rng.uniform(0, SIZE, (5, 2))])
    pos[0, :2] = [-40.0, 10.0]  # votes off the grid on the left ...
    pos[1, 2:4] = [10.0, SIZE + 40.0]  # ... and below
    fires = rng.random(pos.shape[:2]) > 0.3  # some candidates do not fire: no weight
    test = _det(pos, fires)
    maps = vote_maps(test, model)
    votes = all_votes(test, model)
    g, step = _grid(model)
    ref = torch.zeros(test.n, len(model.templates), g, g)
    for k in range(len(model.templates)):
        _, v, w = votes.of(k)
        for i in range(test.n):
            for (x, y), wt in zip(v[i], w[i], strict=True):
                ix, iy = int(np.floor((x + 0.5) / step)), int(np.floor((y + 0.5) / step))
                if 0 <= ix < g and 0 <= iy < g and wt > 0:
                    ref[i, k, iy, ix] += float(wt)
    assert float(ref.sum()) < float(votes.weight[votes.weight > 0].sum()) - 1e-3  # some votes fell off the grid
    blur = _blur_matrix(g, model.config.vote_spread * model.size / step)
    ref = blur @ ref @ blur
    for k, tpl in enumerate(model.templates):
        prior = prior_map(model, tpl.faces)
        if prior is not None:
            ref[:, k] *= prior
    assert torch.allclose(maps, ref, atol=1e-6)
    assert maps.abs().sum() > 0


def test_vote_map_peaks_are_the_highest_cell_refined_by_its_3x3_neighbours() -> None:
    from kgexplain.aog.vote import _peaks

    rng = np.random.default_rng(5)
    maps = torch.from_numpy(rng.random((3, 4, 9, 7)).astype(np.float32))
    maps[0, 0] = 0.0  # no votes: the first cell, unrefined
    maps[0, 1, 0, 6] = 5.0  # a peak in a corner: the cells off the map count zero
    maps[1, 2, 4, 3] = 5.0
    maps[1, 2, 4, 4] = 5.0  # a tie: the first in row-major order
    val, xs, ys = _peaks(maps, 2.0)
    a = maps.numpy().astype(np.float64)
    for i in range(3):
        for k in range(4):
            m = a[i, k]
            y0, x0 = np.unravel_index(np.argmax(m), m.shape)  # numpy's argmax: the first of equals
            pad = np.pad(m, 1)[y0 : y0 + 3, x0 : x0 + 3]
            d = np.arange(-1, 2)
            mass = pad.sum()
            x = x0 + (pad * d[None]).sum() / mass if mass > 0 else x0
            y = y0 + (pad * d[:, None]).sum() / mass if mass > 0 else y0
            assert val[i, k] == np.float32(m.max())
            assert xs[i, k] == pytest.approx((x + 0.5) * 2 - 0.5, abs=1e-5)
            assert ys[i, k] == pytest.approx((y + 0.5) * 2 - 0.5, abs=1e-5)
    assert (xs[0, 0], ys[0, 0]) == (0.5, 0.5)
    assert xs[0, 1] < 6 * 2 + 0.5 and ys[0, 1] > 0.5  # pulled inwards from the corner


def test_parts_whose_names_read_alike_get_runs_of_their_own() -> None:
    """A run id shows a part's name as letters, digits and dashes: "tête" and "tôte" both read "t-te", so learning
    one replaced the other's run. Such names now enter the hash; plain names keep the ids they had."""
    from kgexplain.persist.aog import aog_run_id
    from kgexplain.store import ids as I

    assert (
        aog_run_id("eg-toynet-bird-1a2b3c4d", "bird", "head") == f"aog-bird-head-{I.digest('eg-toynet-bird-1a2b3c4d')}"
    )
    alike = ["tête", "tôte", "front_foot", "front-foot", "Front foot", "a" * 24 + "x", "a" * 24 + "y"]
    ids = [aog_run_id("eg-toynet-bird-1a2b3c4d", "bird", part) for part in alike]
    assert len(set(ids)) == len(alike)
    assert ids[0].startswith("aog-bird-t-te-")
