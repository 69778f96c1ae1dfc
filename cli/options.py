"""Option decorators shared by commands (output format, device, store, model, data source)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from kgexplain.models.registry import ARCHITECTURES

F = TypeVar("F", bound=Callable[..., Any])


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def output_options(f: F) -> F:
    """``--json`` / ``--csv`` (default: a readable table) into the ``fmt`` parameter."""
    return _stack(
        click.option("--json", "fmt", flag_value="json", help="Print JSON."),
        click.option("--csv", "fmt", flag_value="csv", help="Print CSV."),
        click.option("--table", "fmt", flag_value="table", default=True, hidden=True),
    )(f)


device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    envvar="KGEXPLAIN_DEVICE",
    help="auto, cpu, cuda or cuda:N (env KGEXPLAIN_DEVICE).",
)


def store_options(f: F) -> F:
    """Where the store is and how to reach it (``--store`` is a folder or a bolt:// / neo4j:// URL)."""
    return _stack(
        click.option(
            "--store",
            default=None,
            envvar="KGEXPLAIN_STORE",
            metavar="DIR|URL",
            help="Store folder (embedded) or bolt://HOST:7687 (Neo4j); 'neo4j' means $NEO4J_URI. "
            "Default: ./kgexplain-store (env KGEXPLAIN_STORE).",
        ),
        click.option("--user", default=None, envvar="NEO4J_USERNAME", help="Neo4j user (env NEO4J_USERNAME)."),
        click.option("--password", default=None, envvar="NEO4J_PASSWORD", help="Neo4j password (env NEO4J_PASSWORD)."),
        click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database (default neo4j)."),
        click.option(
            "--artifacts",
            default=None,
            envvar="KGEXPLAIN_ARTIFACTS",
            metavar="DIR",
            help="Artifacts folder for a Neo4j store (default ./kgexplain-artifacts).",
        ),
    )(f)


store_option = click.option(
    "--store",
    default=None,
    envvar="KGEXPLAIN_STORE",
    metavar="DIR",
    help="Store folder (env KGEXPLAIN_STORE; default ./kgexplain-store).",
)


def model_options(default: str = "toynet") -> Callable[[F], F]:
    return _stack(
        click.option(
            "--model",
            "model_name",
            type=click.Choice(sorted(ARCHITECTURES)),
            default=default,
            show_default=True,
            help="Architecture (see `kgexplain models`).",
        ),
        click.option(
            "--weights",
            default=None,
            metavar="imagenet|none|shipped|PATH",
            help="Weights: torchvision ImageNet weights, random init, the toy net's shipped checkpoint, "
            "or a local state dict / checkpoint. Default: imagenet (toynet: shipped).",
        ),
        click.option(
            "--trust-checkpoint",
            is_flag=True,
            help="Allow checkpoints that pickle whole Python objects (only for files you trust).",
        ),
    )


def data_options(f: F) -> F:
    return _stack(
        click.option(
            "--data",
            "data_kind",
            type=click.Choice(["synth"]),
            default=None,
            help="Use the synthetic reference data set (the default when no other source is given).",
        ),
        click.option(
            "--images",
            type=click.Path(),
            default=None,
            metavar="DIR",
            help="A folder of images (sub-folders are class labels).",
        ),
        click.option(
            "--annotations",
            type=click.Path(),
            default=None,
            metavar="FILE",
            help="An annotations JSON (see README: image path, box, keypoints, mask).",
        ),
        click.option("--cub", type=click.Path(), default=None, metavar="DIR", help="A CUB-200-2011 folder."),
        click.option(
            "--cub-class",
            "cub_classes",
            multiple=True,
            metavar="ID|NAME",
            help="CUB class(es) to use (id or part of the name); repeatable.",
        ),
        click.option(
            "--split", type=click.Choice(["train", "test", "all"]), default="all", show_default=True, help="CUB split."
        ),
        click.option(
            "--label", "labels", multiple=True, metavar="LABEL", help="Only images with this label; repeatable."
        ),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Use at most this many images."),
        click.option(
            "--crop",
            type=click.Choice(["none", "box"]),
            default=None,
            help="Crop to the object box before resizing (default: box for CUB, none otherwise).",
        ),
    )(f)


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for PyTorch (default: PyTorch's choice)."
)
