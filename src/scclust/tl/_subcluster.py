"""Subclustering: select a group of clusters, re-process the subset from ``.raw``, cluster it again.

Step 9 of the NBIS clustering lab without hand-picked cluster ids. The subset is re-processed with
the package's own pieces (:func:`scclust.pp.highly_variable_genes`, :func:`~scclust.pp.scale_pca`,
:func:`~scclust.pp.harmony`, :func:`~scclust.pp.neighbors`, :func:`~scclust.tl.leiden`,
:func:`~scclust.pp.umap`), and the labels are mapped back to the parent with
:func:`transfer_subclusters`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import BeforeValidator, Field, model_validator
from scipy import sparse

from .._checks import check_obs
from .._errors import ConfigError, InputError, MissingKeyError, choices, warn
from .._memory import Estimate, check_fits, fmt_bytes
from .._params import Group, params_model, validated
from .._types import GeneList, PositiveInt, as_list
from ..pp._prepare import HVG, HVG_ASSUMED, PCA, Graph, Umap, _embed, _reduce
from ._leiden import leiden as tl_leiden

logger = logging.getLogger(__name__)

#: Value written into the parent for cells outside the subset.
NOT_IN_SUBSET = "not in subset"

#: A marker set whose highest and lowest cluster scores differ by less than this (log-expression
#: units) does not discriminate clusters; it selects nothing.
MIN_SCORE_RANGE = 0.1


@dataclass
class SubclusterReport:
    """What :func:`subcluster` chose and found; :meth:`tables` gives them as named DataFrames."""

    name: str
    #: one row per parent cluster (or per selection for ``select="obs"``): sizes, marker scores, chosen
    selection: pd.DataFrame
    #: parent cluster ids chosen (empty for ``select="obs"``)
    selected: list[str]
    n_cells: int
    #: cells per sample in the parent and in the subset
    cells_per_sample: pd.DataFrame
    #: counts: parent HVGs, subset HVGs, both
    hvg_overlap: pd.DataFrame
    #: one row per gene that is an HVG of the parent or the subset: ``parent``, ``subset`` flags
    hvg_genes: pd.DataFrame
    #: parent cluster x subcluster counts, one table per subclustering key
    contingency: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: ``.obs`` keys actually regressed out (constant ones are dropped)
    regressed: list[str] = field(default_factory=list)
    #: batches dropped for having too few cells (``small_batches="drop"``): name -> cells
    dropped_batches: dict[str, int] = field(default_factory=dict)
    #: subclustering keys in the subset's ``.obs`` (``f"{key_added}_{resolution}"``)
    keys: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table by name: ``selection``, ``hvg_overlap``, ``hvg_genes``, ``cells_per_sample``,
        ``contingency_{key}``."""
        out = {
            "selection": self.selection,
            "hvg_overlap": self.hvg_overlap,
            "hvg_genes": self.hvg_genes,
            "cells_per_sample": self.cells_per_sample,
        }
        out.update({f"contingency_{k}": v for k, v in self.contingency.items()})
        return out


