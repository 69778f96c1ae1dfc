"""Knowledge points: importance, regional projection, counts (known-answer case), persistence and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp
import torch
from click.testing import CliRunner
from kgexplain.cli.main import cli

from kgexplain.data.synth.dataset import render_arrays
from kgexplain.features.extract import normalise
from kgexplain.knowledge_points.analyse import KPConfig, analyse_layers, strength_correlations
from kgexplain.knowledge_points.collect import Collected, collect, linear_head
from kgexplain.knowledge_points.importance import ImportanceConfig, fit_importance, neighbours
from kgexplain.knowledge_points.kappa import KappaTables
from kgexplain.knowledge_points.regional import RegionalConfig, log_vmf_normaliser
from kgexplain.knowledge_points.sample import SampleConfig
from kgexplain.knowledge_points.shapley import region_masks, sampled_shapley
from kgexplain.models import load_model

from .conftest import write_png


@pytest.fixture(scope="module")
def kappa() -> KappaTables:
    return KappaTables.load(samples=2000)


def one_region_case(
    n: int = 150, side: int = 4, k: int = 12, c: int = 3, seed: int = 0
) -> tuple[Collected, np.ndarray]:
    """Regional features where only region 0 encodes the class (a class-specific channel group); every other
    region is class-independent clutter. The logits read region 0 only."""
    gen = torch.Generator().manual_seed(seed)
    r = side * side
    y = torch.arange(n) % c
    regions = torch.rand((n, r, k), generator=gen) * 0.5  # clutter
    group = k // c
    strength = 1.0 + 2.0 * torch.rand(n, generator=gen)
    for i in range(n):
        lo = int(y[i]) * group
        regions[i, 0] = torch.rand(k, generator=gen) * 0.1
        regions[i, 0, lo : lo + group] += strength[i]
    readout = torch.zeros((c, k))
    for cls in range(c):
        readout[cls, cls * group : (cls + 1) * group] = 1.0
    logits = regions[:, 0] @ readout.T * 1.5
    col = Collected(logits, regions.mean(1), {"L": regions}, {"L": side})
    return col, y.numpy()


def test_importance_rows_are_distributions_and_neighbours_exclude_self() -> None:
    logits = torch.randn(30, 4)
    nb = neighbours(logits, others=10, kappa_p=5.0)
    assert nb.index.shape == (30, 10)
    assert not (nb.index == torch.arange(30)[:, None]).any()
    assert torch.allclose(nb.log_p.exp().sum(1), torch.ones(30), atol=1e-5)
    w, v = fit_importance(torch.rand(30, 9, 5), nb, ImportanceConfig(steps=3))
    for t in (w, v):
        assert (t >= 0).all() and torch.allclose(t.sum(1), torch.ones(len(t)), atol=1e-5)


def test_vmf_normaliser_matches_the_bessel_form() -> None:
    k = torch.tensor([0.01, 0.5, 3.0, 40.0, 600.0])
    nu = 0.5
    kn = k.double().numpy()
    expected = nu * np.log(kn) - 1.5 * math.log(2 * math.pi) - (np.log(sp.ive(nu, kn)) + kn)
    assert np.allclose(log_vmf_normaliser(k, 3).numpy(), expected, atol=1e-3)
    assert np.allclose(log_vmf_normaliser(k.double(), 5).numpy(), log_vmf_normaliser(k.double(), 5).numpy())


def test_known_answer_the_class_lives_in_one_region(kappa: KappaTables) -> None:
    col, y = one_region_case()
    cfg = KPConfig(
        sample=SampleConfig(steps=400),
        importance=ImportanceConfig(others=40),
        regional=RegionalConfig(epochs=15),
    )
    a = analyse_layers(col, y, ["L"], kappa, cfg)
    res = a.layers["L"]
    # importance: region 0 is the most important region of most samples
    assert (res.w.argmax(1) == 0).float().mean() > 0.8
    # the projection: region 0 is the strongest, and it points to the true class
    strength = res.h.norm(dim=-1)
    assert (strength.argmax(1) == 0).float().mean() > 0.8
    pts = res.points
    assert pts.is_kp[:, 0].mean() > 0.8 and pts.reliable[:, 0].mean() > 0.8
    # clutter regions are rarely knowledge points, and those that are, are no better than chance
    assert pts.is_kp[:, 1:].mean() < 0.3
    assert pts.ratio > 0.6
    assert res.corr_importance > 0.3
    assert a.corr["corr_norm_entropy"] < -0.3
    # the ceiling of any strength read-out is at least as strong as |g| itself, and the fit mimics the uncertainty
    assert a.corr["monotone_ceiling"] <= a.corr["corr_norm_entropy"] + 1e-9
    assert a.corr["corr_fit_entropy"] > 0.5


def test_monotone_ceiling_separates_curvature_from_a_bad_read_out() -> None:
    """A strength that decides the entropy exactly but through a curve: Pearson falls short of -1, the ceiling not;
    a strength unrelated to the entropy: the ceiling stays near 0 (isotonic fits to noise are weak)."""
    rng = np.random.default_rng(0)
    strength = rng.uniform(0.1, 5.0, 400)
    logits = torch.tensor(np.stack([strength**2, np.zeros_like(strength)], 1))  # entropy falls steeply, then flat
    f = torch.tensor(rng.normal(size=(400, 6)))
    g = torch.tensor(np.stack([strength, np.zeros_like(strength), np.zeros_like(strength)], 1))
    corr = strength_correlations(g, f, logits, 1.0)
    assert corr["corr_norm_entropy"] > -0.9
    assert corr["monotone_ceiling"] < -0.999
    assert "corr_fit_entropy" not in corr
    noise = torch.tensor(rng.normal(size=(400, 3)))
    assert strength_correlations(noise, f, logits, 1.0)["monotone_ceiling"] > -0.35


FAST = ["--epochs", "2", "--others", "12", "--layers", "conv3_2,conv5_2"]


def _run(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_kp_over_checkpoints_stores_points_and_answers_queries(tmp_path: Path) -> None:
    from kgexplain.zoo import training_series

    store, out = str(tmp_path / "store"), tmp_path / "out"
    series = training_series()
    ckpts = f"{series[0]},{series[-1]}"
    args = ["--n", "16", "--checkpoints", ckpts, "--store", store, "--out", str(out), *FAST]
    rows = json.loads(_run("kp", *args, "--json").stdout)
    assert [(r["checkpoint"], r["layer"]) for r in rows] == [
        (series[0].stem, "conv3_2"), (series[0].stem, "conv5_2"),
        (series[-1].stem, "conv3_2"), (series[-1].stem, "conv5_2"),
    ]  # fmt: skip
    assert all(0 <= r["reliable"] <= r["kp"] <= r["regions"] for r in rows)
    assert (out / "counts.png").is_file() and (out / "checkpoints.png").is_file()
    assert (out / series[-1].stem / "sample-embedding.png").is_file()
    assert (out / series[-1].stem / "regions-conv5_2.png").is_file()
    last = rows[-1]
    q = (
        "MATCH (k:KnowledgePoint)-[:KP_IN]->(l:Layer), (k)-[:KP_ON]->(i:Image) "
        f"WHERE k.reliable AND l.name = 'conv5_2' AND k.checkpoint = '{series[-1].stem}' "
        "RETURN k.cls AS cls, i.label AS label, count(k) AS n ORDER BY cls"
    )
    stored = json.loads(_run("query", q, "--store", store, "--json").stdout)
    assert sum(s["n"] for s in stored) == last["reliable"]
    assert all(s["cls"] == s["label"] for s in stored)  # reliable = points to the labelled class
    metric = (
        "MATCH (m:Metric)-[:MEASURES]->(l:Layer) WHERE m.kind = 'kp_layer' AND m.name = 'kp' "
        "RETURN m.checkpoint AS ck, l.name AS layer, m.value AS v ORDER BY ck, layer"
    )
    metrics = json.loads(_run("query", metric, "--store", store, "--json").stdout)
    assert sorted((m["ck"], m["layer"], m["v"]) for m in metrics) == sorted(
        (r["checkpoint"], r["layer"], float(r["kp"])) for r in rows
    )
    # Again for the last checkpoint: the same points, which replace its earlier ones (the count below is unchanged).
    last_only = [a if a != ckpts else str(series[-1]) for a in args]
    again = json.loads(_run("kp", *last_only, "--json").stdout)
    assert [(r["kp"], r["reliable"]) for r in again] == [(r["kp"], r["reliable"]) for r in rows[2:]]
    count = "MATCH (k:KnowledgePoint) RETURN count(k) AS n"
    assert json.loads(_run("query", count, "--store", store, "--json").stdout)[0]["n"] == sum(r["kp"] for r in rows)


def test_cli_kp_bad_input_fails_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    folder = tmp_path / "imgs"
    for i in range(3):
        write_png(folder / f"x{i}.png", (40, 40), seed=i)
    cases = [
        (["--layers", "conv9_9"], "conv9_9"),
        (["--weights", "shipped", "--checkpoints", "epochs"], "not both"),
        (["--model", "vgg16", "--checkpoints", "epochs"], "toy net"),
        (["--checkpoints", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--images", str(tmp_path / "nowhere")], "nowhere"),
        (["--images", str(folder)], "--truth predicted"),
    ]
    for args, message in cases:
        res = _run("kp", *args, "--store", store, "--out", str(tmp_path / "o"), *FAST[:4], ok=False)
        assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) <= 2, res.output
    assert not (Path(store) / "graph.lbdb").exists()  # every mistake fails before the store is opened


def test_kp_says_when_tau_cannot_separate_so_few_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 classes max_c p(c|h) >= 1/2 > tau = 0.4: every region is a knowledge point, and the job says so. Its
    per-image pictures say how many of an image's knowledge points are reliable (drawn) out of how many."""
    from kgexplain.knowledge_points import figures
    from kgexplain.models.toynet import ToyVGG

    captions: list[str] = []
    drawn = figures.region_boxes
    monkeypatch.setattr(
        figures, "region_boxes", lambda *a, **k: (captions.append(a[4]), drawn(*a, **k))[1]
    )  # fmt: skip

    torch.manual_seed(0)
    weights = tmp_path / "two-classes.pt"
    torch.save(ToyVGG(2).state_dict(), weights)
    folder = tmp_path / "imgs"
    for i in range(4):
        write_png(folder / f"x{i}.png", (64, 64), seed=i)
    args = ["kp", "--weights", str(weights), "--images", str(folder), "--truth", "predicted", "--json"]
    args += ["--store", str(tmp_path / "store"), "--out", str(tmp_path / "o")]
    args += ["--epochs", "1", "--others", "3", "--layers", "conv5_2"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.count("with 2 classes max_c p(c|h) is at least 1/2 = 0.50, above tau = 0.4") == 1
    rows = json.loads(res.stdout)
    assert all(r["kp"] == r["regions"] for r in rows)
    for r in rows:  # the progress line's reliable count is the stored one (it said 0 under --truth predicted)
        assert f"{r['layer']}: {r['kp']} knowledge points, {r['reliable']} reliable" in res.output
    per_image = rows[0]["regions"] // 4
    assert captions == [f"conv5_2: {per_image} of {per_image} knowledge points reliable"] * 4


def test_kp_says_when_every_image_is_of_one_class(tmp_path: Path) -> None:
    """Images all labelled one class make every knowledge point of that class reliable: the job says the ratio then
    says nothing, once per checkpoint; with two classes among the labels it says nothing of the kind."""
    torch.manual_seed(0)
    from kgexplain.models.toynet import ToyVGG

    weights = tmp_path / "cats-dogs.pt"
    torch.save({"state_dict": ToyVGG(3).state_dict(), "meta": {"class_names": ["cat", "dog", "owl"]}}, weights)
    for label, folder in (("one", ["cat"] * 4), ("two", ["cat", "cat", "dog", "dog"])):
        for i, name in enumerate(folder):
            write_png(tmp_path / label / name / f"x{i}.png", (64, 64), seed=i)
        args = ["kp", "--weights", str(weights), "--images", str(tmp_path / label), "--tau", "0.5"]
        args += ["--store", str(tmp_path / "store"), "--out", str(tmp_path / f"o-{label}")]
        args += ["--epochs", "1", "--others", "3", "--layers", "conv5_2"]
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        said = "note: every image is labelled class 'cat', so a knowledge point is reliable whenever it points"
        assert res.output.count(said) == (label == "one"), res.output


def test_exact_shapley_of_regions_under_a_linear_head() -> None:
    """phi sums to the predicted logit minus its bias (efficiency), equals the region's own term, and is not
    claimed where the last linear layer does not read the pooled feature."""
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Linear(6, 4)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        fmap = torch.relu(conv(x))  # (5, 6, 8, 8)
        logits = net(x)
    pooled = fmap.mean((2, 3))
    head = linear_head(net, logits, pooled)
    assert head is not None and torch.equal(head[0], fc.weight.detach())
    regions = torch.nn.functional.adaptive_avg_pool2d(fmap, 4).flatten(2).transpose(1, 2)  # (5, 16, 6), 2x2 cells
    col = Collected(logits, pooled, {"L": regions}, {"L": 4}, "L", head)
    phi = col.shapley("L")
    assert phi is not None and phi.shape == (5, 16)
    c = logits.argmax(1)
    assert torch.allclose(phi.sum(1), logits[torch.arange(5), c] - fc.bias.detach()[c], atol=1e-5)
    assert col.shapley("other") is None
    assert linear_head(net, logits + 1.0, pooled) is None  # the linear layer does not explain these logits


def test_sampled_shapley_equals_the_exact_one_under_a_linear_head() -> None:
    """On the toy net's pooled layer every marginal gain is the region's own term: the permutation estimate equals
    Collected.shapley whatever the permutations; on a lower layer it still sums to the logit gained over none."""
    handle = load_model("toynet", "shipped")
    images = render_arrays(1, seed=5)[0]
    col = collect(handle, images, ["conv5_2"], "conv5_2", grid=8)
    exact = col.shapley("conv5_2")
    assert exact is not None
    sampled = sampled_shapley(handle, images, "conv5_2", grid=8, permutations=2, seed=3)
    assert sampled.shape == exact.shape == (1, 64)
    torch.testing.assert_close(sampled, exact, atol=2e-4, rtol=1e-3)
    low = sampled_shapley(handle, images[:1], "conv3_2", grid=8, permutations=1, seed=3)
    masks = region_masks(16, 16, 8)
    assert low.shape == (1, 64) and masks.sum(0).eq(1).all()  # 16x16 cells: 2x2 per region, no overlap
    with torch.no_grad():
        x = normalise(torch.from_numpy(images[:1]), handle)
        full = handle.module(x)
        cls = int(full.argmax(1))
        module = handle.module.get_submodule(handle.layer("conv3_2").module)
        hook = module.register_forward_hook(lambda _m, _i, o: o * 0)
        try:
            none = handle.module(x)[0, cls]
        finally:
            hook.remove()
    assert float(low.sum()) == pytest.approx(float(full[0, cls] - none), rel=1e-3, abs=1e-3)  # efficiency


def test_checkpoints_from_a_folder_or_a_pattern_in_natural_order_each_once(tmp_path: Path) -> None:
    """`--checkpoints myrun` (what `zoo train --out myrun` wrote) was "checkpoint path is a directory": a folder, or a
    pattern, gives its checkpoint files in natural order, a copy of an earlier file (toynet.pt) left out."""
    from kgexplain.errors import UsageError
    from kgexplain.jobs.kp import checkpoint_series

    run = tmp_path / "myrun"
    run.mkdir()
    for n in (1, 2, 10):
        (run / f"toynet-epoch{n}.pt").write_bytes(f"weights of epoch {n}".encode())
    (run / "toynet.pt").write_bytes(b"weights of epoch 10")  # the final net: the last epoch's copy
    (run / "training.json").write_text("{}")
    epochs = [str(run / f"toynet-epoch{n}.pt") for n in (1, 2, 10)]
    assert checkpoint_series("toynet", str(run)) == tuple(epochs)
    assert checkpoint_series("toynet", f"{run}/toynet-epoch*.pt,shipped") == (*epochs, "shipped")
    with pytest.raises(UsageError, match=r"no file matches .*/nothing-\*\.pt"):
        checkpoint_series("toynet", f"{run}/nothing-*.pt")
    with pytest.raises(UsageError, match=r"no checkpoint \(.*\) in the folder"):
        checkpoint_series("toynet", str(tmp_path / "myrun" / ".." / "myrun" / ".."))
