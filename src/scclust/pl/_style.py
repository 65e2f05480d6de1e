"""Shared figure defaults: colour-blind-safe palettes, sizes, reading values from AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

# the palettes and colour rules live in the bottom floor (the tools write the colours too); re-exported here
from .._colors import (  # noqa: F401
    ANNOTATION_PALETTE,
    KELLY,
    OKABE_ITO,
    PALETTE,
    TOL_LIGHT,
    TOL_MUTED,
    categories,
    category_colors,
    palette,
    tree_colors,
)
from .._errors import MissingKeyError, choices

CMAP_CONTINUOUS = "viridis"
CMAP_DIVERGING = "RdBu_r"


def point_size(n_obs: int) -> float:
    """Smaller points for more cells (scanpy's 120,000 / n, scaled to our panel size and capped)."""
    return float(np.clip(40_000 / max(n_obs, 1), 0.3, 20))


#: Above this many points a scatter draws only the points that can show (:func:`on_top`).
ON_TOP_MIN_POINTS = 100_000
#: Bins per axis of :func:`on_top`'s grid: 2 per pixel of a 4-inch panel at 150 dpi, about one
#: point diameter at 600 dpi.
ON_TOP_BINS = 1200


def on_top(xy: np.ndarray, order: np.ndarray, *, bins: int = ON_TOP_BINS) -> np.ndarray:
    """The entries of ``order`` (a drawing order) whose point is drawn last in its bin of a
    ``bins x bins`` grid over ``xy``, in drawing order: the points a viewer can see. Every other
    point lies under a later one closer than half a pixel, so the image is the same for a fraction
    of the points (at 1,000,000 UMAP points about a fifth; seconds instead of tens of seconds).
    With values drawn in ascending order (expression, stability) the point kept in a bin is its
    highest, as in the full drawing."""
    pts = xy[order]
    lo = pts.min(axis=0)
    span = np.where(np.ptp(pts, axis=0) > 0, np.ptp(pts, axis=0), 1.0)
    ij = np.minimum(((pts - lo) / span * bins).astype(np.int64), bins - 1)
    cell = ij[:, 0] * bins + ij[:, 1]
    _, first_from_end = np.unique(cell[::-1], return_index=True)
    return order[np.sort(cell.size - 1 - first_from_end)]


def scatter_cells(ax, xy: np.ndarray, order: np.ndarray, *, c, s: float, **kw):
    """``ax.scatter`` of ``xy[order]`` (rasterised, no edges) with colours ``c`` (one per row of
    ``xy``, or one colour); above :data:`ON_TOP_MIN_POINTS` points only those :func:`on_top` (the
    colour scale of numeric ``c`` is still set from every point)."""
    per_point = isinstance(c, np.ndarray) and c.shape[:1] == xy.shape[:1]
    if per_point and c.ndim == 1 and np.issubdtype(c.dtype, np.number):  # values, not RGBA rows
        finite = c[np.isfinite(c)]
        if finite.size:
            kw.setdefault("vmin", float(finite.min()))
            kw.setdefault("vmax", float(finite.max()))
    if order.size > ON_TOP_MIN_POINTS:
        order = on_top(xy, order)
    return ax.scatter(
        xy[order, 0], xy[order, 1], c=c[order] if per_point else c, s=s, linewidths=0, rasterized=True, **kw
    )


def obs_or_gene(adata: AnnData, key: str, *, use_raw: bool | None = None) -> pd.Series:
    """Values of ``key`` from ``.obs`` or a gene (``.raw`` when present and ``use_raw`` is not False)."""
    if key in adata.obs.columns:
        return adata.obs[key]
    raw = adata.raw if (use_raw is None or use_raw) and adata.raw is not None else None
    src_names = raw.var_names if raw is not None else adata.var_names
    if key not in src_names:
        where = ".raw" if raw is not None else ".var_names"
        raise MissingKeyError(
            f"{key!r} is neither an .obs column nor a gene in {where}; .obs has: {choices(adata.obs.columns)}"
        )
    X = raw.X if raw is not None else adata.X
    col = X[:, src_names.get_loc(key)]
    col = col.toarray().ravel() if sparse.issparse(col) else np.asarray(col).ravel()
    return pd.Series(col, index=adata.obs_names, name=key)


def grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(np.ceil(n / ncols)), ncols


def basis_key(adata: AnnData, basis: str) -> str:
    """The ``.obsm`` key of ``basis``: ``basis`` itself, else scanpy's ``f"X_{basis}"`` (``"umap"`` ->
    ``X_umap``, ``"pca"`` -> ``X_pca``); an error listing the available keys otherwise."""
    if basis in adata.obsm:
        return basis
    if f"X_{basis}" in adata.obsm:
        return f"X_{basis}"
    raise MissingKeyError(
        f"basis {basis!r} not in .obsm (nor {'X_' + basis!r}); available: {choices(adata.obsm.keys())}"
    )


def new_figure(size: tuple[float, float], *, show: bool | None = None, **kw):
    """A new figure (constrained layout unless ``layout`` is given): made by pyplot when it is to
    be shown (``show=True``), else a plain :class:`~matplotlib.figure.Figure` that pyplot does not
    track (nothing to close, nothing shown twice in a notebook)."""
    kw.setdefault("layout", "constrained")
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size, **kw)
    from matplotlib.figure import Figure

    return Figure(figsize=size, **kw)


def new_axes(ax, size: tuple[float, float], *, show: bool | None = None):
    """``(figure, axes)``: the given axes and their figure, or a new constrained-layout figure
    (:func:`new_figure`)."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(size, show=show)
    return fig, fig.subplots()


def one_panel(ax, values: Sequence, param: str) -> None:
    """``ax=`` draws one panel: a one-line :class:`~scclust._errors.ConfigError` when ``values`` (of
    the argument ``param``, one panel each) would make several."""
    values = list(values)
    if ax is not None and len(values) != 1:
        from .._errors import ConfigError

        raise ConfigError(
            f"ax= draws one panel, but {param}= gives {len(values)} ({len(values)} panels); pass a single "
            f"value per call (e.g. {param}={values[0]!r}) or leave ax=None for a figure with all of them"
            if values
            else f"ax= draws one panel; give one value in {param}="
        )


def finish_figure(fig, show: bool | None):
    """What a plot function returns: ``fig``, or, with ``show=True``, ``None`` after
    :func:`matplotlib.pyplot.show` (scanpy's ``show=True``)."""
    if not show:
        return fig
    import matplotlib.pyplot as plt

    plt.show()
    return None