class Selection(Group):
    """Which cells a subclustering takes: exactly one of ``markers``, ``clusters`` or ``obs_query``."""

    markers: dict[str, GeneList] | None = Field(
        None,
        description="marker sets {name: [genes]}: a cluster of groupby is selected when its scaled mean "
        "expression of any set reaches min_score (e.g. {T: [CD3E], NK: [GNLY, NKG7]})",
    )
    clusters: Annotated[list[str], BeforeValidator(lambda v: [str(c) for c in as_list(v)])] | None = Field(
        None, description="cluster ids of groupby to take (e.g. [1, 3, 4])"
    )
    obs_query: str | None = Field(
        None, description="a condition on .obs columns (pandas eval), e.g. \"cell_type in ['CD4 T', 'CD8 T']\""
    )
    min_score: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5,
        description="markers: scaled score (0-1, between the least and the most expressing cluster) a cluster "
        "needs in at least one set",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Selection:
        given = [k for k in ("markers", "clusters", "obs_query") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of markers, clusters or obs_query" + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def by(self) -> str:
        return "markers" if self.markers is not None else "clusters" if self.clusters is not None else "obs"


#: the subset's graph: the lab's 10 neighbours on 30 dimensions
SubclusterGraph = Graph.with_defaults("SubclusterGraph", n_neighbors=10, n_pcs=30)
#: the subset's Leiden: ``flavor="auto"``: leidenalg to convergence (``sc.tl.leiden``'s default) up to 50,000
#: cells, igraph (2 iterations) above; labels ``{key_added}_{r}``
#: with ``key_added`` the subclustering's name unless given
SubclusterLeiden = params_model(
    tl_leiden, name="SubclusterLeiden", base=Group, include=("resolutions", "flavor", "n_iterations", "key_added")
)
SubclusterLeiden = SubclusterLeiden.with_defaults(
    "SubclusterLeiden", resolutions=[0.6], flavor="auto", n_iterations=-1, key_added=None
)


def _check(args: dict) -> None:
    if args["select"].by in ("markers", "clusters") and not args.get("groupby"):
        raise ValueError(f"selecting by {args['select'].by} needs groupby, the parent clustering to select from")
    if args["hvg"].flavor == "seurat_v3":
        raise ValueError("hvg.flavor 'seurat_v3' needs counts, which .raw does not hold; use 'seurat' or 'cell_ranger'")
    if args["min_cells"] < args["graph"].n_neighbors:
        raise ValueError(
            f"min_cells ({args['min_cells']}) must be at least graph.n_neighbors ({args['graph'].n_neighbors})"
        )


@validated(check=_check)
def subcluster(
    adata: AnnData,
    *,
    name: str = "subset",
    select: Selection,
    groupby: str | None = None,
    min_cells: Annotated[int, Field(ge=3)] = 50,
    batch_key: str | None = "sample",
    min_cells_per_batch: PositiveInt = 10,
    small_batches: Literal["error", "drop"] = "error",
    hvg: HVG = HVG(),
    pca: PCA = PCA(),
    graph: SubclusterGraph = SubclusterGraph(),
    leiden: SubclusterLeiden = SubclusterLeiden(),
    umap: Umap | None = Umap(),
    random_state: int = 0,
) -> tuple[AnnData, SubclusterReport]:
    """Select cells, re-process them from ``.raw`` and cluster them again (the lab's step 9).

    **Selection** (``select``, exactly one rule):

    - ``markers``: a rule on the clusters of ``groupby``, no hard-coded ids. For each marker set
      (``{T: [CD3E], NK: [GNLY, NKG7]}`` selects the lab's T/NK cells) a cluster's score is the
      mean over the set's genes of the cluster's mean log-expression in ``.raw``; scores are min-max
      scaled across clusters and a cluster is selected when its scaled score is at least
      ``min_score`` for any set (``0.5``: above half-way between the least and the most expressing
      cluster). A set whose cluster scores span less than :data:`MIN_SCORE_RANGE` selects nothing.
      Genes absent from ``.raw`` are skipped with a warning; a set with none of its genes is an error.
    - ``clusters``: the clusters of ``groupby`` listed (the lab: ``leiden_0.4`` ``["1", "3", "4"]``).
    - ``obs_query``: the cells for which the condition on ``.obs`` is true
      (:meth:`pandas.DataFrame.eval`, e.g. ``"cell_type in ['CD4 T', 'CD8 T']"``).

    **Re-processing**: :func:`scclust.pp.reprocess` on the subset's log-normalized expression of
    every gene (from ``.raw``; the subset's ``.raw`` is the full subset): HVGs, regress out
    (constant covariates are dropped with a warning), scale, PCA, Harmony on ``batch_key``
    (``None`` or one batch: skipped), the kNN graph; then Leiden at each resolution and the UMAP.

    **Out of core**: when the parent comes from the out-of-core ``prepare`` at a size where its
    ``.raw`` holds only some genes, the subset's counts are read lazily from the counts store (only
    its cells' chunks) and re-processed on Dask (the same numbers as in memory); the subset's
    ``.raw`` then holds its HVGs and the parent's ``.raw`` genes. The caller provides the Dask
    cluster (the subcluster stage opens the run's).

    Parameters
    ----------
    adata
        The parent: an integrated AnnData with ``.raw`` (log-normalized expression of all genes).
        It is not modified; see :func:`transfer_subclusters`.
    name
        Name of this subclustering (the prefix of the labels written back to the parent).
    select
        The selection rule: a :class:`Selection` or a mapping with one of ``markers``, ``clusters``,
        ``obs_query`` (and ``min_score``).
    groupby
        Parent clustering to select from (``markers`` / ``clusters``); also the rows of the
        contingency tables.
    min_cells
        Fewest cells the subset may have.
    batch_key
        ``.obs`` column for Harmony and the cells-per-sample table; ``None`` (or a column the parent
        does not have, left at its default): no Harmony.
    min_cells_per_batch
        Fewest cells a batch needs for Harmony.
    small_batches
        What to do with smaller batches: ``"error"``, or ``"drop"`` their cells (reported).
    hvg
        The subset's highly variable genes: :func:`scclust.pp.highly_variable_genes`'s options
        (``seurat_v3`` is not offered: ``.raw`` holds no counts).
    pca
        Regress out, scale, PCA: :func:`scclust.pp.scale_pca`'s options.
    graph
        The subset's kNN graph: :func:`scclust.pp.neighbors`'s options.
    leiden
        Leiden on the subset's graph: :func:`scclust.tl.leiden`'s options; the labels are
        ``f"{key_added}_{resolution}"`` with ``key_added`` the subclustering's ``name`` unless given.
    umap
        The subset's UMAP (``.obsm["X_umap"]``): :func:`scclust.pp.umap`'s options; ``None``: none.
    random_state
        Seed of PCA, Harmony, the graph, Leiden and UMAP.

    Returns
    -------
    ``(subset, report)``. The subset AnnData holds the subset's highly variable genes in ``.X``
    (regressed, scaled), ``.raw`` = every gene of the subset (log-normalized), the parent's ``.obs``
    columns, and

    - ``.var["highly_variable"]`` etc. (in ``.raw.var``), ``.obsm["X_pca"]``,
      ``.obsm["X_pca_harmony"]`` (when Harmony ran), ``.obsm["X_umap"]``;
    - ``.obsp["connectivities"]``, ``.obsp["distances"]``, ``.uns["neighbors"]``;
    - ``.obs[f"{key_added}_{r}"]`` for each resolution ``r`` and ``.uns[key_added]`` (Leiden summary);
    - ``.uns["subcluster"]``: ``name``, ``groupby``, ``select``, ``selected``, ``keys``,
      ``batch_key``, ``regressed``, HVG counts and ``params_json``.

    The :class:`SubclusterReport` holds the selection scores, HVG overlap (counts and genes), cells
    per sample and the contingency tables.
    """
    from .. import pp
    from .._keys import leiden_keys

    params = {
        "name": name,
        "select": select.model_dump(),
        "groupby": groupby,
        "min_cells": min_cells,
        "batch_key": batch_key,
        "min_cells_per_batch": min_cells_per_batch,
        "small_batches": small_batches,
        "hvg": hvg.model_dump(),
        "pca": pca.model_dump(),
        "graph": graph.model_dump(),
        "leiden": leiden.model_dump(),
        "umap": umap.model_dump() if umap is not None else None,
        "random_state": random_state,
    }
    if adata.raw is None and not _from_store(adata):
        raise InputError(
            "subcluster needs .raw (log-normalized expression of all genes) to re-process the subset; "
            "set adata.raw = adata right after normalize + log1p (scclust.pp.prepare does)"
        )
    for key in pca.regress_out:
        check_obs(adata, key, what="pca.regress_out key")
    if hvg.batch_key is not None:
        check_obs(adata, hvg.batch_key, what="hvg.batch_key")
    if batch_key is not None and batch_key not in adata.obs:
        logger.info(
            "subcluster %r: batch_key %r is not a column of the data: one batch, Harmony skipped", name, batch_key
        )
        batch_key = None

    sub, table, selected, dropped = _select_subset(
        adata,
        name=name,
        groupby=groupby,
        select=select,
        min_cells=min_cells,
        batch_key=batch_key,
        min_cells_per_batch=min_cells_per_batch,
        small_batches=small_batches,
        hvg=hvg,
        pca=pca,
        graph=graph,
    )
    key_added = leiden.key_added or name
    # ---- HVGs, scale, PCA, Harmony, graph (the chain prepare runs), then Leiden and UMAP
    regressed = _regressable(sub, name, pca.regress_out)
    if pp.is_lazy(sub):
        sub = _lognorm_lazy(adata, sub, name)
    raw_genes = list(adata.raw.var_names) if pp.is_lazy(sub) and adata.raw is not None else None
    out = _reduce(
        sub,
        hvg=hvg,
        pca=pca.model_copy(update={"regress_out": regressed}),
        random_state=random_state,
        raw_genes=raw_genes,
        seconds=None,
        what=f"subcluster {name!r}",
    )
    hvg_overlap, hvg_genes = _hvg_overlap(adata, out.raw)
    out.uns.pop("hvg_table", None)
    if "counts_store" in adata.uns and pp.is_lazy(sub):
        out.uns["counts_store"] = dict(adata.uns["counts_store"])
    _embed(
        out,
        batch_key=batch_key,
        min_cells_per_batch=min_cells_per_batch,
        graph=graph,
        random_state=random_state,
        seconds=None,
        what=f"subcluster {name!r}",
    )
    sub = out
    tl_leiden(
        sub,
        resolutions=leiden.resolutions,
        key_added=key_added,
        flavor=leiden.flavor,
        n_iterations=leiden.n_iterations,
        random_state=random_state,
    )
    keys = leiden_keys(key_added, leiden.resolutions)
    if umap is not None:
        pp.umap(sub, key_added="X_umap", **umap.model_dump(), random_state=random_state)

    # ---- report
    sample_key = batch_key if batch_key is not None else ("sample" if "sample" in adata.obs else None)
    cells_per_sample = _cells_per_sample(adata, sub, sample_key)
    contingency = {}
    if groupby is not None and groupby in sub.obs:
        for key in keys:
            contingency[key] = pd.crosstab(sub.obs[groupby], sub.obs[key]).rename_axis(index=groupby, columns=key)
    n_hvg = hvg_overlap.set_index("set")["n_genes"]
    sub.uns["subcluster"] = {
        "name": name,
        "groupby": groupby or "",
        "select": select.by,
        "selected": list(selected),
        "keys": keys,
        "batch_key": batch_key or "",
        "regressed": regressed,
        "n_hvg_parent": int(n_hvg["parent"]),
        "n_hvg_subset": int(n_hvg["subset"]),
        "n_hvg_both": int(n_hvg["both"]),
        "params_json": json.dumps(params),
    }
    report = SubclusterReport(
        name=name,
        selection=table,
        selected=list(selected),
        n_cells=sub.n_obs,
        cells_per_sample=cells_per_sample,
        hvg_overlap=hvg_overlap,
        hvg_genes=hvg_genes,
        contingency=contingency,
        regressed=regressed,
        dropped_batches=dropped,
        keys=keys,
    )
    logger.info(
        "subcluster %r: %d cells, HVGs parent/subset/both %d/%d/%d, %s",
        name,
        sub.n_obs,
        n_hvg["parent"],
        n_hvg["subset"],
        n_hvg["both"],
        ", ".join(f"{k}: {sub.obs[k].cat.categories.size} clusters" for k in keys),
    )
    return sub, report


def _select_subset(
    adata: AnnData,
    *,
    name,
    groupby,
    select: Selection,
    min_cells,
    batch_key,
    min_cells_per_batch,
    small_batches,
    hvg: HVG,
    pca: PCA,
    graph: Graph,
) -> tuple[AnnData, pd.DataFrame, list[str], dict[str, int]]:
    """The selected cells with all genes from ``.raw`` (small batches dropped when asked)."""
    # ---- selection
    if select.by == "markers":
        mask, table, selected = _select_by_markers(adata, groupby, select.markers, select.min_score)
    elif select.by == "clusters":
        mask, table, selected = _select_by_clusters(adata, groupby, select.clusters)
    else:
        mask, table, selected = _select_by_query(adata, groupby, select.obs_query)
    n_sel = int(mask.sum())
    logger.info(
        "subcluster %r: %d cells selected%s",
        name,
        n_sel,
        f" (clusters {', '.join(selected)} of {groupby})" if selected else "",
    )
    if n_sel < min_cells:
        raise InputError(
            f"subcluster {name!r}: too few cells selected: {n_sel} (need at least min_cells={min_cells}); "
            f"widen the selection or lower min_cells"
        )

    # ---- the subset, all genes, from .raw (or, out of core, only these cells' counts from the store)
    idx = np.flatnonzero(mask)
    if not _from_store(adata):  # before the subset is copied: would its re-processing fit?
        est = memory_estimate(adata.raw.X, idx, hvg, pca, graph)
        check_fits(f"subcluster {name!r} ({n_sel:,} cells)", est)
        logger.info("subcluster %r: estimated peak %s (%s)", name, fmt_bytes(est.total), est.breakdown())
    obs = adata.obs.iloc[idx].copy()
    for col in obs.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].cat.remove_unused_categories()
    if _from_store(adata):
        from ..pp import read_counts

        counts = read_counts(adata[idx])
        kept = np.asarray(adata.uns["counts_store"].get("genes_kept", np.ones(counts.n_vars, bool)), dtype=bool)
        sub = AnnData(
            X=counts.X[:, np.flatnonzero(kept)] if not kept.all() else counts.X,
            obs=obs,
            var=counts.var.loc[kept].copy(),
        )
        logger.info(
            "subcluster %r: counts of %d cells read lazily from %s", name, sub.n_obs, adata.uns["counts_store"]["path"]
        )
    else:
        raw = adata.raw
        X = raw.X[idx]
        X = X.copy() if sparse.issparse(X) else np.array(X)
        sub = AnnData(X=X, obs=obs, var=raw.var.copy())

    dropped: dict[str, int] = {}
    if batch_key is not None:
        counts = sub.obs[batch_key].astype(str).value_counts()
        small = counts[counts < min_cells_per_batch]
        if len(small) and counts.size > 1:
            desc = ", ".join(f"{b} ({n})" for b, n in small.items())
            if small_batches == "error":
                raise InputError(
                    f"subcluster {name!r}: batch(es) of {batch_key!r} with fewer than min_cells_per_batch="
                    f"{min_cells_per_batch} selected cells for Harmony: {desc}; set small_batches='drop', "
                    "lower min_cells_per_batch or set batch_key to null"
                )
            dropped = {str(b): int(n) for b, n in small.items()}
            logger.warning("subcluster %r: dropping %d cells of small batches: %s", name, int(small.sum()), desc)
            keep = ~sub.obs[batch_key].astype(str).isin(small.index).to_numpy()
            sub = sub[keep].copy()
            for col in sub.obs.columns:
                if isinstance(sub.obs[col].dtype, pd.CategoricalDtype):
                    sub.obs[col] = sub.obs[col].cat.remove_unused_categories()
            if sub.n_obs < min_cells:
                raise InputError(
                    f"subcluster {name!r}: too few cells after dropping small batches: {sub.n_obs} "
                    f"(need at least min_cells={min_cells})"
                )

    return sub, table, list(selected), dropped


