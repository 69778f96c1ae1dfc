"""Where a feature-map cell sits on the image plane: stride, centre offset and receptive field per layer.

Coordinates are *pixel-index* coordinates: the centre of the top-left pixel is (0, 0) and x grows to the right.
The centre of map cell (row i, col j) is ``(centre_x + j * stride_x, centre_y + i * stride_y)``. For VGG-16 this
gives conv4_x stride 8, centre 3.5 and conv5_x stride 16, centre 7.5 (the authors' MATLAB code writes 4.5 and
8.5 in its 1-based coordinates).

Two derivations, both from the model itself:

* :func:`analytic_geometry` traces the module graph with ``torch.fx`` and propagates (stride, centre, field)
  through every conv and pool; element-wise merges (residual additions, concatenations) take the union of their
  inputs' fields, so residual networks work.
* :func:`empirical_geometry` back-propagates from one cell of a *linearised* copy of the model (activations
  removed, max pools turned into average pools, positive constant weights), whose input gradient is non-zero
  exactly on the receptive field. It is the fallback for models fx cannot trace and the cross-check in tests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn

from kgexplain.errors import LayerError
from kgexplain.features.hooks import capture_layers, forward
from kgexplain.models.layers import LayerSpec, input_channels
from kgexplain.models.registry import ModelHandle


@dataclass(frozen=True)
class LayerGeometry:
    stride_x: float
    stride_y: float
    centre_x: float
    centre_y: float
    rf_x: float  # receptive field width in pixels
    rf_y: float
    map_h: int
    map_w: int
    input_h: int
    input_w: int
    method: str = "analytic"

    @property
    def stride(self) -> float:
        return self.stride_x

    def cell_to_pixel(self, row: Any, col: Any) -> tuple[Any, Any]:
        """Centre (x, y) in image pixels of cell (row, col); works on scalars, arrays and tensors."""
        return self.centre_x + col * self.stride_x, self.centre_y + row * self.stride_y

    def pixel_to_cell(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Fractional (row, col) of the cell whose centre is at pixel (x, y)."""
        return (y - self.centre_y) / self.stride_y, (x - self.centre_x) / self.stride_x

    def nearest_cell(self, x: float, y: float) -> tuple[int, int]:
        r, c = self.pixel_to_cell(x, y)
        return (min(max(round(r), 0), self.map_h - 1), min(max(round(c), 0), self.map_w - 1))

    def field_box(self, row: float, col: float) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the cell's receptive field, in pixel-edge coordinates (not clipped)."""
        x, y = self.cell_to_pixel(col=col, row=row)
        return x - self.rf_x / 2 + 0.5, y - self.rf_y / 2 + 0.5, x + self.rf_x / 2 + 0.5, y + self.rf_y / 2 + 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _G:
    """Geometry along one axis pair during propagation."""

    sx: float
    sy: float
    cx: float
    cy: float
    rx: float
    ry: float


