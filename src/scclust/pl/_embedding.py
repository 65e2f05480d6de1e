"""Embedding panels coloured by clusterings, ``.obs`` columns or genes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure

from .._errors import InputError
from .._params import validated
from .._types import as_list
from ._style import (
    CMAP_CONTINUOUS,
    basis_key,
    categories,
    category_colors,
    finish_figure,
    grid,
    new_figure,
    obs_or_gene,
    one_panel,
    palette,
    point_size,
    scatter_cells,
)

#: Above this many groups the labels are written on the data as well as in the legend.
LABEL_ON_DATA_MIN = 10


@validated
def embedding(
    adata: AnnData,
    *,
    basis: str = "X_umap",
    color: str | Sequence[str] = (),
    ncols: int = 4,
    use_raw: bool | None = None,
    panel_size: float = 3.6,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """A grid of scatter plots of ``.obsm[basis]``, one panel per key in ``color``.

    Categorical keys get a colour-blind-safe palette and a legend beside the panel (labels on the
    data as well when there are :data:`LABEL_ON_DATA_MIN` groups or more); numeric keys and genes
    (from ``.raw`` when present) get a continuous colour map with the highest values drawn on top.
    The AnnData is not modified.

    Parameters
    ----------
    adata
        Annotated data matrix.
    basis
        Embedding in ``.obsm`` (first two dimensions), e.g. ``X_umap_harmony``; scanpy's short names
        work too: ``"umap"`` is ``.obsm["X_umap"]`` (``basis`` is looked up as given, then as
        ``f"X_{basis}"``).
    color
        ``.obs`` columns (clusterings, samples, QC metrics) or genes, one panel each; empty: one
        grey panel.
    ncols
        Panels per row.
    use_raw
        Genes from ``.raw`` (``None``: when present).
    panel_size
        Height of a panel in inches.
    title
        Figure title (with ``ax``: the panel's title).
    ax
        Draw the one panel into these axes (of a figure you made, e.g. ``plt.subplots()``) instead
        of a new figure: ``color`` must then name one key (a list of several is a
        :class:`~scclust._errors.ConfigError`: pass one color per call).
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    basis = basis_key(adata, basis)
    xy = np.asarray(adata.obsm[basis])[:, :2]
    if not np.isfinite(xy).all():
        raise InputError(f"basis {basis!r} has NaN or inf coordinates")
    color = as_list(color) or [None]
    one_panel(ax, color, "color")
    values = [None if c is None else obs_or_gene(adata, c, use_raw=use_raw) for c in color]
    if ax is not None:
        fig, axes = ax.figure, np.array([[ax]])
    else:
        nrows, ncols = grid(len(color), ncols)
        fig = new_figure((panel_size * ncols * 1.45, panel_size * nrows), show=show)
        axes = fig.subplots(nrows, ncols, squeeze=False)
    s = point_size(adata.n_obs)
    label = basis.removeprefix("X_").split("_")[0].upper()  # X_umap_harmony -> UMAP1 / UMAP2
    for pax, key, vals in zip(axes.flat, color, values, strict=False):
        pax.set_xticks([])
        pax.set_yticks([])
        pax.set_xlabel(f"{label}1")
        pax.set_ylabel(f"{label}2")
        pax.set_title(key or basis)
        if vals is None:
            scatter_cells(pax, xy, np.arange(len(xy)), c="#555555", s=s)
        elif not pd.api.types.is_numeric_dtype(vals.dtype) or pd.api.types.is_bool_dtype(vals.dtype):
            _scatter_categories(
                pax,
                xy,
                vals.astype("category") if not isinstance(vals.dtype, pd.CategoricalDtype) else vals,
                s,
                colors=category_colors(adata, key, len(categories(vals))),
            )
        else:
            v = vals.to_numpy(dtype=float)
            order = np.argsort(np.nan_to_num(v, nan=-np.inf), kind="stable")
            sc = scatter_cells(pax, xy, order, c=v, s=s, cmap=CMAP_CONTINUOUS)
            from_raw = key not in adata.obs and adata.raw is not None and use_raw is not False
            fig.colorbar(
                sc,
                ax=pax,
                shrink=0.7,
                label=None
                if key in adata.obs
                else "log-normalised expression (.raw)"
                if from_raw
                else "expression (.X)",
            )
    for pax in axes.flat[len(color) :]:
        pax.set_visible(False)
    if title and ax is not None:
        ax.set_title(title)
    elif title:
        fig.suptitle(title)
    return finish_figure(fig, show)


def _scatter_categories(ax, xy: np.ndarray, vals: pd.Series, s: float, *, colors: list[str] | None = None) -> None:
    cats = categories(vals)
    cols = colors if colors is not None else palette(len(cats))
    codes = vals.cat.codes.to_numpy()
    # draw in a fixed pseudo-random order so no group hides another systematically
    order = np.random.default_rng(0).permutation(len(codes))
    lut = to_rgba_array([*cols, "#BBBBBB"])  # RGBA rows: matplotlib parses no colour string per point
    scatter_cells(ax, xy, order, c=lut[codes], s=s)
    handles = [ax.scatter([], [], c=c, s=30, label=str(cat)) for cat, c in zip(cats, cols, strict=True)]
    if (codes < 0).any():
        handles.append(ax.scatter([], [], c="#BBBBBB", s=30, label="NA"))
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        fontsize=7,
        markerscale=1,
        ncols=1 if len(cats) <= 14 else 2,
        handletextpad=0.2,
        borderaxespad=0.2,
    )
    if len(cats) >= LABEL_ON_DATA_MIN:
        for i, cat in enumerate(cats):
            pts = xy[codes == i]
            if len(pts):
                x, y = np.median(pts, axis=0)
                ax.text(
                    x,
                    y,
                    str(cat),
                    fontsize=7,
                    fontweight="bold",
                    ha="center",
                    va="center",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.6},
                )
