"""The ``kgexplain`` command: a thin Click layer over the library.

Every command parses its options, calls one library function and prints the result. User mistakes surface as
``KgExplainError``; here they become one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from typing import Any

import click
from kgexplain.cli.options import ARGV, WORKER

from kgexplain.errors import DistributedError, KgExplainError
from kgexplain.version import __version__

# Each command's module, loaded when the command runs (or `--help` lists them all): the commands that read or serve
# the store (query, patterns, show, paths, runs, stats, graph, store, export, push, report, serve) load no torch
# (tests/test_cli.py holds it).
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("build_cmd", "build_command"),
    "features": ("features_cmd", "features_command"),
    "data": ("data_cmd", "data_group"),
    "models": ("models_cmd", "models_command"),
    "layers": ("models_cmd", "layers_command"),
    "doctor": ("doctor_cmd", "doctor_command"),
    "zoo": ("zoo_cmd", "zoo_group"),
    "query": ("store_cmd", "query_command"),
    "patterns": ("store_cmd", "patterns_command"),
    "show": ("store_cmd", "show_command"),
    "paths": ("store_cmd", "paths_command"),
    "runs": ("store_cmd", "runs_group"),
    "stats": ("store_cmd", "stats_command"),
    "graph": ("graph_cmd", "graph_group"),
    "store": ("store_cmd", "store_group"),
    "export": ("store_cmd", "export_command"),
    "push": ("store_cmd", "push_command"),
    "aog": ("aog_cmd", "aog_group"),
    "localize": ("aog_cmd", "localize_command"),
    "info": ("info_cmd", "info_command"),
    "decoders": ("info_cmd", "decoders_group"),
    "kp": ("kp_cmd", "kp_command"),
    "report": ("web_cmd", "report_command"),
    "serve": ("web_cmd", "serve_command"),
}

# What Ctrl-C leaves, per command (the one line after "interrupted; ").
AFTER_ANY = "nothing is left half-written (a store write not finished is not complete; running it again replaces it)"
AFTER_INTERRUPT = {
    "build": "the extracted features (and the graph, once mined) are kept, and running it again resumes from them",
    "features": "the extracted shards are kept, and running it again resumes after them",
    "report": "no report was written (--out is as it was)",
}

# What `kgexplain --help` lists for each command, so that listing them loads none of their modules (torch among
# them: 2.3 s instead of 0.2 s); tests/test_cli.py holds it equal to each command's own short help.
SUMMARIES: dict[str, str] = {
    "build": "Mine an explanatory graph for a model and a set of images, and store it.",
    "features": "Extract feature maps of a model's layers into the store's cache (float16 shards).",
    "data": "Generate the synthetic reference data set, or check a data source.",
    "models": "List the architectures kgexplain knows, with their default layers and weights.",
    "layers": "List MODEL's layers with channels, map size, stride, centre and receptive field (pixels).",
    "doctor": "Check torch, CUDA, the store (and every run in it), image formats, the weights cache and the toy net.",
    "zoo": "Train and evaluate the toy net on the synthetic workload.",
    "query": "Run a Cypher query (read-only unless --write).",
    "patterns": "The highest-scoring patterns with their prior positions (pixels) and best patch.",
    "show": "One pattern with its parents, children and top images.",
    "paths": "The strongest co-activation paths from SOURCE (to TARGET), ranked by the product of edge strengths.",
    "runs": "List the runs in the store (`kgexplain runs delete RUN` removes one).",
    "stats": "Counts per label and relationship, and patterns per run and layer.",
    "graph": "Centrality, co-activating groups and GraphML export of subgraphs (networkx).",
    "store": "Initialise, upgrade or drop the store.",
    "export": "Export the store (or one run) as GraphML, JSON lines or CSV.",
    "push": "Copy the store (or one run) into Neo4j; pushing again changes nothing.",
    "aog": "And-Or graphs of semantic parts, learnt from a few annotated examples.",
    "localize": "Find PART on new images (files or a folder): JSON or a table of (image, part, found, "
    "confidence, x, y, box, score, template, flipped, object_box) in the images' pixels.",
    "info": "How much input information each layer discards: per-pixel SID (and RU) maps and the concentration.",
    "decoders": "The decoders that reconstruct images from a layer's features, for RU (`kgexplain info --ru`).",
    "kp": "Knowledge points: regions whose features are discriminative enough, per layer, image and class.",
    "report": "Write a self-contained static site of the store's runs to OUT: index, run, pattern, image and path "
    "pages with a JSON twin each, files copied in.",
    "serve": "Browse the store live and read-only: the report's pages, each with its JSON twin (the same path with "
    ".json, e.g.",
}


def worker(argv: list[str], threads: int) -> None:
    """One rank of an ``--nproc`` job: the same command line, with this machine's cores split between the ranks."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch  # lazy: the worker of a --nproc job, which loads torch anyway

        torch.set_num_threads(threads)
    if "NUMBA_NUM_THREADS" not in os.environ:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    try:
        code = cli.main(args=argv, prog_name="kgexplain", standalone_mode=False)
    except Exception as e:  # a bug: the launcher reports only the exit code, so this rank prints its traceback
        if type(e).__name__ == "SignalException":  # stopped by the launcher because another rank failed
            raise
        rank = os.environ.get("RANK", "?")
        click.echo(f"rank {rank}: unexpected error (please report it with this traceback):", err=True)
        traceback.print_exc()
        sys.stderr.flush()
        raise
    leave()
    if code:
        sys.exit(code)


