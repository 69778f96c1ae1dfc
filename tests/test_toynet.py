from __future__ import annotations

import pytest
import torch
from torch import nn

from kgexplain.models import load_model
from kgexplain.models.toynet import ToyVGG, fold_batch_norm
from kgexplain.models.training import TrainConfig, evaluate_synth, train_toynet
from kgexplain.zoo import SYNTH_CLASSES, shipped_checkpoint, shipped_checkpoints


def test_folding_batch_norm_preserves_the_function() -> None:
    torch.manual_seed(0)
    bn = ToyVGG(7, batch_norm=True)
    bn.train()
    with torch.no_grad():
        for _ in range(3):  # give the running statistics non-trivial values
            bn(torch.randn(8, 3, 64, 64) * 2 + 0.5)
        for m in bn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    bn.eval()
    plain = fold_batch_norm(bn)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), bn(x), atol=1e-4, rtol=1e-4)


def test_the_toynet_has_a_vgg_like_layer_plan() -> None:
    handle = load_model("toynet", "none")
    convs = [n for n in handle.layers if n.startswith("conv")]
    assert len(convs) >= 8 and {n.split("_")[0] for n in convs} == {f"conv{i}" for i in range(1, 6)}
    assert handle.input_size == 128


def test_shipped_checkpoint_classifies_fresh_images() -> None:
    handle = load_model("toynet")  # the shipped weights by default
    assert handle.weights == "shipped:toynet.pt"
    assert handle.class_names == list(SYNTH_CLASSES)
    result = evaluate_synth(handle, n=350, seed=424242, device="cpu", workers=1)
    assert result["accuracy"] >= 0.95, result


def test_epoch_checkpoints_of_the_same_run_are_shipped() -> None:
    paths = shipped_checkpoints()
    assert len(paths) >= 3
    assert paths[-1].read_bytes() == shipped_checkpoint().read_bytes()
    epochs = [load_model("toynet", p).meta["epoch"] for p in paths]
    assert epochs == sorted(epochs) and epochs[0] == 1


@pytest.mark.slow
def test_training_from_scratch_learns(tmp_path) -> None:
    result = train_toynet(tmp_path, TrainConfig(n_train=640, epochs=2, n_val=140, workers=1))
    assert (tmp_path / "toynet.pt").exists() and (tmp_path / "training.json").exists()
    assert result.accuracy > 1.5 / len(SYNTH_CLASSES)
