"""kappa(l) of the revised vMF (knowledge-points paper, appendix B): sampling, closed form, table, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kgexplain.knowledge_points.kappa import (
    KappaSpec,
    KappaTable,
    KappaTables,
    build_table,
    kappa_closed_form,
    sample_vmf,
)


@pytest.mark.parametrize(("d", "kappa"), [(3, 2.0), (3, 20.0), (8, 50.0)])
def test_closed_form_recovers_the_concentration_of_sampled_data(d: int, kappa: float) -> None:
    rng = np.random.default_rng(0)
    mu = np.zeros(d)
    mu[-1] = 1.0
    x = sample_vmf(mu, kappa, 20000, rng)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    assert float(x.mean(0) @ mu) > 0  # centred on mu
    assert float(kappa_closed_form(np.linalg.norm(x.mean(0)), d)) == pytest.approx(kappa, rel=0.08)


def test_kappa_grows_with_strength_from_zero_and_saturates() -> None:
    spec = KappaSpec(samples=4000, points=41, l_max=40.0, kappa0=200.0)
    ls, ks = build_table(spec)
    assert ks[0] == 0.0 and np.all(np.diff(ks) >= 0) and ks[4] > ks[1] > 0
    assert ks[-1] == pytest.approx(200.0, rel=0.2)  # strong features keep only the clean spread kappa0
    # Weak features are mostly noise: at l = 1 in 3-D the orientation is nearly uniform.
    assert float(np.interp(1.0, ls, ks)) < 3.0


def test_table_interpolates_differentiably_and_is_cached(tmp_path: Path) -> None:
    spec = KappaSpec(samples=2000, points=21)
    table = KappaTable.load(spec, tmp_path)
    assert len(list(tmp_path.glob("kappa-*.npz"))) == 1
    again = KappaTable.load(spec, tmp_path)
    assert torch.equal(table.k, again.k)
    l = torch.tensor([0.0, 1.0, 3.3, 1e6], requires_grad=True)
    k = table(l)
    assert k[0] == 0 and k[1] < k[2] and k[3] == table.k[-1]
    k.sum().backward()
    assert l.grad is not None and l.grad[2] > 0


def test_sample_embedding_mimics_posteriors_and_strength_tracks_confidence() -> None:
    from kgexplain.knowledge_points.sample import SampleConfig, entropy, fit_sample, pearson

    gen = torch.Generator().manual_seed(0)
    n, k, c = 300, 16, 4
    centres = torch.randn((c, k), generator=gen) * 3
    y = torch.arange(n) % c
    conf = torch.rand(n, generator=gen)  # how far each sample sits towards its class centre
    f = (conf[:, None] * centres[y] + torch.randn((n, k), generator=gen)).relu()
    logits = f @ centres.T.relu() / 4
    table = KappaTables.load(samples=2000).sample
    for temperature in (1.0, 4.0):  # the model's own posterior, and the authors' T = 4
        emb = fit_sample(f, logits, table, SampleConfig(steps=300, temperature=temperature))
        g = emb.embed(f)
        agree = (emb.log_posterior(g).argmax(1) == logits.argmax(1)).float().mean()
        assert agree > 0.75
        assert pearson(g.norm(dim=1), entropy(logits, temperature)) < -0.5