def fail(ctx: click.Context, message: str, exit_code: int = 1) -> None:
    """Print ``Error: message`` on one line of stderr and exit with ``exit_code``."""
    click.echo(f"Error: {message}", err=True)
    ctx.exit(exit_code)


def leave() -> None:
    """Leave the job's process group, if this process joined one (a no-op otherwise, and torch stays unloaded)."""
    if "torch.distributed" in sys.modules:
        # lazy: a process that never imported torch.distributed has no group to leave
        from kgexplain.distributed import leave as leave_group

        leave_group()


def _cuda_out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a command that never loaded torch cannot run out of GPU memory
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


class KgxGroup(click.Group):
    """A group that loads each command's module when it is used (``COMMANDS``) and turns library errors into
    one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their summaries as Click lists them, from ``SUMMARIES`` (no command module loads)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        with formatter.section("Commands"):
            # (a stand-in command shortens each summary as the command itself would)
            formatter.write_dl([(n, click.Command(n, help=SUMMARIES[n]).get_short_help_str(limit)) for n in names])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(f"kgexplain.cli.{module}"), name)
        return command

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[ARGV] = argv  # what --nproc's workers run again
        ctx.meta[WORKER] = worker
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DistributedError as e:
            # A rank that stops because another failed waits a moment before it exits, so that the launcher
            # (polling every 50 ms) sees the rank that failed first and names it in the job's error.
            time.sleep(0.25)
            fail(ctx, str(e), e.exit_code)
        except KgExplainError as e:
            fail(ctx, str(e), e.exit_code)
        except Exception as e:
            if not _cuda_out_of_memory(e):
                raise
            fail(ctx, "the GPU ran out of memory (pass a smaller --batch-size, or --device cpu)")
        except KeyboardInterrupt:
            fail(ctx, f"interrupted; {AFTER_INTERRUPT.get(ctx.invoked_subcommand or '', AFTER_ANY)}", 130)
        finally:
            leave()  # a rank of a distributed job leaves its group (a no-op otherwise)
        return None


@click.group(
    cls=KgxGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110, "show_default": True},
)
@click.version_option(__version__, "--version", prog_name="kgexplain")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines on stderr.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """Turn what a trained CNN has learned into a queryable knowledge graph.

    \b
    Start with:  kgexplain build          (the offline reference workload: synthetic
                                           images, the shipped toy net, the embedded store)
                 kgexplain doctor         (what this machine has)
                 kgexplain models         (architectures; `kgexplain layers MODEL`)
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