#: Peak bytes the in-memory re-processing adds per stored value of the subset's ``.raw`` rows
#: (the subset's copy, its HVG columns, the working copies of regress_out and scale)
BYTES_PER_VALUE = 30


def memory_estimate(raw_x, rows: np.ndarray, hvg: HVG, pca: PCA, graph: Graph) -> Estimate:
    """Peak memory :func:`subcluster` adds to re-process ``rows`` of the parent's ``.raw.X`` in memory:
    :data:`BYTES_PER_VALUE` per stored value of those rows, the scaled HVG matrix twice
    (``2 x n x h x 4``, ``h`` = ``hvg.n_top_genes`` or :data:`scclust.pp._prepare.HVG_ASSUMED`), the embeddings
    (``8 x n x n_comps x 4``: PCA, Harmony's copies) and the graph
    (:func:`scclust.pp._neighbors.graph_memory`). Measured with ``benchmarks/subcluster_memory.py``
    (the lab's T/NK rule with regress_out on :func:`scclust.datasets.simulate` data, kernel high-water
    mark over the parent's memory): 11,406 / 16,749 / 35,707 selected cells, 11.4 / 15.4 / 36.2
    million values: 0.42 / 0.56 / 1.19 GB added, estimated 0.57 / 0.73 / 1.46 GB with the HVGs
    chosen (0.79 / 1.05 / 2.18 GB with :data:`scclust.pp._prepare.HVG_ASSUMED`); 23.2 million values, 1,382 HVGs:
    1.01 GB added, estimated 1.07 GB."""
    from ..pp._neighbors import graph_memory

    n = len(rows)
    if not sparse.issparse(raw_x):
        nnz = n * raw_x.shape[1]
    elif raw_x.format == "csr":
        nnz = int(np.diff(raw_x.indptr)[rows].sum())
    else:  # the selected rows' entries counted from the row of each entry, no copy of the matrix
        selected = np.zeros(raw_x.shape[0], dtype=bool)
        selected[rows] = True
        entry_rows = raw_x.indices if raw_x.format == "csc" else sparse.coo_matrix(raw_x).row
        nnz = int(np.count_nonzero(selected[entry_rows]))
    h = min(hvg.n_top_genes or HVG_ASSUMED, raw_x.shape[1])
    c = min(pca.n_comps, n - 1, h - 1)
    d = min(graph.n_pcs or c, c)
    return Estimate(
        parts=(
            (f"expression {nnz:,} values (the subset's copy, its HVGs, working copies)", BYTES_PER_VALUE * nnz),
            (f"scaled HVG matrix {n:,} x {h} float32, twice", 2 * n * h * 4.0),
            (f"embeddings {n:,} x {c} float32, 8 copies", 8 * n * c * 4.0),
            *graph_memory(n, d, graph.n_neighbors, graph.backend),
        ),
        options="a narrower selection, fewer HVGs (hvg.n_top_genes), or the counts out of core (prepare on Dask)",
    )


