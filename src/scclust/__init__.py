"""scclust: config-driven clustering of integrated single-cell data on AnnData / scanpy."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, pp, tl
from .config import load_config
from .workflow import run

try:
    __version__ = version("scclust")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "datasets", "load_config", "pl", "pp", "run", "tl"]
