"""QC metrics per cluster as violins."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._checks import check_obs
from .._params import validated
from .._types import KeyList
from ._style import category_colors, finish_figure, new_figure, one_panel

#: cells per cluster from which a violin's outline is estimated
VIOLIN_MAX_CELLS = 20_000


@validated
def qc_violin(
    adata: AnnData,
    *,
    groupby: str,
    keys: KeyList | None = None,
    n_mads: float = 3.0,
    log_counts: bool = False,
    summary: pd.DataFrame | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """One row of violins per QC metric, one violin per cluster, flagged clusters marked.

    Keys are resolved as in :func:`scclust.tl.qc_summary` (aliases such as ``n_genes`` or
    ``percent_mito`` accepted; default the lab's three). The per-cell bound of the flag rule is
    drawn as a dashed line and clusters flagged by :func:`scclust.tl.qc_summary` get a red tick
    label. The AnnData is not modified.

    Parameters
    ----------
    adata
        Annotated data matrix.
    groupby
        The clustering.
    keys
        QC metrics; ``None``: the lab's ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``.
    n_mads
        Width of the flag rule's bound (as in :func:`scclust.tl.qc_summary`).
    log_counts
        Log scale for the gene and count totals.
    summary
        The output of :func:`scclust.tl.qc_summary` for these arguments, drawn as is; ``None``
        computes it.
    ax
        Draw the violins of one metric into these axes (of a figure you made) instead of a new
        figure: ``keys`` must then name one metric (several, or the default three, is a
        :class:`~scclust._errors.ConfigError`).
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (the figure of ``ax`` when given; one axes per metric,
    its y label the ``.obs`` column; flagged clusters' tick labels in bold vermilion), or ``None``
    with ``show=True``.
    """
    from ..tl._qc import LOG_SCALE_METRICS, QC_ALIASES, resolve_qc_keys, summarize_qc

    labels = check_obs(adata, groupby, what="groupby")
    labels = (
        labels.cat.remove_unused_categories()
        if isinstance(labels.dtype, pd.CategoricalDtype)
        else labels.astype("category")
    )
    resolved = resolve_qc_keys(adata, keys)
    one_panel(ax, list(resolved), "keys")
    if summary is None:
        summary = summarize_qc(adata, groupby=groupby, keys=list(resolved), n_mads=n_mads)
    cats = list(labels.cat.categories)
    codes = labels.cat.codes.to_numpy()
    n = len(cats)
    cols = category_colors(adata, groupby, n)
    if ax is not None:
        fig, axes = ax.figure, [ax]
    else:
        fig = new_figure((max(5.0, 0.38 * n + 1.8), 2.3 * len(resolved) + 0.6), show=show)
        axes = fig.subplots(len(resolved), 1, squeeze=False, sharex=True)[:, 0]
    for pax, col in zip(axes, resolved.values(), strict=True):
        v = adata.obs[col].to_numpy(dtype=float)
        # the violin's outline is a KDE: on more than VIOLIN_MAX_CELLS cells per cluster it is drawn from a
        # seeded subsample (the shape is the same; medians and flags above use every cell)
        rng = np.random.default_rng(0)
        data = [v[(codes == i) & np.isfinite(v)] for i in range(n)]
        data = [d if d.size <= VIOLIN_MAX_CELLS else rng.choice(d, VIOLIN_MAX_CELLS, replace=False) for d in data]
        keep = [i for i, d in enumerate(data) if d.size > 1]
        parts = pax.violinplot([data[i] for i in keep], positions=keep, widths=0.8, showextrema=False)
        for body, i in zip(parts["bodies"], keep, strict=True):
            body.set_facecolor(cols[i])
            body.set_edgecolor("#333333")
            body.set_linewidth(0.4)
            body.set_alpha(0.85)
        meds = summary[col].to_numpy()
        pax.scatter(np.arange(n), meds, s=10, c="white", edgecolors="black", linewidths=0.6, zorder=3, label="median")
        b = summary.attrs["bounds"][col]
        label = f"flag bound ({n_mads:g} MADs over all cells)"
        for edge in ("lower", "upper"):
            if b[edge] is not None:
                pax.axhline(b[edge], ls="--", lw=0.8, color="#D55E00", label=label)
                label = None
        is_count = col in LOG_SCALE_METRICS or any(col in QC_ALIASES[k] for k in LOG_SCALE_METRICS)
        if log_counts and is_count:
            pax.set_yscale("log")
        pax.set_ylabel(col, fontsize=9)
        for side in ("top", "right"):
            pax.spines[side].set_visible(False)
    axes[0].legend(loc="upper right", bbox_to_anchor=(1.0, 1.35), ncols=2, frameon=False, fontsize=7)
    ax = axes[-1]
    ax.set_xticks(np.arange(n), [str(c) for c in cats], rotation=90 if n > 12 else 0, fontsize=8)
    ax.set_xlabel(groupby)
    flagged = set(summary.index[summary["flag_qc"]])
    for tick, c in zip(ax.get_xticklabels(), cats, strict=True):
        if str(c) in flagged:
            tick.set_color("#D55E00")
            tick.set_fontweight("bold")
    return finish_figure(fig, show)
