"""Heatmaps of the agreement (ARI / NMI) between clusterings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData
from matplotlib.figure import Figure

from .._errors import ConfigError, choices

_TITLES = {"ari": "Adjusted Rand index", "nmi": "Normalized mutual information"}


def compare(
    adata: AnnData,
    *,
    keys: Sequence[str] | None = None,
    reference: str | None = None,
    metrics: Sequence[str] = ("ari", "nmi"),
    annotate: bool | None = None,
    panel_size: float = 4.5,
) -> Figure:
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

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`.
    """
    from ..tl._compare import compare as compute

    metrics = list(dict.fromkeys(metrics))
    bad = [m for m in metrics if m not in _TITLES]
    if bad or not metrics:
        raise ConfigError(f"metrics {bad or metrics} not valid; choose from {choices(_TITLES)}")
    res = compute(adata, keys=keys, reference=reference)
    labels = list(res["ari"].index)
    m = len(labels)
    annotate = m <= 25 if annotate is None else annotate
    size = max(panel_size, 0.38 * m + 1.5)
    fig = Figure(figsize=(size * len(metrics) + 0.8, size), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    im = None
    for ax, metric in zip(axes, metrics, strict=True):
        mat = res[metric].to_numpy()
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        ax.set_xticks(np.arange(m), labels, rotation=90, fontsize=8)
        ax.set_yticks(np.arange(m), labels, fontsize=8)
        ax.set_title(_TITLES[metric])
        if reference is not None and reference in labels:
            ax.axhline(m - 1.5, color="white", lw=1.5)
            ax.axvline(m - 1.5, color="white", lw=1.5)
        if annotate:
            for i in range(m):
                for j in range(m):
                    v = mat[i, j]
                    text = "" if np.isnan(v) else f"{v:.2f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="black" if (not np.isnan(v) and v > 0.6) else "white")
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="agreement")
    return fig
