"""The facing as a latent variable: mirrored views of a source, features mixed per image, and a build that mines
each image as it is or mirrored (`kgexplain build --facing latent`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from kgexplain.cli.main import cli

from kgexplain.data import Framing
from kgexplain.data.mirror import Mirrored
from kgexplain.data.synth import SynthSource
from kgexplain.errors import UsageError
from kgexplain.explanatory_graph.facing import mixed
from kgexplain.features.cache import FeatureSet, Shard
from kgexplain.features.geometry import LayerGeometry
from kgexplain.jobs.build import BuildConfig, run_build
from kgexplain.store import StoreSpec, queries


def test_a_mirrored_view_mirrors_pixels_box_and_keypoints_of_the_chosen_images() -> None:
    src = SynthSource(3, seed=4, size=96, categories=["bird"])
    view = Mirrored(src, np.array([True, False, True]))
    for i in range(3):
        a, b = np.asarray(src.load_image(i)), np.asarray(view.load_image(i))
        ra, rb = src.record(i), view.record(i)
        if i == 1:
            assert np.array_equal(a, b) and ra == rb
            continue
        assert np.array_equal(b, a[:, ::-1])
        assert ra.box is not None and rb.box == (96 - ra.box[2], ra.box[1], 96 - ra.box[0], ra.box[3])
        assert rb.keypoints["head"] == (95 - ra.keypoints["head"][0], ra.keypoints["head"][1])
        framed_a, framed_b = Framing(64, "box").apply(src, i), Framing(64, "box").apply(view, i)
        assert np.abs(framed_b.image.astype(int) - framed_a.image[:, ::-1].astype(int)).max() <= 1
    assert view.fingerprint() != Mirrored(src).fingerprint() != src.fingerprint()


def test_mixed_features_take_each_image_from_the_set_it_was_chosen_in() -> None:
    geo = LayerGeometry(8.0, 8.0, 3.5, 3.5, 24.0, 24.0, 4, 4, 32, 32)
    a, b = np.zeros((5, 2, 4, 4), np.float16), np.ones((5, 2, 4, 4), np.float16)

    def fs(arr: np.ndarray) -> FeatureSet:
        shards = [
            Shard(0, np.arange(3), ["0", "1", "2"], [], arr[:3]),
            Shard(1, np.arange(3, 5), ["3", "4"], [], arr[3:]),
        ]
        return FeatureSet("l", "pre", geo, (2, 4, 4), shards)

    flip = np.array([True, False, False, True, False])
    out = mixed(fs(a), fs(b), flip)
    got = np.concatenate([s.array() for s in out.shards])
    assert np.array_equal(got[:, 0, 0, 0], flip.astype(np.float16)) and out.ids == fs(a).ids


def test_a_latent_facing_build_stores_mirrored_crops_and_rebuilds_from_its_cache(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    args = ["-q", "build", "--n", "12", "--iterations", "2", "--patches", "1", "--facing", "latent"]
    first = CliRunner().invoke(cli, [*args, "--facing-rounds", "2", "--store", store, "--json"])
    assert first.exit_code == 0, first.output
    res = json.loads(first.stdout)
    with StoreSpec(store).read() as db:
        row = queries.run(db, res["run"])
        assert row is not None
        stats, config = json.loads(row["stats"]), json.loads(row["config"])
        frames = json.loads((tmp_path / "store" / "artifacts" / stats["frames"]).read_text())
    mirrored = stats["mining"]["facing"]["mirrored"]
    assert config["facing"] == {"mode": "latent", "rounds": 2} and len(mirrored) == 12
    assert sum(f[0] > f[2] for f in frames.values()) == sum(mirrored)  # mirrored crops run right to left
    again = CliRunner().invoke(cli, [*args, "--facing-rounds", "2", "--store", store, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["stability"] == res["stability"]  # from the cache
    plain = json.loads(CliRunner().invoke(cli, ["-q", "build", "--n", "12", "--iterations", "2", "--patches", "1",
                                                "--store", store, "--json"]).stdout)  # fmt: skip
    assert plain["run"] != res["run"]  # the facing is part of the run's identity (the default's ids unchanged)
    with pytest.raises(UsageError):
        run_build(BuildConfig(n=12, facing="sideways"), StoreSpec(str(tmp_path / "other")))
    several = CliRunner().invoke(cli, [*args, "--nproc", "2", "--store", str(tmp_path / "other")])
    assert several.exit_code == 2 and "runs in one process" in several.output  # refused before any process starts
    assert not (tmp_path / "other").exists()
