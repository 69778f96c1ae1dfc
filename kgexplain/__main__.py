"""``python -m kgexplain ...`` runs the CLI (as ``torchrun ... -m kgexplain`` will)."""

from kgexplain.cli.main import cli

cli(prog_name="kgexplain")
