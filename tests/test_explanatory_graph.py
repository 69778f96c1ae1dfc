"""The explanatory-graph miner on cases where the answer is known."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from kgexplain.errors import UsageError
from kgexplain.explanatory_graph import (
    EGConfig,
    ExplanatoryGraph,
    ExplanatoryGraphMiner,
    Inference,
    LayerInference,
)
from kgexplain.explanatory_graph.estep import Grid, e_step, e_step_numba, numba_shift, pad, subcell
from kgexplain.explanatory_graph.miner import parent_shift
from kgexplain.explanatory_graph.normalise import image_sum
from kgexplain.explanatory_graph.parents import (
    Parents,
    kernel_scores,
    parent_scores,
    select_parents,
    shift_gain,
    slow_parent_scores,
)
from kgexplain.explanatory_graph.patches import png, top_patches
from kgexplain.explanatory_graph.stability import layer_stability, part_array, raw_filter_peaks
from kgexplain.features.cache import FeatureSet, Shard
from kgexplain.features.geometry import LayerGeometry
from kgexplain.jobs.build import strided_map

STRIDE, CENTRE, SIDE = 8.0, 3.5, 16  # a 16x16 map on a 128 px image


def geometry(side: int = SIDE, stride: float = STRIDE, centre: float = CENTRE) -> LayerGeometry:
    return LayerGeometry(
        stride, stride, centre, centre, 3 * stride, 3 * stride, side, side, int(side * stride), int(side * stride)
    )


def feature_set(name: str, maps: np.ndarray, geo: LayerGeometry) -> FeatureSet:
    n = maps.shape[0]
    shard = Shard(0, np.arange(n), [f"img{i}" for i in range(n)], [], data=maps.astype(np.float16))
    return FeatureSet(name, "pre", geo, tuple(maps.shape[1:]), [shard])  # type: ignore[arg-type]


def blob(side: int, row: float, col: float, amp: float = 6.0, width: float = 0.7) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    return amp * np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * width**2))


def px(cell: float, stride: float = STRIDE, centre: float = CENTRE) -> float:
    return centre + cell * stride


def test_em_recovers_two_parts_of_one_filter() -> None:
    """One filter fires on two parts at fixed cells (with one-cell jitter); two patterns find them."""
    rng = np.random.default_rng(0)
    n = 60
    maps = np.zeros((n, 1, SIDE, SIDE), np.float32)
    truth = [(4.0, 4.0), (11.0, 10.0)]  # (row, col)
    for i in range(n):
        for r, c in truth:
            maps[i, 0] += blob(SIDE, r + rng.integers(-1, 2), c + rng.integers(-1, 2))
        maps[i, 0] += rng.normal(0, 0.1, (SIDE, SIDE))
    feats = {"top": feature_set("top", maps, geometry())}
    negatives = {"top": feature_set("top", rng.normal(0, 0.1, (30, 1, SIDE, SIDE)).astype(np.float32), geometry())}
    cfg = EGConfig(layers=("top",), patterns=(2,), iterations=12, seed=1)
    want = sorted((px(c), px(r)) for r, c in truth)
    for neg in (negatives, None):  # background statistics, and the fallback without them
        g = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, neg)
        found = sorted(map(tuple, g.layers[0].mu.round(1)))
        for (fx, fy), (wx, wy) in zip(found, want, strict=True):
            assert abs(fx - wx) < STRIDE / 2 and abs(fy - wy) < STRIDE / 2, (found, want, neg is None)


def test_the_graph_does_not_depend_on_the_scale_of_the_maps() -> None:
    """Background statistics are floored relative to the layer's own scale: maps a billion times smaller (as a
    MobileNet-V2 with random weights has, 5e-9) give the same graph, where an absolute floor silenced them."""
    feats, _, _ = two_layer_case(40, seed=4)
    neg = noise()
    cfg = EGConfig(layers=("low", "up"), patterns=(2, 2), parents=1, iterations=5, seed=3)

    def scaled(fs: FeatureSet, gain: float) -> FeatureSet:
        store = 2.0**30  # stored as the cache stores tiny maps: times a power of two (features.cache.fp16_scale)
        x = fs.tensor().numpy() * gain
        shard = Shard(0, fs.indices, fs.ids, [], data=(x * store).astype(np.float16), scale=store)
        return FeatureSet(fs.layer, fs.relu, fs.geometry, fs.shape, [shard])

    want = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, neg)
    tiny = {n: scaled(f, 2.0**-30) for n, f in feats.items()}
    got = ExplanatoryGraphMiner(cfg, device="cpu").fit(tiny, {n: scaled(f, 2.0**-30) for n, f in neg.items()})
    for a, b in zip(want.layers, got.layers, strict=True):
        assert (a.fires > 0).any()
        np.testing.assert_allclose(b.mu, a.mu, atol=1e-3)
        np.testing.assert_array_equal(b.fires, a.fires)
        np.testing.assert_allclose(b.std, a.std * 2.0**-30, rtol=1e-6)


def two_layer_case(n: int = 60, seed: int = 0) -> tuple[dict[str, FeatureSet], np.ndarray, np.ndarray]:
    """An 'object' at one of two places 16 px apart: the upper filter (8x8 map, stride 16) fires at its centre,
    the lower filter (16x16 map, stride 8) 24 px to its left. Returns features, true lower positions, offset.

    A top-layer pattern covers what lies within its window of its prior, so the object moves one coarse cell."""
    rng = np.random.default_rng(seed)
    up = rng.normal(0, 0.05, (n, 1, 8, 8)).astype(np.float32)
    low = rng.normal(0, 0.05, (n, 1, SIDE, SIDE)).astype(np.float32)
    jitter = np.stack((np.zeros(n, int), rng.integers(0, 2, n)), 1)  # (row, col) in upper cells
    truth = np.zeros((n, 2))
    for i, (jr, jc) in enumerate(jitter):
        up[i, 0] += blob(8, 4 + jr, 4 + jc, width=0.4)  # sharp peaks: a one-cell move beats the Gaussian prior
        low[i, 0] += blob(SIDE, 2 * (4 + jr), 2 * (4 + jc) - 3, width=0.4)
        truth[i] = (7.5 + 8 * (2 * (4 + jc) - 3), 7.5 + 8 * 2 * (4 + jr))
    feats = {
        "low": feature_set("low", low, geometry(SIDE, 8.0, 7.5)),
        "up": feature_set("up", up, geometry(8, 16.0, 7.5)),
    }
    return feats, truth, np.array([-24.0, 0.0])


def noise(n: int = 30, seed: int = 9) -> dict[str, FeatureSet]:
    rng = np.random.default_rng(seed)
    return {
        "low": feature_set("low", rng.normal(0, 0.05, (n, 1, SIDE, SIDE)).astype(np.float32), geometry(SIDE, 8.0, 7.5)),
        "up": feature_set("up", rng.normal(0, 0.05, (n, 1, 8, 8)).astype(np.float32), geometry(8, 16.0, 7.5)),
    }


def test_a_child_follows_its_parent_across_images() -> None:
    """The child's own window reaches +-8 px, the object moves 16 px: only the parent's shift explains it."""
    feats, truth, offset = two_layer_case()
    cfg = EGConfig(layers=("low", "up"), patterns=(1, 1), parents=1, iterations=10, window=0.07, max_candidates=10)
    miner = ExplanatoryGraphMiner(cfg, device="cpu")
    g = miner.fit(feats, noise())
    low, up = g.layers
    assert low.parents[0, 0] == 0
    assert low.parent_offsets(up)[0, 0] == pytest.approx(offset, abs=2.0)  # the learned relation
    inf = miner.infer(g, feats)
    assert np.abs(inf.layers["low"].position[:, 0] - truth).max() <= 1e-3
    assert inf.layers["low"].fires.all()
    # Control: the same layer mined on its own cannot follow the object.
    alone = ExplanatoryGraphMiner(EGConfig(layers=("low",), patterns=(1,), iterations=10, window=0.07), device="cpu")
    solo = alone.infer(alone.fit({"low": feats["low"]}, noise()), {"low": feats["low"]})
    assert np.abs(solo.layers["low"].position[:, 0] - truth).max(axis=1).max() >= 8


def test_mining_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    feats, _, _ = two_layer_case(40, seed=3)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=2, iterations=4, seed=7, shift="shrunk")
    a = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats)
    b = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert np.array_equal(la.mu, lb.mu) and np.array_equal(la.parents, lb.parents)
    a.save(tmp_path / "g.npz")
    c = ExplanatoryGraph.load(tmp_path / "g.npz")
    assert c.patterns == a.patterns and c.edges == a.edges
    for la, lc in zip(a.layers, c.layers, strict=True):
        assert np.array_equal(la.mu, lc.mu) and la.geometry == lc.geometry and np.array_equal(la.std, lc.std)
        assert np.array_equal(la.gain(), lc.gain())
    assert a.layers[0].gain().min() > 0 and a.layers[0].gain().max() < 1  # shrunk shifts
    # A graph saved before the gains existed: its patterns take the parents' whole shift, as they were mined.
    with np.load(tmp_path / "g.npz") as z:
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if not k.endswith("shift_gain")})
    old = ExplanatoryGraph.load(tmp_path / "old.npz")
    assert old.layers[0].shift_gain is None and np.array_equal(old.layers[0].gain(), np.ones(old.layers[0].count))


@pytest.mark.parametrize(
    ("with_parents", "agreement", "noise_mode"),
    [
        (False, False, "cell"),
        (True, False, "cell"),
        (True, True, "cell"),
        (True, True, "window"),
        (False, False, "window"),
    ],
)
def test_the_numba_kernel_matches_the_torch_e_step(with_parents: bool, agreement: bool, noise_mode: str) -> None:
    score_norm = agreement  # with the agreement cases
    torch.manual_seed(0)
    b, d, n, side, r = 6, 5, 3, 12, 2
    grid = Grid(side, side, 8.0, 8.0, 3.5, 3.5, r)
    f = torch.relu(torch.randn(b, d, side, side))
    p = d * n
    mu = torch.rand(p, 2) * 96
    sigma = torch.rand(p) * 8 + 3
    filt = torch.arange(d).repeat_interleave(n)
    pred = mu[None].expand(b, -1, -1)
    up, agree = None, None
    if with_parents:
        pu, m = 7, 3
        idx = torch.randint(0, pu, (p, m))
        up_pos, up_score = torch.rand(b, pu, 2) * 96, torch.rand(b, pu) * 2
        up_mu, edge_w = torch.rand(pu, 2) * 96, (torch.rand(p, m) + 0.1) / 100
        gain = torch.rand(p)  # each child's share of the shift
        shift, agree = parent_shift(
            Parents(idx, torch.zeros(p, m), torch.zeros(p, m), gain), up_mu, edge_w, up_pos, up_score, 1.0
        )
        assert agree.min() < 0.5 < agree.max()  # the case exercises the factor
        pred = pred + shift
        up = (idx, up_pos, up_score, up_mu, edge_w, edge_w, gain)
    pos_n, score_n, st_n = e_step_numba(f, mu, sigma, n, grid, 0.1, True, up, 1.0, agreement, noise_mode, score_norm)
    pos_t, score_t, st_t = e_step(
        pad(f, r), pred, sigma, filt, grid, 0.1, True, agree if agreement else None, noise_mode, score_norm
    )
    assert torch.allclose(pos_n, pos_t) and torch.allclose(score_n, score_t, rtol=1e-4, atol=1e-6)
    assert st_n is not None and st_t is not None
    for a, t in ((st_n.w, st_t.w), (st_n.dx, st_t.dx), (st_n.dy, st_t.dy), (st_n.dd, st_t.dd)):
        assert torch.allclose(a, t, rtol=1e-3, atol=1e-3)
    # Positions below the cell: the kernel's centroid is estep.subcell's, and the scores do not move.
    fine_n, fscore_n, _ = e_step_numba(
        f, mu, sigma, n, grid, 0.1, False, up, 1.0, agreement, noise_mode, score_norm, sub_cell=True
    )
    fine_t, _, _ = e_step(
        pad(f, r),
        pred,
        sigma,
        filt,
        grid,
        0.1,
        False,
        agree if agreement else None,
        noise_mode,
        score_norm,
        sub_cell=True,
    )
    assert torch.allclose(fine_n, fine_t, atol=1e-4) and torch.allclose(fine_t, subcell(f, pos_t, filt, grid))
    assert torch.equal(fscore_n, score_n) and not torch.equal(fine_n, pos_n)


@pytest.mark.parametrize("with_parents", [False, True])
def test_filters_left_out_of_the_kernel_are_zero_and_the_others_unchanged(with_parents: bool) -> None:
    # Without parents the kernel computes each filter's windows once for all images; with them, per image.
    torch.manual_seed(1)
    b, d, n, side, r = 4, 5, 3, 10, 2
    grid = Grid(side, side, 8.0, 8.0, 3.5, 3.5, r)
    f, p = torch.relu(torch.randn(b, d, side, side)), d * n
    mu, sigma = torch.rand(p, 2) * 80, torch.rand(p) * 8 + 3
    up = None
    if with_parents:
        idx, edge_w = torch.randint(0, 4, (p, 2)), torch.full((p, 2), 0.01)
        up = (idx, torch.rand(b, 4, 2) * 80, torch.rand(b, 4) * 2, torch.rand(4, 2) * 80, edge_w, edge_w, torch.ones(p))
    active = torch.tensor([True, False, True, False, True])
    for with_stats in (True, False):
        every = e_step_numba(f, mu, sigma, n, grid, 0.1, with_stats, up, 1.0)
        some = e_step_numba(f, mu, sigma, n, grid, 0.1, with_stats, up, 1.0, active=active)
        on = active.repeat_interleave(n)
        for a, s in zip(every[:2], some[:2], strict=True):
            assert torch.equal(a[:, on], s[:, on]) and not s[:, ~on].any() and a[:, ~on].any()
        if with_stats:
            assert every[2] is not None and some[2] is not None
            assert torch.equal(every[2].rows()[on], some[2].rows()[on]) and not some[2].rows()[~on].any()


def test_sums_over_images_equal_numpys_in_float64_on_strided_maps_too() -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((23, 4, 6, 7)) * 5).astype(np.float16).astype(np.float32)  # as a feature set holds
    padded = torch.from_numpy(np.pad(a, ((0, 0), (0, 0), (2, 2), (2, 2))))[:, :, 2:-2, 2:-2]  # a strided view
    for x in (torch.from_numpy(a), padded):
        assert torch.equal(image_sum(x), torch.from_numpy(a.sum(0, dtype=np.float64)))
        squares = image_sum(x, square=True)
        assert squares.dtype == torch.float64 and torch.equal(
            squares, torch.from_numpy(a.astype(np.float64) ** 2).sum(0)
        )


def test_parent_selection_matches_the_slow_reference() -> None:
    rng = np.random.default_rng(4)
    n, pc, cu = 9, 6, 8
    pos_c = torch.tensor(rng.uniform(0, 100, (n, pc, 2)), dtype=torch.float32)
    pos_u = torch.tensor(rng.uniform(0, 100, (n, cu, 2)), dtype=torch.float32)
    s_c = torch.tensor(np.maximum(rng.normal(1, 1, (n, pc)), 0), dtype=torch.float32)
    s_u = torch.tensor(np.maximum(rng.normal(1, 1, (n, cu)), 0), dtype=torch.float32)
    co, d = parent_scores(pos_c, s_c, pos_u, s_u)
    co_ref, d_ref = slow_parent_scores(pos_c, s_c, pos_u, s_u)
    assert torch.allclose(co.double(), co_ref, atol=1e-5)
    assert torch.allclose(d.double(), d_ref, rtol=1e-3, atol=1e-2)
    chosen = select_parents(pos_c, s_c, pos_u, s_u, torch.arange(cu), 3)
    d2 = d_ref[co_ref > 0].mean()
    want = torch.topk(co_ref * torch.exp(-d_ref / (2 * d2)), 3, dim=1).indices
    assert torch.equal(chosen.index, want)
    assert (chosen.weight[:, :-1] >= chosen.weight[:, 1:]).all()


def test_the_kernel_parent_score_matches_its_definition_and_forgives_one_outlier() -> None:
    rng = np.random.default_rng(5)
    n, pc, cu = 12, 4, 5
    pos_c = torch.tensor(rng.uniform(0, 100, (n, pc, 2)), dtype=torch.float32)
    pos_u = torch.tensor(rng.uniform(0, 100, (n, cu, 2)), dtype=torch.float32)
    s_c = torch.tensor(rng.uniform(0, 2, (n, pc)), dtype=torch.float32)
    s_u = torch.tensor(rng.uniform(0, 2, (n, cu)), dtype=torch.float32)
    d2 = 300.0
    got = kernel_scores(pos_c, s_c, pos_u, s_u, d2, elements=2 * n * cu)  # several chunks of children
    dpc, dpu = pos_c - pos_c.mean(0), pos_u - pos_u.mean(0)
    want = torch.zeros(pc, cu)
    for i in range(pc):
        for j in range(cu):
            k = torch.exp(-((dpc[:, i] - dpu[:, j]) ** 2).sum(-1) / (2 * d2))
            want[i, j] = (s_c[:, i] * s_u[:, j] * k).sum() / (s_c[:, i].norm() * s_u[:, j].norm())
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    # A parent that follows the child on 11 images and is 60 px off on one (so 5 px off on the others once centred):
    # exp(-D / 2 d2) of the mean disagreement carries the outlier's 55^2 / 12; the kernel loses that image's share.
    child = torch.tensor(rng.uniform(20, 80, (n, 1, 2)), dtype=torch.float32)
    parent = child.clone()
    parent[0, 0, 0] += 60
    ones = torch.ones(n, 1)
    co, d = parent_scores(child, ones, parent, ones)
    mean_score = float(co * torch.exp(-d / (2 * 100.0)))
    kernel = float(kernel_scores(child, ones, parent, ones, 100.0))
    assert kernel > 0.75 and mean_score < 0.3


def test_a_child_takes_the_parents_shift_in_proportion_to_how_well_they_predict_it() -> None:
    """shift_gain: the precision-weighted share of Delta (posterior mean of two Gaussians)."""
    rng = np.random.default_rng(6)
    pos = torch.tensor(rng.normal(50, 10, (400, 2, 2)), dtype=torch.float32)  # variance 100 per axis
    gain = shift_gain(pos, torch.tensor([[0.0, 0.0], [30.0, 30.0]]))
    v0 = (pos - pos.mean(0)).pow(2).mean(0).sum(-1) / 2
    assert gain[0] == pytest.approx(float(v0[0] / (v0[0] + 1)), rel=1e-4) and gain[0] > 0.98  # exact parents
    assert gain[1] == pytest.approx(float(v0[1] / 901 / (v0[1] / 901 + 1)), rel=1e-4) and gain[1] < 0.15
    assert float(shift_gain(torch.full((5, 1, 2), 7.0), torch.zeros(1, 3))) == 0.0  # a child that never moves
    # A child that moves rigidly with its parent takes all of the shift; one that moves on its own, as much as its
    # parent moves (spread^2 = v0 + v_parent, equal variances here): gain = v0 / (2 v0 + v0) = 1/3.
    n = 60
    up = torch.tensor(rng.uniform(10, 90, (n, 3, 2)), dtype=torch.float32)
    follow = up[:, :1] + 5
    alone = torch.tensor(rng.uniform(10, 90, (n, 1, 2)), dtype=torch.float32)
    ones = torch.ones(n, 3)
    chosen = select_parents(torch.cat((follow, alone), 1), ones[:, :2], up, ones, torch.arange(3), 1, shrink=True)
    assert chosen.gain is not None and chosen.gain[0] > 0.95 and 0.25 < chosen.gain[1] < 0.4
    # The E-step's prediction takes gain x Delta, in both kernels.
    idx = torch.tensor([[0], [0]])
    up_mu = torch.tensor([[50.0, 50.0]])
    up_pos, up_score = torch.tensor([[[66.0, 50.0]]]), torch.ones(1, 1)
    edge_w = torch.ones(2, 1)
    par = Parents(idx, edge_w, edge_w, torch.tensor([1.0, 0.25]))
    shift, _ = parent_shift(par, up_mu, edge_w, up_pos, up_score, 1.0)
    assert torch.allclose(shift[0], torch.tensor([[16.0, 0.0], [4.0, 0.0]]))
    numba, _ = numba_shift((idx, up_pos, up_score, up_mu, edge_w, edge_w, par.gain), 1.0, False)
    assert np.allclose(numba[0], [[16.0, 0.0], [4.0, 0.0]])


def test_stability_is_zero_for_a_perfect_detector_and_baselines_work() -> None:
    n = 25
    rng = np.random.default_rng(0)
    heads = rng.uniform(20, 100, (n, 2))
    back, tail = np.array([10.0, 20.0]), np.array([-30.0, 25.0])
    kps = [{"head": tuple(h), "back": tuple(h + back), "tail": tuple(h + tail)} for h in heads]
    parts = part_array(kps)
    perfect = heads[:, None, :]  # one pattern always on the head; parts move rigidly with it
    assert layer_stability(perfect, np.ones((n, 1)), parts, keep=1, top=20) == pytest.approx(0.0, abs=1e-9)
    noisy = rng.uniform(0, 128, (n, 1, 2))
    assert layer_stability(noisy, np.ones((n, 1)), parts, keep=1, top=20) > 10
    maps = np.zeros((3, 2, SIDE, SIDE), np.float32)
    maps[:, 0, 5, 9] = 3.0
    maps[:, 1, 12, 2] = 1.0
    pos, score = raw_filter_peaks(feature_set("l", maps, geometry()))
    assert pos[0, 0].tolist() == [px(9), px(5)] and pos[0, 1].tolist() == [px(2), px(12)]
    assert score[0].tolist() == [3.0, 1.0]
    # No images (a rank of a distributed job whose images all failed to decode): empty, not an error.
    pos, score = raw_filter_peaks(feature_set("l", maps[:0], geometry()))
    assert pos.shape == (0, 2, 2) and score.shape == (0, 2)


def test_streaming_from_the_cache_gives_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers larger than the memory budget are streamed shard by shard: the result must not change."""
    import kgexplain.explanatory_graph.miner as miner_module

    feats, _, _ = two_layer_case(40, seed=5)
    cfg = EGConfig(layers=("low", "up"), patterns=(2, 2), parents=1, iterations=3)
    held = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, noise())
    monkeypatch.setattr(miner_module, "MEMORY_BUDGET", 0)
    streamed = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, noise())
    for a, b in zip(held.layers, streamed.layers, strict=True):
        assert np.allclose(a.mu, b.mu) and np.array_equal(a.parents, b.parents)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mining_on_the_gpu_matches_the_cpu() -> None:
    feats, _, _ = two_layer_case(40, seed=6)
    cfg = EGConfig(layers=("low", "up"), patterns=(2, 2), parents=1, iterations=4)
    cpu = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, noise())
    gpu = ExplanatoryGraphMiner(cfg, device="cuda").fit(feats, noise())
    for a, b in zip(cpu.layers, gpu.layers, strict=True):
        assert np.allclose(a.mu, b.mu, atol=0.5) and np.array_equal(a.parents, b.parents)


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_parents_that_disagree_lower_the_patterns_responsibility(kernel: str) -> None:
    """Eq. 3: two parents predict the child; on image 0 both moved by (+8, 0), on image 1 one moved by (+40, 0) and
    one by (-24, 0): the same mean shift, so the same predicted position and the same activation under it, but the
    parents disagree by 8 of their sigmas. With the agreement factor the noise component takes most of image 1's
    activation and the score drops."""
    grid = Grid(SIDE, SIDE, STRIDE, STRIDE, CENTRE, CENTRE, 3)
    mu = torch.tensor([[px(6), px(6)]])
    maps = np.stack([blob(SIDE, 6, 7, width=0.5)[None]] * 2).astype(np.float32)  # the child, 8 px right of mu
    f = torch.from_numpy(maps)
    up_mu = torch.tensor([[px(3), px(3)], [px(10), px(10)]])
    up_pos = torch.stack((up_mu + torch.tensor([8.0, 0.0]), up_mu + torch.tensor([[40.0, 0.0], [-24.0, 0.0]])))
    up_score = torch.ones(2, 2)
    index, edge_w = torch.tensor([[0, 1]]), torch.full((1, 2), 1.0 / 8.0**2)
    sigma = torch.tensor([6.0])

    def run(agreement: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = []
        for i in range(2):
            one = (index, up_pos[i : i + 1], up_score[i : i + 1], up_mu, edge_w, edge_w, torch.ones(1))
            if kernel == "numba":
                pos, score, st = e_step_numba(f[i : i + 1], mu, sigma, 1, grid, 0.1, True, one, 1.0, agreement)
            else:
                shift, agree = parent_shift(Parents(index, edge_w, edge_w), up_mu, edge_w, one[1], one[2], 1.0)
                pred = mu[None] + shift
                pos, score, st = e_step(
                    pad(f[i : i + 1], 3), pred, sigma, torch.zeros(1, dtype=torch.long), grid, 0.1, True,
                    agree if agreement else None,
                )  # fmt: skip
            assert st is not None
            out.append((pos[0, 0].numpy(), float(score[0, 0]), float(st.w[0])))
        return np.array([o[0] for o in out]), np.array([o[1] for o in out]), np.array([o[2] for o in out])

    pos, score, w = run(agreement=False)
    assert np.allclose(pos, [[px(7), px(6)]] * 2) and score[0] == pytest.approx(score[1])
    assert w[0] == pytest.approx(w[1])
    pos_a, score_a, w_a = run(agreement=True)
    assert np.allclose(pos_a, pos)  # the factor is the same at every cell: it does not move the pattern
    assert w_a[0] == pytest.approx(w[0], rel=1e-3)  # parents that agree: unchanged
    assert w_a[1] < 0.5 * w_a[0] and score_a[1] < 0.5 * score_a[0]


def test_em_on_a_sample_then_one_pass_matches_em_on_every_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """EM iterated on 150 of 300 images, then one inference pass over all 300, ends within a pixel of EM on all
    300 (held in memory and streamed from the cache), and infers on every image; so does stepwise EM on
    mini-batches of 30."""
    import kgexplain.explanatory_graph.miner as miner_module

    rng = np.random.default_rng(2)
    n = 300
    maps = np.zeros((n, 1, SIDE, SIDE), np.float32)
    truth = [(4.0, 4.0), (11.0, 10.0)]
    for i in range(n):
        for r, c in truth:
            maps[i, 0] += blob(SIDE, r + rng.normal(0, 0.3), c + rng.normal(0, 0.3))
        maps[i, 0] += rng.normal(0, 0.1, (SIDE, SIDE))
    feats = {"top": feature_set("top", maps, geometry())}
    cfg = EGConfig(layers=("top",), patterns=(2,), iterations=12, seed=1, em_images=0, em_batch=0)
    batch = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats)
    sampled_cfg = EGConfig(layers=("top",), patterns=(2,), iterations=12, seed=1, em_images=150, em_batch=0)
    sampled = ExplanatoryGraphMiner(sampled_cfg, device="cpu").fit(feats)
    monkeypatch.setattr(miner_module, "MEMORY_BUDGET", 0)
    streamed = ExplanatoryGraphMiner(sampled_cfg, device="cpu").fit(feats)
    want = batch.layers[0].mu[np.lexsort(batch.layers[0].mu.T)]
    for g in (sampled, streamed):
        got = g.layers[0].mu[np.lexsort(g.layers[0].mu.T)]
        assert np.abs(got - want).max() < 1.0, (got, want)
    inf = ExplanatoryGraphMiner(sampled_cfg, device="cpu").infer(sampled, feats)
    assert inf.layers["top"].fires.all()
    # Stepwise EM: every iteration's E-step on 30 fresh images, statistics averaged with decaying step sizes; and
    # the default since eg-4, the same for the first 6 iterations, then batch EM.
    stepwise = replace(cfg, em_batch=30, em_full_iterations=0)
    for c in (stepwise, replace(cfg, em_batch=30), replace(cfg, em_batch=EGConfig().em_batch)):
        g = ExplanatoryGraphMiner(c, device="cpu").fit(feats)
        assert np.abs(g.layers[0].mu[np.lexsort(g.layers[0].mu.T)] - want).max() < 1.0
    # Incremental EM: every image first, then each iteration's 30 images replace their own earlier statistics.
    incremental = replace(stepwise, em_update="incremental")
    g = ExplanatoryGraphMiner(incremental, device="cpu").fit(feats)
    assert np.abs(g.layers[0].mu[np.lexsort(g.layers[0].mu.T)] - want).max() < 1.0