def _from_store(adata: AnnData) -> bool:
    """The subset's counts come from the counts store (out-of-core prepare whose ``.raw`` holds only some genes)."""
    info = adata.uns.get("counts_store")
    return bool(info) and not bool(info.get("raw_complete", adata.raw is not None))


def _regressable(sub: AnnData, name: str, regress_out) -> list[str]:
    regressed = []
    for key in regress_out:
        vals = sub.obs[key]
        if pd.api.types.is_numeric_dtype(vals):
            v = vals.to_numpy(dtype=float)
            if not np.isfinite(v).all():
                raise InputError(
                    f"regress_out key {key!r} has NaN or inf values in {int((~np.isfinite(v)).sum())} selected cell(s)"
                )
            if np.ptp(v) == 0:
                logger.warning(
                    "subcluster %r: regress_out key %r is constant in the subset (%g); not regressed", name, key, v[0]
                )
                continue
        elif vals.nunique() < 2:
            logger.warning(
                "subcluster %r: regress_out key %r has a single value in the subset; not regressed", name, key
            )
            continue
        regressed.append(key)
    return regressed


def _lognorm_lazy(adata: AnnData, sub: AnnData, name: str) -> AnnData:
    """Out of core (``sub.X`` = the subset's counts, a Dask array): the counts held in the Dask
    workers' memory for the passes that follow, normalize + log1p per chunk (lazy)."""
    from .._dask import persist
    from ..pp._lazy import _lognorm_block

    info = adata.uns["counts_store"]
    target_sum = float(info.get("target_sum", 1e4))
    # the passes (HVGs, moments, cross-products, scores) read the subset's counts once, from the
    # store, then from the workers' memory: ~8 bytes per non-zero (3.1 GB for 400,000 cells of 1M)
    nbytes = 8.0 * info.get("nnz", 0) * sub.n_obs / max(int(info.get("n_obs", 0)), 1)
    X = persist(sub.X, nbytes=nbytes, what=f"subcluster {name!r}: the counts of its {sub.n_obs:,} cells")
    ln = AnnData(X=X.map_blocks(_lognorm_block, target_sum, dtype=np.float32), obs=sub.obs, var=sub.var.copy())
    ln.uns["log1p"] = {"base": None}
    return ln


