"""kgexplain: turn what a trained CNN has learned into a queryable knowledge graph."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgexplain")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