def test_mini_batches_only_where_the_window_is_large_enough_and_never_in_the_last_iterations() -> None:
    """Stepwise EM's mini-batches run on a layer whose window holds em_batch_cells cells or more (here 5 x 5 = 25),
    not in the last em_full_iterations, and only when a batch is smaller than the EM images: a layer below the
    threshold, every iteration a full one, or a batch of all 60 images is mined as batch EM to the bit; at the
    threshold the mini-batches change the graph."""
    feats, _, _ = two_layer_case(60, seed=8)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=2, iterations=5, em_images=0, em_batch=0)
    batch = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats)
    cells = (2 * round(cfg.window * SIDE) + 1) ** 2
    assert cells == 25
    mini = replace(cfg, em_batch=20, em_full_iterations=2)
    as_batch = (
        replace(mini, em_batch_cells=cells + 1),
        replace(mini, em_full_iterations=5),
        replace(mini, em_batch=60),
    )
    for same in as_batch:  # a layer below the threshold, only full iterations, a batch of every EM image
        got = ExplanatoryGraphMiner(same, device="cpu").fit(feats)
        for a, b in zip(batch.layers, got.layers, strict=True):
            assert np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma)
    got = ExplanatoryGraphMiner(replace(mini, em_batch_cells=cells), device="cpu").fit(feats)
    assert not all(np.array_equal(a.mu, b.mu) for a, b in zip(batch.layers, got.layers, strict=True))
    # A mini-batch of one image (as a rank of a distributed job can get) with parents: its shift keeps its row.
    one = ExplanatoryGraphMiner(replace(mini, em_batch=1, em_batch_cells=cells), device="cpu").fit(feats)
    assert np.isfinite(one.layers[0].mu).all()


