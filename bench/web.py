"""The earlier name of ``bench/serve_bench.py`` (kept so that existing commands work): runs it."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("serve_bench.py")), run_name="__main__")
