"""Clustered heatmaps, the computing half: build a matrix, scale it, cluster both axes, cut the row
tree, and measure how often each row group re-forms under resampling.

:func:`heatmap_matrix` makes the matrix (genes x cluster means, genes x cells, or any CSV table);
:func:`cluster_heatmap` clusters it and returns a :class:`ClusteredHeatmap`, which
:func:`scclust.pl.clustered_heatmap` draws. Both are pure: the AnnData is never modified.
"""

from __future__ import annotations

import logging
import re
import typing
import warnings
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._errors import (
    ConfigError,
    InputError,
    MissingKeyError,
    choices,
    did_you_mean,
    warn,
)
from .._params import validated
from .._types import Distance, GeneList, KeyList, Linkage, PositiveInt, check_linkage_metric

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "METRICS", "ClusteredHeatmap", "HeatmapInput", "cluster_heatmap", "heatmap_matrix"]

#: scipy's seven linkage methods
METHODS = typing.get_args(Linkage)
#: distances offered (:func:`scipy.spatial.distance.pdist` names)
METRICS = typing.get_args(Distance)
SCALES = ("zscore", "standard", "none")
SOURCES = ("cluster_means", "cells", "table")
#: fpc::clusterboot's thresholds (Hennig 2007): Jaccard <= 0.5 "dissolved", > 0.75 "recovered"
DISSOLVED, RECOVERED = 0.5, 0.75

_SCALE_TEXT = {"zscore": "row z-score", "standard": "row min-max scaled (0-1)", "none": "no scaling"}


# ------------------------------------------------------------------------------------------ result
@dataclass
class HeatmapInput:
    """A matrix to cluster, with optional annotations of its columns and rows."""

    data: pd.DataFrame
    col_annotations: pd.DataFrame | None = None
    row_annotations: pd.DataFrame | None = None


@dataclass
class ClusteredHeatmap:
    """What :func:`cluster_heatmap` computed.

    Attributes
    ----------
    data
        The scaled matrix actually clustered (input order; dropped rows/columns removed).
    values
        The same rows and columns before scaling.
    row_linkage, col_linkage
        scipy linkage matrices (``None`` when that axis is not clustered).
    row_order, col_order
        Leaf orders: positions into ``data``'s rows / columns, top-to-bottom / left-to-right.
    row_groups
        Group of each row (``"1"`` ... ``"k"``, numbered top to bottom in leaf order), or ``None``.
    stability
        One row per group: ``n_rows``, ``mean_jaccard``, ``recovered``, ``dissolved``, ``n_boot``.
    dropped
        Rows / columns left out and why (``axis``, ``label``, ``reason``).
    params
        The parameters used.
    caption
        One sentence naming the scaling, metrics, methods, the cut and the stability test.
    name
        A short name (titles, file names).
    """

    data: pd.DataFrame
    values: pd.DataFrame
    row_linkage: np.ndarray | None
    col_linkage: np.ndarray | None
    row_order: np.ndarray
    col_order: np.ndarray
    row_groups: pd.Series | None
    stability: pd.DataFrame | None
    dropped: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    caption: str = ""
    name: str = "heatmap"

    def ordered(self) -> pd.DataFrame:
        """The scaled matrix in leaf order (as drawn)."""
        return self.data.iloc[self.row_order, self.col_order]

    def linkage_table(self, axis: Literal["rows", "columns"] = "rows") -> pd.DataFrame:
        """The linkage matrix as a table: ``child1``, ``child2``, ``distance``, ``size`` (scipy's
        numbering: ids below n are the leaves in ``data`` order)."""
        Z = self.row_linkage if axis == "rows" else self.col_linkage
        if Z is None:
            raise InputError(f"the {axis} were not clustered (cluster_{'rows' if axis == 'rows' else 'cols'}=False)")
        df = pd.DataFrame(Z, columns=["child1", "child2", "distance", "size"])
        return df.astype({"child1": int, "child2": int, "size": int}).rename_axis("step")

    def leaf_order_table(self, axis: Literal["rows", "columns"] = "rows") -> pd.DataFrame:
        """Leaves top-to-bottom (rows) or left-to-right (columns): ``position``, ``label``, ``index``
        (position in ``data``) and, for rows, ``group``."""
        order = self.row_order if axis == "rows" else self.col_order
        labels = (self.data.index if axis == "rows" else self.data.columns)[order]
        df = pd.DataFrame(
            {"label": labels.astype(str), "index": order}, index=pd.RangeIndex(len(order), name="position")
        )
        if axis == "rows" and self.row_groups is not None:
            df["group"] = self.row_groups.iloc[order].to_numpy()
        return df


