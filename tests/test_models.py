from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kgexplain.errors import LayerError, ModelError, UsageError, WeightsUnavailableError
from kgexplain.models import ARCHITECTURES, ModelHandle, load_model
from kgexplain.models.registry import Architecture, _unfilled
from kgexplain.models.weights import imagenet_cache_path


def test_registry_has_the_papers_models_and_the_toy_net() -> None:
    assert {"vgg16", "vgg19", "alexnet", "mobilenet_v2", "toynet"} <= set(ARCHITECTURES)
    assert {f"resnet{d}" for d in (18, 34, 50, 101, 152)} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_default_layers_exist_and_give_spatial_maps(name: str) -> None:
    handle = load_model(name, "none")
    assert handle.default_layers
    for layer in handle.default_layers:
        assert handle.layer(layer).module in dict(handle.module.named_modules())


def test_vgg_and_resnet_layer_names() -> None:
    vgg = load_model("vgg16", "none")
    assert vgg.layer("conv4_3").module == "features.21"
    assert vgg.layer("conv5_3").module == "features.28"
    resnet = load_model("resnet50", "none")
    assert resnet.layer("conv4_x") == resnet.layer("layer3")
    mobile = load_model("mobilenet_v2", "none")
    assert mobile.layer("features.14").module == "features.14"


def test_unknown_layer_lists_the_valid_names() -> None:
    handle = load_model("toynet", "none")
    with pytest.raises(LayerError) as info:
        handle.layer("conv9_9")
    msg = str(info.value)
    assert "conv9_9" in msg and "conv4_2" in msg and "conv5_2" in msg


def test_dotted_module_paths_work_as_layer_names() -> None:
    handle = load_model("vgg16", "none")
    assert handle.layer("features.21").module == "features.21"


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'vgg17'.*vgg16"):
        load_model("vgg17")


def test_random_init_is_deterministic() -> None:
    a, b = load_model("alexnet", "none"), load_model("alexnet", "none")
    assert torch.equal(a.module.features[0].weight, b.module.features[0].weight)
    assert a.identity == b.identity


