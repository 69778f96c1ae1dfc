"""And-Or graph part localisation: exact toy cases, mirroring, the store round trip and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from kgexplain.cli.main import cli

from kgexplain.aog import AOGConfig, Detections, learn_part, localise
from kgexplain.aog.run import iou, score_points
from kgexplain.errors import DataError

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


def test_votes_land_on_the_part_exactly() -> None:
    rng = np.random.default_rng(0)
    parts = np.array([[20.0, 30.0], [25.0, 28.0], [18.0, 33.0]])
    ex = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG)
    assert len(model.templates) == 3 and all(abs(t.weight.sum() - 1) < 1e-5 for t in model.templates)
    new = np.array([[40.0, 12.0], [10.0, 50.0]])
    test = _det(np.stack([_scene(rng, c)[0] for c in new]))
    found = localise(test, model, voters=4)
    got = np.array([[f.x, f.y] for f in found])
    np.testing.assert_allclose(got, new, atol=0.6)
    assert all(f.voters and not f.flipped for f in found)
    assert score_points(got, new, SIZE, model.box).iou50 == 1.0


def test_the_mirrored_image_wins_when_the_part_faces_the_other_way() -> None:
    rng = np.random.default_rng(1)
    parts = np.array([[20.0, 30.0], [22.0, 30.0], [21.0, 29.0]])
    ex = _det(np.stack([_scene(rng, c)[0] for c in parts]))
    model = learn_part("head", "toy", ex, parts, ["a", "b", "c"], SIZE, config=CFG)
    truth = np.array([50.0, 30.0])  # a mirrored object: its part appears at x = 63 - 13 in the mirror
    mirror_part = np.array([SIZE - 1 - truth[0], truth[1]])
    pos_m, _ = _scene(rng, mirror_part)
    on_mirror = _det(pos_m[None])
    nothing = _det(rng.uniform(0, SIZE - 1, (1, 8, 2)), fires=np.zeros((1, 8), bool))
    (f,) = localise(nothing, model, on_mirror)
    assert f.flipped and abs(f.x - truth[0]) < 0.6 and abs(f.y - truth[1]) < 0.6
    assert f.voters and all(abs(x - (SIZE - 1 - pos_m[col, 0])) < 1e-4 for col, x, _y, _w in f.voters)
    (g,) = localise(nothing, model, None)  # without the mirror there is nothing to find
    assert not g.flipped and g.score == 0.0


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


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def _run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_learn_relearn_and_localise(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    build = ["build", "--n", "24", "--iterations", "3", "--patches", "0", "--store", store]
    _run(*build)
    missing = _run("localize", "--part", "head", "--store", store, "x.png", ok=False)
    assert missing.exit_code != 0 and "image not found: x.png" in missing.output
    none_yet = _run("localize", "--part", "head", "--store", store, "--annotations", "nope.json", ok=False)
    assert none_yet.exit_code != 0 and "Error:" in none_yet.output
    first = json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)
    assert first["templates"] == 3 and first["patterns_used"] > 0

    def counts() -> dict[str, int]:  # Meta gains a rewrite marker; everything else must not change
        c = json.loads(_run("stats", "--store", store, "--json").stdout)["counts"]
        return {k: v for k, v in c.items() if k != "Meta"}

    before = counts()
    again = json.loads(_run("aog", "learn", "--part", "head", "--store", store, "--json").stdout)
    assert again["run"] == first["run"]
    assert counts() == before  # idempotent
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

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    broken = _run("localize", "--part", "head", str(bad), "--store", store, ok=False)
    assert broken.exit_code != 0 and "bad.png" in broken.output and "Traceback" not in broken.output
    unknown = _run("aog", "learn", "--part", "wing", "--store", store, ok=False)
    assert unknown.exit_code != 0 and "no annotated 'wing'" in unknown.output
    other = _run("localize", "--part", "tail", "--annotations", str(ann), "--store", store, ok=False)
    assert "no AOG learnt for part 'tail'" in other.output