# ------------------------------------------------------------------------------------------ matrix
@validated
def heatmap_matrix(
    adata: AnnData | None,
    *,
    source: Literal["cluster_means", "cells", "table"] = "cluster_means",
    table: pd.DataFrame | None = None,
    table_annotations: pd.DataFrame | None = None,
    column_pattern: str | None = None,
    groupby: str | list[str] | None = None,
    genes: GeneList | None = None,
    n_top_genes: PositiveInt = 5,
    use_raw: bool | None = None,
    max_cells: Annotated[int, Field(ge=2)] = 2000,
    annotations: KeyList = (),
    random_state: int = 0,
) -> HeatmapInput:
    """The matrix of a clustered heatmap, with column (and row) annotations.

    ``source="cluster_means"``: genes x groups, the mean (log-normalized) expression of each gene in
    each group of ``groupby`` (a list of ``.obs`` columns gives one column per observed combination,
    e.g. cluster x condition). ``source="cells"``: genes x cells; when there are more than
    ``max_cells`` cells a subsample stratified by the first ``groupby`` column is taken (each group
    proportionally, at least one cell). ``source="table"``: any numeric table (rows x columns; the
    heatmap stage reads it from a CSV file or takes :func:`scclust.datasets.heatmap_example`);
    ``adata`` is not used and may be ``None``.

    Genes: ``genes`` when given (absent ones are warned about and skipped), else the top
    ``n_top_genes`` markers of each group of the first ``groupby`` column by
    ``sc.tl.rank_genes_groups`` (t-test, scanpy's default). If ``.uns["rank_genes_groups"]`` already
    holds a ranking for that ``groupby`` it is reused; otherwise scanpy runs on a minimal private
    AnnData (the expression used here + the group labels), so the user's AnnData is not modified.

    Parameters
    ----------
    adata
        Annotated data matrix (not needed for ``source="table"``).
    source
        Which matrix, see above.
    table
        The numeric table (``source="table"``).
    table_annotations
        Column annotations of a table: one row per table column (indexed by the table's column
        names), one annotation per column.
    column_pattern
        Regular expression with named groups applied to the table's column names; each group
        becomes a column annotation (e.g. ``"(?P<condition>ctrl|stim)_(?P<donor>\\d+)"``).
    groupby
        ``.obs`` column(s) defining the groups (required unless ``source="table"``).
    genes
        Rows of the matrix; ``None`` takes top markers.
    n_top_genes
        Markers per group when ``genes`` is ``None``.
    use_raw
        Read expression from ``.raw`` (``None``: when present, as scanpy does).
    max_cells
        Largest number of cells shown with ``source="cells"``.
    annotations
        Further ``.obs`` columns shown as column annotation bars (per group: the most frequent
        value; per cell: the value).
    random_state
        Seed of the cell subsample.

    Returns
    -------
    A :class:`HeatmapInput`: ``data`` (rows x columns), ``col_annotations`` (indexed by the
    columns) and ``row_annotations`` (``marker_of`` when markers were selected; the planted group
    for the built-in example).
    """
    if source not in SOURCES:
        raise ConfigError(f"source {source!r} is not valid; choose from {choices(SOURCES)}")
    if source == "table":
        return _table_input(table, table_annotations, column_pattern)
    if adata is None:
        raise InputError(f"source {source!r} needs an AnnData; pass one or use source='table'")
    if table is not None or table_annotations is not None or column_pattern is not None:
        raise ConfigError(
            f"table, table_annotations and column_pattern apply to source='table' only (source is {source!r})"
        )
    if groupby is None:
        raise ConfigError(
            f"source {source!r} needs groupby (an .obs column such as a clustering); .obs has: "
            f"{choices(adata.obs.columns)}"
        )
    keys = [groupby] if isinstance(groupby, str) else list(groupby)
    if not keys:
        raise ConfigError("groupby must name at least one .obs column")
    for key in [*keys, *annotations]:
        if key not in adata.obs.columns:
            raise MissingKeyError(f"{key!r} not in .obs; available: {choices(adata.obs.columns)}")
    if n_top_genes < 1:
        raise ConfigError(f"n_top_genes must be >= 1; got {n_top_genes}")
    if max_cells < 2:
        raise ConfigError(f"max_cells must be >= 2; got {max_cells}")

    raw = adata.raw if (use_raw is None or use_raw) and adata.raw is not None else None
    if use_raw and adata.raw is None:
        raise MissingKeyError("use_raw=True but the AnnData has no .raw; set use_raw to false")
    X = raw.X if raw is not None else adata.X
    var_names = pd.Index(raw.var_names if raw is not None else adata.var_names)
    labels = adata.obs[keys[0]].astype("category")

    row_ann = None
    if genes is not None:
        present = [g for g in dict.fromkeys(genes) if g in var_names]
        missing = [g for g in genes if g not in var_names]
        hint = did_you_mean(missing, var_names) if missing else ""
        if len(present) < 2:
            raise InputError(
                "fewer than 2 of the given genes are in the data"
                + (f"; {hint}" if hint else f" (its {len(var_names)} genes are named like {choices(var_names[:3])})")
            )
        if missing:
            warn(
                f"{len(missing)} gene(s) not found and skipped: {choices(missing, 10)}" + (f"; {hint}" if hint else "")
            )
        rows = present
    else:
        marker_of = _top_markers(adata, X, var_names, labels, keys[0], n_top_genes, use_raw=raw is not None)
        rows = list(marker_of)
        row_ann = pd.DataFrame(
            {"marker_of": pd.Categorical(list(marker_of.values()), categories=list(labels.cat.categories))},
            index=pd.Index(rows, name=None),
        )
    cols = var_names.get_indexer(rows)
    sub = X[:, cols]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub, dtype=np.float64)

    if source == "cluster_means":
        obs = adata.obs[keys].copy()
        for k in keys:
            obs[k] = obs[k].astype("category")
        grouped = obs.groupby(keys, observed=True, sort=True)
        names, means, ann_rows = [], [], []
        for combo, idx in grouped.indices.items():
            combo = combo if isinstance(combo, tuple) else (combo,)
            names.append(" | ".join(map(str, combo)))
            means.append(sub[idx].mean(axis=0))
            row = dict(zip(keys, map(str, combo), strict=True))
            for a in annotations:
                vals = adata.obs[a].iloc[idx]
                row[a] = vals.mode(dropna=True).iloc[0] if vals.notna().any() else np.nan
            ann_rows.append(row)
        data = pd.DataFrame(np.column_stack(means), index=rows, columns=names)
        col_ann = pd.DataFrame(ann_rows, index=names)
        for k in keys:
            cats = [str(c) for c in obs[k].cat.categories]
            col_ann[k] = pd.Categorical(col_ann[k], categories=[c for c in cats if c in set(col_ann[k])])
    else:
        take = _stratified(labels.cat.codes.to_numpy(), max_cells, random_state)
        if take.size < adata.n_obs:
            logger.info("heatmap: %d of %d cells shown (stratified by %r)", take.size, adata.n_obs, keys[0])
        data = pd.DataFrame(sub[take].T, index=rows, columns=adata.obs_names[take])
        col_ann = adata.obs.iloc[take][[*keys, *[a for a in annotations if a not in keys]]].copy()
    return HeatmapInput(data=data, col_annotations=col_ann, row_annotations=row_ann)


