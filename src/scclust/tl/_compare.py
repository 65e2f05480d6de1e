"""Agreement between clusterings: ARI / NMI matrices and contingency tables (pure: reads only)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_obs
from .._errors import InputError, MissingKeyError
from .._params import validated
from .._types import KeyList

logger = logging.getLogger(__name__)


def recorded_clusterings(adata: AnnData) -> list[str]:
    """Label keys recorded by the clustering stages (``.uns[key]["clusterings"]``) and present in ``.obs``."""
    keys: list[str] = []
    for value in adata.uns.values():
        if isinstance(value, dict) and isinstance(value.get("clusterings"), dict):
            keys += [k for k in value["clusterings"] if k in adata.obs.columns and k not in keys]
    return keys


@validated
def compare(
    adata: AnnData,
    *,
    keys: KeyList | None = None,
    reference: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Adjusted Rand index and normalized mutual information between clusterings.

    Every pair of ``keys`` is compared (and each key with ``reference``, e.g. a known cell type)
    by the adjusted Rand index and the normalized mutual information (arithmetic mean
    normalisation): the values of :func:`sklearn.metrics.adjusted_rand_score` and
    :func:`sklearn.metrics.normalized_mutual_info_score` (tested equal), computed from one
    contingency table per pair (a ``bincount`` of the label codes) instead of two sorts of every
    cell's labels per pair: 55 pairs of 1,000,000 cells in 0.4 s instead of 15 s. A pair
    is compared on the cells labelled in both columns (NaN labels, e.g. cells outside a
    subclustering, are left out). The AnnData is not modified.

    Parameters
    ----------
    adata
        Annotated data matrix with label columns in ``.obs``.
    keys
        ``.obs`` columns to compare; ``None`` takes every clustering recorded by scclust's stages
        (``.uns[...]["clusterings"]``: leiden, kmeans, hclust, ...).
    reference
        An ``.obs`` column of reference labels; added as the last row / column of the matrices.

    Returns
    -------
    A dict of DataFrames: ``"ari"`` and ``"nmi"`` (square, symmetric, keys then reference as
    index and columns, 1 on the diagonal) and ``"summary"`` (one row per key: ``n_clusters``, and
    ``ari`` / ``nmi`` with the reference when one is given).
    """
    if keys is None:
        keys = recorded_clusterings(adata)
        if not keys:
            raise MissingKeyError(
                "no clustering recorded in .uns; run a clustering stage (leiden, kmeans, hclust) first or pass keys"
            )
    keys = list(dict.fromkeys(keys))
    cols = keys + ([reference] if reference is not None and reference not in keys else [])
    if len(cols) < 2:
        raise InputError(f"compare needs at least two label columns; got {cols}")
    codes, n_codes = {}, {}
    for key in cols:
        values = check_obs(adata, key, what="reference" if key == reference else "clustering")
        cat = pd.Categorical(values)
        codes[key], n_codes[key] = np.asarray(cat.codes), len(cat.categories)
    m = len(cols)
    ari = np.eye(m)
    nmi = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            table = _pair_counts(codes[cols[i]], codes[cols[j]], n_codes[cols[i]], n_codes[cols[j]])
            # labels present among the cells labelled in both (what sklearn sees)
            table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
            if table.size == 0:
                ari[i, j] = ari[j, i] = nmi[i, j] = nmi[j, i] = np.nan
                continue
            ari[i, j] = ari[j, i] = _ari(table)
            nmi[i, j] = nmi[j, i] = _nmi(table)
    ari_df = pd.DataFrame(ari, index=pd.Index(cols, name="clustering"), columns=cols)
    nmi_df = pd.DataFrame(nmi, index=pd.Index(cols, name="clustering"), columns=cols)
    summary = pd.DataFrame(
        {"n_clusters": [int(np.unique(codes[k][codes[k] >= 0]).size) for k in keys]},
        index=pd.Index(keys, name="clustering"),
    )
    if reference is not None:
        summary[f"ari_vs_{reference}"] = ari_df.loc[keys, reference].to_numpy()
        summary[f"nmi_vs_{reference}"] = nmi_df.loc[keys, reference].to_numpy()
    return {"ari": ari_df, "nmi": nmi_df, "summary": summary}


def _pair_counts(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Cells per pair of label codes (``n_a x n_b``, int64); a missing code (-1) in either is left out."""
    ok = (a >= 0) & (b >= 0)
    flat = a[ok].astype(np.int64) * n_b + b[ok]
    return np.bincount(flat, minlength=n_a * n_b).reshape(n_a, n_b)


def _ari(table: np.ndarray) -> float:
    """:func:`sklearn.metrics.adjusted_rand_score` from the contingency table of the labels present
    (scikit-learn's pair confusion matrix, integer arithmetic, then its formula)."""
    n = np.int64(table.sum())
    n_c, n_k = table.sum(axis=1), table.sum(axis=0)
    sum_squares = (table**2).sum()
    fp = int((table @ n_k).sum() - sum_squares)
    fn = int((table.T @ n_c).sum() - sum_squares)
    tp = int(sum_squares - n)
    tn = int(n**2 - fp - fn - sum_squares)
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _nmi(table: np.ndarray) -> float:
    """:func:`sklearn.metrics.normalized_mutual_info_score` (arithmetic) from the contingency table of
    the labels present: scikit-learn's mutual information of the table over the mean of the two entropies."""
    from sklearn.metrics import mutual_info_score

    if table.shape[0] == table.shape[1] == 1:
        return 1.0
    mi = mutual_info_score(None, None, contingency=table)
    if mi == 0:
        return 0.0
    return float(mi / np.mean([_entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))]))