@validated
def transfer_subclusters(
    adata: AnnData, *, subset: AnnData, name: str | None = None, keys: Sequence[str] | None = None
) -> list[str]:
    """Write a subset's cluster labels back into the parent.

    Parameters
    ----------
    adata
        The parent the subset was taken from (every subset cell must be in it).
    subset
        The AnnData returned by :func:`subcluster`.
    name
        Prefix of the written labels; default the subclustering's name (``.uns["subcluster"]``).
    keys
        Subset ``.obs`` keys to transfer; default every subclustering key (``tcells_0.6``, ...).

    Returns
    -------
    The keys written: ``.obs[key]`` of the parent for each key, a categorical with values
    ``f"{name}:{label}"`` for subset cells and ``"not in subset"`` (:data:`NOT_IN_SUBSET`) for the
    others; and ``.uns["subcluster"][name]`` with ``keys``, ``selected`` and ``n_cells``. A key that
    exists in the parent and was not written by this subclustering is an error (no overwriting).
    """
    info = subset.uns.get("subcluster", {})
    name = name if name is not None else info.get("name")
    if not name:
        raise ConfigError("name is required: the subset has no .uns['subcluster'] (run tl.subcluster first)")
    keys = list(keys) if keys is not None else list(info.get("keys", []))
    if not keys:
        raise MissingKeyError(
            "no subclustering keys given and none recorded in .uns['subcluster']; run tl.subcluster first"
        )
    for key in keys:
        check_obs(subset, key, what="subclustering key")
    missing = subset.obs_names.difference(adata.obs_names)
    if len(missing):
        raise InputError(
            f"{len(missing)} subset cell(s) are not in the parent (first: {missing[0]!r}); pass the parent the "
            "subset was taken from"
        )
    prefix = f"{name}:"
    for key in keys:
        if key in adata.obs:
            old = adata.obs[key].astype(str)
            if not (old.eq(NOT_IN_SUBSET) | old.str.startswith(prefix)).all():
                raise ConfigError(
                    f"subcluster {name!r} would overwrite .obs[{key!r}] of the parent, which it did not write; "
                    "choose another key_added"
                )
    pos = adata.obs_names.get_indexer(subset.obs_names)
    for key in keys:
        labels = subset.obs[key]
        cats = (
            list(labels.cat.categories)
            if isinstance(labels.dtype, pd.CategoricalDtype)
            else sorted(labels.astype(str).unique())
        )
        values = np.full(adata.n_obs, NOT_IN_SUBSET, dtype=object)
        values[pos] = [prefix + str(v) for v in labels.astype(str)]
        adata.obs[key] = pd.Categorical(values, categories=[prefix + str(c) for c in cats] + [NOT_IN_SUBSET])
    store = adata.uns.setdefault("subcluster", {})
    store[name] = {"keys": keys, "selected": list(info.get("selected", [])), "n_cells": int(subset.n_obs)}
    return keys


