"""Shared figure defaults: colour-blind-safe palettes, sizes, reading values from AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._errors import MissingKeyError, choices

# Up to 8 groups: Okabe & Ito (2008), colour-blind safe. More: Kelly's (1965) 20 colours of maximum
# contrast (white and black left out, grey last, so no two clusters share a hue family and none looks
# like the light grey of missing values), then a deterministic extension.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
KELLY = ["#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#008856", "#E68FAC", "#0067A5",
         "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600", "#654522", "#E25822",
         "#2B3D26", "#848482"]
PALETTE = KELLY
# Annotation bars of heatmaps: Okabe-Ito, then Paul Tol's "muted" and "light" schemes
TOL_MUTED = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"]
TOL_LIGHT = ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD"]
ANNOTATION_PALETTE = OKABE_ITO + TOL_MUTED + TOL_LIGHT
CMAP_CONTINUOUS = "viridis"
CMAP_DIVERGING = "RdBu_r"


def palette(n: int) -> list[str]:
    """``n`` distinct colours: Okabe-Ito up to 8, Kelly's 20 up to 20, then a deterministic extension."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    if n <= len(PALETTE):
        return PALETTE[:n]
    import matplotlib as mpl

    extra = mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n - len(PALETTE)))
    return PALETTE + [mpl.colors.to_hex(c) for c in extra]


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
    if per_point and np.issubdtype(c.dtype, np.number):
        finite = c[np.isfinite(c)]
        if finite.size:
            kw.setdefault("vmin", float(finite.min()))
            kw.setdefault("vmax", float(finite.max()))
    if order.size > ON_TOP_MIN_POINTS:
        order = on_top(xy, order)
    return ax.scatter(xy[order, 0], xy[order, 1], c=c[order] if per_point else c, s=s, linewidths=0,
                      rasterized=True, **kw)


def obs_or_gene(adata: AnnData, key: str, *, use_raw: bool | None = None) -> pd.Series:
    """Values of ``key`` from ``.obs`` or a gene (``.raw`` when present and ``use_raw`` is not False)."""
    if key in adata.obs.columns:
        return adata.obs[key]
    raw = adata.raw if (use_raw is None or use_raw) and adata.raw is not None else None
    src_names = raw.var_names if raw is not None else adata.var_names
    if key not in src_names:
        where = ".raw" if raw is not None else ".var_names"
        raise MissingKeyError(f"{key!r} is neither an .obs column nor a gene in {where}; .obs has: {choices(adata.obs.columns)}")
    X = raw.X if raw is not None else adata.X
    col = X[:, src_names.get_loc(key)]
    col = col.toarray().ravel() if sparse.issparse(col) else np.asarray(col).ravel()
    return pd.Series(col, index=adata.obs_names, name=key)


def grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(np.ceil(n / ncols)), ncols


def categories(values: pd.Series) -> Sequence[str]:
    return list(values.cat.categories) if isinstance(values.dtype, pd.CategoricalDtype) else sorted(values.astype(str).unique())


def new_axes(ax, size: tuple[float, float]):
    """``(figure, axes)``: the given axes and their figure, or a new constrained-layout figure."""
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def category_colors(adata: AnnData | None, key: str | None, n: int) -> list[str]:
    """The colours of ``key``'s ``n`` categories: ``.uns[f"{key}_colors"]`` (scanpy's convention; a
    run writes them so that every figure shows a cluster in one colour) when it fits, else :func:`palette`."""
    stored = adata.uns.get(f"{key}_colors") if adata is not None and key is not None else None
    if stored is not None and len(stored) == n:
        return [str(c) for c in stored]
    return palette(n)


def tree_colors(adata: AnnData, keys: Sequence[str]) -> dict[str, list[str]]:
    """Colours for a series of clusterings (resolutions, k, tree cuts) that follow the clustering tree.

    The first clustering takes :func:`palette` in category order. In each next one, every cluster
    is matched to the cluster of the previous one that gives it most cells; the largest child of a
    parent keeps the parent's colour, other children take the first colours not used yet in the
    series. A cluster that persists across resolutions therefore keeps its colour.

    Returns
    -------
    ``{key: [colour per category]}`` (write it to ``.uns[f"{key}_colors"]`` to use it everywhere).
    """
    keys = list(keys)
    cats = {k: categories(adata.obs[k]) for k in keys}
    pool = palette(sum(len(c) for c in cats.values()))
    out: dict[str, list[str]] = {}
    prev: str | None = None
    for key in keys:
        n = len(cats[key])
        if prev is None:
            out[key] = pool[:n]
        else:
            table = pd.crosstab(adata.obs[key].astype(str), adata.obs[prev].astype(str))
            table = table.reindex(index=[str(c) for c in cats[key]], columns=[str(c) for c in cats[prev]], fill_value=0)
            parent_col = dict(zip([str(c) for c in cats[prev]], out[prev], strict=True))
            counts = table.to_numpy()
            parent = table.columns[counts.argmax(axis=1)]
            size = counts.sum(axis=1)
            colours: list[str | None] = [None] * n
            taken: set[str] = set()
            for i in np.argsort(-size, kind="stable"):  # largest children claim their parent's colour first
                c = parent_col[parent[i]]
                if c not in taken and size[i] > 0:
                    colours[i] = c
                    taken.add(c)
            used = {c for cols in out.values() for c in cols} | taken
            spare = iter([c for c in pool if c not in used] + [c for c in pool if c in used and c not in taken])
            out[key] = [c if c is not None else next(spare) for c in colours]
        prev = key
    return out
