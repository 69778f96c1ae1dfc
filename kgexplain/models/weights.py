"""Loading weights: torchvision's ImageNet weights by name (via the torch cache) and local checkpoints."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kgexplain.errors import ModelError, WeightsUnavailableError

OFFLINE_ENV = "KGEXPLAIN_OFFLINE"


def offline() -> bool:
    """True when downloads must not be attempted (``KGEXPLAIN_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def imagenet_weights_enum(arch: str) -> Any:
    """torchvision's default ImageNet weights entry for ``arch`` (e.g. ``VGG16_Weights.IMAGENET1K_V1``)."""
    from torchvision.models import get_model_weights  # lazy: torchvision takes a second to load

    return get_model_weights(arch).DEFAULT


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision keeps (or would keep) the ImageNet weights of ``arch``."""
    url = imagenet_weights_enum(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_imagenet_state_dict(arch: str, allow_download: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state dict of ``arch`` and its label (``IMAGENET1K_V1``): from the cache, else downloaded."""
    entry = imagenet_weights_enum(arch)
    path = imagenet_cache_path(arch)
    label = f"imagenet:{entry.name}"
    if path.exists():
        return torch_load_state_dict(path), label
    if allow_download is None:
        allow_download = not offline()
    hint = (
        f"copy {path.name} into {path.parent} from a machine with internet, or pass --weights PATH "
        "(a local checkpoint) or --weights none (random init)"
    )
    if not allow_download:
        raise WeightsUnavailableError(f"ImageNet weights for {arch} are not in the torch cache ({path})", hint=hint)
    try:
        state = torch.hub.load_state_dict_from_url(entry.url, progress=True, check_hash=True, map_location="cpu")
    except Exception as e:  # network, DNS, hash mismatch: all mean "not available here"
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not cached and could not be downloaded: {type(e).__name__}: {e}",
            hint=hint,
        ) from e
    return state, label


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names, as torchvision lists them (no weights are loaded)."""
    return list(imagenet_weights_enum("resnet50").meta["categories"])


def torch_load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (a state dict, a wrapped one or a whole module)."""
    obj = load_checkpoint_object(path)
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    return extract_state_dict(obj, path)


def load_checkpoint_object(path: str | Path, trust: bool = False) -> Any:
    """``torch.load`` a checkpoint safely (``weights_only``); full pickled modules only with ``trust=True``."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"checkpoint not found: {path}", hint="check the path passed to --weights")
    if path.is_dir():
        raise ModelError(f"checkpoint path is a directory: {path}", hint="pass the .pt/.pth file itself")
    if not _looks_like_checkpoint(path):
        raise ModelError(f"{path} is not a PyTorch checkpoint", hint=NOT_A_CHECKPOINT)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols in files that are not checkpoints
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # not a pickled object, just not a checkpoint
            raise ModelError(f"{path} is not a PyTorch checkpoint", hint=NOT_A_CHECKPOINT) from e
        if not trust:
            raise ModelError(
                f"{path} holds pickled Python objects (a full model?), which are not loaded by default",
                hint="save model.state_dict() instead, or pass --trust-checkpoint if you trust the file",
            ) from e
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:  # a corrupt pickle stream
        raise ModelError(f"{path} is not a PyTorch checkpoint", hint=NOT_A_CHECKPOINT) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelError(f"cannot read checkpoint {path}: {_first_line(e)}", hint=NOT_A_CHECKPOINT) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelError(f"cannot unpickle checkpoint {path}: {_first_line(e)}") from e


NOT_A_CHECKPOINT = "pass a complete file written by torch.save (.pt/.pth)"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _looks_like_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive (the default since PyTorch 1.6) or, in the legacy format, a pickle."""
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as f:
        return f.read(1) == b"\x80"  # the pickle protocol opcode of the legacy format


STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def extract_state_dict(obj: Any, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint: a bare state dict or ``{"state_dict": ...}``-style wrappers."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ModelError(
        f"no state dict found in {path}",
        hint=f"expected a state dict or a dict with one of the keys {', '.join(STATE_DICT_KEYS)}",
    )


def align_keys(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """``state`` with the prefix that wrappers put before the network's own names taken off: PyTorch Lightning's
    ``model.``, ``torch.compile``'s ``_orig_mod.``, DDP's ``module.`` or any combination, or the attribute a
    user's wrapper holds the network under. The prefix is the one under which the most keys are the network's
    own (``own``); keys outside it (a loss's buffers, a second network) are left out, and loading, which is
    strict, still reports any own name that is missing under it (a renamed head)."""
    if own <= state.keys():
        return state
    counts: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in own:
                prefix = ".".join(parts[:i]) + "."
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return state
    prefix = max(counts, key=lambda p: (counts[p], -len(p)))
    inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return inner if len(own & inner.keys()) > len(own & state.keys()) else state


def load_state_dict_into(module: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Strictly load ``state`` into ``module`` with a readable error on mismatch, a wrapper's prefix before the
    names taken off (:func:`align_keys`). A module built on the meta device takes the loaded tensors themselves (in
    its own dtypes)."""
    own = module.state_dict()
    state = align_keys(state, set(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise ModelError(
            f"weights in {source} do not fit {arch}: " + "; ".join(parts),
            hint="check --model matches the checkpoint's architecture (and its number of classes)",
        )
    if any(t.is_meta for t in own.values()):  # built without weights (registry._unfilled): take the loaded ones
        module.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True, assign=True)
    else:
        module.load_state_dict(state, strict=True)
