"""Heatmaps of the agreement (ARI / NMI) between clusterings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import ConfigError, MissingKeyError, choices
from .._params import validated
from .._types import KeyList
from ._style import finish_figure, new_axes, new_figure, one_panel

if TYPE_CHECKING:
    from ..tl._stability import StabilityResult

_TITLES = {"ari": "Adjusted Rand index", "nmi": "Normalized mutual information"}


@validated
def compare(
    adata: AnnData,
    *,
    keys: Sequence[str] | None = None,
    reference: str | None = None,
    metrics: Sequence[str] = ("ari", "nmi"),
    annotate: bool | None = None,
    panel_size: float = 4.5,
    result: dict[str, pd.DataFrame] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """One annotated heatmap per metric of the agreement between clusterings.

    Computes :func:`scclust.tl.compare` (pure, from the labels already in ``.obs``; it never runs a
    clustering) and draws each matrix with a fixed 0-1 colour scale, the value written in each
    cell (when there are at most 25 clusterings, or ``annotate=True``). The AnnData is not
    modified.

    Parameters
    ----------
    adata
        Annotated data matrix with label columns in ``.obs``.
    keys, reference
        As in :func:`scclust.tl.compare`.
    metrics
        Which matrices: ``"ari"``, ``"nmi"`` or both.
    annotate
        Write the values in the cells; ``None`` does so up to 25 clusterings.
    panel_size
        Minimum size of a panel in inches (grows with the number of clusterings).
    result
        The output of :func:`scclust.tl.compare` for these keys; drawn as is (``keys`` and
        ``reference`` then only say which reference row to mark). ``None`` computes it.
    ax
        Draw the one heatmap into these axes (of a figure you made) instead of a new figure:
        ``metrics`` must then name one metric (two is a :class:`~scclust._errors.ConfigError`).
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    from ..tl._compare import compare as compute

    metrics = list(dict.fromkeys(metrics))
    bad = [m for m in metrics if m not in _TITLES]
    if bad or not metrics:
        raise ConfigError(f"metrics {bad or metrics} not valid; choose from {choices(_TITLES)}")
    one_panel(ax, metrics, "metrics")
    res = compute(adata, keys=keys, reference=reference) if result is None else result
    labels = list(res["ari"].index)
    m = len(labels)
    annotate = m <= 25 if annotate is None else annotate
    size = max(panel_size, 0.38 * m + 1.5)
    if ax is not None:
        fig, axes = ax.figure, [ax]
    else:
        fig = new_figure((size * len(metrics) + 0.8, size), show=show)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    im = None
    for pax, metric in zip(axes, metrics, strict=True):
        mat = res[metric].to_numpy()
        im = pax.imshow(mat, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        pax.set_xticks(np.arange(m), labels, rotation=90, fontsize=8)
        pax.set_yticks(np.arange(m), labels, fontsize=8)
        pax.set_title(_TITLES[metric])
        if reference is not None and reference in labels:
            pax.axhline(m - 1.5, color="white", lw=1.5)
            pax.axvline(m - 1.5, color="white", lw=1.5)
        if annotate:
            for i in range(m):
                for j in range(m):
                    v = mat[i, j]
                    text = "" if np.isnan(v) else f"{v:.2f}"
                    pax.text(
                        j,
                        i,
                        text,
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if (not np.isnan(v) and v > 0.6) else "white",
                    )
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="agreement")
    return finish_figure(fig, show)


