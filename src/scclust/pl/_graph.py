"""The first cells x cells block of neighbour graphs (the Seurat lab's kNN / SNN heat maps)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData
from matplotlib.figure import Figure

from .._errors import ConfigError

#: the block is drawn dense: 5,000 cells = 200 MB per graph
MAX_CELLS = 5000


def graph_block(adata: AnnData, neighbors_keys: Sequence[str] = ("neighbors",), *, n_cells: int = 200) -> Figure:
    """Edge weights among the first ``n_cells`` cells, one panel per graph, cells in data order.

    Shows how sparse a graph is and how pruning changes it: the Seurat lab draws
    ``graphs$RNA_nn[1:200, 1:200]`` and ``graphs$RNA_snn[1:200, 1:200]`` side by side.

    Parameters
    ----------
    adata
        Annotated data matrix with graphs from :func:`scclust.pp.neighbors` (or scanpy's).
    neighbors_keys
        Graphs in ``.uns`` (their connectivities are drawn).
    n_cells
        Size of the block (all cells when there are fewer).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`.
    """
    from ..tl._leiden import get_graph

    if not 2 <= n_cells <= MAX_CELLS:
        raise ConfigError(f"n_cells must be in [2, {MAX_CELLS}]; got {n_cells}")
    keys = list(neighbors_keys)
    if not keys:
        raise ConfigError("neighbors_keys must name at least one graph")
    n = min(n_cells, adata.n_obs)
    fig = Figure(figsize=(4.2 * len(keys) + 0.6, 4.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    im = None
    vmax = 0.0
    blocks = []
    for key in keys:
        block = get_graph(adata, key)[:n, :n].toarray()
        blocks.append(block)
        vmax = max(vmax, float(block.max()))
    for ax, key, block in zip(axes, keys, blocks, strict=True):
        im = ax.imshow(block, cmap="Greys", vmin=0, vmax=vmax or 1, interpolation="nearest")
        n_edges = np.count_nonzero(np.triu((block != 0) | (block.T != 0), k=1))
        ax.set_title(f"{key}: {n_edges} edges among the first {n} cells", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="edge weight")
    return fig
