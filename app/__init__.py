"""The organization service. Its version lives in pyproject.toml only; read it from here."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orgsvc")
except PackageNotFoundError:  # a source tree on sys.path without `pip install`
    __version__ = "0+unknown"
