"""Figures of a subclustering (the lab's step 9): new vs parent UMAP, and marker genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError, MissingKeyError, choices
from .._params import validated
from .._types import GeneList
from ._embedding import _scatter_categories, embedding
from ._style import basis_key, finish_figure, new_figure, one_panel, point_size, scatter_cells

#: the lab's marker panels of the T/NK subset (its 2 x 2 figure)
PLOT_GENES = ("CD3E", "CD4", "CD8A", "GNLY")


def _info(adata: AnnData) -> dict:
    info = adata.uns.get("subcluster")
    if not isinstance(info, dict) or not info.get("keys"):
        raise MissingKeyError("no .uns['subcluster'] in this AnnData; run tl.subcluster (stage 'subcluster') first")
    return info


@validated
def subcluster_overview(
    adata: AnnData,
    *,
    parent: AnnData,
    key: str | None = None,
    parent_key: str | None = None,
    sample_key: str | None = None,
    basis: str = "X_umap",
    parent_basis: str | None = None,
    panel_size: float = 3.4,
    show: bool | None = None,
) -> Figure | None:
    """The lab's 2 x 3 grid: top row the subset's new embedding, bottom row the parent's embedding
    (all parent cells in light grey, subset cells on top), coloured by sample, parent clusters and
    subclusters.

    Parameters
    ----------
    adata
        The subset returned by :func:`scclust.tl.subcluster`.
    parent
        The parent AnnData (for ``parent_basis``).
    key
        Subclustering key; default the first in ``.uns["subcluster"]["keys"]``.
    parent_key
        Parent clustering column (in the subset's ``.obs``); default the subclustering's ``groupby``.
    sample_key
        Sample column; default the subclustering's ``batch_key``, else ``"sample"`` when the subset
        has it, else none (two columns of panels instead of three).
    basis, parent_basis
        Embeddings of the subset and of the parent (default ``X_umap_harmony`` when the parent has
        it, else ``X_umap``); scanpy's short names work too (``"umap"`` is ``X_umap``).
    panel_size
        Height of a panel in inches.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (six panels, so no ``ax=``), or ``None`` with ``show=True``.
    """
    info = _info(adata)
    key = key or info["keys"][0]
    parent_key = parent_key or next(
        (k for k in (info.get("plot_parent_key"), info.get("groupby")) if k and k in adata.obs), key
    )
    # no sample column (one-sample data, none named): the sample panels are left out
    sample_key = sample_key or info.get("batch_key") or ("sample" if "sample" in adata.obs else None)
    if parent_basis is None:
        parent_basis = "X_umap_harmony" if "X_umap_harmony" in parent.obsm else "X_umap"
    cols = [c for c in (sample_key, parent_key, key) if c is not None]
    for c in cols:
        if c not in adata.obs:
            raise MissingKeyError(f"{c!r} not in the subset's .obs; available: {choices(adata.obs.columns)}")
    basis, parent_basis = basis_key(adata, basis), basis_key(parent, parent_basis)
    pos = parent.obs_names.get_indexer(adata.obs_names)
    if (pos < 0).any():
        raise InputError("some subset cells are not in the parent; pass the parent the subset was taken from")
    new_xy = np.asarray(adata.obsm[basis])[:, :2]
    par_all = np.asarray(parent.obsm[parent_basis])[:, :2]
    par_xy = par_all[pos]
    titles = [f"{info.get('name', 'subset')} UMAP", "parent UMAP"]
    fig = new_figure((panel_size * len(cols) * 1.45, panel_size * 2), show=show)
    axes = fig.subplots(2, len(cols), squeeze=False)
    s_sub, s_par = point_size(adata.n_obs), point_size(parent.n_obs)
    for j, c in enumerate(cols):
        vals = adata.obs[c]
        vals = vals if isinstance(vals.dtype, pd.CategoricalDtype) else vals.astype(str).astype("category")
        for i, (xy, s) in enumerate(((new_xy, s_sub), (par_xy, s_par))):
            ax = axes[i, j]
            if i == 1:
                scatter_cells(ax, par_all, np.arange(len(par_all)), c="#E5E5E5", s=s_par)
            _scatter_categories(ax, xy, vals, s)
            ax.set_xticks([])
            ax.set_yticks([])
            label = (basis if i == 0 else parent_basis).removeprefix("X_").upper()
            ax.set_xlabel(f"{label}1")
            ax.set_ylabel(f"{label}2")
            ax.set_title(f"{titles[i]}: {c}")
    return finish_figure(fig, show)


@validated
def subcluster_markers(
    adata: AnnData,
    *,
    genes: GeneList | None = None,
    basis: str = "X_umap",
    ncols: int = 2,
    panel_size: float = 3.4,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Marker genes from ``.raw`` on the subset's new embedding (the lab's 2 x 2 grid of CD3E, CD4,
    CD8A, GNLY).

    Parameters
    ----------
    adata
        The subset returned by :func:`scclust.tl.subcluster`.
    genes
        Genes to show; default the lab's :data:`PLOT_GENES` present in ``.raw``.
    basis
        Embedding; scanpy's short names work too (``"umap"`` is ``X_umap``).
    ncols
        Panels per row.
    panel_size
        Height of a panel in inches.
    ax
        Draw the one gene's panel into these axes (of a figure you made) instead of a new figure:
        ``genes`` must then name one gene (several, or the default panel, is a
        :class:`~scclust._errors.ConfigError`).
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    _info(adata)
    if adata.raw is None:
        raise InputError("the subset has no .raw; marker genes are read from .raw (run tl.subcluster)")
    if genes is None:
        genes = [g for g in _info(adata).get("plot_genes", PLOT_GENES) if g in adata.raw.var_names]
    genes = list(genes)
    if not genes:
        raise InputError(f"no genes to plot: give genes= (none of {list(PLOT_GENES)} is in .raw)")
    if adata.raw is None:
        raise InputError("the subset has no .raw; marker genes are read from .raw (run tl.subcluster)")
    absent = [g for g in genes if g not in adata.raw.var_names]
    if absent:
        raise MissingKeyError(f"gene(s) {absent} not in .raw; e.g. {choices(adata.raw.var_names, limit=10)}")
    one_panel(ax, genes, "genes")
    return embedding(
        adata, basis=basis, color=genes, ncols=ncols, use_raw=True, panel_size=panel_size, ax=ax, show=show
    )