@validated
def clustree(
    adata: AnnData,
    *,
    keys: KeyList,
    min_in_prop: float = 0.1,
    title: str | None = None,
    edges: pd.DataFrame | None = None,
    ax: Axes | None = None,
    stability: StabilityResult | str | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Clustering tree across a series of clusterings (clustree; Zappia & Oshlack 2018).

    One row per key (top to bottom in the given order), one node per cluster with area proportional
    to its cells (all cells it labels), and an edge from each cluster to the clusters of the next
    row that take its cells: width by the number of cells, opacity by ``in_prop`` (the share of the
    child's cells that come from that parent; edges below ``min_in_prop`` are hidden). The nodes of
    each row are ordered by igraph's Sugiyama layout to reduce edge crossings. Pure: reads the labels in ``.obs``.

    Parameters
    ----------
    adata
        Annotated data matrix with the label columns in ``.obs``.
    keys
        Two or more clusterings, e.g. ``["leiden_0.4", "leiden_0.6", "leiden_1.0"]``.
    min_in_prop
        Edges with a smaller ``in_prop`` are not drawn (clustree's default 0.1).
    title
        Figure title.
    edges
        The output of :func:`scclust.tl.cluster_tree` for these keys; ``None`` computes it.
    ax
        Draw into these axes (of a figure you made) instead of a new figure.
    stability
        Colour the nodes by per-cluster stability (0-1, red to blue) instead of by row: a
        :class:`~scclust.tl.StabilityResult` or the ``.uns`` key :func:`scclust.tl.stability` wrote
        (``"stability"``). Clusters of keys that were not assessed are grey. ``None``: by row.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``; the edge table is :func:`scclust.tl.cluster_tree`.
    """
    import igraph as ig
    import matplotlib as mpl

    from ..tl._compare import cluster_tree

    if not 0 <= min_in_prop <= 1:
        raise ConfigError(f"min_in_prop must be in [0, 1]; got {min_in_prop}")
    keys = list(keys)
    edges = cluster_tree(adata, keys=keys) if edges is None else edges
    nodes: list[tuple[str, str, int]] = []  # (key, cluster, cells labelled with it), row by row
    for key in keys:
        labels = adata.obs[key]
        order = (
            list(labels.cat.categories)
            if isinstance(labels.dtype, pd.CategoricalDtype)
            else sorted(labels.dropna().unique())
        )
        counts = labels.value_counts()
        nodes += [(key, str(c), int(counts[c])) for c in order if counts.get(c, 0) > 0]
    vid = {(k, c): i for i, (k, c, _) in enumerate(nodes)}
    row = {k: i for i, k in enumerate(keys)}
    shown = edges[edges["in_prop"] >= min_in_prop]
    pairs = [
        (vid[(a, ca)], vid[(b, cb)])
        for a, ca, b, cb in shown[["from_key", "from_cluster", "to_key", "to_cluster"]].itertuples(index=False)
    ]
    g = ig.Graph(n=len(nodes), edges=pairs, directed=True)
    xy = np.asarray(g.layout_sugiyama(layers=[row[k] for k, _, _ in nodes]).coords)[: len(nodes)]
    x, y = xy[:, 0], -np.array([row[k] for k, _, _ in nodes], dtype=float)

    width = max(x.max() - x.min() if len(x) else 0, 1)
    fig, ax = new_axes(ax, (min(max(6, 0.5 * width + 2.5), 30), 0.95 * len(keys) + 1.2), show=show)
    sizes = np.array([n for _, _, n in nodes], dtype=float)
    n_max = float(shown["n_cells"].max()) if len(shown) else 1.0
    for (u, v), (n, p) in zip(pairs, shown[["n_cells", "in_prop"]].itertuples(index=False), strict=True):
        ax.plot(
            [x[u], x[v]],
            [y[u], y[v]],
            color="#333333",
            lw=0.4 + 5 * n / n_max,
            alpha=0.15 + 0.85 * p,
            solid_capstyle="round",
            zorder=1,
        )
    colours = mpl.colormaps["viridis"](np.linspace(0.1, 0.9, len(keys)))
    node_colours = [colours[row[k]] for k, _, _ in nodes]
    if stability is not None:
        scores = _node_stability(adata, stability)
        cmap = mpl.colormaps["RdYlBu"]
        node_colours = [cmap(scores[(k, c)]) if (k, c) in scores else (0.8, 0.8, 0.8, 1.0) for k, c, _ in nodes]
    ax.scatter(x, y, s=40 + 900 * sizes / sizes.max(), c=node_colours, edgecolors="white", linewidths=0.6, zorder=2)
    if stability is not None:
        sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=cmap)
        fig.colorbar(sm, ax=ax, shrink=0.6, label="cluster stability")
    for (_, c, _), xi, yi, colour in zip(nodes, x, y, node_colours, strict=True):
        r, gr, b, _ = colour
        ink = "black" if 0.299 * r + 0.587 * gr + 0.114 * b > 0.55 else "white"
        ax.text(xi, yi, c, ha="center", va="center", fontsize=7, color=ink, zorder=3, fontweight="bold")
    ax.set_yticks(-np.arange(len(keys)), keys)
    ax.set_xticks([])
    ax.set_xlim(x.min() - 0.8, x.max() + 0.8)
    ax.set_ylim(-len(keys) + 0.5, 0.5)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_title(title or f"Cluster tree ({keys[0]} ... {keys[-1]})", fontsize=10)
    ax.text(
        1,
        -0.02,
        f"node area: cells; edge width: cells, opacity: in_prop (< {min_in_prop:g} hidden)",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
        color="#555555",
    )
    return finish_figure(fig, show)


def _node_stability(adata: AnnData, stability) -> dict[tuple[str, str], float]:
    """(key, cluster) -> stability, from a StabilityResult or ``.uns[stability]["clusters"]``."""
    if isinstance(stability, str):
        if stability not in adata.uns or "clusters" not in adata.uns[stability]:
            raise MissingKeyError(
                f".uns[{stability!r}] has no per-cluster stability; run scclust.tl.stability(adata, ...) "
                "first, or pass stability=None to colour the nodes by row"
            )
        return {(k, str(c)): float(v) for k, d in adata.uns[stability]["clusters"].items() for c, v in d.items()}
    df = stability.clusters
    return {(k, str(c)): float(v) for k, c, v in df[["key", "cluster", "stability"]].itertuples(index=False)}