def test_incremental_em_with_every_image_in_its_batch_is_batch_em() -> None:
    """With a mini-batch as large as the EM images, incremental EM refreshes every image's statistics each
    iteration, so it is batch EM (the M-step from absolute sums, equal up to rounding), parents included."""
    feats, _, _ = two_layer_case(40, seed=8)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=2, iterations=5, em_images=0, em_batch=0)
    batch = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats)
    whole = replace(cfg, em_batch=40, em_update="incremental", em_full_iterations=0)
    inc = ExplanatoryGraphMiner(whole, device="cpu").fit(feats)
    for a, b in zip(batch.layers, inc.layers, strict=True):
        assert np.abs(a.mu - b.mu).max() < 1e-3 and np.abs(a.sigma - b.sigma).max() < 1e-3
        assert np.array_equal(a.parents, b.parents)


def test_options_added_after_eg2_leave_the_saved_config_and_run_ids_alone() -> None:
    """A config at the defaults saves without the later options (its run id is the one it had before them); a
    non-default value is saved, and both read back as they were."""
    cfg = EGConfig(layers=("a",), patterns=(2,))
    assert "em_update" not in cfg.to_dict()
    assert EGConfig.from_dict(cfg.to_dict()) == cfg
    inc = replace(cfg, em_batch=25, em_update="incremental")
    assert inc.to_dict()["em_update"] == "incremental"
    assert EGConfig.from_dict(inc.to_dict()) == inc
    with pytest.raises(UsageError):
        EGConfig(em_update="online")


