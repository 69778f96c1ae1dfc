"""Option decorators shared by commands. Each group of options becomes one typed parameter of the command:
``--json``/``--csv`` -> ``fmt``, the store options -> ``store: StoreSpec``, the data options -> ``data: DataSpec``,
``--model``/``--weights`` -> ``model_name``, ``weights``, ``trust_checkpoint``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from kgexplain.data.spec import SYNTH_N, DataSpec
from kgexplain.ranks import launched, worker_threads
from kgexplain.store import StoreSpec

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
    envvar="KGEXPLAIN_DEVICE",
    help="auto, cpu, cuda or cuda:N (env KGEXPLAIN_DEVICE).",
)

threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for PyTorch (default: PyTorch's choice)."
)


def layers_option(help: str = "Layers (default: the model's paper layers).") -> Callable[[F], F]:
    """``--layers L1,L2,...`` into a tuple of names (empty: the model's default)."""

    def split(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
        return tuple(x.strip() for x in value.split(",") if x.strip()) if value else ()

    return click.option("--layers", default=None, metavar="L1,L2,...", callback=split, help=help)


def store_options(f: F) -> F:
    """Where the store is and how to reach it, as ``store: StoreSpec`` (``--store`` is a folder or a bolt:// /
    neo4j:// URL)."""

    @functools.wraps(f)
    def command(
        *args: Any,
        store: str | None,
        user: str | None,
        password: str | None,
        database: str | None,
        artifacts: str | None,
        **kwargs: Any,
    ) -> Any:
        return f(*args, store=StoreSpec(store, user, password, database, artifacts), **kwargs)

    return _stack(  # type: ignore[return-value]
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
    )(command)


@dataclass(frozen=True)
class ModelOption:
    """``--model``, ``--weights`` (none, one, or several) and ``--trust-checkpoint``."""

    name: str
    weights: tuple[str, ...]
    trust_checkpoint: bool

    @property
    def single(self) -> str | None:
        """The one ``--weights`` (None: the model's default)."""
        return self.weights[0] if self.weights else None


def model_options(multiple_weights: bool = False, weights_help: str | None = None) -> Callable[[F], F]:
    """``--model``, ``--weights`` (one, or repeatable) and ``--trust-checkpoint`` as ``model: ModelOption``."""

    # lazy: only the commands that load a model (and torch anyway) need the registry, when they are defined
    from kgexplain.models.registry import model_names

    def wrap(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, model_name: str, weights: Any, trust_checkpoint: bool, **kwargs: Any) -> Any:
            given = tuple(weights)
            if len(given) > 1 and not multiple_weights:  # Click would keep the last one without a word
                name = click.get_current_context().info_name
                series = " (a series of checkpoints: --checkpoints W1,W2,...)" if name == "kp" else ""
                raise click.UsageError(f"--weights given {len(given)} times; `kgexplain {name}` takes one{series}")
            return f(*args, model=ModelOption(model_name, given, trust_checkpoint), **kwargs)

        return _stack(
            click.option(
                "--model",
                "model_name",
                type=click.Choice(model_names()),
                default="toynet",
                help="Architecture (see `kgexplain models`).",
            ),
            click.option(
                "--weights",
                multiple=True,  # one only unless multiple_weights: a repeat is an error, not silently dropped
                metavar="imagenet|none|shipped|PATH",
                help=weights_help
                or "Weights: torchvision ImageNet weights, random init, the toy net's shipped checkpoint, "
                "or a local state dict / checkpoint. Default: imagenet (toynet: shipped).",
            ),
            click.option(
                "--trust-checkpoint",
                is_flag=True,
                help="Allow checkpoints that pickle whole Python objects (only for files you trust).",
            ),
        )(command)  # type: ignore[return-value]

    return wrap


@dataclass(frozen=True)
class JobOptions:
    """What every job command shares: the store it writes to, the device it runs on, how results are printed."""

    store: StoreSpec
    device: str
    fmt: str


def job_options(f: F) -> F:
    """``--device``, the store options and ``--json`` / ``--csv`` as ``job: JobOptions``."""

    @functools.wraps(f)
    def command(*args: Any, device: str, store: StoreSpec, fmt: str, **kwargs: Any) -> Any:
        return f(*args, job=JobOptions(store, device, fmt), **kwargs)

    return _stack(device_option, store_options, output_options)(command)  # type: ignore[return-value]


def nproc_option(f: F) -> F:
    """``--nproc N``: the command as one distributed job of N processes on this machine (each on its block of the
    images, rank 0 writing the store). Under ``torchrun`` the command already is one rank and runs as such."""

    @functools.wraps(f)
    def command(*args: Any, nproc: int, **kwargs: Any) -> Any:
        if nproc > 1 and not launched():
            if kwargs.get("facing") == "latent":  # refused before any process starts (run_build refuses it too)
                raise click.UsageError("--facing latent runs in one process: leave out --nproc for it")
            ctx = click.get_current_context()
            argv = list(ctx.meta.get(ARGV, []))
            job = kwargs.get("job")
            device = str(job.device if isinstance(job, JobOptions) else kwargs.get("device") or "cpu")
            entry = ctx.meta[WORKER]
            from kgexplain.distributed import launch  # lazy: torch.distributed, for --nproc only

            launch(nproc, entry, (argv, worker_threads(nproc)), "cuda" if device.startswith("cuda") else "cpu")
            return None
        return f(*args, **kwargs)

    return click.option(  # type: ignore[return-value]
        "--nproc",
        type=click.IntRange(min=1),
        default=1,
        metavar="N",
        help="Run as one job of N processes on this machine, each on its share of the work (the images; for kp the "
        "layers) (torch.distributed; for several machines start the command with torchrun, see README 'Scaling "
        "out').",
    )(command)


ARGV = "kgexplain.argv"  # ctx.meta key: the command line as given, for --nproc's workers
WORKER = "kgexplain.worker"  # ctx.meta key: the function a worker runs (the root command's, so it pickles)


def data_options(
    sized: bool = True,
    n: int | None = None,
    seed: int = 0,
    n_min: int = 1,
    categories: Sequence[str] | None = None,
    n_help: str = "Synthetic images (default data).",
    seed_help: str = "Synthetic set seed.",
) -> Callable[[F], F]:
    """The data source as ``data: DataSpec``: one of ``--images``, ``--annotations``, ``--cub``, ``--data synth``
    (the synthetic set is the default), with ``--label``, ``--limit`` and ``--crop``; ``--n`` and ``--seed`` size the
    synthetic set (``sized=False``: neither option, the command has its own)."""

    def wrap(f: F) -> F:
        @functools.wraps(f)
        def command(
            *args: Any,
            data_kind: str | None,
            images: str | None,
            annotations: str | None,
            cub: str | None,
            cub_classes: tuple[str, ...],
            split: str,
            labels: tuple[str, ...],
            limit: int | None,
            crop: str | None,
            **kwargs: Any,
        ) -> Any:
            synth_n = kwargs.pop("n") if sized else None
            synth_seed = kwargs.pop("seed") if sized else seed
            spec = DataSpec(
                images=images,
                annotations=annotations,
                cub=cub,
                cub_classes=cub_classes,
                split=split,
                labels=labels,
                limit=limit,
                crop=crop,
                synth=data_kind == "synth",
                n=synth_n or SYNTH_N,
                seed=synth_seed,
                categories=tuple(categories) if categories else None,
            )
            return f(*args, data=spec, **kwargs)

        options = [
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
                help='An annotations JSON (README "Data sources": image path, box, keypoints, mask) or a COCO file.',
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
                "--split",
                type=click.Choice(["train", "test", "all"]),
                default="all",
                help="CUB split.",
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
        ]
        if sized:
            options += [
                click.option("--n", type=click.IntRange(min=n_min), default=n, help=n_help),
                click.option("--seed", type=int, default=seed, help=seed_help),
            ]
        return _stack(*options)(command)  # type: ignore[return-value]

    return wrap
