"""Stacked bars of cluster composition (either direction)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._params import validated
from ._style import category_colors, finish_figure, new_axes


@validated
def proportions(
    adata: AnnData,
    *,
    groupby: str,
    by: str,
    normalize: Literal["index", "columns"] = "index",
    horizontal: bool | None = None,
    table: pd.DataFrame | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Stacked bars: one bar per ``groupby`` value, split by the shares of ``by`` values.

    Computes :func:`scclust.tl.proportions` (pure) and draws it. ``groupby="leiden_0.6",
    by="sample"`` shows the samples making up each cluster; ``groupby="sample",
    by="leiden_0.6"`` shows the clusters making up each sample (the other direction). Each bar is
    annotated with its number of cells; the legend sits outside the axes. The AnnData is not
    modified.

    Parameters
    ----------
    adata
        Annotated data matrix.
    groupby
        One bar per value of this ``.obs`` column.
    by
        Stack segments: values of this ``.obs`` column (colour-blind-safe palette).
    normalize
        ``"index"``: each bar sums to 1 (shares within the bar); ``"columns"``: each segment is the
        share of its ``by`` value's cells that fall in the bar.
    horizontal
        Horizontal bars; ``None``: when there are more than 30 bars.
    table
        The output of :func:`scclust.tl.proportions` for these arguments, drawn as is; ``None``
        computes it.
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
    from ..tl._composition import proportions as compute

    long = compute(adata, groupby=groupby, by=by, normalize=normalize) if table is None else table
    frac = long.pivot(index=groupby, columns=by, values="fraction")
    counts = long.pivot(index=groupby, columns=by, values="count")
    frac = frac.loc[counts.sum(axis=1) > 0]
    counts = counts.loc[frac.index]
    n_bars, n_seg = frac.shape
    horizontal = n_bars > 30 if horizontal is None else horizontal
    cols = category_colors(adata, by, n_seg)
    long_side = max(4.0, 0.32 * n_bars + 1.5)
    legend_w = 1.6 if n_seg <= 20 else 3.0
    size = (5.0 + legend_w, long_side) if horizontal else (long_side + legend_w, 4.2)
    fig, ax = new_axes(ax, size, show=show)
    pos = np.arange(n_bars)
    start = np.zeros(n_bars)
    F = frac.to_numpy()
    for j in range(n_seg):
        kw = {"color": cols[j], "label": str(frac.columns[j]), "edgecolor": "white", "linewidth": 0.3}
        if horizontal:
            ax.barh(pos, F[:, j], left=start, height=0.85, **kw)
        else:
            ax.bar(pos, F[:, j], bottom=start, width=0.85, **kw)
        start += F[:, j]
    names = [str(i) for i in frac.index]
    totals = counts.sum(axis=1).to_numpy()
    what = f"fraction of {groupby}" if normalize == "index" else f"fraction of each {by}"
    if horizontal:
        ax.set_yticks(pos, names, fontsize=8)
        ax.set_ylim(n_bars - 0.5, -0.5)
        ax.set_xlabel(what)
        ax.set_ylabel(groupby)
    else:
        ax.set_xticks(pos, names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize=9)
        ax.set_xlim(-0.5, n_bars - 0.5)
        ax.set_ylabel(what)
        ax.set_xlabel(groupby)
        if normalize == "index":
            ax.set_ylim(0, 1.08)
            for x, n in zip(pos, totals, strict=True):
                ax.text(x, 1.01, f"{n}", ha="center", va="bottom", fontsize=6, rotation=90 if n_bars > 12 else 0)
    ax.set_title(
        f"{by} composition of {groupby}" if normalize == "index" else f"{groupby} share of each {by}", fontsize=10
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(
        title=by,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=8,
        title_fontsize=8,
        ncols=1 if n_seg <= 20 else 2,
    )
    return finish_figure(fig, show)
