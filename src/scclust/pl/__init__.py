"""Figures. Every function returns a :class:`matplotlib.figure.Figure` and never modifies the AnnData."""

from ._embedding import embedding

__all__ = ["embedding"]
