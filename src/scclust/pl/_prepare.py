"""Figures of the ``prepare`` stage: PCA variance (elbow) and highly variable genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import MissingKeyError
from .._params import validated
from ._style import finish_figure, new_axes


@validated
def pca_variance(
    adata: AnnData,
    *,
    n_pcs: int | None = None,
    mark: int | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Variance explained per principal component (the elbow plot), log scale, with the cumulative share.

    Parameters
    ----------
    adata
        With ``.uns["pca"]["variance_ratio"]`` (``sc.pp.pca`` / :func:`scclust.pp.prepare`).
    n_pcs
        Components shown (default all).
    mark
        Draw a vertical line at this number of components (e.g. the ``n_pcs`` of the graph).
    ax
        Draw into these axes instead of a new figure.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    if "pca" not in adata.uns or "variance_ratio" not in adata.uns["pca"]:
        raise MissingKeyError("no .uns['pca']['variance_ratio']; run PCA (the prepare stage) first")
    ratio = np.asarray(adata.uns["pca"]["variance_ratio"])[:n_pcs]
    fig, ax = new_axes(ax, (5.0, 3.2), show=show)
    pcs = np.arange(1, ratio.size + 1)
    ax.plot(pcs, ratio, "o-", ms=3, lw=1, color="#0072B2")
    ax.set_yscale("log")
    ax.set_xlabel("principal component")
    ax.set_ylabel("variance ratio (log)")
    twin = ax.twinx()
    twin.plot(pcs, np.cumsum(ratio), color="#D55E00", lw=1, ls="--")
    twin.set_ylabel("cumulative", color="#D55E00")
    twin.set_ylim(0, 1)
    if mark is not None:
        ax.axvline(mark, color="#555555", lw=0.8, ls=":")
    ax.set_title("PCA variance (elbow)", fontsize=10)
    return finish_figure(fig, show)


@validated
def highly_variable_genes(
    hvg: pd.DataFrame | AnnData, *, ax: Axes | None = None, show: bool | None = None
) -> Figure | None:
    """Normalised dispersion against mean expression, highly variable genes highlighted.

    Parameters
    ----------
    hvg
        A table with ``means``, ``dispersions_norm`` and ``highly_variable`` per gene
        (``.uns["prepare"]["hvg"]``), or an AnnData with those ``.var`` columns.
    ax
        Draw into these axes instead of a new figure.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    df = hvg.var if isinstance(hvg, AnnData) else hvg
    missing = [c for c in ("means", "dispersions_norm", "highly_variable") if c not in df]
    if missing:
        raise MissingKeyError(f"HVG table lacks {missing}; run highly_variable_genes (the prepare stage) first")
    fig, ax = new_axes(ax, (5.0, 3.6), show=show)
    is_hvg = df["highly_variable"].to_numpy(dtype=bool)
    x, y = df["means"].to_numpy(dtype=float), df["dispersions_norm"].to_numpy(dtype=float)
    ax.scatter(x[~is_hvg], y[~is_hvg], s=2, c="#BBBBBB", rasterized=True, label=f"other ({(~is_hvg).sum()})")
    ax.scatter(x[is_hvg], y[is_hvg], s=3, c="#D55E00", rasterized=True, label=f"highly variable ({is_hvg.sum()})")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("mean expression (log-normalised)")
    ax.set_ylabel("normalised dispersion")
    ax.legend(fontsize=7, frameon=False, markerscale=3)
    ax.set_title("Highly variable genes", fontsize=10)
    return finish_figure(fig, show)