def test_imagenet_weights_come_from_the_torch_cache() -> None:
    path = imagenet_cache_path("alexnet")
    assert str(path).startswith(str(torch.hub.get_dir()))
    src = load_model("alexnet", "none").module
    with torch.no_grad():
        src.features[0].weight.fill_(0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(src.state_dict(), path)
    handle = load_model("alexnet", "imagenet")
    assert handle.weights == "imagenet:IMAGENET1K_V1"
    assert torch.all(handle.module.features[0].weight == 0.25)
    assert handle.class_names is not None and len(handle.class_names) == 1000


def test_missing_imagenet_weights_offline_name_weights_path() -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("vgg16", "imagenet")
    msg = str(info.value)
    assert "--weights PATH" in msg and "vgg16" in msg and "torch cache" in msg


def test_toynet_has_no_imagenet_weights() -> None:
    with pytest.raises(UsageError, match="no ImageNet weights"):
        load_model("toynet", "imagenet")


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_local_state_dict_and_wrapped_checkpoints(tmp_path: Path) -> None:
    ref = load_model("alexnet", "none").module
    with torch.no_grad():
        ref.features[3].weight.mul_(-1)
    state = ref.state_dict()
    for name, payload in {
        "plain.pt": state,
        "wrapped.pt": {"state_dict": state, "epoch": 3},
        "ddp.pth": {"model": {f"module.{k}": v for k, v in state.items()}},
    }.items():
        handle = load_model("alexnet", _save(payload, tmp_path / name))
        assert torch.equal(handle.module.features[3].weight, ref.features[3].weight), name
        assert handle.weights == f"file:{name}" and handle.weights_sha


def test_checkpoints_of_lightning_torch_compile_and_wrappers_load_under_their_prefix(tmp_path: Path) -> None:
    """The prefix that a training framework puts before the network's names is taken off: Lightning's ``model.``,
    torch.compile's ``_orig_mod.`` (under DDP's ``module.`` too), a wrapper's attribute with a loss's buffer beside
    it, a fine-tuned head's number of classes read through it. A head saved under another name stays an error that
    names the missing weight."""
    import torchvision

    ref = torchvision.models.alexnet(num_classes=3)
    state = ref.state_dict()
    for name, payload in {
        "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 2},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in state.items()},
        "ddp-compiled.pt": {"model_state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}},
        "wrapper.pt": {**{f"net.{k}": v for k, v in state.items()}, "loss.weight": torch.ones(3)},
    }.items():
        handle = load_model("alexnet", _save(payload, tmp_path / name))
        assert torch.equal(handle.module.features[3].weight, ref.features[3].weight), name
        assert handle.module(torch.zeros(1, 3, 224, 224)).shape == (1, 3), name
    renamed = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("classifier.6.")}
    renamed |= {"head.weight": state["classifier.6.weight"], "head.bias": state["classifier.6.bias"]}
    with pytest.raises(ModelError, match=r"do not fit alexnet: 2 missing \(e.g. classifier.6.weight\)"):
        load_model("alexnet", _save(renamed, tmp_path / "renamed.pt"))


def test_loaded_weights_fill_every_tensor_in_the_modules_dtype(tmp_path: Path) -> None:
    """Weights are loaded into an architecture built on the meta device (no random initialisation first): every
    tensor ends up real, in float32 even from a half-precision file, and the outputs are those of the saved net."""
    ref = load_model("resnet50", "none").module
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    handle = load_model("resnet50", _save(half, tmp_path / "half.pt"))
    tensors = [*handle.module.parameters(), *handle.module.buffers()]
    assert not any(t.is_meta for t in tensors) and {t.dtype for t in handle.module.parameters()} == {torch.float32}
    ref.load_state_dict(half)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(handle.module(x), ref(x))


def test_an_architecture_with_an_unsaved_buffer_is_initialised_before_loading() -> None:
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.register_buffer("scale", torch.full((1,), 2.0), persistent=False)

    arch = Architecture("scaled", lambda n: Scaled(), lambda m: {}, (), "test")
    assert not _unfilled(arch).scale.is_meta and _unfilled(arch).scale.item() == 2.0
    assert _unfilled(ARCHITECTURES["toynet"]).classifier.weight.is_meta


def test_number_of_classes_is_taken_from_a_finetuned_checkpoint(tmp_path: Path) -> None:
    import torchvision

    finetuned = torchvision.models.alexnet(num_classes=2)
    handle = load_model("alexnet", _save(finetuned.state_dict(), tmp_path / "ft.pt"))
    assert handle.module(torch.zeros(1, 3, 224, 224)).shape == (1, 2)


def test_full_pickled_module_needs_trust(tmp_path: Path) -> None:
    import torchvision

    path = _save(torchvision.models.alexnet(), tmp_path / "full.pt")
    with pytest.raises(ModelError, match="--trust-checkpoint"):
        load_model("alexnet", path)
    assert load_model("alexnet", path, trust_checkpoint=True).weights == "file:full.pt"


def test_wrong_architecture_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    vgg_state = load_model("toynet", "none").module.state_dict()
    with pytest.raises(ModelError, match="do not fit alexnet"):
        load_model("alexnet", _save(vgg_state, tmp_path / "toy.pt"))
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_model("alexnet", tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="is not a PyTorch checkpoint"):
        load_model("alexnet", junk)
    with pytest.raises(ModelError, match="no state dict"):
        load_model("alexnet", _save({"epoch": 1}, tmp_path / "meta.pt"))


def test_a_users_own_module(tiny_net) -> None:
    handle = ModelHandle.from_module(tiny_net, {"low": "block1.0", "high": "block2.0"}, input_size=32)
    assert handle.layer("high").module == "block2.0"
    assert handle.weights_sha and handle.identity.startswith("custom|user|")
    every_conv = ModelHandle.from_module(tiny_net)
    assert set(every_conv.layers) == {"block1.0", "block2.0"}
    with pytest.raises(ModelError, match="not a module"):
        ModelHandle.from_module(tiny_net, {"x": "block9"})


def test_a_grayscale_model_is_fed_the_luma_of_the_image_through_every_job(tmp_path: Path) -> None:
    from kgexplain import (
        BuildConfig,
        DataSpec,
        DecodersConfig,
        InfoConfig,
        StoreSpec,
        run_build,
        run_decoders,
        run_info,
    )
    from kgexplain.features.extract import normalise
    from kgexplain.information import SIDConfig
    from kgexplain.information.decoder import DecoderConfig

    from .conftest import TinyNet

    torch.manual_seed(0)
    gray = ModelHandle.from_module(TinyNet(channels=1).eval(), {"low": "block1.0", "high": "block2.0"}, input_size=32)
    assert gray.channels == 1 and gray.mean == (0.459,) and gray.std == (0.2256,)  # ImageNet's, as luma
    pixel = torch.tensor([[[[255, 0, 0]]]], dtype=torch.uint8)  # pure red: luma 0.299
    assert normalise(pixel, gray).shape == (1, 1, 1, 1)
    assert normalise(pixel, gray).item() == pytest.approx((0.299 - 0.459) / 0.2256)
    with pytest.raises(ModelError, match="1 input channel"):
        ModelHandle.from_module(TinyNet(channels=1), mean=(0.5, 0.5, 0.5))
    with pytest.raises(ModelError, match="takes 4 channels"):
        ModelHandle.from_module(TinyNet(channels=4))
    store = StoreSpec(tmp_path / "store")
    build = run_build(BuildConfig(model=gray, layers=("low", "high"), n=8, iterations=1, patches=0), store)
    assert build.graph.patterns > 0
    birds = DataSpec(n=2, categories=("bird",))
    run_decoders(
        DecodersConfig(model=gray, layers=("high",), data=birds, decoder=DecoderConfig(epochs=1, width=8, blocks=1)),
        store,
    )
    quick = SIDConfig(steps=2, samples=2, eval_samples=4, delta_samples=2)
    ru = run_info(InfoConfig(model=gray, layers=("high",), data=birds, ru=True, sid=quick, out=str(tmp_path)), store)
    assert [r["layer"] for r in ru.rows()] == ["high"] and all(math.isfinite(r["ru"]) for r in ru.rows())
    assert "sid" in ru.text()  # a result with no summary of its own reads as its table


def test_the_logits_of_a_network_that_returns_more_than_its_logits(tiny_net) -> None:
    from types import SimpleNamespace

    from kgexplain.knowledge_points.collect import collect

    class Returns(torch.nn.Module):
        def __init__(self, wrap) -> None:
            super().__init__()
            self.net, self.wrap = tiny_net, wrap

        def forward(self, x: torch.Tensor):
            return self.wrap(self.net(x), self.net.block2(self.net.block1(x)))

    x = torch.rand(2, 3, 16, 16)
    expected = tiny_net(x)
    for wrap in (
        lambda z, f: (z, f),  # torchvision's Inception / GoogLeNet outputs
        lambda z, f: {"logits": z, "features": f},
        lambda z, f: SimpleNamespace(logits=z, hidden_states=f),  # a Hugging Face output object
    ):
        handle = ModelHandle.from_module(Returns(wrap), {"high": "net.block2.0"}, input_size=16)
        assert torch.equal(handle.logits(x), expected)
    images = np.zeros((2, 16, 16, 3), np.uint8)
    assert collect(handle, images, ["high"], "high").logits.shape == (2, 3)
    segmenter = ModelHandle.from_module(Returns(lambda z, f: f), {"high": "net.block2.0"}, input_size=16)
    with pytest.raises(LayerError, match=r"knowledge points needs the model's classifier output .* returns a 4-D"):
        collect(segmenter, images, ["high"], "high")


def test_a_users_own_module_builds_learns_and_measures_through_the_jobs(tiny_net, tmp_path: Path) -> None:
    from kgexplain import BuildConfig, DataSpec, InfoConfig, LearnConfig, StoreSpec, run_build, run_info, run_learn
    from kgexplain.information import SIDConfig
    from kgexplain.store import queries

    handle = ModelHandle.from_module(tiny_net, {"low": "block1.0", "high": "block2.0"}, input_size=64, name="tiny")
    store = StoreSpec(tmp_path / "store")
    build = run_build(BuildConfig(model=handle, layers=("low", "high"), n=12, iterations=2, patches=1), store)
    assert build.run.startswith("eg-tiny-") and build.graph.patterns > 0
    with pytest.raises(UsageError, match="carries its own"):
        run_build(BuildConfig(model=handle, weights="none", n=12), store)
    # The store cannot load a network given from Python: learning on its build needs the handle again, the same one.
    with pytest.raises(UsageError, match="given from Python"):
        run_learn(LearnConfig(part="head", run=build.run), store)
    torch.manual_seed(1)
    other = ModelHandle.from_module(type(tiny_net)().eval(), {"low": "block1.0", "high": "block2.0"}, name="tiny")
    with pytest.raises(UsageError, match="is not the network and weights"):
        run_learn(LearnConfig(part="head", run=build.run, model=other), store)
    learnt = run_learn(LearnConfig(part="head", run=build.run, model=handle), store)
    assert learnt.part.templates
    quick = SIDConfig(steps=4, samples=2)
    info = run_info(
        InfoConfig(
            model=handle,
            layers=("high",),
            data=DataSpec(n=2, categories=("bird",)),
            sid=quick,
            out=str(tmp_path / "info"),
        ),
        store,
    )
    assert [r["layer"] for r in info.rows()] == ["high"]
    with store.read() as db:
        assert [len(queries.complete_runs(db, kind)) for kind in ("eg", "aog", "info")] == [1, 1, 1]