_IDENTITY = _G(1.0, 1.0, 0.0, 0.0, 1.0, 1.0)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _window(g: _G, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> _G:
    ky, kx = _pair(kernel)
    st_y, st_x = _pair(stride if stride is not None else kernel)
    if isinstance(padding, str):
        if padding == "valid":
            py = px = 0
        else:  # "same" (stride 1 only in PyTorch)
            py, px = (ky - 1) // 2, (kx - 1) // 2
    else:
        py, px = _pair(padding)
    dy, dx = _pair(dilation)
    return _G(
        sx=g.sx * st_x,
        sy=g.sy * st_y,
        cx=g.cx + ((kx - 1) / 2 * dx - px) * g.sx,
        cy=g.cy + ((ky - 1) / 2 * dy - py) * g.sy,
        rx=g.rx + (kx - 1) * dx * g.sx,
        ry=g.ry + (ky - 1) * dy * g.sy,
    )


def _merge(gs: list[_G]) -> _G:
    """Element-wise merge (add, cat, mul): same stride expected; the field is the union of the inputs'."""
    if len(gs) == 1:
        return gs[0]
    if any(abs(g.sx - gs[0].sx) > 1e-6 or abs(g.sy - gs[0].sy) > 1e-6 for g in gs):
        raise _Untraceable("merged tensors have different strides")
    x0 = min(g.cx - g.rx / 2 for g in gs)
    x1 = max(g.cx + g.rx / 2 for g in gs)
    y0 = min(g.cy - g.ry / 2 for g in gs)
    y1 = max(g.cy + g.ry / 2 for g in gs)
    return _G(gs[0].sx, gs[0].sy, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


class _Untraceable(Exception):
    pass


_WINDOW_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)
_FUNCTIONAL_WINDOWS = {
    torch.nn.functional.max_pool2d: ("kernel_size", "stride", "padding", "dilation"),
    torch.nn.functional.avg_pool2d: ("kernel_size", "stride", "padding", None),
}


class _ConvLeafTracer(fx.Tracer):
    """Traces as fx does, but keeps every Conv2d subclass (e.g. a TensorFlow "SAME"-padding conv that computes
    its padding in ``forward``) as one module, read through its kernel, stride, padding and dilation."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _propagate(model: nn.Module) -> dict[str, _G]:
    """Geometry of every module's output, keyed by dotted module path (a module called twice: last call)."""
    try:
        graph_module = fx.GraphModule(model, _ConvLeafTracer().trace(model))
    except Exception as e:  # control flow, unsupported ops
        raise _Untraceable(str(e)) from e
    modules = dict(graph_module.named_modules())
    env: dict[fx.Node, _G | None] = {}
    out: dict[str, _G] = {}
    for node in graph_module.graph.nodes:
        inputs = [env[a] for a in node.all_input_nodes if a in env]
        tensor_inputs = [g for g in inputs if g is not None]
        if node.op == "placeholder":
            env[node] = _IDENTITY
            continue
        if node.op == "get_attr":
            env[node] = None
            continue
        if node.op == "output":
            continue
        if inputs and not tensor_inputs:
            env[node] = None  # downstream of a global operation
            continue
        g: _G | None
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                g = _window(tensor_inputs[0], m.kernel_size, m.stride, m.padding, m.dilation)
            elif isinstance(m, nn.AvgPool2d):
                g = _window(tensor_inputs[0], m.kernel_size, m.stride, m.padding)
            elif isinstance(m, _GLOBAL_MODULES):
                g = None
            elif isinstance(m, (nn.ConvTranspose2d, nn.Upsample, nn.Conv1d, nn.Conv3d)):
                raise _Untraceable(f"unsupported module {type(m).__name__}")
            else:  # BN, activations, dropout, identity: position-preserving
                g = _merge(tensor_inputs) if tensor_inputs else None
            env[node] = g
        elif node.op == "call_function" and node.target in _FUNCTIONAL_WINDOWS:
            names = _FUNCTIONAL_WINDOWS[node.target]
            args = list(node.args[1:]) + [None] * 4
            kw = dict(zip([n for n in names if n], args, strict=False)) | dict(node.kwargs)
            g = _window(
                tensor_inputs[0],
                kw.get("kernel_size"),
                kw.get("stride"),
                kw.get("padding") or 0,
                kw.get("dilation") or 1,
            )
            env[node] = g
        elif (
            node.op == "call_function"
            and node.target
            in (
                torch.flatten,
                torch.nn.functional.adaptive_avg_pool2d,
                torch.nn.functional.linear,
            )
        ) or (node.op == "call_method" and node.target in ("view", "reshape", "flatten", "mean", "sum")):
            env[node] = None
        else:
            env[node] = _merge(tensor_inputs) if tensor_inputs else None
        g_out = env.get(node)
        if g_out is None:
            continue
        # A module's output is the last node computed inside it (containers are inlined by fx).
        if node.op == "call_module":
            out[str(node.target)] = g_out
        for key, value in node.meta.get("nn_module_stack", {}).items():
            out[value[0] if isinstance(value, tuple) else key] = g_out
    return out


def _map_size(model: nn.Module, spec: LayerSpec, input_h: int, input_w: int) -> tuple[int, int]:

    device = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(1, input_channels(model), input_h, input_w, device=device)
    with torch.no_grad(), capture_layers(model, [spec], stop=True) as captured:
        try:
            forward(model, x)
        except Exception as e:
            raise LayerError(f"cannot run the model on a {input_h}x{input_w} input: {e}") from e
    t = captured[spec.name].post
    if t.dim() != 4:
        raise LayerError(f"layer {spec.name!r} does not output a 4-D feature map (shape {tuple(t.shape)})")
    return int(t.shape[2]), int(t.shape[3])


def analytic_geometry(model: nn.Module, spec: LayerSpec, input_h: int, input_w: int) -> LayerGeometry:
    table = _propagate(model)
    key = spec.module
    if key not in table:
        raise _Untraceable(f"module {key} not found in the traced graph")
    g = table[key]
    h, w = _map_size(model, spec, input_h, input_w)
    return LayerGeometry(g.sx, g.sy, g.cx, g.cy, g.rx, g.ry, h, w, input_h, input_w, "analytic")


def _linearise(model: nn.Module, slim: bool) -> nn.Module:
    """A copy with no nonlinearity and positive weights: its input gradient covers the whole receptive field.

    ``slim`` also turns every conv into a one-channel conv with the same kernel, stride, padding and dilation:
    the field does not depend on the number of channels, and the probe becomes cheap.
    """
    probe = copy.deepcopy(model).eval()

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(
                    parent,
                    name,
                    nn.AvgPool2d(
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        ceil_mode=child.ceil_mode,
                        count_include_pad=True,
                    ),
                )
            elif isinstance(
                child,
                (
                    nn.ReLU,
                    nn.ReLU6,
                    nn.LeakyReLU,
                    nn.GELU,
                    nn.SiLU,
                    nn.Hardswish,
                    nn.Sigmoid,
                    nn.Tanh,
                    nn.Dropout,
                    nn.BatchNorm2d,
                    nn.GroupNorm,  # normalisation statistics span the whole map: not part of the field
                    nn.InstanceNorm2d,
                    nn.LayerNorm,
                ),
            ):
                setattr(parent, name, nn.Identity())
            elif slim and isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    name,
                    nn.Conv2d(
                        1,
                        1,
                        _pair(child.kernel_size),
                        _pair(child.stride),
                        child.padding if isinstance(child.padding, str) else _pair(child.padding),
                        _pair(child.dilation),
                        bias=False,
                        padding_mode=child.padding_mode,
                    ),
                )
            else:
                replace(child)

    replace(probe)
    probe = probe.double()
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / max(1, m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.zero_()
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe


def empirical_geometry(model: nn.Module, spec: LayerSpec, input_h: int, input_w: int) -> LayerGeometry:
    """Measure the geometry by back-propagating from map cells of a linearised copy of the model."""
    try:
        return _measure(_linearise(model, slim=True), 1, model, spec, input_h, input_w)
    except (RuntimeError, LayerError):  # channel-specific modules (SE blocks, norms over channels ...)
        return _measure(_linearise(model, slim=False), input_channels(model), model, spec, input_h, input_w)


def _measure(
    probe: nn.Module, channels: int, model: nn.Module, spec: LayerSpec, input_h: int, input_w: int
) -> LayerGeometry:

    size_h, size_w = input_h, input_w
    for _ in range(4):  # grow the probe input until the central cell's field is not cut by the border
        # Positive input, positive weights: every activation is positive, so functional ReLUs pass gradient.
        x = torch.ones(1, channels, size_h, size_w, dtype=torch.float64, requires_grad=True)
        with capture_layers(probe, [spec], detach=False, stop=True) as captured:
            forward(probe, x)
        fmap = captured[spec.name].pre
        h, w = fmap.shape[2], fmap.shape[3]
        r, c = h // 2, w // 2
        boxes = []
        for rr, cc in ((r, c), (r, min(c + 1, w - 1)), (min(r + 1, h - 1), c)):
            (grad,) = torch.autograd.grad(fmap[0, :, rr, cc].sum(), x, retain_graph=True)
            support = grad[0].abs().sum(0) > 0
            rows = torch.nonzero(support.any(1)).flatten()
            cols = torch.nonzero(support.any(0)).flatten()
            boxes.append((int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())))
        if all(b[0] > 0 and b[1] > 0 and b[2] < size_w - 1 and b[3] < size_h - 1 for b in boxes):
            break
        size_h, size_w = size_h * 2, size_w * 2
    else:
        raise LayerError(f"receptive field of {spec.name!r} is larger than a {size_h}x{size_w} probe")
    x0, y0, x1, y1 = boxes[0]
    cx0, cy0 = (x0 + x1) / 2, (y0 + y1) / 2
    sx = (boxes[1][0] + boxes[1][2]) / 2 - cx0 if w > 1 else 1.0
    sy = (boxes[2][1] + boxes[2][3]) / 2 - cy0 if h > 1 else 1.0
    map_h, map_w = _map_size(model, spec, input_h, input_w)
    return LayerGeometry(
        stride_x=sx,
        stride_y=sy,
        centre_x=cx0 - c * sx,
        centre_y=cy0 - r * sy,
        rf_x=x1 - x0 + 1,
        rf_y=y1 - y0 + 1,
        map_h=map_h,
        map_w=map_w,
        input_h=input_h,
        input_w=input_w,
        method="empirical",
    )


