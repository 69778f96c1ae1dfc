"""Forward hooks that capture layer outputs, registered in ``try`` and always removed in ``finally``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kgexplain.errors import LayerError, UsageError
from kgexplain.models.layers import LayerSpec


@dataclass
class Captured:
    """What the hooks saw for one layer during the last forward pass."""

    spec: LayerSpec
    _pre: torch.Tensor | None = None
    _out: torch.Tensor | None = None

    @property
    def pre(self) -> torch.Tensor:
        """The map before the nonlinearity (for layers with no such map: the output itself)."""
        if self._pre is not None:
            return self._pre
        if self._out is None:
            raise LayerError(f"layer {self.spec.name!r} ({self.spec.module}) was not reached by the forward pass")
        return self._out

    @property
    def post(self) -> torch.Tensor:
        """The map after the nonlinearity."""
        if self.spec.rectified:
            if self._out is None:
                raise LayerError(f"layer {self.spec.name!r} ({self.spec.module}) was not reached by the forward pass")
            return self._out
        return torch.relu(self.pre)

    def get(self, relu: str) -> torch.Tensor:
        if relu == "pre":
            return self.pre
        if relu == "post":
            return self.post
        raise UsageError(f"relu must be 'pre' or 'post', not {relu!r}")

    def clear(self) -> None:
        self._pre = self._out = None


class StopForward(Exception):
    """Raised by the hooks (``stop=True``) once every requested layer is captured; see :func:`forward`."""


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Run ``model(x)``; returns None when the hooks stopped the pass early (``capture_layers(stop=True)``)."""
    try:
        out: torch.Tensor = model(x)
        return out
    except StopForward:
        return None


@contextlib.contextmanager
def capture_layers(
    model: nn.Module,
    specs: Sequence[LayerSpec],
    detach: bool = True,
    stop: bool = False,
    dtype: torch.dtype | None = None,
) -> Iterator[dict[str, Captured]]:
    """Capture the given layers on every forward pass inside the ``with`` block.

    Outputs are copied as soon as they are produced, because torchvision's in-place ReLUs would otherwise
    rectify a conv's output in place. With ``detach=False`` the copies stay in the autograd graph. With
    ``stop=True`` the pass is cut short by :class:`StopForward` as soon as every layer is captured (run the
    model through :func:`forward`), which skips the layers above the deepest one requested. With ``dtype``
    (detached copies only) the copy is made in that dtype and in plain (B, C, H, W) order, in one pass: what
    feature extraction keeps (a CPU conv's output is channels-last).
    """
    if dtype is not None and not detach:
        raise UsageError("capture_layers: a dtype is for detached copies")
    modules = dict(model.named_modules())
    captured = {spec.name: Captured(spec) for spec in specs}
    handles: list[torch.utils.hooks.RemovableHandle] = []
    remaining: set[str] = set()

    def copy(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None:
            return t.detach().to(dtype, memory_format=torch.contiguous_format, copy=True)
        return t.detach().clone() if detach else t.clone()

    def done(slot: Captured) -> None:
        remaining.discard(slot.spec.name)
        if stop and not remaining:
            raise StopForward

    def reset(_m: nn.Module, _inp: object) -> None:
        remaining.clear()
        remaining.update(captured)

    try:
        if stop:
            handles.append(model.register_forward_pre_hook(reset))
        for spec in specs:
            if spec.module not in modules:
                raise LayerError(f"layer {spec.name!r}: module {spec.module!r} is not part of the model")
            slot = captured[spec.name]

            def on_output(_m: nn.Module, _inp: object, out: object, slot: Captured = slot) -> None:
                if not isinstance(out, torch.Tensor):
                    raise LayerError(f"layer {slot.spec.name!r} does not output a tensor")
                if slot.spec.rectified:
                    slot._out = copy(out)
                else:
                    slot._pre = copy(out)
                done(slot)

            handles.append(modules[spec.module].register_forward_hook(on_output))
            if spec.rectified and spec.pre_module:
                if spec.pre_module not in modules:
                    raise LayerError(f"layer {spec.name!r}: module {spec.pre_module!r} is not part of the model")

                def on_activation_input(_m: nn.Module, inp: tuple[torch.Tensor, ...], slot: Captured = slot) -> None:
                    slot._pre = copy(inp[0])  # the last call before the layer's output wins

                handles.append(modules[spec.pre_module].register_forward_pre_hook(on_activation_input))
        yield captured
    finally:
        for h in handles:
            h.remove()
