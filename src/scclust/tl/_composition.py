"""Cluster composition: counts and fractions of two ``.obs`` columns, and one-sample cluster flags."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field

from .._checks import check_obs
from .._errors import ConfigError, InputError, choices
from .._params import validated

logger = logging.getLogger(__name__)

_NORMALIZE = ("index", "columns", "all")


@validated
def proportions(
    adata: AnnData,
    *,
    groupby: str,
    by: str,
    normalize: Literal["index", "columns", "all"] = "index",
) -> pd.DataFrame:
    """Counts and fractions of cells for every pair of ``groupby`` and ``by`` values (pure).

    Parameters
    ----------
    adata
        Annotated data matrix (only ``.obs`` is read; nothing is written).
    groupby
        First ``.obs`` column, e.g. a clustering (the rows of ``pd.crosstab``).
    by
        Second ``.obs`` column, e.g. ``sample`` or ``type`` (the columns of ``pd.crosstab``).
    normalize
        What the fractions sum to 1 over: ``"index"`` within each ``groupby`` value (the share
        of each sample in a cluster), ``"columns"`` within each ``by`` value (the share of each
        cluster in a sample), ``"all"`` over all cells. As ``pd.crosstab(normalize=...)``.

    Returns
    -------
    A long (tidy) DataFrame with one row per pair, including pairs with no cells, and columns
    ``groupby``, ``by`` (categoricals in the columns' category order), ``count`` (int) and
    ``fraction``. ``df.pivot(index=groupby, columns=by, values="count")`` gives the wide table.
    Cells with a missing value in either column are not counted.
    """
    if normalize not in _NORMALIZE:
        raise ConfigError(f"normalize {normalize!r} not valid; choose from {choices(_NORMALIZE)}")
    return composition(adata, groupby=groupby, by=by).proportions(normalize)


@dataclass(frozen=True)
class Composition:
    """Cells per pair of ``groupby`` and ``by`` values (one cross-tabulation), with its views.

    ``counts`` is the wide table (``groupby`` categories x ``by`` categories, empty pairs kept).
    """

    groupby: str
    by: str
    counts: pd.DataFrame

    def proportions(
        self, normalize: Literal["index", "columns", "all"] = "index", *, transpose: bool = False
    ) -> pd.DataFrame:
        """The long table of :func:`proportions` (``transpose``: as if ``groupby`` and ``by`` were swapped)."""
        counts = self.counts.T if transpose else self.counts
        if transpose:
            normalize = {"index": "columns", "columns": "index"}.get(normalize, normalize)
        c = counts.to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            if normalize == "index":
                frac = c / c.sum(axis=1, keepdims=True)
            elif normalize == "columns":
                frac = c / c.sum(axis=0, keepdims=True)
            else:
                frac = c / c.sum()
        frac = np.nan_to_num(frac, nan=0.0)
        rows, cols = counts.index, counts.columns
        return pd.DataFrame(
            {
                rows.name: pd.Categorical(np.repeat(rows, len(cols)), categories=rows),
                cols.name: pd.Categorical(np.tile(cols, len(rows)), categories=cols),
                "count": c.ravel(),
                "fraction": frac.ravel(),
            }
        )

    def table(self) -> pd.DataFrame:
        """One row per pair: ``count``, ``fraction_within_{groupby}``, ``fraction_within_{by}``."""
        table = self.proportions("index").rename(columns={"fraction": f"fraction_within_{self.groupby}"})
        table[f"fraction_within_{self.by}"] = self.proportions("columns")["fraction"].to_numpy()
        return table


@validated
def composition(adata: AnnData, *, groupby: str, by: str) -> Composition:
    """Cross-tabulate two ``.obs`` columns once (pure); see :class:`Composition` for the views.

    Cells with a missing value in either column are not counted.

    Parameters
    ----------
    groupby
        The clustering (``.obs`` column).
    by
        The ``.obs`` column the clusters are broken down by (e.g. sample).
    """
    if groupby == by:
        raise ConfigError(f"groupby and by must differ; both are {groupby!r}")
    a = _as_cat(check_obs(adata, groupby, what="groupby"))
    b = _as_cat(check_obs(adata, by, what="by"))
    codes_a, codes_b = a.cat.codes.to_numpy(), b.cat.codes.to_numpy()
    ok = (codes_a >= 0) & (codes_b >= 0)
    na, nb = len(a.cat.categories), len(b.cat.categories)
    counts = np.zeros((na, nb), dtype=np.int64)
    np.add.at(counts, (codes_a[ok], codes_b[ok]), 1)
    return Composition(
        groupby,
        by,
        pd.DataFrame(
            counts, index=pd.Index(a.cat.categories, name=groupby), columns=pd.Index(b.cat.categories, name=by)
        ),
    )


@validated
def composition_diagnostics(
    adata: AnnData,
    *,
    groupby: str,
    sample_key: str = "sample",
    max_share: Annotated[float, Field(gt=0, lt=1)] = 0.5,
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01,
    counts: Composition | None = None,
) -> pd.DataFrame:
    """Per-cluster sample diversity, and a flag for clusters made mostly of one sample.

    The flag rule (two conditions, both needed):

    1. *mostly one sample*: the largest single-sample share of the cluster exceeds ``max_share``
       (default 0.5: more than half of its cells come from one sample), and
    2. *more than that sample's size explains*: the count from that sample is significantly above
       what the sample's share of all cells predicts (one-sided binomial test of the count against
       ``n_cells x expected_share``, Bonferroni-corrected over the clusters, at level ``alpha``).

    Condition 2 keeps a sample that dominates the whole dataset, and a tiny cluster where a few
    cells happen to share a sample, from being flagged. With only two samples every cluster has a
    majority sample, so condition 1 is weak there; raise ``max_share`` in that case.

    Parameters
    ----------
    adata
        Annotated data matrix (only ``.obs`` is read).
    groupby
        The clustering.
    sample_key
        The sample column.
    max_share
        Largest single-sample share above which a cluster counts as "mostly one sample" (0-1).
    alpha
        Family-wise significance level of the enrichment test.

    counts
        The :func:`composition` of ``groupby`` by ``sample_key`` when the caller has it (not recomputed).

    Returns
    -------
    A DataFrame indexed by cluster with ``n_cells``, ``n_samples`` (samples with at least one
    cell), ``entropy`` (Shannon entropy of the cluster's sample shares divided by ``log`` of the
    number of samples in the data: 1 = every sample in equal shares, 0 = a single sample),
    ``top_sample``, ``top_share``, ``expected_share`` (the top sample's share of all cells),
    ``enrichment`` (``top_share / expected_share``), ``p_adj`` (Bonferroni) and
    ``flag_one_sample`` (bool). Nothing is written to ``adata``.
    """
    from scipy.stats import binom

    if not 0 < max_share < 1:
        raise ConfigError(f"max_share must be in (0, 1); got {max_share}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha}")
    if counts is None or (counts.groupby, counts.by) != (groupby, sample_key):
        counts = composition(adata, groupby=groupby, by=sample_key)
    long = counts.proportions("index")
    counts = long.pivot(index=groupby, columns=sample_key, values="count")
    counts = counts.loc[:, counts.sum(axis=0) > 0]
    counts = counts.loc[counts.sum(axis=1) > 0]
    n_samp = counts.shape[1]
    if n_samp < 2:
        raise InputError(f"{sample_key!r} has {n_samp} sample(s) with cells; composition diagnostics need at least 2")
    c = counts.to_numpy().astype(float)
    n = c.sum(axis=1)
    share = c / n[:, None]
    expected = c.sum(axis=0) / c.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(share > 0, share * np.log(share), 0.0).sum(axis=1) / np.log(n_samp)
    top = share.argmax(axis=1)
    rows = np.arange(len(n))
    top_share = share[rows, top]
    exp_top = expected[top]
    # P(X >= observed) for X ~ Binomial(n, expected share of that sample)
    p = binom.sf(c[rows, top] - 1, n, exp_top)
    p_adj = np.minimum(p * len(n), 1.0)
    flag = (top_share > max_share) & (p_adj < alpha)
    out = pd.DataFrame(
        {
            "n_cells": n.astype(int),
            "n_samples": (c > 0).sum(axis=1),
            "entropy": ent,
            "top_sample": [str(counts.columns[i]) for i in top],
            "top_share": top_share,
            "expected_share": exp_top,
            "enrichment": top_share / exp_top,
            "p_adj": p_adj,
            "flag_one_sample": flag,
        },
        index=pd.Index([str(i) for i in counts.index], name=groupby),
    )
    if flag.any():
        logger.warning("%s: cluster(s) %s made mostly of one sample", groupby, ", ".join(out.index[flag]))
    return out


def _as_cat(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.remove_unused_categories()
    return values.astype("category")