def test_parents_are_rechosen_on_the_doubling_schedule() -> None:
    cfg = EGConfig(parent_schedule="doubling")
    assert [i for i in range(21) if cfg.parents_due(i)] == [1, 2, 4, 8, 16]
    assert [i for i in range(5) if EGConfig(parent_schedule="every").parents_due(i)] == [1, 2, 3, 4]


def test_the_fits_last_pass_is_the_inference() -> None:
    feats, _, _ = two_layer_case(40, seed=8)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=2, iterations=4, em_images=25)
    miner = ExplanatoryGraphMiner(cfg, device="cpu")
    graph, inf = miner.fit_infer(feats, noise())
    again = miner.infer(graph, feats)
    assert inf.image_ids == again.image_ids
    for name in ("low", "up"):
        a, b = inf.layers[name], again.layers[name]
        assert a.position.shape == (40, graph.layer(name).count, 2)
        assert np.array_equal(a.position, b.position) and np.allclose(a.score, b.score) and (a.fires == b.fires).all()


def test_sub_cell_positions_follow_a_blob_between_cells_and_ignore_the_padding() -> None:
    """A blob centred between cells: the refined position is less than half as far from its centre as the argmax
    cell's centre is (a 3 x 3 centroid still leans towards the cell); a blob on a cell stays there; at the map's
    edge the cells off the map count zero (padded or not, the same answer) and the position still improves."""
    grid = Grid(SIDE, SIDE, STRIDE, STRIDE, CENTRE, CENTRE, 2)
    centres = [(5.0, 7.4), (9.0, 3.0), (0.3, 14.0)]  # (row, col) in cells
    maps = np.stack([np.stack([blob(SIDE, r, c, width=0.9), np.zeros((SIDE, SIDE))]) for r, c in centres])
    f = torch.from_numpy(maps).float()
    cell = torch.tensor([[[px(round(c)), px(round(r))]] for r, c in centres], dtype=torch.float32)
    filt = torch.tensor([0])
    got = subcell(f, cell, filt, grid)
    truth = torch.tensor([[[px(c), px(r)]] for r, c in centres])
    before, after = (cell - truth).norm(dim=-1)[:, 0], (got - truth).norm(dim=-1)[:, 0]
    assert after[0] < 0.5 * before[0] and after[2] < 0.6 * before[2]
    assert torch.equal(got[1], cell[1])  # on a cell: unchanged
    assert torch.allclose(subcell(pad(f, 2), cell, filt, grid, padding=2), got)
    silent = subcell(f, cell, torch.tensor([1]), grid)  # a filter with no response: the cell centre
    assert torch.equal(silent, cell)


