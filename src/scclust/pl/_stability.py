"""Figures of :func:`scclust.tl.stability`: they draw its result and never re-run a clustering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.figure import Figure

from .._errors import ConfigError, InputError, MissingKeyError, choices
from .._params import validated
from ._style import basis_key, finish_figure, new_axes, point_size, scatter_cells

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..tl._stability import StabilityResult

_STABLE, _UNSTABLE = "#0072B2", "#D55E00"


def _check_key(result: StabilityResult, key: str) -> None:
    if key not in result.summary.index:
        raise MissingKeyError(
            f"key {key!r} was not assessed by tl.stability; assessed: {choices(result.summary.index)}"
        )


@validated
def stability(
    result: StabilityResult,
    *,
    group: str | None = None,
    metric: Literal["ari", "ic"] = "ari",
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Agreement between runs against the resolution (or k), with the number of clusters.

    Left axis: ``metric="ari"`` draws the mean pairwise ARI among seed runs (solid) and the mean ARI
    of the subsample runs with the labels (dashed), the ``min_ari`` threshold as a grey line, stable
    keys filled and unstable ones open; ``metric="ic"`` draws scICE's inconsistency coefficient
    (1 = every run agrees). Right axis: the number of clusters of the reported labels (squares)
    and its range over the runs (bar).

    Parameters
    ----------
    result
        From :func:`scclust.tl.stability`.
    group
        The clustering series (e.g. ``"leiden"``); ``None``: the one with the most keys.
    metric
        ``"ari"`` or ``"ic"``.
    ax
        Draw into this axes (one panel); a new figure otherwise.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    if metric not in ("ari", "ic"):
        raise ConfigError(f"metric {metric!r} is not one of 'ari', 'ic'")
    s = result.summary
    groups = list(dict.fromkeys(s["group"]))
    if group is None:
        group = max(groups, key=lambda g: int((s["group"] == g).sum()))
    elif group not in groups:
        raise MissingKeyError(f"group {group!r} not in the stability result; available: {choices(groups)}")
    d = s[s["group"] == group].sort_values("param")
    fig, ax = new_axes(ax, (6.5, 3.8), show=show)
    x = d["param"].to_numpy(dtype=float)
    stable = d["stable"].to_numpy(dtype=bool)
    if metric == "ari":
        ax.plot(x, d["ari_seeds"], "-", color="#333333", lw=1.2, label="ARI between seed runs", zorder=2)
        if d["ari_subsample"].notna().any():
            ax.plot(
                x,
                d["ari_subsample"],
                "--",
                color="#777777",
                lw=1.2,
                label="ARI of subsample runs with the labels",
                zorder=2,
            )
        y = d["score"].to_numpy(dtype=float)
        ax.axhline(result.params["min_ari"], color="#999999", lw=0.8, ls=":", zorder=1)
        ax.set_ylabel("agreement between runs (ARI)")
        ax.set_ylim(min(0.0, np.nanmin(y) - 0.05) if np.isfinite(y).any() and np.nanmin(y) < 0.5 else 0.5, 1.02)
    else:
        y = d["ic"].to_numpy(dtype=float)
        ax.plot(x, y, "-", color="#333333", lw=1.2, label="inconsistency coefficient (IC)", zorder=2)
        ax.axhline(1.0, color="#999999", lw=0.8, ls=":", zorder=1)
        ax.set_ylabel("inconsistency coefficient (1 = consistent)")
    ax.scatter(x[stable], y[stable], s=46, color=_STABLE, zorder=3, label="stable")
    ax.scatter(
        x[~stable],
        y[~stable],
        s=46,
        facecolors="white",
        edgecolors=_UNSTABLE,
        linewidths=1.5,
        zorder=3,
        label="unstable",
    )
    method = d["method"].iloc[0] if len(d) else ""
    ax.set_xlabel({"leiden": "resolution", "kmeans": "k", "hclust": "k (tree cut)"}.get(method, "parameter"))
    ax2 = ax.twinx()
    nc = d["n_clusters"].to_numpy(dtype=float)
    lo, hi = d["n_clusters_min"].to_numpy(dtype=float), d["n_clusters_max"].to_numpy(dtype=float)
    ax2.errorbar(
        x,
        nc,
        yerr=[nc - np.minimum(lo, nc), np.maximum(hi, nc) - nc],
        fmt="s",
        ms=4,
        color="#009E73",
        ecolor="#009E73",
        elinewidth=1,
        capsize=2,
        alpha=0.8,
        zorder=1,
    )
    ax2.set_ylabel("clusters (labels; range over runs)", color="#009E73")
    ax2.tick_params(axis="y", colors="#009E73")
    for xi, ni in zip(x, nc, strict=True):
        ax2.annotate(
            f"{int(ni)}", (xi, ni), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color="#009E73"
        )
    ax.legend(loc="best", fontsize=7, frameon=False)
    ax.set_title(f"Stability of {group}: {int(stable.sum())} of {len(d)} stable", fontsize=10)
    return finish_figure(fig, show)


@validated
def stability_embedding(
    adata: AnnData,
    *,
    key: str,
    basis: str = "X_umap",
    key_added: str = "stability",
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Cells on an embedding coloured by the stability of their cluster (0-1), labels at the centres.

    Reads ``.obs[f"{key}_{key_added}"]`` written by :func:`scclust.tl.stability`.

    Parameters
    ----------
    adata
        Annotated data matrix.
    key
        The clustering, e.g. ``"leiden_1.0"``.
    basis
        Embedding in ``.obsm``; scanpy's short names work too (``"umap"`` is ``X_umap``: ``basis`` is
        looked up as given, then as ``f"X_{basis}"``).
    key_added
        As given to :func:`scclust.tl.stability`.
    ax
        Draw into this axes; a new figure otherwise.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    col = f"{key}_{key_added}"
    if col not in adata.obs.columns:
        raise MissingKeyError(f".obs[{col!r}] not found; run tl.stability(adata, keys=[{key!r}]) first")
    basis = basis_key(adata, basis)
    xy = np.asarray(adata.obsm[basis])[:, :2]
    v = adata.obs[col].to_numpy(dtype=float)
    fig, ax = new_axes(ax, (5.2, 4.4), show=show)
    order = np.argsort(-np.nan_to_num(v, nan=2.0))  # least stable on top
    sc = scatter_cells(ax, xy, order, c=v, cmap="RdYlBu", vmin=0, vmax=1, s=point_size(adata.n_obs))
    labels = adata.obs[key]
    for c in (
        labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else sorted(labels.dropna().unique())
    ):
        m = (labels == c).to_numpy()
        if m.any():
            cx, cy = np.median(xy[m], axis=0)
            ax.text(
                cx,
                cy,
                f"{c}\n{np.nanmean(v[m]):.2f}",
                ha="center",
                va="center",
                fontsize=7,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.6},
            )
    fig.colorbar(sc, ax=ax, shrink=0.7, label="cluster stability (best-match Jaccard)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{basis.removeprefix('X_')} 1")
    ax.set_ylabel(f"{basis.removeprefix('X_')} 2")
    ax.set_title(f"{key}: per-cluster stability", fontsize=10)
    return finish_figure(fig, show)


@validated
def stability_runs(
    result: StabilityResult,
    *,
    key: str,
    max_cells: int = 3000,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Cells x runs agreement for one clustering: does each run put each cell in its cluster?

    Columns are cells (at most ``max_cells``, drawn at random, sorted by their reported cluster);
    the top row is the reported labels, then one row per run. In each run, every cluster is
    mapped to the reported cluster it shares most cells with and drawn in that cluster's colour:
    a run that agrees shows the top row's blocks unbroken; split, merged or moved cells show as
    other colours. White: the cell was not in that subsample.

    Parameters
    ----------
    result
        From :func:`scclust.tl.stability`.
    key
        The clustering.
    max_cells
        Cells drawn (a random subset above this).
    seed
        Seed of that subset.
    ax
        Draw into this axes; a new figure otherwise.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given), or ``None`` with
    ``show=True``.
    """
    from matplotlib.colors import ListedColormap

    from ..tl._stability import contingency_table
    from ._style import palette

    _check_key(result, key)
    if max_cells < 10:
        raise ConfigError(f"max_cells must be >= 10; got {max_cells}")
    codes, cats = result.labels[key]
    runs = result.runs[key]
    info = result.run_info[key]
    if runs.shape[1] == 0:
        raise InputError(f"{key!r} has no runs to show")
    n = codes.size
    pick = np.arange(n) if n <= max_cells else np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
    pick = pick[codes[pick] >= 0]
    pick = pick[np.argsort(codes[pick], kind="stable")]
    k = len(cats)
    mat = np.full((runs.shape[1] + 1, pick.size), -1.0)
    mat[0] = codes[pick]
    for j in range(runs.shape[1]):
        col = runs[:, j]
        ok = (col >= 0) & (codes >= 0)
        t = contingency_table(col[ok], codes[ok])
        to_ref = np.argmax(t, axis=1)  # each run cluster -> the reported cluster it shares most cells with
        sel = col[pick]
        mat[j + 1] = np.where(sel >= 0, to_ref[np.maximum(sel, 0)], -1)
    fig, ax = new_axes(ax, (8, 0.16 * mat.shape[0] + 1.8), show=show)
    cmap = ListedColormap(["white", *palette(k)])
    ax.imshow(mat + 1, aspect="auto", interpolation="nearest", cmap=cmap, vmin=-0.5, vmax=k + 0.5)
    names = ["labels", *info.index]
    ax.set_yticks(np.arange(len(names)), names, fontsize=6)
    ax.axhline(0.5, color="black", lw=1)
    bounds = np.flatnonzero(np.diff(codes[pick])) + 0.5
    for b in bounds:
        ax.axvline(b, color="black", lw=0.3, alpha=0.5)
    starts = np.concatenate([[0], bounds + 0.5])
    ends = np.concatenate([bounds + 0.5, [pick.size]])
    ax.set_xticks((starts + ends) / 2 - 0.5, [cats[c] for c in codes[pick][starts.astype(int)]], fontsize=7)
    ax.set_xlabel(f"cells ({pick.size} of {n}), by {key} cluster")
    r = result.summary.loc[key]
    ax.set_title(
        f"{key}: each run's clusters mapped to the labels (ARI seeds {r['ari_seeds']:.3f}, subsamples "
        f"{r['ari_subsample']:.3f})",
        fontsize=9,
    )
    return finish_figure(fig, show)
