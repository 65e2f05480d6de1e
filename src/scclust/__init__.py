"""scclust: config-driven clustering of integrated single-cell data on AnnData / scanpy.

The submodules (``pp``, ``tl``, ``pl``, ``datasets``, ``config``, ``workflow``, ...) and ``run`` /
``load_config`` load on first use, so ``import scclust``, the CLI's argument and config errors, and
scclust's worker processes do not pay for plotting and scanpy imports they never use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("scclust")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_SUBMODULES = ("cli", "config", "datasets", "pl", "pp", "report", "tl", "workflow")
_FUNCTIONS = {"load_config": "config", "run": "workflow", "read_marker_sets": "_io"}

__all__ = ["__version__", "datasets", "load_config", "pl", "pp", "read_marker_sets", "run", "tl"]

if TYPE_CHECKING:
    from . import datasets, pl, pp, tl
    from ._io import read_marker_sets
    from .config import load_config
    from .workflow import run


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        return getattr(import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'scclust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