def _entropy(counts: np.ndarray) -> float:
    """Entropy (natural log) of a labelling from its label counts (all > 0), as scikit-learn computes it."""
    if counts.size == 1:
        return 0.0
    pi = counts.astype(np.float64)
    pi_sum = np.sum(pi)
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - np.log(pi_sum))))


@dataclass(frozen=True)
class ComparisonPlan:
    """Which comparisons a run draws: contingency ``pairs`` and clustering ``trees`` per series."""

    pairs: list[tuple[str, str]]
    trees: dict[str, list[str]]


@validated
def comparison_plan(
    keys: Sequence[str], *, series: Mapping[str, Sequence[str]] | None = None, reference: str | None = None
) -> ComparisonPlan:
    """The contingency tables and clustering trees worth drawing for ``keys``.

    Pairs: every key with ``reference``, and consecutive keys of one series (``leiden_0.4`` vs
    ``leiden_0.6``). Trees: one per series with at least two of the keys. ``series`` maps a name
    to the keys of one series in order (a run's clustering stages, e.g. ``{"leiden": [...]}``);
    ``None`` takes ``keys`` as one series.

    Parameters
    ----------
    series
        Clustering series by name (``{leiden: [leiden_0.4, ...]}``); default: from the key names.
    reference
        A reference labelling (e.g. known cell types) each clustering is compared with.
    """
    keys = list(keys)
    pairs = [(k, reference) for k in keys] if reference is not None else []
    trees: dict[str, list[str]] = {}
    for group, members in (series or {"selected": keys}).items():
        members = list(dict.fromkeys(k for k in members if k in keys))  # two entries may share a key_added
        pairs += list(itertools.pairwise(members))
        if len(members) >= 2:
            trees[group] = members
    return ComparisonPlan(pairs=list(dict.fromkeys(pairs)), trees=trees)


@validated
def contingency(adata: AnnData, *, key1: str, key2: str) -> pd.DataFrame:
    """Cells per pair of labels: rows the labels of ``key1``, columns those of ``key2``.

    Categories keep their order (natsorted for scclust's labels); empty categories are kept; cells
    with a missing label in either column are left out.

    Parameters
    ----------
    key1
        ``.obs`` column of the rows.
    key2
        ``.obs`` column of the columns.

    Returns
    -------
    A DataFrame of counts with index named ``key1`` and columns named ``key2``.
    """
    a = check_obs(adata, key1, what="clustering")
    b = check_obs(adata, key2, what="clustering")
    a = a if isinstance(a.dtype, pd.CategoricalDtype) else a.astype("category")
    b = b if isinstance(b.dtype, pd.CategoricalDtype) else b.astype("category")
    ca, cb = a.cat.categories, b.cat.categories
    counts = _pair_counts(np.asarray(a.cat.codes), np.asarray(b.cat.codes), len(ca), len(cb))
    return pd.DataFrame(counts, index=pd.Index(ca, name=key1), columns=pd.Index(cb, name=key2))


@validated
def cluster_tree(
    adata: AnnData, *, keys: KeyList, tables: Mapping[tuple[str, str], pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The clustree graph of a series of clusterings (e.g. Leiden at increasing resolution).

    Nodes are the clusters of each key; an edge joins a cluster of ``keys[i]`` to a cluster of
    ``keys[i + 1]`` when they share cells (cells unlabelled in either key, e.g. outside a
    subclustering, are left out of the edges). ``in_prop`` is the share of the child cluster's cells that
    come from the parent (Zappia & Oshlack 2018, clustree's ``in_prop``): a child with no edge of
    ``in_prop`` >= ~0.5 is made of cells from several parents, the sign of an unstable split.

    ``tables``: :func:`contingency` tables the caller already has, by ``(key1, key2)`` (not recomputed).

    Parameters
    ----------
    keys
        The series of clusterings, coarse to fine (at least two).
    tables
        Contingency tables already computed, by ``(key1, key2)`` (computed here otherwise).

    Returns
    -------
    One row per edge: ``from_key``, ``from_cluster``, ``from_size``, ``to_key``, ``to_cluster``,
    ``to_size``, ``n_cells``, ``in_prop`` (``n_cells / to_size``) and ``out_prop``
    (``n_cells / from_size``), in key order, then parent and child category order.
    """
    keys = list(keys)
    if len(keys) < 2:
        raise InputError(f"cluster_tree needs at least two clusterings; got {keys}")
    if len(set(keys)) < len(keys):
        raise InputError(f"cluster_tree needs distinct clusterings; got {keys}")
    empty = [k for k in keys if check_obs(adata, k, what="clustering").notna().sum() == 0]
    if empty:
        raise InputError(f"clustering(s) with no labelled cell: {empty}")
    rows = []
    for a, b in itertools.pairwise(keys):
        table = tables[(a, b)] if tables is not None and (a, b) in tables else contingency(adata, key1=a, key2=b)
        from_size, to_size = table.sum(axis=1), table.sum(axis=0)
        for (ca, cb), n in table.stack().items():
            if n > 0:
                rows.append((a, str(ca), int(from_size[ca]), b, str(cb), int(to_size[cb]), int(n)))
    edges = pd.DataFrame(
        rows, columns=["from_key", "from_cluster", "from_size", "to_key", "to_cluster", "to_size", "n_cells"]
    )
    edges["in_prop"] = edges["n_cells"] / edges["to_size"]
    edges["out_prop"] = edges["n_cells"] / edges["from_size"]
    return edges
