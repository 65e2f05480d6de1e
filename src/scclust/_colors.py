"""Cluster colours: the palettes and the rules that give every clustering its colours.

A bottom-floor module (it imports nothing of scclust), so that the tools that make a clustering
(:func:`scclust.tl.leiden`, :func:`~scclust.tl.kmeans`, :func:`~scclust.tl.hclust`, ...) write
``.uns[f"{key}_colors"]`` (scanpy's convention) with the colours the figures of :mod:`scclust.pl`
draw, without importing the plotting layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

__all__ = [
    "ANNOTATION_PALETTE",
    "KELLY",
    "OKABE_ITO",
    "PALETTE",
    "TOL_LIGHT",
    "TOL_MUTED",
    "categories",
    "category_colors",
    "palette",
    "tree_colors",
    "write_colors",
]

# Up to 8 groups: Okabe & Ito (2008), colour-blind safe. More: Kelly's (1965) 20 colours of maximum
# contrast (white and black left out, grey last, so no two clusters share a hue family and none looks
# like the light grey of missing values), then a deterministic extension.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
KELLY = [
    "#F3C300",
    "#875692",
    "#F38400",
    "#A1CAF1",
    "#BE0032",
    "#C2B280",
    "#008856",
    "#E68FAC",
    "#0067A5",
    "#F99379",
    "#604E97",
    "#F6A600",
    "#B3446C",
    "#DCD300",
    "#882D17",
    "#8DB600",
    "#654522",
    "#E25822",
    "#2B3D26",
    "#848482",
]
PALETTE = KELLY
# Annotation bars of heatmaps: Okabe-Ito, then Paul Tol's "muted" and "light" schemes
TOL_MUTED = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"]
TOL_LIGHT = ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD"]
ANNOTATION_PALETTE = OKABE_ITO + TOL_MUTED + TOL_LIGHT


def palette(n: int) -> list[str]:
    """``n`` distinct colours: Okabe-Ito up to 8, Kelly's 20 up to 20, then a deterministic extension."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    if n <= len(PALETTE):
        return PALETTE[:n]
    import matplotlib as mpl

    extra = mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n - len(PALETTE)))
    return PALETTE + [mpl.colors.to_hex(c) for c in extra]


def categories(values: pd.Series) -> Sequence[str]:
    """The categories of ``values`` in their order (sorted strings when not categorical)."""
    return (
        list(values.cat.categories)
        if isinstance(values.dtype, pd.CategoricalDtype)
        else sorted(values.astype(str).unique())
    )


def category_colors(adata: AnnData | None, key: str | None, n: int) -> list[str]:
    """The colours of ``key``'s ``n`` categories: ``.uns[f"{key}_colors"]`` (scanpy's convention; the
    clustering tools and a run write them so that every figure shows a cluster in one colour) when it
    fits, else :func:`palette`."""
    stored = adata.uns.get(f"{key}_colors") if adata is not None and key is not None else None
    if stored is not None and len(stored) == n:
        return [str(c) for c in stored]
    return palette(n)


def tree_colors(adata: AnnData, keys: Sequence[str]) -> dict[str, list[str]]:
    """Colours for a series of clusterings (resolutions, k, tree cuts) that follow the clustering tree.

    The first clustering takes :func:`palette` in category order. In each next one, every cluster
    is matched to the cluster of the previous one that gives it most cells; the largest child of a
    parent keeps the parent's colour, other children take the first colours not used yet in the
    series. A cluster that persists across resolutions therefore keeps its colour. A series of one
    clustering gets :func:`palette`.

    Returns
    -------
    ``{key: [colour per category]}`` (write it to ``.uns[f"{key}_colors"]`` to use it everywhere:
    :func:`write_colors`).
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
            out[key] = _follow(
                adata,
                key,
                prev,
                cats[key],
                cats[prev],
                out[prev],
                pool,
                used={c for cols in out.values() for c in cols},
            )
        prev = key
    return out


def matched_colors(adata: AnnData, key: str, reference: str) -> list[str]:
    """Colours for ``key`` that follow those of the clustering ``reference`` (its
    ``.uns[f"{reference}_colors"]``, else :func:`palette`), by the rule of :func:`tree_colors`: each
    cluster of ``key`` takes the colour of the reference cluster that gives it most cells (the
    largest claimant first), the others the first colours the reference does not use."""
    cats, ref_cats = categories(adata.obs[key]), categories(adata.obs[reference])
    ref_cols = category_colors(adata, reference, len(ref_cats))
    pool = list(dict.fromkeys(ref_cols + palette(len(ref_cats) + len(cats))))
    return _follow(adata, key, reference, cats, ref_cats, ref_cols, pool, used=set(ref_cols))


def _follow(adata, key, prev, cats, prev_cats, prev_cols, pool, *, used) -> list[str]:
    """The colours of ``key``'s clusters given those of the previous clustering ``prev``."""
    n = len(cats)
    table = pd.crosstab(adata.obs[key].astype(str), adata.obs[prev].astype(str))
    table = table.reindex(index=[str(c) for c in cats], columns=[str(c) for c in prev_cats], fill_value=0)
    parent_col = dict(zip([str(c) for c in prev_cats], prev_cols, strict=True))
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
    used = used | taken
    spare = iter([c for c in pool if c not in used] + [c for c in pool if c in used and c not in taken])
    return [c if c is not None else next(spare) for c in colours]


def write_colors(adata: AnnData, keys: Sequence[str]) -> None:
    """Write ``.uns[f"{key}_colors"]`` for a series of clusterings (:func:`tree_colors`): the colours
    every scclust figure and scanpy's plots then use for these clusters."""
    for key, colours in tree_colors(adata, keys).items():
        adata.uns[f"{key}_colors"] = colours