# --------------------------------------------------------------------------------------- helpers
def _groups(adata: AnnData, groupby: str) -> pd.Series:
    labels = check_obs(adata, groupby, what="groupby")
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype(str).astype("category")
    return labels


def _select_by_clusters(
    adata: AnnData, groupby: str, clusters: Sequence[str] | None
) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    labels = _groups(adata, groupby)
    cats = [str(c) for c in labels.cat.categories]
    if not clusters:
        raise ConfigError(f"select='clusters' needs a list of clusters of {groupby!r}; available: {choices(cats)}")
    wanted = [str(c) for c in clusters]
    bad = [c for c in wanted if c not in cats]
    if bad:
        raise ConfigError(f"cluster(s) {bad} not in {groupby!r}; available: {choices(cats)}")
    lab = labels.astype(str).to_numpy()
    mask = np.isin(lab, wanted)
    sizes = pd.Series(lab).value_counts()
    table = pd.DataFrame(
        {"n_cells": [int(sizes.get(c, 0)) for c in cats], "selected": [c in wanted for c in cats]},
        index=pd.Index(cats, name=groupby),
    )
    return mask, table, [c for c in cats if c in wanted]


def _select_by_query(adata: AnnData, groupby: str, obs_query: str | None) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    if not obs_query:
        raise ConfigError("select='obs' needs obs_query, a condition on .obs columns (e.g. \"cell_type == 'NK'\")")
    try:
        res = adata.obs.eval(obs_query)
    except Exception as err:
        raise ConfigError(
            f"obs_query {obs_query!r} cannot be evaluated on .obs ({type(err).__name__}: {err}); columns: "
            f"{choices(adata.obs.columns)}"
        ) from None
    res = pd.Series(res, index=adata.obs_names) if not isinstance(res, pd.Series) else res
    if res.dtype != bool:
        raise ConfigError(f"obs_query {obs_query!r} must give True/False per cell; got values of type {res.dtype}")
    mask = res.to_numpy()
    if groupby in adata.obs:
        lab = adata.obs[groupby].astype(str)
        table = (
            pd.DataFrame({"n_cells": lab.value_counts(), "n_selected": lab[mask].value_counts()}).fillna(0).astype(int)
        )
        table = table.loc[[c for c in _groups(adata, groupby).cat.categories.astype(str) if c in table.index]]
        table.index.name = groupby
    else:
        table = pd.DataFrame({"obs_query": [obs_query], "n_cells": [adata.n_obs], "n_selected": [int(mask.sum())]})
    return mask, table, []


