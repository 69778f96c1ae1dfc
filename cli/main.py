"""The ``kgexplain`` command: a thin Click layer over the library.

Every command parses its options, calls one library function and prints the result. User mistakes surface as
``KgExplainError``; here they become one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click
import torch
from kgexplain.cli.aog_cmd import aog_group, localize_command
from kgexplain.cli.build_cmd import build_command
from kgexplain.cli.data_cmd import data_group
from kgexplain.cli.doctor_cmd import doctor_command
from kgexplain.cli.features_cmd import features_command
from kgexplain.cli.graph_cmd import graph_group
from kgexplain.cli.info_cmd import decoders_group, info_command
from kgexplain.cli.kp_cmd import kp_command
from kgexplain.cli.models_cmd import layers_command, models_command
from kgexplain.cli.options import ARGV, WORKER
from kgexplain.cli.store_cmd import (
    export_command,
    paths_command,
    patterns_command,
    push_command,
    query_command,
    runs_group,
    show_command,
    stats_command,
    store_group,
)
from kgexplain.cli.web_cmd import report_command, serve_command
from kgexplain.cli.zoo_cmd import zoo_group

from kgexplain.distributed import DistributedError, leave
from kgexplain.errors import KgExplainError
from kgexplain.version import __version__


def worker(argv: list[str], threads: int) -> None:
    """One rank of an ``--nproc`` job: the same command line, with this machine's cores split between the ranks."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)
    if "NUMBA_NUM_THREADS" not in os.environ:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    code = cli.main(args=argv, prog_name="kgexplain", standalone_mode=False)
    leave()
    if code:
        sys.exit(code)


def fail(ctx: click.Context, message: str, exit_code: int = 1) -> None:
    """Print ``Error: message`` on one line of stderr and exit with ``exit_code``."""
    click.echo(f"Error: {message}", err=True)
    ctx.exit(exit_code)


class KgxGroup(click.Group):
    """A group that turns library errors into one-line messages."""

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
        except torch.cuda.OutOfMemoryError:
            fail(ctx, "the GPU ran out of memory (pass a smaller --batch-size, or --device cpu)")
        except KeyboardInterrupt:
            fail(ctx, "interrupted; completed work is kept and a re-run resumes it", 130)
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


COMMANDS = [
    build_command,
    features_command,
    data_group,
    models_command,
    layers_command,
    doctor_command,
    zoo_group,
    query_command,
    patterns_command,
    show_command,
    paths_command,
    runs_group,
    stats_command,
    graph_group,
    store_group,
    export_command,
    push_command,
    aog_group,
    localize_command,
    info_command,
    decoders_group,
    kp_command,
    report_command,
    serve_command,
]
for _command in COMMANDS:
    cli.add_command(_command)
