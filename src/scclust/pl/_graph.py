"""The first cells x cells block of neighbour graphs (the Seurat lab's kNN / SNN heat maps)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import ConfigError
from .._params import validated
from .._types import KeyList
from ._style import finish_figure, new_figure, one_panel

#: the block is drawn dense: 5,000 cells = 200 MB per graph
MAX_CELLS = 5000


@validated
def graph_block(
    adata: AnnData,
    *,
    neighbors_keys: KeyList = ("neighbors",),
    n_cells: int = 200,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
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
    ax
        Draw the one graph's block into these axes (of a figure you made) instead of a new
        figure: ``neighbors_keys`` must then name one graph (several is a
        :class:`~scclust._errors.ConfigError`).
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    from ..tl._leiden import get_graph

    if not 2 <= n_cells <= MAX_CELLS:
        raise ConfigError(f"n_cells must be in [2, {MAX_CELLS}]; got {n_cells}")
    keys = [neighbors_keys] if isinstance(neighbors_keys, str) else list(neighbors_keys)
    if not keys:
        raise ConfigError("neighbors_keys must name at least one graph")
    one_panel(ax, keys, "neighbors_keys")
    n = min(n_cells, adata.n_obs)
    if ax is not None:
        fig, axes = ax.figure, [ax]
    else:
        fig = new_figure((4.2 * len(keys) + 0.6, 4.4), show=show)
        axes = fig.subplots(1, len(keys), squeeze=False)[0]
    im = None
    vmax = 0.0
    blocks = []
    for key in keys:
        block = get_graph(adata, key)[:n, :n].toarray()
        blocks.append(block)
        vmax = max(vmax, float(block.max()))
    for pax, key, block in zip(axes, keys, blocks, strict=True):
        im = pax.imshow(block, cmap="Greys", vmin=0, vmax=vmax or 1, interpolation="nearest")
        n_edges = np.count_nonzero(np.triu((block != 0) | (block.T != 0), k=1))
        pax.set_title(f"{key}: {n_edges} edges among the first {n} cells", fontsize=9)
        pax.set_xticks([])
        pax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="edge weight")
    return finish_figure(fig, show)
