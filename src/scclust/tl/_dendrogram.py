"""Relationships between clusters: a dendrogram of cluster means, and mean expression per cluster."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._checks import check_groupby, gene_source, get_rep, use_raw_for
from .._errors import ConfigError, InputError, MissingKeyError, choices, did_you_mean
from .._params import validated
from .._types import GeneList, Linkage, PositiveInt

logger = logging.getLogger(__name__)

_LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")
_COR = ("pearson", "kendall", "spearman")


@validated
def dendrogram(
    adata: AnnData,
    *,
    groupby: str,
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    cor_method: Literal["pearson", "kendall", "spearman"] = "pearson",
    linkage_method: Linkage = "complete",
    optimal_ordering: bool = False,
    key_added: str | None = None,
) -> None:
    """Hierarchical clustering of the groups of ``groupby`` from the correlation of their means.

    The same computation as :func:`scanpy.tl.dendrogram`: the mean of ``.obsm[use_rep]`` (first
    ``n_pcs`` dimensions) per group, the ``cor_method`` correlation between the group means, the
    distance ``1 - correlation`` and a scipy ``linkage_method`` linkage. The result is stored in
    scanpy's layout, so ``sc.pl.dotplot(..., dendrogram=True)`` uses it as is. Groups without cells
    are left out.

    Parameters
    ----------
    adata
        Annotated data matrix with a categorical ``.obs[groupby]``.
    groupby
        The clustering (``.obs`` column).
    use_rep
        Embedding in ``.obsm`` whose group means are correlated (the lab: ``X_pca``).
    n_pcs
        Use the first ``n_pcs`` dimensions (``None``: all).
    cor_method
        Correlation between group means.
    linkage_method
        scipy linkage method on ``1 - correlation``.
    optimal_ordering
        Reorder leaves so neighbouring leaves are most similar (scipy ``optimal_ordering``).
    key_added
        Key in ``.uns``; default ``f"dendrogram_{groupby}"`` (the key scanpy's plots look for).

    Returns
    -------
    ``None``; writes ``.uns[key_added]`` with ``linkage``, ``groupby`` (a one-element list),
    ``use_rep``, ``n_pcs``, ``cor_method``, ``linkage_method``, ``optimal_ordering``,
    ``categories_ordered`` (group names in leaf order), ``categories_idx_ordered`` (their
    positions in the categories), ``dendrogram_info`` (scipy's dendrogram dict) and
    ``correlation_matrix`` (groups x groups, category order).
    """
    import scipy.cluster.hierarchy as sch
    from scipy.spatial import distance

    if cor_method not in _COR:
        raise ConfigError(f"cor_method {cor_method!r} not valid; choose from {choices(_COR)}")
    if linkage_method not in _LINKAGES:
        raise ConfigError(f"linkage_method {linkage_method!r} not valid; choose from {choices(_LINKAGES)}")
    labels = check_groupby(adata, groupby)
    X = get_rep(adata, use_rep, n_pcs)
    mean_df = pd.DataFrame(X, index=labels).groupby(level=0, observed=True).mean()
    categories = [c for c in labels.cat.categories if c in mean_df.index]
    if len(categories) < 2:
        raise InputError(f"groupby {groupby!r} has {len(categories)} non-empty group(s); a dendrogram needs at least 2")
    mean_df = mean_df.loc[categories]
    corr = mean_df.T.corr(method=cor_method).clip(-1, 1)
    if corr.isna().to_numpy().any():
        raise InputError(f"the correlation of {groupby!r} group means in {use_rep!r} is undefined (constant means)")
    condensed = distance.squareform(1 - corr.to_numpy(), checks=False)
    Z = sch.linkage(condensed, method=linkage_method, optimal_ordering=optimal_ordering)
    info = sch.dendrogram(Z, labels=[str(c) for c in categories], no_plot=True)
    key = key_added or f"dendrogram_{groupby}"
    adata.uns[key] = {
        "linkage": Z,
        "groupby": [groupby],
        "use_rep": use_rep,
        "n_pcs": n_pcs,
        "cor_method": cor_method,
        "linkage_method": linkage_method,
        "optimal_ordering": optimal_ordering,
        "categories_ordered": list(info["ivl"]),
        "categories_idx_ordered": [int(i) for i in info["leaves"]],
        "dendrogram_info": info,
        "correlation_matrix": corr.to_numpy(),
    }
    logger.info("dendrogram of %s (%d groups) stored in .uns[%r]", groupby, len(categories), key)


def get_dendrogram(adata: AnnData, groupby: str, key: str | None = None, *, instead: str | None = None) -> dict:
    """The stored dendrogram of ``groupby``, checked against the current labels, or an error saying
    what to run first (and, when the caller can do without it, ``instead``: how)."""
    key = key or f"dendrogram_{groupby}"
    other_way = f", or {instead}" if instead else ""
    if key not in adata.uns or "categories_ordered" not in adata.uns[key]:
        raise MissingKeyError(
            f"no dendrogram for {groupby!r} in .uns[{key!r}]; run scclust.tl.dendrogram(adata, groupby={groupby!r}) "
            f"(the 'relationships' stage) first{other_way}"
        )
    dend = adata.uns[key]
    stored = [str(c) for c in dend["categories_ordered"]]
    labels = check_groupby(adata, groupby)
    present = {str(c) for c in labels.cat.categories[np.unique(labels.cat.codes[labels.cat.codes >= 0])]}
    if set(stored) != present:
        raise InputError(
            f"the dendrogram in .uns[{key!r}] was made for other groups than the current {groupby!r} "
            f"({len(stored)} vs {len(present)} groups); re-run scclust.tl.dendrogram(adata, "
            f"groupby={groupby!r}){other_way}"
        )
    return dend


@validated
def cluster_means(
    adata: AnnData, *, groupby: str, genes: GeneList | None = None, use_raw: bool | None = None
) -> pd.DataFrame:
    """Mean expression of ``genes`` in each group of ``groupby``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    groupby
        The clustering (``.obs`` column).
    genes
        Genes (columns of the result, in this order); ``None``: all genes. Genes absent from the
        data raise an error listing them (use :func:`group_stats` to skip them instead).
    use_raw
        Read expression from ``.raw`` (``None``: when present).

    Returns
    -------
    A groups x genes DataFrame (groups in category order, empty groups left out); ``adata`` is
    not modified.
    """
    means, _, missing = group_stats(adata, groupby=groupby, genes=genes, use_raw=use_raw)
    if missing:
        names = adata.raw.var_names if use_raw_for(adata, use_raw) else adata.var_names
        hint = did_you_mean(missing, names)
        raise MissingKeyError(
            f"gene(s) {choices(missing)} not found in {gene_source(adata, use_raw)}" + (f"; {hint}" if hint else "")
        )
    return means


def group_stats(
    adata: AnnData, *, groupby: str, genes: Sequence[str] | None = None, use_raw: bool | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Mean expression and fraction of cells with expression > 0 per group, for the genes present.

    Returns ``(means, fractions, missing_genes)``; the two frames are groups x present genes.
    """
    labels = check_groupby(adata, groupby)
    use = use_raw_for(adata, use_raw)
    var_names = adata.raw.var_names if use else adata.var_names
    if genes is None:
        present, missing = list(var_names), []
    else:
        genes = list(dict.fromkeys(genes))
        present = [g for g in genes if g in var_names]
        missing = [g for g in genes if g not in var_names]
    X = adata.raw.X if use else adata.X
    X = X[:, var_names.get_indexer(present)] if present else np.zeros((adata.n_obs, 0))
    codes = labels.cat.codes.to_numpy()
    keep = codes >= 0
    counts = np.bincount(codes[keep], minlength=len(labels.cat.categories))
    nonempty = np.flatnonzero(counts > 0)
    ind = sparse.csr_matrix(
        (np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))), shape=(len(labels.cat.categories), adata.n_obs)
    )
    Xs = sparse.csr_matrix(X)
    sums = np.asarray((ind @ Xs).todense())
    nz = np.asarray((ind @ (Xs > 0).astype(np.float64)).todense())
    idx = pd.Index([labels.cat.categories[i] for i in nonempty], name=groupby)
    means = pd.DataFrame(sums[nonempty] / counts[nonempty, None], index=idx, columns=present)
    fracs = pd.DataFrame(nz[nonempty] / counts[nonempty, None], index=idx, columns=present)
    return means, fracs, missing
