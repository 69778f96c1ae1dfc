"""The ``kgexplain`` command: a thin Click layer over the library.

Every command parses its options, calls one library function and prints the result. User mistakes surface as
``KgExplainError``; here they become one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

from typing import Any

import click
import torch
from kgexplain.cli import (
    aog_cmd,
    build_cmd,
    data_cmd,
    doctor_cmd,
    features_cmd,
    graph_cmd,
    info_cmd,
    kp_cmd,
    models_cmd,
    store_cmd,
    zoo_cmd,
)

from kgexplain.errors import KgExplainError
from kgexplain.version import __version__


def fail(ctx: click.Context, message: str, exit_code: int = 1) -> None:
    """Print ``Error: message`` on one line of stderr and exit with ``exit_code``."""
    click.echo(f"Error: {message}", err=True)
    ctx.exit(exit_code)


class KgxGroup(click.Group):
    """A group that turns library errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KgExplainError as e:
            fail(ctx, str(e), e.exit_code)
        except torch.cuda.OutOfMemoryError:
            fail(ctx, "the GPU ran out of memory (pass a smaller --batch-size, or --device cpu)")
        except KeyboardInterrupt:
            fail(ctx, "interrupted; completed work is kept and a re-run resumes it", 130)
        return None


@click.group(cls=KgxGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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


COMMAND_MODULES = (
    aog_cmd,
    build_cmd,
    data_cmd,
    doctor_cmd,
    features_cmd,
    graph_cmd,
    info_cmd,
    kp_cmd,
    models_cmd,
    store_cmd,
    zoo_cmd,
)
for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)
