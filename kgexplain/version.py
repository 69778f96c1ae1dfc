"""The installed version of kgexplain (stored on every Run as its code version)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgexplain")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