def _stratified(codes: np.ndarray, max_cells: int, random_state: int) -> np.ndarray:
    """Positions of at most ~``max_cells`` cells, each group proportionally (>= 1 cell), sorted."""
    n = codes.size
    if n <= max_cells:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    take = []
    for g in np.unique(codes):
        idx = np.flatnonzero(codes == g)
        m = min(idx.size, max(1, round(max_cells * idx.size / n)))
        take.append(rng.choice(idx, m, replace=False))
    return np.sort(np.concatenate(take))


def _top_markers(adata, X, var_names, labels, key, n_top, *, use_raw) -> dict[str, str]:
    """gene -> group it is a top marker of (first group wins for a shared gene)."""
    import scanpy as sc

    prev = adata.uns.get("rank_genes_groups")
    if prev is not None and prev.get("params", {}).get("groupby") == key and "names" in prev:
        logger.info("heatmap: reusing .uns['rank_genes_groups'] (groupby=%r)", key)
        names = prev["names"]
    else:
        if labels.cat.categories.size < 2:
            raise InputError(f"groupby {key!r} has one group only; markers need at least two")
        tmp = AnnData(
            X=X, obs=pd.DataFrame({key: labels.to_numpy()}, index=adata.obs_names), var=pd.DataFrame(index=var_names)
        )
        tmp.obs[key] = tmp.obs[key].astype("category")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sc.tl.rank_genes_groups(tmp, key, method="t-test", use_raw=False, n_genes=max(n_top * 4, 50))
        names = tmp.uns["rank_genes_groups"]["names"]
    out: dict[str, str] = {}
    for g in labels.cat.categories:
        if str(g) not in names.dtype.names:
            continue
        for gene in list(names[str(g)])[:n_top]:
            out.setdefault(str(gene), str(g))
    if len(out) < 2:
        raise InputError(f"fewer than 2 marker genes found for groupby {key!r}")
    return out


