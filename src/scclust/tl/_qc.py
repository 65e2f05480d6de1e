"""QC metrics per cluster: medians, and flags for clusters whose typical cell lies beyond a per-cell QC bound
(a small or large cell type, or low-quality cells / doublets: the markers tell them apart)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field

from .._checks import check_obs
from .._errors import ConfigError, InputError, MissingKeyError, choices
from .._params import validated
from .._types import KeyList

logger = logging.getLogger(__name__)

#: The lab's QC keys (scanpy ``calculate_qc_metrics`` names).
DEFAULT_QC_KEYS = ["n_genes_by_counts", "total_counts", "pct_counts_mt"]

#: Canonical key -> other names for the same metric (scanpy, Seurat, scater, older scanpy tutorials).
QC_ALIASES: dict[str, list[str]] = {
    "n_genes_by_counts": ["n_genes", "nFeature_RNA", "n_features", "detected", "nGene"],
    "total_counts": ["n_counts", "nCount_RNA", "nUMI", "sum", "total_umis"],
    "pct_counts_mt": [
        "percent_mito",
        "percent.mt",
        "percent_mt",
        "pct_mito",
        "percent.mito",
        "subsets_Mito_percent",
        "mito_percent",
    ],
}
#: Names of the mitochondrial share: above its bound is a quality problem (dying cells), not a cell size.
MITO_KEYS = frozenset(["pct_counts_mt", *QC_ALIASES["pct_counts_mt"]])

#: Side of the per-cell rule: too few or too many genes / counts (empty droplets, multiplets) are bad,
#: too much mitochondrial RNA is bad (a low share is not).
_SIDE = {"n_genes_by_counts": "both", "total_counts": "both", "pct_counts_mt": "higher"}
#: A cluster whose median genes AND counts are at least this multiple of all cells' medians is
#: flagged doublet-like (a multiplet holds the RNA of two or more cells).
DOUBLET_RATIO = 1.8
#: Counts are judged on a log scale (their spread grows with their size), as scater's isOutlier does.
LOG_SCALE_METRICS = {"n_genes_by_counts", "total_counts"}


def resolve_qc_keys(adata: AnnData, keys: Sequence[str] | None = None) -> dict[str, str]:
    """Map each requested QC key to the ``.obs`` column holding it.

    A key is taken as is when it is a column; otherwise a known alias is looked up (``n_genes`` ->
    ``n_genes_by_counts``, ``n_counts`` -> ``total_counts``, ``percent_mito`` -> ``pct_counts_mt``,
    Seurat's ``nFeature_RNA`` / ``nCount_RNA`` / ``percent.mt``, and back). With ``keys=None`` the
    lab's three keys are used, skipping those with no column (at least one must be found).

    Returns
    -------
    ``{requested key: .obs column}`` in the order requested.
    """
    explicit = keys is not None
    keys = list(DEFAULT_QC_KEYS if keys is None else keys)
    if not keys:
        raise ConfigError("keys must name at least one QC metric (or be None for the defaults)")
    found: dict[str, str] = {}
    missing = []
    for key in keys:
        col = _lookup(adata, key)
        if col is None:
            missing.append(key)
        else:
            found[key] = col
    numeric = [
        c
        for c in adata.obs.columns
        if pd.api.types.is_numeric_dtype(adata.obs[c]) and not pd.api.types.is_bool_dtype(adata.obs[c])
    ]
    if (explicit and missing) or not found:
        raise MissingKeyError(
            f"QC key(s) {choices(missing)} not found in .obs (aliases tried too); numeric .obs columns: "
            f"{choices(numeric)}"
        )
    if missing:
        logger.warning("QC key(s) %s not in .obs; using %s", ", ".join(missing), ", ".join(found.values()))
    return found


@validated
def qc_summary(
    adata: AnnData,
    *,
    groupby: str,
    keys: KeyList | None = None,
    n_mads: Annotated[float, Field(gt=0)] = 3.0,
) -> pd.DataFrame:
    """Median QC metrics per cluster, with clusters whose typical cell would fail per-cell QC flagged.

    Rule (documented, robust): for each metric a per-cell bound is computed over *all* cells as
    ``median +/- n_mads x MAD`` (MAD scaled by 1.4826 to match the standard deviation of a normal),
    the rule of scater's ``isOutlier`` used in per-cell QC: gene and count totals on a ``log1p``
    scale and both sides (too small: empty or broken cells; too large: multiplets); ``pct_counts_mt``
    on its own scale and only its upper side;
    other metrics on their own scale, both sides. A cluster is flagged for a metric when its
    **median** lies beyond the bound, i.e. more than half of its cells would be removed by that
    per-cell filter. That is an observation, not a verdict: low-quality cells and doublets do it,
    and so do cell types of distinct size (the platelets and dendritic cells of 10x PBMC 3k); a
    cluster distinct only in QC metrics, without markers of its own, is the suspect one. Judging
    cluster medians against the spread of all cells (not against the other clusters' medians)
    leaves cell types of moderately different size (monocytes) unflagged. The flags are logged in
    words (:func:`describe_qc_flags`): at INFO level, and at WARNING for a mitochondrial share
    above its bound (dying or broken cells).

    Doublet-like clusters: a multiplet holds about twice a cell's RNA, which is often within the
    MAD bound of log counts. A cluster is also flagged (``flag_doublet_like``) when its median gene
    count **and** median total count are both at least :data:`DOUBLET_RATIO` (1.8) times the
    medians of all cells (needs both metrics among ``keys``).

    Parameters
    ----------
    adata
        Annotated data matrix (only ``.obs`` is read).
    groupby
        The clustering.
    keys
        QC metrics (``.obs`` columns or aliases, see :func:`resolve_qc_keys`); ``None``: the lab's
        ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt`` (those present).
    n_mads
        Width of the per-cell bound in MADs.

    Returns
    -------
    A DataFrame indexed by cluster with ``n_cells``, the median of each metric (columns named by
    the ``.obs`` column), ``frac_outside_{col}`` (fraction of the cluster's cells beyond the bound),
    ``flag_{col}`` (bool) per metric, ``flag_doublet_like`` (when genes and counts are both among
    the keys) and ``flag_qc`` (any flag). The bounds are in
    ``df.attrs["bounds"]`` (``{col: {"side", "lower", "upper"}}``, on the metric's own scale).
    Nothing is written to ``adata``.
    """
    out = summarize_qc(adata, groupby=groupby, keys=keys, n_mads=n_mads)
    for level, message in describe_qc_flags(out, n_mads=n_mads):
        logger.log(level, "%s: %s", groupby, message)
    return out


def _clusters(ids: Sequence[str]) -> str:
    return f"cluster{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


def describe_qc_flags(summary: pd.DataFrame, *, n_mads: float = 3.0) -> list[tuple[int, str]]:
    """The flags of a :func:`qc_summary` table in plain words, with the log level each deserves.

    A cluster whose median gene or count total lies beyond the bound is an observation (INFO):
    cell types of distinct size (platelets, dendritic cells, monocytes) do that, and so do
    low-quality cells and doublets; which one it is, the cluster's markers tell. A cluster whose
    median mitochondrial share lies above the bound (most of its cells would fail a per-cell
    mitochondrial filter: dying or broken cells) is a data problem (WARNING).

    Returns
    -------
    ``[(logging level, message), ...]``; empty when no cluster is flagged.
    """
    out: list[tuple[int, str]] = []
    bounds = summary.attrs.get("bounds", {})
    size: dict[str, list[str]] = {}  # "5 lower, 6 higher" -> the metrics
    size_ids: list[str] = []
    for col, b in bounds.items():
        flagged = summary.index[summary[f"flag_{col}"]]
        if not len(flagged):
            continue
        if col in MITO_KEYS:
            out.append(
                (
                    logging.WARNING,
                    (
                        f"{_clusters(list(flagged))}: median {col} above {n_mads:g} MADs of all cells, "
                        "most cells would fail a per-cell mitochondrial filter (dying or broken cells); "
                        "filter them (prepare's max_pct_mt) or check the markers"
                    ),
                )
            )
            continue
        lower = [c for c in flagged if b["lower"] is not None and summary.loc[c, col] < b["lower"]]
        higher = [c for c in flagged if c not in lower]
        sides = ", ".join(f"{', '.join(ids)} {word}" for ids, word in ((lower, "lower"), (higher, "higher")) if ids)
        size.setdefault(sides, []).append(col)
        size_ids += [c for c in flagged if c not in size_ids]
    if size:
        ids = [c for c in summary.index if c in size_ids]
        parts = [
            f"median {', '.join(cols)} beyond {n_mads:g} MADs of all cells: {sides}" for sides, cols in size.items()
        ]
        out.insert(
            0,
            (
                logging.INFO,
                (
                    f"{_clusters(ids)} differ{'' if len(ids) > 1 else 's'} in QC metrics from the rest "
                    f"({'; '.join(parts)}): small or large cell types (platelets, DCs) do; a cluster "
                    "distinct only in QC metrics and without markers of its own may be low-quality "
                    "cells or doublets"
                ),
            ),
        )
    if "flag_doublet_like" in summary and summary["flag_doublet_like"].any():
        ids = list(summary.index[summary["flag_doublet_like"]])
        out.append(
            (
                logging.INFO,
                (
                    f"{_clusters(ids)}: about {DOUBLET_RATIO:g}x or more the median genes and counts of "
                    "all cells, as doublets have, and large cells; markers of two cell types in one "
                    "cluster point to doublets"
                ),
            )
        )
    return out


def summarize_qc(adata: AnnData, *, groupby: str, keys: Sequence[str] | None, n_mads: float) -> pd.DataFrame:
    """:func:`qc_summary` without logging (the plot calls it too)."""
    if not n_mads > 0:
        raise ConfigError(f"n_mads must be > 0; got {n_mads}")
    labels = check_obs(adata, groupby, what="groupby")
    labels = (
        labels.cat.remove_unused_categories()
        if isinstance(labels.dtype, pd.CategoricalDtype)
        else labels.astype("category")
    )
    resolved = resolve_qc_keys(adata, keys)
    out = pd.DataFrame(index=pd.Index([str(c) for c in labels.cat.categories], name=groupby))
    out["n_cells"] = labels.value_counts(sort=False).reindex(labels.cat.categories).to_numpy()
    bounds: dict[str, dict] = {}
    flags = []
    for key, col in resolved.items():
        values = adata.obs[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise InputError(f"QC key {col!r} is not numeric (dtype {values.dtype})")
        v = values.to_numpy(dtype=float)
        canonical = next((k for k in _SIDE if k in (key, col) or key in QC_ALIASES[k] or col in QC_ALIASES[k]), None)
        side = _SIDE.get(canonical, "both")
        log = canonical in LOG_SCALE_METRICS
        t = np.log1p(np.clip(v, 0, None)) if log else v
        finite = np.isfinite(t)
        med = float(np.median(t[finite]))
        mad = 1.4826 * float(np.median(np.abs(t[finite] - med)))
        lo, hi = med - n_mads * mad, med + n_mads * mad
        outside = np.zeros(v.shape, bool)
        if side in ("lower", "both"):
            outside |= t < lo
        if side in ("higher", "both"):
            outside |= t > hi
        df = pd.DataFrame({"g": labels.to_numpy(), "v": v, "out": outside})
        grouped = df.groupby("g", observed=False)
        medians = grouped["v"].median().reindex(labels.cat.categories).to_numpy()
        frac = grouped["out"].mean().reindex(labels.cat.categories).to_numpy()
        tm = np.log1p(np.clip(medians, 0, None)) if log else medians
        flag = np.zeros(len(tm), bool)
        if side in ("lower", "both"):
            flag |= tm < lo
        if side in ("higher", "both"):
            flag |= tm > hi
        out[col] = medians
        out[f"frac_outside_{col}"] = frac
        out[f"flag_{col}"] = flag
        flags.append(flag)
        back = np.expm1 if log else float
        bounds[col] = {
            "side": side,
            "lower": float(back(lo)) if side in ("lower", "both") else None,
            "upper": float(back(hi)) if side in ("higher", "both") else None,
        }
    genes, counts = (
        next(
            (
                c
                for k, c in resolved.items()
                if k == name or c == name or k in QC_ALIASES[name] or c in QC_ALIASES[name]
            ),
            None,
        )
        for name in ("n_genes_by_counts", "total_counts")
    )
    if genes is not None and counts is not None:
        ratio = np.minimum(
            out[genes] / float(np.median(adata.obs[genes])), out[counts] / float(np.median(adata.obs[counts]))
        )
        out["flag_doublet_like"] = (ratio >= DOUBLET_RATIO).to_numpy()
        flags.append(out["flag_doublet_like"].to_numpy())
    out["flag_qc"] = np.any(flags, axis=0)
    out.attrs["bounds"] = bounds
    return out


def _lookup(adata: AnnData, key: str) -> str | None:
    if key in adata.obs.columns:
        return key
    for canonical, aliases in QC_ALIASES.items():
        group = [canonical, *aliases]
        if key in group:
            for name in group:
                if name in adata.obs.columns:
                    return name
    return None
