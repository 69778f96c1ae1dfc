"""``kgexplain kp``: knowledge points per layer (and per checkpoint) with vMF projections."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from kgexplain.data.base import Framing
from kgexplain.devices import resolve_device
from kgexplain.errors import UsageError
from kgexplain.features.extract import default_framing
from kgexplain.information.run import frames_of
from kgexplain.knowledge_points.analyse import KPConfig
from kgexplain.knowledge_points.importance import ImportanceConfig
from kgexplain.knowledge_points.kappa import KappaTable
from kgexplain.knowledge_points.regional import RegionalConfig
from kgexplain.knowledge_points.run import kp_run, plot_counts
from kgexplain.knowledge_points.sample import SampleConfig
from kgexplain.models import load_model
from kgexplain.workspace import Workspace
from kgexplain.zoo import training_series

from .context import progress_of, status
from .info_cmd import _layers, _pop_data, _safe, _source, model_choice, trust_option
from .options import data_options, device_option, output_options, store_options
from .output import emit_rows
from .store_cmd import _store_opts, open_from


def checkpoint_list(model_name: str, weights: str | None, checkpoints: str | None) -> list[str | None]:
    """The weights to analyse, in order: one ``--weights`` or the ``--checkpoints`` list ("epochs" expands to the
    toy net's shipped per-epoch checkpoints, see ``zoo.training_series``)."""
    if checkpoints and weights:
        raise UsageError("give --weights or --checkpoints, not both")
    if not checkpoints:
        return [weights]
    out: list[str | None] = []
    for item in (x.strip() for x in checkpoints.split(",")):
        if not item:
            continue
        if item == "epochs":
            if model_name != "toynet":
                raise UsageError("--checkpoints epochs names the toy net's shipped checkpoints", hint="list PATHs")
            out += [str(p) for p in training_series()]
        else:
            out.append(item)
    if not out:
        raise UsageError("--checkpoints is empty", hint="e.g. --checkpoints epochs or --checkpoints a.pt,b.pt")
    return out


@click.command("kp")
@model_choice
@click.option("--weights", default=None, metavar="imagenet|none|shipped|PATH", help="Weights (one model).")
@click.option(
    "--checkpoints",
    default=None,
    metavar="epochs|W1,W2,...",
    help="Analyse a series of checkpoints (weights specs or PATHs, in training order); 'epochs' = the toy net's "
    "shipped per-epoch checkpoints (the last is the shipped final net).",
)
@trust_option
@click.option("--layers", default=None, metavar="L1,L2,...", help="Layers (default: the model's paper layers).")
@click.option(
    "--sample-layer", default=None, metavar="LAYER", help="Layer whose pooled feature is the sample feature f "
    "(default: the last conv layer; the paper uses the feature before the last fully-connected layer)."
)  # fmt: skip
@data_options
@click.option(
    "--n", type=click.IntRange(min=2), default=200, show_default=True, help="Synthetic images (default data)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic set seed.")
@click.option("--tau", type=click.FloatRange(0, 1), default=KPConfig.tau, show_default=True,
              help="A region is a knowledge point when max_c p(c|h) > tau.")  # fmt: skip
@click.option("--grid", type=click.IntRange(min=1), default=None,
              help="Regions per side (default: the sample layer's map side).")  # fmt: skip
@click.option("--dim", type=click.IntRange(min=2), default=3, show_default=True, help="Embedding dimension d'.")
@click.option("--alpha", type=click.FloatRange(min=0), default=RegionalConfig.alpha, show_default=True,
              help="Weight of the alignment loss.")  # fmt: skip
@click.option("--others", type=click.IntRange(min=1), default=ImportanceConfig.others, show_default=True,
              help="Samples each sample is compared with (P(x2|x1)).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=RegionalConfig.epochs, show_default=True,
              help="Epochs of the regional projection.")  # fmt: skip
@click.option(
    "--truth",
    type=click.Choice(["label", "predicted"]),
    default="label",
    show_default=True,
    help="Reliable = points to the image's labelled class, or to the model's prediction (unlabelled data).",
)
@click.option("--fit-seed", type=int, default=0, show_default=True, help="Seed of the projections.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="kgexplain-kp", show_default=True,
              help="Folder for the plots (per checkpoint) and counts.png.")  # fmt: skip
@device_option
@store_options
@output_options
@click.pass_context
def kp_command(
    ctx: click.Context,
    model_name: str,
    weights: str | None,
    checkpoints: str | None,
    trust_checkpoint: bool,
    layers: str | None,
    sample_layer: str | None,
    n: int,
    seed: int,
    tau: float,
    grid: int | None,
    dim: int,
    alpha: float,
    others: int,
    epochs: int,
    truth: str,
    fit_seed: int,
    batch_size: int,
    out: str,
    device: str,
    fmt: str,
    **kwargs: Any,
) -> None:
    """Knowledge points: regions whose features are discriminative enough, per layer, image and class.

    Fits the sample embedding g = M f (vMF mixture over the classes), each sample's regional importance, and a
    regional projection h = Lambda f(r) per layer; a region is a knowledge point when max_c p(c|h) > tau, reliable
    when that class is the true one. Default data: the synthetic reference workload. Stored as a run per checkpoint:
    KnowledgePoint nodes (KP_IN a Layer, KP_ON an Image) and Metric rows; prints one summary row per layer.
    """
    sopts = _store_opts(kwargs)
    data = _pop_data(kwargs)
    crop = kwargs.pop("crop")
    kwargs.pop("data_kind")
    specs = checkpoint_list(model_name, weights, checkpoints)
    handles = [(w or "default", load_model(model_name, w, trust_checkpoint=trust_checkpoint)) for w in specs]
    first = handles[0][1]
    chosen = _layers(first.default_layers, layers)
    for name in [*chosen, *([sample_layer] if sample_layer else [])]:
        first.layer(name)  # unknown layer names fail here, before any work
    dev = resolve_device(device)
    ws = Workspace.resolve(sopts["store"], sopts["artifacts"]).ensure()
    source = _source(ws, data, n, seed)
    base = default_framing(first, source)
    frames = frames_of(source, Framing(base.size, crop or "none"))
    if len(frames) < 2:
        raise UsageError("knowledge points need at least 2 images")
    cfg = KPConfig(
        tau=tau,
        grid=grid,
        sample=SampleConfig(dim=dim, seed=fit_seed),
        importance=ImportanceConfig(others=others, seed=fit_seed),
        regional=RegionalConfig(dim=dim, alpha=alpha, epochs=epochs, seed=fit_seed),
    )
    kappa = KappaTable.load(cache=ws.cache / "kappa")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with open_from(sopts, read_only=False) as store:
        store.ensure_writable()
        for label, handle in handles:
            handle.to(dev)
            t0 = time.perf_counter()
            status(ctx, f"{handle.name} ({_safe(label)}): {len(frames)} images x {len(chosen)} layers ...")
            res = kp_run(
                store, handle, _safe(label), source, frames, chosen, cfg, kappa, truth_mode=truth,
                sample_layer=sample_layer, device=dev, batch=batch_size,
                out=out_dir / _safe(label) if len(handles) > 1 else out_dir, progress=progress_of(ctx),
            )  # fmt: skip
            results.append(res)
            status(ctx, f"stored run {res.run} in {time.perf_counter() - t0:.1f} s")
    paths = plot_counts(results, out_dir)
    status(ctx, f"plots in {out_dir}/ ({', '.join(p.name for p in paths)})")
    emit_rows([row for r in results for row in r.summary()], fmt)


COMMANDS = [kp_command]