def _table_input(
    data: pd.DataFrame | None, table_annotations: pd.DataFrame | None, column_pattern: str | None
) -> HeatmapInput:
    if data is None:
        raise ConfigError("source 'table' needs table (a numeric DataFrame)")
    non_numeric = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
    if non_numeric:
        raise InputError(
            f"the table has non-numeric column(s) {choices(non_numeric, 5)}; keep only values (row names first)"
        )
    data = data.astype(np.float64)
    col_ann = None
    if table_annotations is not None:
        ann = table_annotations.copy()
        ann.index = ann.index.astype(str)
        missing = [c for c in data.columns if str(c) not in ann.index]
        if missing:
            raise InputError(f"table_annotations has no row for column(s) {choices(missing, 5)}")
        col_ann = ann.loc[[str(c) for c in data.columns]]
        col_ann.index = data.columns
    if column_pattern is not None:
        try:
            rx = re.compile(column_pattern)
        except re.error as err:
            raise ConfigError(f"column_pattern {column_pattern!r} is not a regular expression: {err}") from None
        if not rx.groupindex:
            raise ConfigError(f"column_pattern {column_pattern!r} has no named group such as (?P<condition>...)")
        parsed = {}
        for c in data.columns:
            m = rx.search(str(c))
            if m is None:
                raise InputError(f"column_pattern {column_pattern!r} does not match column {str(c)!r}")
            parsed[c] = m.groupdict()
        extra = pd.DataFrame.from_dict(parsed, orient="index")
        col_ann = extra if col_ann is None else col_ann.join(extra, rsuffix="_pattern")
    return HeatmapInput(data=data, col_annotations=col_ann, row_annotations=None)


# ------------------------------------------------------------------------------------------ cluster
def _check(args: dict) -> None:
    """Cross-parameter rule (a call's arguments and a config section alike)."""
    for axis in ("row", "col"):
        check_linkage_metric(
            args[f"{axis}_method"], args[f"{axis}_metric"], allow_non_euclidean=None, prefix=f"{axis}_"
        )