def _select_by_markers(
    adata: AnnData, groupby: str, markers: Mapping[str, Sequence[str]], min_score: float
) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    labels = _groups(adata, groupby)
    if not markers:
        raise ConfigError("select.markers must give at least one marker set, e.g. {T: [CD3E], NK: [GNLY, NKG7]}")
    raw_names = adata.raw.var_names
    sets: dict[str, list[str]] = {}
    for set_name, genes in markers.items():
        genes = [genes] if isinstance(genes, str) else list(genes)
        present = [g for g in genes if g in raw_names]
        absent = [g for g in genes if g not in raw_names]
        if not present:
            raise MissingKeyError(
                f"marker set {set_name!r}: none of {genes} is in .raw; give other markers or use select='clusters'"
            )
        if absent:
            warn(f"marker set {set_name!r}: {', '.join(absent)} not in .raw; scoring with {', '.join(present)}")
        sets[str(set_name)] = present
    genes = list(dict.fromkeys(g for gs in sets.values() for g in gs))
    X = adata.raw[:, genes].X
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    codes = labels.cat.codes.to_numpy()
    cats = [str(c) for c in labels.cat.categories]
    ok = codes >= 0
    k = len(cats)
    onehot = sparse.csr_matrix((np.ones(ok.sum()), (codes[ok], np.flatnonzero(ok))), shape=(k, adata.n_obs))
    n = np.asarray(onehot.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (onehot @ X) / n[:, None]
        frac = (onehot @ (X > 0).astype(float)) / n[:, None]
    table = pd.DataFrame({"n_cells": n.astype(int)}, index=pd.Index(cats, name=groupby))
    for j, g in enumerate(genes):
        table[f"mean_{g}"] = means[:, j]
        table[f"frac_{g}"] = frac[:, j]
    chosen = np.zeros(k, dtype=bool)
    by: list[list[str]] = [[] for _ in range(k)]
    nonempty = n > 0
    for set_name, gs in sets.items():
        score = table[[f"mean_{g}" for g in gs]].to_numpy().mean(axis=1)
        lo, hi = np.nanmin(score[nonempty]), np.nanmax(score[nonempty])
        if hi - lo < MIN_SCORE_RANGE:
            logger.warning(
                "marker set %r does not separate the clusters of %r (scores %.3g-%.3g); it selects nothing",
                set_name,
                groupby,
                lo,
                hi,
            )
            scaled = np.zeros(k)
        else:
            scaled = (score - lo) / (hi - lo)
        table[f"score_{set_name}"] = score
        table[f"scaled_{set_name}"] = scaled
        hit = nonempty & (scaled >= min_score)
        chosen |= hit
        for i in np.flatnonzero(hit):
            by[i].append(set_name)
    table["selected"] = chosen
    table["selected_by"] = [",".join(b) for b in by]
    selected = [c for c, s in zip(cats, chosen, strict=True) if s]
    if not selected:
        raise InputError(
            f"no cluster of {groupby!r} passes the marker rule (min_score={min_score}); see the scores or use "
            "select='clusters'"
        )
    mask = np.isin(codes, np.flatnonzero(chosen)) & ok
    logger.info("marker rule on %r selected clusters %s", groupby, ", ".join(selected))
    return mask, table, selected


def _hvg_overlap(parent: AnnData, sub: AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and gene lists of the parent's and the subset's HVGs (the parent's ``.var["highly_variable"]``,
    or all its ``.var_names`` when that column is absent: the lab's input holds only HVGs in ``.X``)."""
    if "highly_variable" in parent.var:
        parent_hvg = parent.var_names[parent.var["highly_variable"].to_numpy(dtype=bool)]
    else:
        parent_hvg = parent.var_names
    sub_hvg = sub.var_names[sub.var["highly_variable"].to_numpy(dtype=bool)]
    p, s = set(parent_hvg), set(sub_hvg)
    overlap = pd.DataFrame({"set": ["parent", "subset", "both"], "n_genes": [len(p), len(s), len(p & s)]})
    union = [g for g in sub.var_names if g in p or g in s] + sorted(p - set(sub.var_names))
    genes = pd.DataFrame(
        {"parent": [g in p for g in union], "subset": [g in s for g in union]}, index=pd.Index(union, name="gene")
    )
    return overlap, genes


def _cells_per_sample(parent: AnnData, sub: AnnData, key: str | None) -> pd.DataFrame:
    if key is None:
        return pd.DataFrame(
            {"n_parent": [parent.n_obs], "n_subset": [sub.n_obs]}, index=pd.Index(["all"], name="sample")
        )
    par = parent.obs[key].astype(str).value_counts()
    sb = sub.obs[key].astype(str).value_counts()
    order = [
        str(c)
        for c in (
            parent.obs[key].cat.categories
            if isinstance(parent.obs[key].dtype, pd.CategoricalDtype)
            else sorted(par.index)
        )
    ]
    df = pd.DataFrame(
        {"n_parent": par.reindex(order).fillna(0).astype(int), "n_subset": sb.reindex(order).fillna(0).astype(int)}
    )
    df["fraction"] = df["n_subset"] / df["n_parent"].where(df["n_parent"] > 0)
    df.index.name = key
    return df