def layer_geometry(model: nn.Module, spec: LayerSpec, input_h: int, input_w: int | None = None) -> LayerGeometry:
    """Analytic geometry when the model can be traced, otherwise measured."""
    input_w = input_w or input_h
    try:
        return analytic_geometry(model, spec, input_h, input_w)
    except _Untraceable:
        return empirical_geometry(model, spec, input_h, input_w)


def scaled_patch_size(input_size: int, at_224: int = 70) -> int:
    """The papers' 70 px patch at 224 px, scaled to another input size (at least 8 px)."""
    return max(8, math.floor(at_224 * input_size / 224 + 0.5))


def geometries(
    model: nn.Module, specs: list[LayerSpec], input_h: int, input_w: int | None = None
) -> dict[str, LayerGeometry]:
    """Geometry of several layers with one trace and one forward pass (measured where tracing fails)."""

    input_w = input_w or input_h
    try:
        table: dict[str, _G] | None = _propagate(model)
    except _Untraceable:
        table = None
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad(), capture_layers(model, specs, stop=True) as captured:
        forward(model, torch.zeros(1, input_channels(model), input_h, input_w, device=device))
    out: dict[str, LayerGeometry] = {}
    for spec in specs:
        t = captured[spec.name].post
        if t.dim() != 4:
            continue  # not a spatial map (a classifier layer)
        g = table.get(spec.module) if table is not None else None
        if g is None:
            out[spec.name] = empirical_geometry(model, spec, input_h, input_w)
        else:
            out[spec.name] = LayerGeometry(
                g.sx, g.sy, g.cx, g.cy, g.rx, g.ry, int(t.shape[2]), int(t.shape[3]), input_h, input_w, "analytic"
            )
    return out


def describe_layers(handle: ModelHandle, size: int | None = None) -> list[dict[str, object]]:
    """One row per named layer: module, channels, map size, stride, centre and receptive field in pixels."""
    size = size or handle.input_size
    specs = list(handle.layers.values())
    geo = geometries(handle.module, specs, size, size)
    device = next(iter(handle.module.parameters()), torch.empty(0)).device
    with torch.no_grad(), capture_layers(handle.module, specs, stop=True) as cap:
        forward(handle.module, torch.zeros(1, handle.channels, size, size, device=device))
    aliases = {v: k for k, v in handle.aliases.items()}
    rows: list[dict[str, object]] = []
    for spec in specs:
        g = geo.get(spec.name)
        if g is None:
            continue
        rows.append(
            {
                "layer": spec.name + (f" ({aliases[spec.name]})" if spec.name in aliases else ""),
                "module": spec.module,
                "channels": int(cap[spec.name].post.shape[1]),
                "map": f"{g.map_h}x{g.map_w}",
                "stride": g.stride_x,
                "centre": g.centre_x,
                "rf": g.rf_x,
                "default": spec.name in handle.default_layers,
            }
        )
    return rows
