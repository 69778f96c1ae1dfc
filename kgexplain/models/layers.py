"""Layer names users know (``conv4_3``, ``layer3``, ``features.14``) mapped to modules.

A :class:`LayerSpec` says where a layer's feature map comes from and how to get it before and after the
nonlinearity:

* a conv layer of a VGG is the conv module's output (pre-ReLU); post-ReLU is ``relu`` of it;
* a ResNet stage's output is already rectified (the last block ends in ``self.relu``); its pre-ReLU map is the
  *input* of the last call of that ReLU module, captured by a forward pre-hook.

The tables are derived by walking the module that is actually built, so they never drift from the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kgexplain.errors import LayerError


@dataclass(frozen=True)
class LayerSpec:
    name: str
    module: str  # dotted path in model.named_modules()
    rectified: bool = False  # True when the module's output is already after the nonlinearity
    pre_module: str | None = None  # for rectified layers: the activation whose (last) input is pre-activation
    description: str = ""


def vgg_style_layers(features: nn.Sequential, prefix: str = "features") -> dict[str, LayerSpec]:
    """``convB_K`` for the K-th conv of block B and ``poolB`` for the pool closing block B (VGG, toy net)."""
    table: dict[str, LayerSpec] = {}
    block, k = 1, 0
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            k += 1
            name = f"conv{block}_{k}"
            table[name] = LayerSpec(name, f"{prefix}.{i}", description=f"{m.out_channels} filters")
        elif isinstance(m, nn.MaxPool2d):
            name = f"pool{block}"
            table[name] = LayerSpec(name, f"{prefix}.{i}", rectified=True, description="max pool")
            block, k = block + 1, 0
    return table


def alexnet_layers(features: nn.Sequential) -> dict[str, LayerSpec]:
    table: dict[str, LayerSpec] = {}
    conv = 0
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            conv += 1
            table[f"conv{conv}"] = LayerSpec(f"conv{conv}", f"features.{i}", description=f"{m.out_channels} filters")
        elif isinstance(m, nn.MaxPool2d):
            table[f"pool{conv}"] = LayerSpec(f"pool{conv}", f"features.{i}", rectified=True, description="max pool")
    return table


def resnet_layers(model: nn.Module) -> dict[str, LayerSpec]:
    """Stem, then the four stage outputs, named ``layerN`` (torchvision) with the papers' ``convN_x`` aliases."""
    table = {
        "conv1": LayerSpec("conv1", "bn1", description="stem conv (after BN)"),
        "pool1": LayerSpec("pool1", "maxpool", rectified=True, description="stem max pool"),
    }
    for n in range(1, 5):
        stage = getattr(model, f"layer{n}")
        last = len(stage) - 1
        channels = [m for m in stage[last].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        spec = LayerSpec(
            f"layer{n}",
            f"layer{n}",
            rectified=True,
            pre_module=f"layer{n}.{last}.relu",
            description=f"stage {n + 1} output, {channels} channels (alias conv{n + 1}_x)",
        )
        table[spec.name] = spec
    return table


RESNET_ALIASES = {f"conv{n + 1}_x": f"layer{n}" for n in range(1, 5)}


def mobilenet_v2_layers(model: nn.Module) -> dict[str, LayerSpec]:
    """``features.N``: block N's output; the first and last blocks end in ReLU6, the others are linear."""
    table: dict[str, LayerSpec] = {}
    for i, block in enumerate(model.get_submodule("features").children()):
        name = f"features.{i}"
        acts = [path for path, m in block.named_children() if isinstance(m, (nn.ReLU, nn.ReLU6))]
        if acts and type(block).__name__ != "InvertedResidual":
            table[name] = LayerSpec(
                name, name, rectified=True, pre_module=f"{name}.{acts[-1]}", description="conv-BN-ReLU6"
            )
        else:
            table[name] = LayerSpec(name, name, description="inverted residual (linear output)")
    return table


def efficientnet_layers(model: nn.Module) -> dict[str, LayerSpec]:
    """``blocks.N``: the output of MBConv block N (linear: the projection has no activation)."""
    table: dict[str, LayerSpec] = {}
    for i, block in enumerate(model.get_submodule("_blocks").children()):
        conv = block.get_submodule("_depthwise_conv")
        assert isinstance(conv, nn.Conv2d)
        k, st = conv.kernel_size[0], conv.stride[0]
        table[f"blocks.{i}"] = LayerSpec(
            f"blocks.{i}", f"_blocks.{i}", description=f"MBConv {k}x{k}, stride {st} (linear output)"
        )
    return table


def input_channels(model: nn.Module) -> int:
    """Channels of the model's input, read from its first convolution (3 when it has none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def resolve_layer(
    model: nn.Module,
    table: dict[str, LayerSpec],
    name: str,
    aliases: dict[str, str] | None = None,
    model_name: str = "model",
) -> LayerSpec:
    """Find a layer by its table name, an alias, or as a last resort any dotted module path of ``model``."""
    if name in table:
        return table[name]
    if aliases and name in aliases:
        return table[aliases[name]]
    modules = dict(model.named_modules())
    if name and name in modules:
        return LayerSpec(name, name, description="module path")
    valid = ", ".join(table) or "(none named)"
    raise LayerError(
        f"unknown layer {name!r} for {model_name}; valid layers: {valid}",
        hint=f"any dotted module path of the model works too; `kgexplain layers {model_name}` lists them",
    )