def test_inference_below_the_cell_moves_positions_by_at_most_a_cell() -> None:
    feats, _, _ = two_layer_case(30, seed=9)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=2, iterations=4)
    miner = ExplanatoryGraphMiner(cfg, device="cpu")
    graph = miner.fit(feats, noise())
    cells, fine = miner.infer(graph, feats), miner.infer(graph, feats, sub_cell=True)
    a, b = cells.layers["up"], fine.layers["up"]  # the top layer: the same cells and scores, positions refined
    assert np.array_equal(a.score, b.score) and (a.fires == b.fires).all()
    moved = np.abs(a.position - b.position)
    assert moved.max() <= STRIDE and moved.max() > 0
    # the layer below reads the refined positions through its parents' shift
    assert not np.array_equal(cells.layers["low"].position, fine.layers["low"].position)
    by_torch = ExplanatoryGraphMiner(cfg, device="cpu", kernel="torch").infer(graph, feats, sub_cell=True)
    for name in ("low", "up"):  # the numba kernel's refinement is the torch form's
        assert np.allclose(by_torch.layers[name].position, fine.layers[name].position, atol=1e-3)


def test_inferring_only_some_patterns_and_their_ancestors_leaves_theirs_unchanged() -> None:
    feats, _, _ = two_layer_case(30, seed=9)
    cfg = EGConfig(layers=("low", "up"), patterns=(3, 2), parents=1, iterations=4)
    graph = ExplanatoryGraphMiner(cfg, device="cpu").fit(feats, noise())
    low = graph.layer("low")
    needed = graph.ancestors({"low": [0]})
    assert np.flatnonzero(needed["low"]).tolist() == [0]
    assert np.flatnonzero(needed["up"]).tolist() == [int(low.parents[0, 0])]
    for kernel in ("numba", "torch"):
        miner = ExplanatoryGraphMiner(cfg, device="cpu", kernel=kernel)
        full, some = miner.infer(graph, feats, sub_cell=True), miner.infer(graph, feats, sub_cell=True, needed=needed)
        for name in ("low", "up"):
            a, b, keep = full.layers[name], some.layers[name], needed[name]
            assert 0 < keep.sum() < len(keep)
            assert np.array_equal(a.position[:, keep], b.position[:, keep]), (kernel, name)
            assert np.array_equal(a.score[:, keep], b.score[:, keep])
            assert np.array_equal(a.fires[:, keep], b.fires[:, keep])
            assert not b.score[:, ~keep].any() and not b.fires[:, ~keep].any() and not b.position[:, ~keep].any()
    one = (torch.zeros(1, 1, 4, 4), torch.zeros(2, 2), torch.ones(2), 2, Grid(4, 4, 1, 1, 0, 0, 1), 0.1)
    with pytest.raises(ValueError, match="without statistics"):  # siblings share the statistics' mixture
        e_step_numba(*one, True, patterns=np.array([True, False]))
    pos, score, _ = e_step_numba(*one, False, patterns=np.array([True, False]))
    assert pos.shape == (1, 2, 2) and score[0, 1] == 0


