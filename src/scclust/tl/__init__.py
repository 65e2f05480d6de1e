"""Clustering and analysis tools."""

from ._leiden import leiden
from ._mixing import mixing_entropy

__all__ = ["leiden", "mixing_entropy"]
