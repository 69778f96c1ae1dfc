"""``python -m kgexplain ...`` runs the CLI (as ``torchrun ... -m -- kgexplain`` does)."""

from kgexplain.cli.main import cli

cli(prog_name="kgexplain")