def test_a_graph_saved_before_the_eg2_options_reads_back_as_mined() -> None:
    old = EGConfig.from_dict({"layers": ["a"], "iterations": 20})
    assert (old.agreement, old.score_norm, old.em_images, old.parent_schedule) == (False, False, 0, "every")
    assert (old.shift, old.parent_score, old.em_batch, old.em_full_iterations, old.em_batch_cells) == (
        "full",
        "mean",
        0,
        0,
        0,
    )
    new = EGConfig.from_dict(EGConfig(layers=("a",)).to_dict())
    assert new == EGConfig(layers=("a",)) and new.em_images == 100 and new.parent_schedule == "doubling"
    assert new.shift == "full" and EGConfig(shift="shrunk").shift == "shrunk"
    with pytest.raises(UsageError):
        EGConfig(noise="loud")


@pytest.mark.parametrize("shape", [(40, 40, 3), (1, 1, 3), (7, 3, 3), (5, 9), (120, 64, 3)])
def test_patch_png_decodes_to_the_same_pixels(shape: tuple[int, ...]) -> None:
    a = np.random.default_rng(len(shape) * 7 + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    a[: shape[0] // 2] = a[0]  # runs of equal rows: the Up filter's zero rows
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png(a)))), a)


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_patches_written_on_workers_keep_their_order(workers: int) -> None:
    """The build hands each patch writer every k-th patch; the references must come back in the patches' order."""
    items = [f"patch {i}" for i in range(11)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        assert strided_map(str.upper, items, pool, workers) == [s.upper() for s in items]
        assert strided_map(str.upper, items[:1], pool, workers) == ["PATCH 0"]
        assert strided_map(str.upper, [], pool, workers) == []


def test_patches_of_one_image_and_box_share_pixels_and_a_rank_loads_only_its_images() -> None:
    """Two patterns peaking on the same cell of the same images give the same crops (the build stores them once);
    a rank asking for the patches on its own rows gets exactly those and loads no other image."""
    rng = np.random.default_rng(4)
    n, p = 8, 3
    pos = rng.uniform(0, 48, (n, p, 2)).astype(np.float32)
    pos[:, 1] = pos[:, 0]
    score = rng.uniform(1, 2, (n, p)).astype(np.float32)
    score[:, 1] = score[:, 0]
    inf = Inference({"l": LayerInference(pos, score, score >= 1)}, [])
    layer = SimpleNamespace(name="l", count=p)
    images = rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)
    loaded: list[int] = []

    def load(row: int) -> np.ndarray:
        loaded.append(row)
        return images[row]

    every = top_patches(inf, layer, load, 3, 20)  # type: ignore[arg-type]
    assert len(every) == 9 and sorted(loaded) == sorted(set(loaded))  # each image loaded once
    by = {(q.pattern, q.rank): q for q in every}
    for k in range(3):
        a, b = by[(0, k)], by[(1, k)]
        assert (a.row, a.box) == (b.row, b.box) and np.array_equal(a.pixels, b.pixels)
    for q in every:
        x0, y0, w, h = q.box
        assert (w, h) == (20, 20) and 0 <= x0 <= 28 and 0 <= y0 <= 28
        np.testing.assert_array_equal(q.pixels, images[q.row, y0 : y0 + h, x0 : x0 + w])
    loaded.clear()
    mine = top_patches(inf, layer, load, 3, 20, rows=lambda r: r < 4)  # type: ignore[arg-type]
    assert set(loaded) <= set(range(4))
    assert [(q.pattern, q.rank, q.row) for q in mine] == [(q.pattern, q.rank, q.row) for q in every if q.row < 4]


def test_top_images_of_some_patterns_are_theirs_among_all() -> None:
    """A rank asks for its own patterns' best images only; ties go to the lower row either way."""
    score = np.random.default_rng(5).integers(0, 4, (30, 9)).astype(np.float32)  # many ties
    inf = Inference({"l": LayerInference(np.zeros((30, 9, 2), np.float32), score, score >= 1)}, [])
    rows, best = inf.top_images("l", 5)
    assert (np.diff(best, axis=1) <= 0).all()
    for pats in ([7, 2, 4], [0], list(range(9))):
        sub_rows, sub_best = inf.top_images("l", 5, pats)
        np.testing.assert_array_equal(sub_rows, rows[pats])
        np.testing.assert_array_equal(sub_best, best[pats])
