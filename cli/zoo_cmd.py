"""``kgexplain zoo train`` and ``kgexplain zoo eval``."""

from __future__ import annotations

import click

from kgexplain.models import load_model
from kgexplain.models.training import TrainConfig, evaluate_synth, train_toynet

from .context import progress_of
from .options import device_option, output_options, threads_option
from .output import emit_object


@click.group("zoo")
def zoo_group() -> None:
    """Train and evaluate the toy net on the synthetic workload."""


@zoo_group.command("train")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="toynet-run",
    help="Folder for toynet-epochN.pt, toynet.pt and training.json.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=5)
@click.option("--n", "n_train", type=click.IntRange(min=64), default=8000, help="Training images (rendered once).")
@click.option("--seed", type=int, default=1, help="Training seed (data and init).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@device_option
@threads_option
@output_options
@click.pass_context
def train_command(
    ctx: click.Context,
    out: str,
    epochs: int,
    n_train: int,
    seed: int,
    batch_size: int,
    device: str,
    threads: int | None,
    fmt: str,
) -> None:
    """Train the toy net; checkpoints after every epoch (use them with --weights PATH)."""
    cfg = TrainConfig(n_train=n_train, epochs=epochs, seed=seed, batch_size=batch_size, device=device, threads=threads)
    result = train_toynet(out, cfg, progress=progress_of(ctx))
    text = (
        f"trained in {result.seconds:.0f} s (data {result.data_seconds:.0f} s); validation accuracy "
        f"{result.accuracy:.3f}; final checkpoint {result.final}"
    )
    emit_object(result.to_dict(), fmt, text)


@zoo_group.command("eval")
@click.option("--seed", type=int, default=12345, help="Seed of the freshly generated images.")
@click.option("--n", type=click.IntRange(min=1), default=1000, help="Number of images.")
@click.option("--weights", default="shipped", metavar="shipped|PATH", help="The toy net's checkpoint to evaluate.")
@device_option
@output_options
def eval_command(seed: int, n: int, weights: str, device: str, fmt: str) -> None:
    """Accuracy of the toy net on N freshly generated images of seed SEED."""
    handle = load_model("toynet", weights)
    result = evaluate_synth(handle, n=n, seed=seed, device=device)
    emit_object(result, fmt, f"accuracy {result['accuracy']:.4f} on {n} images (seed {seed}, {handle.weights})")
