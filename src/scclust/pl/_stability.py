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
    clusters: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Agreement between runs against the resolution (or k), per-cluster stability, the call and why.

    Left axis: ``metric="ari"`` draws the mean pairwise ARI among seed runs (solid) and the mean ARI
    of the subsample runs with the labels (dashed), the ``min_ari`` threshold as a grey dotted line;
    with ``clusters`` every cluster's stability (best-match Jaccard) as a small dot at its key, the
    ones below ``min_cluster_stability`` (red dashed line) as red crosses labelled with the cluster.
    Stable keys are filled circles, keys stable despite a moving boundary filled diamonds with the
    pair of clusters under them (``0|1 moves``), unstable keys open circles with the failed criterion
    written under them (``ARI 0.83``, ``c3 0.57``); a star marks the default choice.
    ``metric="ic"`` draws scICE's inconsistency coefficient (1 = every run agrees) instead of the
    ARI. Right axis: the number of clusters of the reported
    labels (squares) and its range over the runs (bar).

    Parameters
    ----------
    result
        From :func:`scclust.tl.stability`.
    group
        The clustering series (e.g. ``"leiden"``); ``None``: the one with the most keys.
    metric
        ``"ari"`` or ``"ic"``.
    clusters
        Draw each cluster's stability (``metric="ari"`` only).
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
    fig, ax = new_axes(ax, (7.5, 4.4), show=show)
    x = d["param"].to_numpy(dtype=float)
    call = d["call"].to_numpy() if "call" in d else np.where(d["stable"], "stable", "unstable")
    stable = call == "stable"
    boundary = call == "stable (moving boundary)"
    unstable = ~(stable | boundary)
    min_cs = result.params.get("min_cluster_stability", 0.75)
    span = float(np.ptp(x)) if len(x) > 1 else 1.0
    lows = []
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
        if clusters:
            ax.axhline(min_cs, color=_UNSTABLE, lw=0.7, ls="--", alpha=0.6, zorder=1)
            cl = result.clusters
            first_ok = first_bad = True
            for xi, key in zip(x, d.index, strict=True):
                c = cl[cl["key"] == key]
                v = c["stability"].to_numpy(dtype=float)
                if not v.size:
                    continue
                jitter = (np.linspace(-1, 1, v.size) if v.size > 1 else np.zeros(1)) * span * 0.012
                ok = v >= min_cs
                ax.scatter(
                    xi + jitter[ok],
                    v[ok],
                    s=7,
                    color="#9E9E9E",
                    alpha=0.7,
                    zorder=2,
                    gid="cluster",
                    label="cluster stability (Jaccard)" if first_ok and ok.any() else None,
                )
                first_ok = first_ok and not ok.any()
                if (~ok).any():
                    ax.scatter(
                        xi + jitter[~ok],
                        v[~ok],
                        s=18,
                        marker="x",
                        color=_UNSTABLE,
                        linewidths=1,
                        zorder=3,
                        gid="cluster",
                        label="cluster below min_cluster_stability" if first_bad else None,
                    )
                    first_bad = False
                    worst = np.argsort(v)[: min(3, int((~ok).sum()))]
                    for i in worst:
                        ax.annotate(
                            str(c["cluster"].iloc[i]),
                            (xi + jitter[i], v[i]),
                            textcoords="offset points",
                            xytext=(3, -2),
                            fontsize=6,
                            color=_UNSTABLE,
                        )
                lows.append(float(np.nanmin(v)))
        ax.set_ylabel("agreement (ARI) / cluster stability (Jaccard)" if clusters else "agreement between runs (ARI)")
        low = np.nanmin([*y[np.isfinite(y)], *lows, 1.0])
        ax.set_ylim(min(0.5, low - 0.08), 1.045)
    else:
        y = d["ic"].to_numpy(dtype=float)
        ax.plot(x, y, "-", color="#333333", lw=1.2, label="inconsistency coefficient (IC)", zorder=2)
        ax.axhline(1.0, color="#999999", lw=0.8, ls=":", zorder=1)
        ax.set_ylabel("inconsistency coefficient (1 = consistent)")
    ax.scatter(x[stable], y[stable], s=46, color=_STABLE, zorder=4, label="stable", gid="key")
    if boundary.any():
        ax.scatter(
            x[boundary],
            y[boundary],
            s=52,
            marker="D",
            color=_STABLE,
            edgecolors="white",
            zorder=4,
            label="stable (moving boundary between two stable clusters)",
            gid="key",
        )
    ax.scatter(
        x[unstable],
        y[unstable],
        s=46,
        facecolors="white",
        edgecolors=_UNSTABLE,
        linewidths=1.5,
        zorder=4,
        label="unstable",
        gid="key",
    )
    if metric == "ari":
        min_ari = result.params["min_ari"]
        for xi, yi, (_key, r) in zip(x[unstable], y[unstable], d[unstable].iterrows(), strict=True):
            why = []
            if np.isfinite(r["score"]) and r["score"] < min_ari:
                why.append(f"ARI {r['score']:.2f}")
            if np.isfinite(r["cluster_stability_min"]) and r["cluster_stability_min"] < min_cs:
                why.append(f"c{r.get('least_stable_cluster', '?')} {r['cluster_stability_min']:.2f}")
            if why and np.isfinite(yi):
                _note_below(ax, xi, yi, "\n".join(why), _UNSTABLE)
        for xi, yi, (_key, r) in zip(x[boundary], y[boundary], d[boundary].iterrows(), strict=True):
            if np.isfinite(yi) and r.get("moving_boundary"):
                _note_below(ax, xi, yi, f"{r['moving_boundary'].split('; ')[0]} moves", _STABLE)
    if "default" in d and d["default"].astype(bool).any():
        dk = d.index[d["default"].astype(bool)][0]
        i = list(d.index).index(dk)
        ax.scatter(
            [x[i]],
            [1.025 if metric == "ari" else y[i]],
            marker="*",
            s=120,
            color="#E69F00",
            edgecolors="black",
            linewidths=0.5,
            zorder=5,
            label=f"default: {dk}",
            gid="default",
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
    ax.set_zorder(ax2.get_zorder() + 1)  # points and labels above the cluster counts
    ax.patch.set_visible(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=6, frameon=False)
    n_ok = int((stable | boundary).sum())
    ax.set_title(f"Stability of {group}: {n_ok} of {len(d)} stable", fontsize=10)
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

    Reads ``.obs[f"{key}_{key_added}"]`` written by :func:`scclust.tl.stability`; the labels of
    clusters below its ``min_cluster_stability`` are red. At a million cells only the points that can
    show are drawn (one per pixel bin), so the figure takes seconds.

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
    min_cs = adata.uns.get(key_added, {}).get("params", {}).get("min_cluster_stability", 0.75)
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
                color=_UNSTABLE if np.nanmean(v[m]) < min_cs else "black",
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

    Columns are cells (at most ``max_cells``, drawn at random from the cells of the first run: all
    cells, or above ``max_cells_per_run`` the subsample the seed runs share; sorted by their reported
    cluster); the top row is the reported labels, then one row per run. In each run, every cluster is
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
    # cells of the first run (all cells, or the subsample the seed runs share above max_cells_per_run)
    pool = np.flatnonzero(runs[:, 0] >= 0)
    pick = (
        pool if pool.size <= max_cells else np.sort(np.random.default_rng(seed).choice(pool, max_cells, replace=False))
    )
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
    within = "" if pool.size == n else f", drawn from the {pool.size:,} of the first run"
    ax.set_xlabel(f"cells ({pick.size:,} of {n:,}{within}), by {key} cluster")
    r = result.summary.loc[key]
    ax.set_title(
        f"{key}: each run's clusters mapped to the labels (ARI seeds {r['ari_seeds']:.3f}, subsamples "
        f"{r['ari_subsample']:.3f})",
        fontsize=9,
    )
    return finish_figure(fig, show)


def _note_below(ax, x: float, y: float, text: str, color: str) -> None:
    """A small note under a point (why a key failed, which boundary moves)."""
    ax.annotate(
        text, (x, y), textcoords="offset points", xytext=(0, -9), ha="center", va="top", fontsize=6, color=color
    )
