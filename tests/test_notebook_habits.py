"""Acceptance: a notebook written with scanpy's habits runs the first time, and scclust's figure and
scanpy's figure of the same clustering show the same colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scanpy as sc
from matplotlib.colors import to_rgba

import scclust as scc


def _scatter_colours(ax) -> set[tuple[float, ...]]:
    """The RGBA facecolours of the cells drawn on ``ax`` (its largest scatter)."""
    cells = max(ax.collections, key=lambda c: len(c.get_offsets()))
    return {tuple(np.round(c, 6)) for c in cells.get_facecolors()}


def test_scanpy_style_notebook_cells(pbmc):
    adata = pbmc.copy()

    # cell 1: the graph and one clustering, with scanpy's argument names
    scc.pp.neighbors(adata, use_rep="X_pca", n_neighbors=10)
    scc.tl.leiden(adata, resolution=1.0, key_added="my")
    assert "my" in adata.obs and "my_1.0" not in adata.obs
    n = adata.obs["my"].nunique()
    assert n >= 3 and len(adata.uns["my_colors"]) == n

    # cell 2: scclust's figure and scanpy's, side by side on the user's axes
    fig, (ax_scc, ax_sc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        assert scc.pl.embedding(adata, basis="umap", color="my", ax=ax_scc) is fig
        sc.pl.umap(adata, color="my", show=False, ax=ax_sc)
        ours, theirs = _scatter_colours(ax_scc), _scatter_colours(ax_sc)
        assert len(ours) == n  # one colour per cluster
        assert ours == theirs
        assert ours == {tuple(np.round(to_rgba(c), 6)) for c in adata.uns["my_colors"]}
        # cell by cell: each cell in the same colour (both draw every cell; matched by position)
        ours_by_xy = _colour_at(ax_scc)
        theirs_by_xy = _colour_at(ax_sc)
        assert ours_by_xy == theirs_by_xy
    finally:
        plt.close(fig)

    # cell 3: a rerun of cell 1 with another resolution (scanpy overwrites; so do we), then the dot plot
    scc.tl.leiden(adata, resolution=0.5, key_added="my")
    assert len(adata.uns["my_colors"]) == adata.obs["my"].nunique()
    with pytest.raises(KeyError, match=r"scclust\.tl\.dendrogram\(adata, groupby='my'\).*dendrogram=False"):
        scc.pl.dotplot(adata, groupby="my", genes=["CD3E", "LYZ"])
    assert scc.pl.dotplot(adata, groupby="my", genes=["CD3E", "LYZ"], dendrogram=False) is not None


def _colour_at(ax) -> list[tuple[float, ...]]:
    """(x, y, r, g, b, a) of every cell drawn, sorted: the same multiset when every cell has the same
    colour in both figures, whatever the drawing order."""
    cells = max(ax.collections, key=lambda c: len(c.get_offsets()))
    xy = np.round(np.asarray(cells.get_offsets(), dtype=float), 4)
    rgba = np.round(cells.get_facecolors(), 6)
    return sorted(map(tuple, np.column_stack([xy, rgba])))
