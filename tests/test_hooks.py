from __future__ import annotations

import pytest
import torch
from torch import nn

from kgexplain.errors import LayerError, UsageError
from kgexplain.features.hooks import capture_layers
from kgexplain.models import load_model
from kgexplain.models.layers import LayerSpec


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_no_hook_survives_an_exception(tiny_net) -> None:
    specs = [LayerSpec("c1", "block1.0"), LayerSpec("b2", "block2", rectified=True, pre_module="block2.1")]
    with pytest.raises(RuntimeError, match="boom"), capture_layers(tiny_net, specs):
        assert _hook_count(tiny_net) == 3
        raise RuntimeError("boom")
    assert _hook_count(tiny_net) == 0


def test_no_hook_survives_a_bad_layer(tiny_net) -> None:
    specs = [LayerSpec("c1", "block1.0"), LayerSpec("bad", "nope")]
    with pytest.raises(LayerError, match="nope"), capture_layers(tiny_net, specs):
        pass
    assert _hook_count(tiny_net) == 0


def test_pre_relu_is_captured_before_the_in_place_relu(tiny_net) -> None:
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(), capture_layers(tiny_net, [LayerSpec("c1", "block1.0")]) as cap:
        tiny_net(x)
    expected = tiny_net.block1[0](x)
    assert torch.allclose(cap["c1"].pre, expected)
    assert (cap["c1"].pre < 0).any()  # the in-place ReLU did not rectify our copy
    assert torch.equal(cap["c1"].post, torch.relu(expected))


@pytest.mark.parametrize(("model", "channels"), [("resnet50", 512), ("resnet18", 128)])  # bottleneck, basic block
def test_resnet_stage_pre_relu_is_the_input_of_the_last_relu(model: str, channels: int) -> None:
    handle = load_model(model, "none")
    spec = handle.layer("layer2")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), capture_layers(handle.module, [spec]) as cap:
        handle.module(x)
    pre, post = cap["layer2"].pre, cap["layer2"].post
    assert pre.shape == post.shape == (1, channels, 8, 8)
    assert (pre < 0).any() and (post >= 0).all()
    assert torch.allclose(torch.relu(pre), post)
    m = handle.module
    with torch.no_grad():
        direct = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
    assert torch.allclose(post, direct, atol=1e-5)


def test_gradients_flow_through_captures_when_not_detached(tiny_net) -> None:
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with capture_layers(tiny_net, [LayerSpec("c2", "block2.0")], detach=False) as cap:
        tiny_net(x)
    cap["c2"].pre.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_layer_the_forward_never_reaches_is_a_clear_error(tiny_net) -> None:
    with capture_layers(tiny_net, [LayerSpec("unused", "head")]) as cap:
        pass
    with pytest.raises(LayerError, match="not reached"):
        _ = cap["unused"].pre


def test_a_capture_in_float16_is_one_plain_order_copy_of_the_pre_relu_map(tiny_net) -> None:
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)  # a CPU conv then outputs so too
    spec = [LayerSpec("c1", "block1.0")]
    with (
        torch.no_grad(),
        capture_layers(tiny_net, spec) as full,
        capture_layers(tiny_net, spec, dtype=torch.float16) as half,
    ):
        tiny_net(x)
    got = half["c1"].pre
    assert got.dtype == torch.float16 and got.is_contiguous()
    assert torch.equal(got, full["c1"].pre.to(torch.float16))
    assert (got < 0).any()  # copied before the in-place ReLU
    with pytest.raises(UsageError, match="detached"), capture_layers(tiny_net, spec, detach=False, dtype=torch.float16):
        pass
    assert _hook_count(tiny_net) == 0
