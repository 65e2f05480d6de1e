"""Cluster dendrogram and marker dot plot ordered by it."""

from __future__ import annotations

import logging

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._checks import check_groupby, gene_source
from .._errors import ConfigError, MissingKeyError, choices, warn
from .._params import validated
from .._types import GeneList
from ..tl._dendrogram import get_dendrogram, group_stats
from ._style import finish_figure, new_axes, new_figure

logger = logging.getLogger(__name__)

#: Sequential, colour-blind safe (lightness carries the value) for mean expression.
CMAP_DOTPLOT = "Reds"


@validated
def dendrogram(
    adata: AnnData, *, groupby: str, key: str | None = None, ax: Axes | None = None, show: bool | None = None
) -> Figure | None:
    """The dendrogram of the clusters of ``groupby`` stored by :func:`scclust.tl.dendrogram`.

    Leaves are labelled with the cluster and its number of cells; the height is ``1 - correlation``.
    Raises when the dendrogram has not been computed (nothing is computed here).

    Parameters
    ----------
    adata
        Annotated data matrix with ``.uns[f"dendrogram_{groupby}"]``.
    groupby
        The clustering.
    key
        ``.uns`` key if not the default.
    ax
        Draw into these axes (of a figure you made) instead of a new figure.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    import scipy.cluster.hierarchy as sch

    dend = get_dendrogram(adata, groupby, key)
    labels = check_groupby(adata, groupby)
    sizes = labels.astype(str).value_counts()
    ordered = [str(c) for c in dend["categories_ordered"]]
    # labels in the order of the linkage's leaf ids (the categories' order), not the drawing order
    by_idx = dict(zip(dend["categories_idx_ordered"], ordered, strict=True))
    names = [f"{by_idx[i]} (n={sizes.get(by_idx[i], 0)})" for i in range(len(ordered))]
    width = max(5.0, 0.42 * len(ordered) + 1.5)
    fig, ax = new_axes(ax, (width, 3.8), show=show)
    sch.dendrogram(
        np.asarray(dend["linkage"]),
        labels=names,
        ax=ax,
        color_threshold=0,
        above_threshold_color="#333333",
        leaf_rotation=90,
        leaf_font_size=9,
    )
    ax.set_ylabel(f"1 - {dend.get('cor_method', 'pearson')} correlation")
    ax.set_xlabel(f"{groupby} (cluster means in {dend.get('use_rep', '?')}, {dend.get('linkage_method', '?')} linkage)")
    ax.set_title(f"Dendrogram of {groupby}")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return finish_figure(fig, show)


@validated
def dotplot(
    adata: AnnData,
    *,
    groupby: str,
    genes: GeneList,
    use_raw: bool | None = None,
    dendrogram: bool = True,
    dendrogram_key: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Dot plot of ``genes`` per cluster: dot size = fraction of cells expressing, colour = mean.

    Rows are the clusters, in the leaf order of the dendrogram stored by
    :func:`scclust.tl.dendrogram` (drawn beside the rows) when ``dendrogram=True``, else in
    category order. Genes absent from the data are named in a :class:`~scclust._errors.ScclustWarning`
    and left out; the plot is drawn with the others. The AnnData is not modified and nothing is
    computed behind the user's back: a missing dendrogram is an error that names both ways out
    (``scclust.tl.dendrogram(adata, groupby=...)``, or ``dendrogram=False``).

    Parameters
    ----------
    adata
        Annotated data matrix.
    groupby
        The clustering.
    genes
        Genes (columns), in this order.
    use_raw
        Read expression from ``.raw`` (``None``: when present).
    dendrogram
        Order rows by the stored dendrogram (from :func:`scclust.tl.dendrogram`) and draw it;
        ``False`` draws the rows in category order without one.
    dendrogram_key
        ``.uns`` key of the dendrogram if not the default.
    ax
        Draw into the space of these axes (made by ``plt.subplots`` or ``fig.add_subplot``), as
        scanpy's ``ax=``: the dots, the dendrogram and the legends share it; the axes itself is
        removed and replaced by them.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``; its dot axes has ``label == "dots"`` and y tick labels
    ``"{cluster} (n={cells})"`` from top to bottom.
    """
    import scipy.cluster.hierarchy as sch

    genes = list(dict.fromkeys(genes))
    means, fracs, missing = group_stats(adata, groupby=groupby, genes=genes, use_raw=use_raw)
    if missing:
        where = gene_source(adata, use_raw)
        if len(missing) == len(genes):
            raise MissingKeyError(f"none of the genes {choices(genes)} is in {where}")
        warn(f"dotplot: gene(s) not in {where}, left out: {', '.join(missing)}")
    dend = (
        get_dendrogram(
            adata,
            groupby,
            dendrogram_key,
            instead="pass dendrogram=False to draw the rows in category order without it",
        )
        if dendrogram
        else None
    )
    index = [str(c) for c in means.index]
    order = [str(c) for c in dend["categories_ordered"]] if dend is not None else index
    pos = [index.index(c) for c in order]
    M, F = means.to_numpy()[pos], fracs.to_numpy()[pos]
    sizes = check_groupby(adata, groupby).astype(str).value_counts()
    n_rows, n_cols = M.shape

    h = max(3.2, 0.34 * n_rows + 1.6)
    w = 0.42 * n_cols + 2.4 + (1.4 if dend is not None else 0)
    ratios = [max(n_cols, 1) * 0.42] + ([1.2] if dend is not None else []) + [1.3]
    if ax is not None:  # scanpy's ax=: the panels share the space of the given axes
        spec = ax.get_subplotspec()
        if spec is None:
            raise ConfigError("dotplot(ax=...) needs axes on a grid (plt.subplots / fig.add_subplot), not fig.add_axes")
        fig = ax.figure
        gs = spec.subgridspec(1, len(ratios), width_ratios=ratios)
        ax.remove()
        axs = [fig.add_subplot(g) for g in gs]
    else:
        fig = new_figure((w, h), show=show)
        axs = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    ax = axs[0]
    ax.set_label("dots")
    y = np.arange(n_rows) * 10 + 5.0  # scipy's leaf positions, so the dendrogram lines up
    xx, yy = np.meshgrid(np.arange(n_cols), y)
    vmax = float(np.nanmax(M)) if M.size and np.nanmax(M) > 0 else 1.0
    smax = 180.0
    sc = ax.scatter(
        xx.ravel(),
        yy.ravel(),
        s=np.clip(F.ravel(), 0, 1) * smax,
        c=M.ravel(),
        cmap=CMAP_DOTPLOT,
        vmin=0,
        vmax=vmax,
        edgecolors="#444444",
        linewidths=0.4,
    )
    ax.set_xticks(np.arange(n_cols), list(means.columns), rotation=90, fontsize=9)
    ax.set_yticks(y, [f"{c} (n={sizes.get(c, 0)})" for c in order], fontsize=9)
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(n_rows * 10, 0)
    ax.set_ylabel(groupby)
    ax.grid(True, color="#EEEEEE", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(f"Markers by {groupby}" + (" (dendrogram order)" if dend is not None else ""), fontsize=10)
    if dend is not None:
        dax = axs[1]
        sch.dendrogram(
            np.asarray(dend["linkage"]),
            ax=dax,
            orientation="right",
            no_labels=True,
            color_threshold=0,
            above_threshold_color="#333333",
        )
        dax.set_ylim(n_rows * 10, 0)
        dax.set_xticks([])
        dax.set_yticks([])
        for s in dax.spines.values():
            s.set_visible(False)
    lax = axs[-1]
    lax.axis("off")
    fig.colorbar(
        sc, ax=lax, location="right", fraction=0.9, shrink=0.45, anchor=(0.0, 1.0), label="mean expression\nin group"
    )
    for f in (0.2, 0.4, 0.6, 0.8, 1.0):
        lax.scatter([], [], s=f * smax, c="#999999", edgecolors="#444444", linewidths=0.4, label=f"{int(f * 100)}%")
    lax.legend(
        title="fraction of cells\nin group",
        loc="lower left",
        frameon=False,
        fontsize=8,
        title_fontsize=8,
        labelspacing=1.1,
        borderpad=0.2,
    )
    return finish_figure(fig, show)