@validated(check=_check)
def cluster_heatmap(
    data: pd.DataFrame,
    *,
    scale: Literal["zscore", "standard", "none"] = "zscore",
    row_metric: Distance = "correlation",
    row_method: Linkage = "average",
    col_metric: Distance = "correlation",
    col_method: Linkage = "average",
    cluster_rows: bool = True,
    cluster_cols: bool = True,
    optimal_ordering: bool = False,
    row_k: PositiveInt | None = None,
    n_boot: Annotated[int, Field(ge=0)] = 100,
    nonfinite: Literal["raise", "drop"] = "raise",
    random_state: int = 0,
    name: str = "heatmap",
) -> ClusteredHeatmap:
    """Scale the rows of a matrix, cluster rows and columns, cut the row tree, test its groups.

    Scaling is per row: ``"zscore"`` (subtract the row mean, divide by the row standard deviation,
    ``ddof=1`` as pandas), ``"standard"`` (seaborn's ``standard_scale``: (x - min) / (max - min)) or
    ``"none"``. Distances are ``scipy.spatial.distance.pdist`` with ``row_metric`` / ``col_metric``
    on the scaled matrix; trees are ``scipy.cluster.hierarchy.linkage`` with ``row_method`` /
    ``col_method`` and ``optimal_ordering`` (Bar-Joseph et al. 2001); leaf orders are
    ``leaves_list``. The row tree is cut into ``row_k`` groups with ``fcluster(..., "maxclust")``.

    Guards: rows with NaN or inf raise (``nonfinite="raise"``) or are dropped (``"drop"``); rows
    with zero variance under ``"zscore"`` (zero range under ``"standard"``), constant rows / columns
    under the correlation metric and all-zero ones under cosine are dropped. Every dropped row and
    column is listed in ``dropped`` with its reason and logged. ``centroid``, ``median`` and
    ``ward`` need the Euclidean metric (scipy: they are only correctly defined for Euclidean
    distances) and raise otherwise.

    Stability (when ``row_k`` is set and ``n_boot > 0``): the columns (the variables the rows are
    clustered on) are resampled with replacement ``n_boot`` times, as pvclust does (Suzuki &
    Shimodaira 2006); each replicate is scaled, clustered and cut again with the same settings,
    and each original group gets its best-match Jaccard similarity with the replicate's groups, as
    in fpc::clusterboot (Hennig 2007). Reported per group: the mean Jaccard and the fraction of
    replicates in which it was recovered (Jaccard > 0.75) or dissolved (<= 0.5). Hennig reads a
    mean above 0.85 as highly stable and below 0.6 as not stable. Replicates in which a row
    becomes constant (distances undefined) are skipped and counted.

    Parameters
    ----------
    data
        Rows x columns numeric matrix (e.g. genes x clusters); rows are scaled and cut.
    scale
        Row scaling, see above.
    row_metric, col_metric
        Distance metric per axis: one of :data:`METRICS`.
    row_method, col_method
        Linkage method per axis: one of :data:`METHODS`.
    cluster_rows, cluster_cols
        Cluster that axis (otherwise the input order is kept).
    optimal_ordering
        Reorder the leaves of both trees so that neighbouring leaves are as similar as possible
        (the partition is unchanged).
    row_k
        Cut the row tree into this many groups (``None``: no cut, no stability).
    n_boot
        Bootstrap replicates for the stability of the row groups (0: none).
    nonfinite
        What to do with rows holding NaN or inf.
    random_state
        Seed of the bootstrap.
    name
        Name of the result (figure title, file names).

    Returns
    -------
    A :class:`ClusteredHeatmap`.
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    if data.shape[0] < 2 or data.shape[1] < 2:
        raise InputError(
            f"a clustered heatmap needs at least 2 rows and 2 columns; got {data.shape[0]} x {data.shape[1]}"
        )
    try:
        values = data.astype(np.float64)
    except (TypeError, ValueError):
        bad = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
        raise InputError(f"the matrix has non-numeric column(s) {choices(bad, 5)}") from None
    dropped: list[tuple[str, str, str]] = []

    finite = np.isfinite(values.to_numpy()).all(axis=1)
    if not finite.all():
        bad = values.index[~finite]
        if nonfinite == "raise":
            raise InputError(
                f"{bad.size} row(s) have NaN or inf values (first: {str(bad[0])!r}); fix them or set nonfinite='drop'"
            )
        dropped += [("row", str(r), "NaN or inf value") for r in bad]
        values = values.loc[finite]

    scaled, invalid = _scale(values.to_numpy(), scale)
    reason = {"zscore": "zero variance (z-score undefined)", "standard": "zero range (scaling undefined)"}.get(
        scale, ""
    )
    dropped += [("row", str(r), reason) for r in values.index[invalid]]
    keep = ~invalid
    if cluster_rows:
        bad_rows = _undefined(scaled, row_metric) & keep
        dropped += [
            ("row", str(r), f"{_undefined_reason(row_metric)} ({row_metric} undefined)") for r in values.index[bad_rows]
        ]
        keep &= ~bad_rows
    values = values.loc[keep]
    scaled = scaled[keep]
    if cluster_cols and len(values) >= 2:
        bad_cols = _undefined(scaled.T, col_metric)
        dropped += [
            ("column", str(c), f"{_undefined_reason(col_metric)} ({col_metric} undefined)")
            for c in values.columns[bad_cols]
        ]
        values = values.loc[:, ~bad_cols]
        scaled = scaled[:, ~bad_cols]
    dropped_df = pd.DataFrame(dropped, columns=["axis", "label", "reason"])
    if len(dropped_df):
        logger.warning(
            "heatmap %s: dropped %d row(s) / column(s): %s",
            name,
            len(dropped_df),
            "; ".join(f"{a} {lab!r}: {r}" for a, lab, r in dropped[:5]) + (" ..." if len(dropped) > 5 else ""),
        )
    if scaled.shape[0] < 2 or scaled.shape[1] < 2:
        raise InputError(f"fewer than 2 rows or columns left after dropping {len(dropped_df)} (see the reasons logged)")
    if row_k is not None and row_k > scaled.shape[0]:
        raise ConfigError(f"row_k={row_k} is larger than the number of rows ({scaled.shape[0]})")
    scaled_df = pd.DataFrame(scaled, index=values.index, columns=values.columns)

    row_Z = col_Z = None
    row_order = np.arange(scaled.shape[0])
    col_order = np.arange(scaled.shape[1])
    if cluster_rows:
        row_Z = linkage(_pdist(scaled, row_metric), method=row_method, optimal_ordering=optimal_ordering)
        row_order = leaves_list(row_Z)
    if cluster_cols:
        col_Z = linkage(_pdist(scaled.T, col_metric), method=col_method, optimal_ordering=optimal_ordering)
        col_order = leaves_list(col_Z)

    groups = stability = None
    if row_k is not None:
        if row_Z is None:
            raise ConfigError("row_k needs cluster_rows=True")
        cut = fcluster(row_Z, row_k, criterion="maxclust")
        groups = _number_top_down(cut, row_order)
        if n_boot > 0:
            stability = _bootstrap(
                values.to_numpy(),
                groups,
                scale=scale,
                metric=row_metric,
                method=row_method,
                k=row_k,
                n_boot=n_boot,
                random_state=random_state,
            )
        groups = pd.Series(
            pd.Categorical(groups.astype(str), categories=[str(g) for g in range(1, groups.max() + 1)]),
            index=values.index,
            name="group",
        )

    params = {
        "scale": scale,
        "row_metric": row_metric,
        "row_method": row_method,
        "col_metric": col_metric,
        "col_method": col_method,
        "cluster_rows": cluster_rows,
        "cluster_cols": cluster_cols,
        "optimal_ordering": optimal_ordering,
        "row_k": row_k,
        "n_boot": n_boot,
        "nonfinite": nonfinite,
        "random_state": random_state,
    }
    caption = _caption(params, scaled.shape, dropped_df, stability)
    return ClusteredHeatmap(
        data=scaled_df,
        values=values,
        row_linkage=row_Z,
        col_linkage=col_Z,
        row_order=row_order,
        col_order=col_order,
        row_groups=groups,
        stability=stability,
        dropped=dropped_df,
        params=params,
        caption=caption,
        name=name,
    )


def _scale(X: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Scaled rows and a mask of rows for which the scaling is undefined (set to 0)."""
    if scale == "none":
        return X.copy(), np.zeros(X.shape[0], dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        if scale == "zscore":
            center = X.mean(axis=1, keepdims=True)
            spread = X.std(axis=1, ddof=1, keepdims=True)
        else:
            center = X.min(axis=1, keepdims=True)
            spread = X.max(axis=1, keepdims=True) - center
        tol = 1e-12 * np.maximum(1.0, np.abs(X).max(axis=1, keepdims=True))
        invalid = (spread <= tol).ravel()
        out = (X - center) / np.where(invalid[:, None], 1.0, spread)
    out[invalid] = 0.0
    return out, invalid


def _undefined(X: np.ndarray, metric: str) -> np.ndarray:
    """Rows for which ``metric`` is undefined: constant (correlation) or all-zero (cosine)."""
    if metric == "correlation":
        return np.ptp(X, axis=1) <= 1e-12 * np.maximum(1.0, np.abs(X).max(axis=1))
    if metric == "cosine":
        return ~(np.abs(X) > 0).any(axis=1)
    return np.zeros(X.shape[0], dtype=bool)


def _undefined_reason(metric: str) -> str:
    return "all zero" if metric == "cosine" else "constant"


def _pdist(X: np.ndarray, metric: str) -> np.ndarray:
    from scipy.spatial.distance import pdist

    with np.errstate(invalid="ignore", divide="ignore"):
        y = pdist(X, metric=metric)
    if metric in ("correlation", "cosine"):
        y = np.clip(y, 0.0, None)  # rounding can give -1e-16
    return y


def _number_top_down(cut: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Renumber fcluster ids 1..k by first appearance in the leaf order (group 1 at the top)."""
    first = {}
    for pos in order:
        first.setdefault(int(cut[pos]), len(first) + 1)
    return np.array([first[int(c)] for c in cut], dtype=np.int64)


def _bootstrap(
    values: np.ndarray, groups: np.ndarray, *, scale, metric, method, k, n_boot, random_state
) -> pd.DataFrame:
    """Per group: best-match Jaccard over column-bootstrap replicates (see :func:`cluster_heatmap`)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(random_state)
    n_groups = int(groups.max())
    A = np.stack([groups == g for g in range(1, n_groups + 1)]).astype(np.float64)  # groups x rows
    sizes = A.sum(axis=1)
    jac = []
    skipped = 0
    n_cols = values.shape[1]
    for _ in range(n_boot):
        cols = rng.integers(0, n_cols, n_cols)
        scaled, invalid = _scale(values[:, cols], scale)
        if invalid.any() or _undefined(scaled, metric).any():
            skipped += 1
            continue
        y = _pdist(scaled, metric)
        if not np.isfinite(y).all():
            skipped += 1
            continue
        cut = fcluster(linkage(y, method=method), k, criterion="maxclust")
        B = np.stack([cut == c for c in np.unique(cut)]).astype(np.float64)
        inter = A @ B.T
        union = sizes[:, None] + B.sum(axis=1)[None, :] - inter
        jac.append((inter / union).max(axis=1))
    if skipped:
        logger.warning(
            "heatmap stability: %d of %d bootstrap replicates skipped (a row became constant)", skipped, n_boot
        )
    J = np.array(jac).reshape(-1, n_groups)
    used = J.shape[0]
    with np.errstate(invalid="ignore"):
        df = pd.DataFrame(
            {
                "group": [str(g) for g in range(1, n_groups + 1)],
                "n_rows": sizes.astype(int),
                "mean_jaccard": J.mean(axis=0) if used else np.nan,
                "recovered": (J > RECOVERED).mean(axis=0) if used else np.nan,
                "dissolved": (J <= DISSOLVED).mean(axis=0) if used else np.nan,
                "n_boot": used,
            }
        )
    return df.set_index("group")


def _caption(
    params: dict[str, Any], shape: tuple[int, int], dropped: pd.DataFrame, stability: pd.DataFrame | None
) -> str:
    opt = ", optimal leaf ordering" if params["optimal_ordering"] else ""
    parts = [f"{shape[0]} rows x {shape[1]} columns, {_SCALE_TEXT[params['scale']]}."]
    parts.append(
        f"Rows: {params['row_metric']} distance, {params['row_method']} linkage{opt}."
        if params["cluster_rows"]
        else "Rows: input order."
    )
    parts.append(
        f"Columns: {params['col_metric']} distance, {params['col_method']} linkage{opt}."
        if params["cluster_cols"]
        else "Columns: input order."
    )
    if params["row_k"] is not None:
        parts.append(f"Row tree cut into {params['row_k']} groups.")
    if stability is not None:
        parts.append(f"Stability: mean best-match Jaccard over {int(stability['n_boot'].iloc[0])} column bootstraps.")
    if len(dropped):
        n_r = int((dropped["axis"] == "row").sum())
        n_c = int((dropped["axis"] == "column").sum())
        parts.append(f"Dropped: {n_r} row(s), {n_c} column(s) (see table).")
    return " ".join(parts)
