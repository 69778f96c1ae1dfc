from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kgexplain.features.geometry import LayerGeometry, analytic_geometry, empirical_geometry, geometries, layer_geometry
from kgexplain.models import load_model
from kgexplain.models.layers import LayerSpec

# Hand-computed for VGG-16 at 224 px (pixel-index coordinates; the authors' 1-based code says 4.5 and 8.5).
VGG16_EXPECTED = {
    # layer: (stride, centre, receptive field, map size)
    "conv1_1": (1, 0.0, 3, 224),
    "conv2_2": (2, 0.5, 14, 112),
    "conv3_3": (4, 1.5, 40, 56),
    "conv4_1": (8, 3.5, 60, 28),
    "conv4_2": (8, 3.5, 76, 28),
    "conv4_3": (8, 3.5, 92, 28),
    "pool4": (16, 7.5, 100, 14),
    "conv5_2": (16, 7.5, 164, 14),
    "conv5_3": (16, 7.5, 196, 14),
}


@pytest.fixture(scope="module")
def vgg16():
    return load_model("vgg16", "none")


def test_vgg16_geometry_matches_hand_computed_values(vgg16) -> None:
    geo = geometries(vgg16.module, [vgg16.layer(n) for n in VGG16_EXPECTED], 224)
    for name, (stride, centre, rf, size) in VGG16_EXPECTED.items():
        g = geo[name]
        assert (g.stride_x, g.stride_y) == (stride, stride), name
        assert (g.centre_x, g.centre_y) == (centre, centre), name
        assert (g.rf_x, g.rf_y) == (rf, rf), name
        assert (g.map_h, g.map_w) == (size, size), name
        assert g.method == "analytic"


@pytest.mark.parametrize(
    ("model", "layers"),
    [
        ("vgg16", ["conv3_3", "conv4_3", "conv5_3"]),  # conv5_3: the probe has to grow past 224 px
        ("toynet", ["conv1_1", "conv3_2", "conv4_2", "conv5_2"]),
        ("resnet50", ["conv1", "layer2", "layer3"]),
        ("alexnet", ["conv2", "conv5"]),
        ("mobilenet_v2", ["features.0", "features.6", "features.13"]),
        # depthwise 3x3 and 5x5 convolutions with TensorFlow "SAME" padding (asymmetric at stride 2)
        ("efficientnet_lite0", ["blocks.0", "blocks.3", "blocks.5", "blocks.10"]),
    ],
)
def test_analytic_geometry_equals_the_empirical_gradient_field(model: str, layers: list[str]) -> None:
    handle = load_model(model, "none")
    size = handle.input_size
    for name in layers:
        spec = handle.layer(name)
        a = analytic_geometry(handle.module, spec, size, size)
        e = empirical_geometry(handle.module, spec, size, size)
        assert (e.stride_x, e.stride_y) == pytest.approx((a.stride_x, a.stride_y)), (model, name)
        assert (e.centre_x, e.centre_y) == pytest.approx((a.centre_x, a.centre_y)), (model, name)
        assert (e.rf_x, e.rf_y) == pytest.approx((a.rf_x, a.rf_y)), (model, name)
        assert (e.map_h, e.map_w) == (a.map_h, a.map_w)


@pytest.mark.parametrize(("model", "field"), [("resnet50", 427), ("resnet18", 435)])
def test_resnet_stage_geometry_is_derived_through_residual_blocks(model: str, field: int) -> None:
    handle = load_model(model, "none")
    geo = geometries(handle.module, [handle.layer(n) for n in ("layer2", "layer3", "layer4")], 224)
    assert [geo[n].stride_x for n in ("layer2", "layer3", "layer4")] == [8, 16, 32]
    assert [geo[n].map_h for n in ("layer2", "layer3", "layer4")] == [28, 14, 7]
    assert geo["layer4"].rf_x == field  # the well-known theoretical receptive fields


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so geometry must be measured."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        if x.sum() > 0:
            x = x + 0
        return self.conv2(x)


def test_untraceable_models_fall_back_to_the_measured_geometry() -> None:
    model = Untraceable().eval()
    spec = LayerSpec("c2", "conv2")
    g = layer_geometry(model, spec, 64)
    assert g.method == "empirical"
    # conv1 (k5 s2 p2): stride 2, centre 0, rf 5; pool: stride 4, centre 1, rf 7; conv2 (k3 p1): rf 15.
    assert (g.stride_x, g.centre_x, g.rf_x, g.map_h) == (4, 1.0, 15, 16)


@given(
    stride=st.sampled_from([1, 2, 4, 8, 16, 32]),
    centre=st.floats(0, 20),
    row=st.integers(0, 60),
    col=st.integers(0, 60),
)
def test_cell_pixel_round_trip(stride: int, centre: float, row: int, col: int) -> None:
    g = LayerGeometry(stride, stride, centre, centre, 3 * stride, 3 * stride, 64, 64, 64 * stride, 64 * stride)
    x, y = g.cell_to_pixel(row, col)
    r, c = g.pixel_to_cell(x, y)
    assert r == pytest.approx(row) and c == pytest.approx(col)
    assert g.nearest_cell(x + 0.4 * stride, y - 0.4 * stride) == (min(row, 63), min(col, 63))


def test_channel_specific_modules_fall_back_to_the_full_probe() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1)
    ).eval()
    spec = LayerSpec("c", "3")
    a = analytic_geometry(model, spec, 32, 32)
    e = empirical_geometry(model, spec, 32, 32)  # GroupNorm(2, 4) cannot run on the one-channel probe
    assert (e.stride_x, e.centre_x, e.rf_x) == (a.stride_x, a.centre_x, a.rf_x) == (2, 0.5, 8)
