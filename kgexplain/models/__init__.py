"""Models: the registry of architectures, weights loading, layer names and the toy net."""

from kgexplain.models.layers import LayerSpec
from kgexplain.models.registry import ARCHITECTURES, ModelHandle, load_model

__all__ = ["ARCHITECTURES", "LayerSpec", "ModelHandle", "describe_layers", "load_model"]


def describe_layers(handle: ModelHandle, size: int | None = None) -> list[dict[str, object]]:
    """One row per named layer: module, channels, map size, stride, centre and receptive field in pixels."""
    import torch

    from kgexplain.features.hooks import capture_layers, forward
    from kgexplain.geometry import geometries

    size = size or handle.input_size
    specs = list(handle.layers.values())
    geo = geometries(handle.module, specs, size, size)
    device = next(iter(handle.module.parameters()), torch.empty(0)).device
    with torch.no_grad(), capture_layers(handle.module, specs, stop=True) as cap:
        forward(handle.module, torch.zeros(1, 3, size, size, device=device))
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
