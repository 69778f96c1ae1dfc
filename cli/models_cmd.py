"""``kgexplain models`` and ``kgexplain layers MODEL``."""

from __future__ import annotations

import click

from kgexplain.features.geometry import describe_layers
from kgexplain.models import ARCHITECTURES, load_model
from kgexplain.models.registry import model_names

from .options import output_options
from .output import emit_rows


@click.command("models")
@output_options
def models_command(fmt: str) -> None:
    """List the architectures kgexplain knows, with their default layers and weights."""
    rows = [
        {
            "model": name,
            "input": arch.input_size,
            "default_layers": ",".join(arch.default_layers),
            "weights": "shipped|none|PATH" if not arch.imagenet else "imagenet|none|PATH",
            "description": arch.description,
        }
        for name, arch in ((n, ARCHITECTURES[n]) for n in model_names())
    ]
    emit_rows(rows, fmt)


@click.command("layers")
@click.argument("model", type=click.Choice(model_names()))
@click.option("--size", type=click.IntRange(min=16), default=None, help="Input size in pixels (default: the model's).")
@output_options
def layers_command(model: str, size: int | None, fmt: str) -> None:
    """List MODEL's layers with channels, map size, stride, centre and receptive field (pixels).

    Positions are pixel-index coordinates: cell (i, j) is centred at (centre + j*stride, centre + i*stride).
    """
    handle = load_model(model, "none")  # geometry does not depend on the weights
    emit_rows(describe_layers(handle, size), fmt)
