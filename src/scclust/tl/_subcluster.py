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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._checks import check_obs
from .._errors import ConfigError, InputError, MissingKeyError, ScclustWarning, choices
from .._types import KeyList, Resolutions, validated

logger = logging.getLogger(__name__)

#: The default marker rule: T cells by CD3E, NK cells by GNLY and NKG7 (a cluster is selected when
#: either set scores high, see :func:`subcluster`).
TNK_MARKERS: dict[str, tuple[str, ...]] = {"T": ("CD3E",), "NK": ("GNLY", "NKG7")}

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


@validated
def subcluster(
    adata: AnnData,
    *,
    name: str = "tnk",
    groupby: str = "leiden_0.4",
    select: Literal["markers", "clusters", "obs"] = "markers",
    clusters: KeyList | None = None,
    markers: Mapping[str, Sequence[str]] | None = None,
    min_score: float = 0.5,
    obs_query: str | None = None,
    min_cells: int = 50,
    batch_key: str | None = "sample",
    min_cells_per_batch: int = 10,
    small_batches: Literal["error", "drop"] = "error",
    hvg_flavor: Literal["seurat", "cell_ranger"] = "seurat",
    min_mean: float = 0.0125,
    max_mean: float = 3.0,
    min_disp: float = 0.5,
    n_top_genes: int | None = None,
    hvg_batch_key: str | None = None,
    regress_out: KeyList = ("total_counts", "pct_counts_mt"),
    max_value: float | None = 10.0,
    n_comps: int = 50,
    svd_solver: str = "arpack",
    n_neighbors: int = 10,
    n_pcs: int = 30,
    knn_backend: Literal["auto", "exact", "ivf", "flat", "hnsw"] = "auto",
    knn_min_recall: float = 0.995,
    resolutions: Resolutions = (0.6,),
    leiden_flavor: Literal["leidenalg", "igraph"] = "leidenalg",
    key_added: str = "tcells",
    umap_min_dist: float = 0.5,
    umap_n_epochs: int | None = None,
    umap_init: Literal["auto", "spectral", "pca"] = "auto",
    random_state: int = 0,
    umap_worker: Any = None,
) -> tuple[AnnData, SubclusterReport]:
    """Select cells, re-process them from ``.raw`` and cluster them again (the lab's step 9).

    **Selection** (``select``):

    - ``"markers"`` (default): a rule on the clusters of ``groupby``, no hard-coded ids. For each
      marker set (``markers``, default :data:`TNK_MARKERS`: ``T: [CD3E]``, ``NK: [GNLY, NKG7]``) a
      cluster's score is the mean over the set's genes of the cluster's mean log-expression in
      ``.raw``; scores are min-max scaled across clusters
      (``scaled = (score - min) / (max - min)``) and a cluster is selected when its scaled score
      is at least ``min_score`` for any set (``0.5``: above half-way between the least and the most
      expressing cluster, a half-maximum rule that ignores the background level and the depth
      of the data). A set whose cluster scores span less than :data:`MIN_SCORE_RANGE` selects
      nothing. Genes absent from ``.raw`` are skipped with a warning; a set with none of its genes
      is an error.
    - ``"clusters"``: the clusters of ``groupby`` listed in ``clusters`` (the lab: ``leiden_0.4``
      ``["1", "3", "4"]``).
    - ``"obs"``: the cells for which ``obs_query`` is true (:meth:`pandas.DataFrame.eval` on
      ``.obs``, e.g. ``"cell_type in ['CD4 T', 'CD8 T']"``).

    **Re-processing** of the subset (all genes, from ``.raw``; the subset's ``.raw`` is the full
    subset): highly variable genes (``hvg_flavor``, ``min_mean``, ``max_mean``, ``min_disp``,
    ``n_top_genes``, ``hvg_batch_key``; the lab's values by default), restriction to them,
    ``regress_out`` (an empty list switches it off; constant covariates such as an all-zero
    ``pct_counts_mt`` are dropped with a warning), ``scale(max_value)``, PCA (``n_comps``,
    ``svd_solver``), Harmony on ``batch_key`` (harmonypy called directly; ``None`` skips it and uses
    the PCA), the kNN graph (``n_neighbors``, first ``n_pcs`` dimensions), Leiden at each of
    ``resolutions`` (``leiden_flavor="leidenalg"`` runs to convergence as ``sc.tl.leiden`` does;
    ``"igraph"`` runs 2 iterations) and UMAP.

    **Out of core**: when the parent comes from the out-of-core ``prepare`` at a size where its
    ``.raw`` holds only some genes (``.uns["counts_store"]["raw_complete"]`` false), the subset's
    counts are read lazily from the counts store (only its cells' chunks), normalized per chunk,
    and HVGs, regress out, scale and PCA run on Dask (:func:`scclust.pp._lazy.pca_implicit`, the
    same numbers as in memory); the subset's ``.raw`` then holds its HVGs and the parent's
    ``.raw`` genes. The caller provides the Dask cluster (the subcluster stage opens the run's).

    Parameters
    ----------
    adata
        The parent: an integrated AnnData with ``.raw`` (log-normalized expression of all genes).
        It is not modified; see :func:`transfer_subclusters`.
    name
        Name of this subclustering (prefix of the labels written back to the parent).
    groupby
        Parent clustering to select from (``select="markers"`` / ``"clusters"``); also the rows of
        the contingency table.
    select
        Selection method, see above.
    clusters
        Cluster ids of ``groupby`` for ``select="clusters"``.
    markers
        Marker sets for ``select="markers"``: ``{set name: [genes]}``; ``None`` is :data:`TNK_MARKERS`.
    min_score
        Scaled score (0-1) a cluster needs in at least one marker set to be selected.
    obs_query
        Boolean expression on ``.obs`` columns for ``select="obs"``.
    min_cells
        Fewest cells the subset may have.
    batch_key
        ``.obs`` column for Harmony and for the cells-per-sample table; ``None``: no Harmony.
    min_cells_per_batch
        Fewest cells a batch needs for Harmony.
    small_batches
        What to do with smaller batches: ``"error"`` or ``"drop"`` their cells (reported).
    hvg_flavor, min_mean, max_mean, min_disp, n_top_genes
        :func:`scclust.pp.highly_variable_genes` on the subset. (``seurat_v3`` is not offered:
        ``.raw`` holds no counts.)
    hvg_batch_key
        Batch key for the HVG selection (``None``, the lab's choice, ignores batches).
    regress_out
        ``.obs`` keys to regress out before scaling.
    max_value
        Clip scaled values at this value (``None``: no clipping).
    n_comps, svd_solver
        PCA.
    n_neighbors, n_pcs
        kNN graph on the Harmony (or PCA) embedding.
    knn_backend, knn_min_recall
        :func:`scclust.pp.neighbors`'s ``backend`` and ``min_recall`` (``auto``: exact up to 50,000 cells).
    resolutions
        Leiden resolutions; one clustering each.
    leiden_flavor
        Leiden implementation, see above.
    key_added
        Prefix of the subclustering keys: ``f"{key_added}_{resolution}"`` (``tcells_0.6``).
    umap_min_dist, umap_n_epochs, umap_init
        UMAP ``min_dist``, layout epochs (None: umap-learn's default) and start (:func:`scclust.pp.umap`).
    random_state
        Seed of PCA, Harmony, the graph, Leiden and UMAP.
    umap_worker
        A warmed-up UMAP process from :func:`scclust.pp.background_umap` (``None``: in this process).

    Returns
    -------
    ``(subset, report)``. The subset AnnData holds the subset's highly variable genes in ``.X``
    (regressed, scaled), ``.raw`` = every gene of the subset (log-normalized), the parent's ``.obs``
    columns, and

    - ``.var["highly_variable"]`` etc. (in ``.raw.var``), ``.obsm["X_pca"]``,
      ``.obsm["X_pca_harmony"]`` (when ``batch_key``), ``.obsm["X_umap"]``;
    - ``.obsp["connectivities"]``, ``.obsp["distances"]``, ``.uns["neighbors"]``;
    - ``.obs[f"{key_added}_{r}"]`` for each resolution ``r`` and ``.uns[key_added]`` (Leiden summary);
    - ``.uns["subcluster"]``: ``name``, ``groupby``, ``select``, ``selected``, ``keys``,
      ``batch_key``, ``regressed``, HVG counts and ``params_json``.

    The :class:`SubclusterReport` holds the selection scores, HVG overlap (counts and genes), cells
    per sample and the contingency tables.
    """
    params = {k: v for k, v in locals().items() if k not in ("adata", "umap_worker")}  # recorded as given
    _check_params(select=select, min_cells=min_cells, n_neighbors=n_neighbors, min_score=min_score,
                  small_batches=small_batches, hvg_flavor=hvg_flavor, leiden_flavor=leiden_flavor,
                  resolutions=resolutions)
    if adata.raw is None and not _from_store(adata):
        raise InputError(
            "subcluster needs .raw (log-normalized expression of all genes) to re-process the subset; "
            "set adata.raw = adata right after normalize + log1p (scclust.pp.prepare does)"
        )
    if batch_key is not None:
        check_obs(adata, batch_key, what="batch_key")
    for key in regress_out:
        check_obs(adata, key, what="regress_out key")
    if hvg_batch_key is not None:
        check_obs(adata, hvg_batch_key, what="hvg_batch_key")

    sub, table, selected, dropped = _select_subset(
        adata, name=name, groupby=groupby, select=select, clusters=clusters, markers=markers, min_score=min_score,
        obs_query=obs_query, min_cells=min_cells, batch_key=batch_key, min_cells_per_batch=min_cells_per_batch,
        small_batches=small_batches,
    )
    sub, hvg_overlap, hvg_genes, regressed, keys = _reprocess(
        adata, sub, name=name, batch_key=batch_key, min_cells_per_batch=min_cells_per_batch, hvg_flavor=hvg_flavor,
        min_mean=min_mean, max_mean=max_mean, min_disp=min_disp, n_top_genes=n_top_genes, hvg_batch_key=hvg_batch_key,
        regress_out=regress_out, max_value=max_value, n_comps=n_comps, svd_solver=svd_solver, n_neighbors=n_neighbors,
        n_pcs=n_pcs, knn_backend=knn_backend, knn_min_recall=knn_min_recall, resolutions=resolutions,
        leiden_flavor=leiden_flavor, key_added=key_added, umap_min_dist=umap_min_dist, umap_n_epochs=umap_n_epochs,
        umap_init=umap_init, random_state=random_state, umap_worker=umap_worker,
    )

    # ---- report
    sample_key = batch_key if batch_key is not None else ("sample" if "sample" in adata.obs else None)
    cells_per_sample = _cells_per_sample(adata, sub, sample_key)
    contingency = {}
    if groupby in sub.obs:
        for key in keys:
            contingency[key] = pd.crosstab(sub.obs[groupby], sub.obs[key]).rename_axis(index=groupby, columns=key)
    n_hvg = hvg_overlap.set_index("set")["n_genes"]
    params = {k: (list(v) if isinstance(v, tuple) else {m: list(g) for m, g in v.items()} if isinstance(v, Mapping) else v)
              for k, v in params.items()}
    params["markers"] = params["markers"] or {k: list(v) for k, v in TNK_MARKERS.items()}
    sub.uns["subcluster"] = {
        "name": name, "groupby": groupby, "select": select, "selected": list(selected), "keys": keys,
        "batch_key": batch_key or "", "regressed": regressed,
        "n_hvg_parent": int(n_hvg["parent"]), "n_hvg_subset": int(n_hvg["subset"]), "n_hvg_both": int(n_hvg["both"]),
        "params_json": json.dumps(params),
    }
    report = SubclusterReport(
        name=name, selection=table, selected=list(selected), n_cells=sub.n_obs, cells_per_sample=cells_per_sample,
        hvg_overlap=hvg_overlap, hvg_genes=hvg_genes, contingency=contingency, regressed=regressed,
        dropped_batches=dropped, keys=keys,
    )
    logger.info(
        "subcluster %r: %d cells, HVGs parent/subset/both %d/%d/%d, %s", name, sub.n_obs, n_hvg["parent"],
        n_hvg["subset"], n_hvg["both"], ", ".join(f"{k}: {sub.obs[k].cat.categories.size} clusters" for k in keys),
    )
    return sub, report


def _select_subset(adata: AnnData, *, name, groupby, select, clusters, markers, min_score, obs_query, min_cells,
                   batch_key, min_cells_per_batch, small_batches) -> tuple[AnnData, pd.DataFrame, list[str], dict[str, int]]:
    """The selected cells with all genes from ``.raw`` (small batches dropped when asked)."""
    # ---- selection
    if select == "markers":
        mask, table, selected = _select_by_markers(adata, groupby, TNK_MARKERS if markers is None else markers, min_score)
    elif select == "clusters":
        mask, table, selected = _select_by_clusters(adata, groupby, clusters)
    else:
        mask, table, selected = _select_by_query(adata, groupby, obs_query)
    n_sel = int(mask.sum())
    logger.info("subcluster %r: %d cells selected%s", name, n_sel, f" (clusters {', '.join(selected)} of {groupby})" if selected else "")
    if n_sel < min_cells:
        raise InputError(
            f"subcluster {name!r}: too few cells selected: {n_sel} (need at least min_cells={min_cells}); "
            f"widen the selection or lower min_cells"
        )

    # ---- the subset, all genes, from .raw (or, out of core, only these cells' counts from the store)
    idx = np.flatnonzero(mask)
    obs = adata.obs.iloc[idx].copy()
    for col in obs.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].cat.remove_unused_categories()
    if _from_store(adata):
        from ..pp import read_counts

        counts = read_counts(adata[idx])
        kept = np.asarray(adata.uns["counts_store"].get("genes_kept", np.ones(counts.n_vars, bool)), dtype=bool)
        sub = AnnData(X=counts.X[:, np.flatnonzero(kept)] if not kept.all() else counts.X, obs=obs,
                      var=counts.var.loc[kept].copy())
        logger.info("subcluster %r: counts of %d cells read lazily from %s", name, sub.n_obs,
                    adata.uns["counts_store"]["path"])
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


def _reprocess(adata: AnnData, sub: AnnData, *, name, batch_key, min_cells_per_batch, hvg_flavor, min_mean, max_mean,
               min_disp, n_top_genes, hvg_batch_key, regress_out, max_value, n_comps, svd_solver, n_neighbors, n_pcs,
               knn_backend, knn_min_recall, resolutions, leiden_flavor, key_added, umap_min_dist, umap_n_epochs,
               umap_init, random_state, umap_worker):
    """The lab's chain on the subset, in place of ``sub``'s contents: HVGs, regress out, scale, PCA,
    Harmony, neighbours, Leiden, UMAP. Returns the re-processed subset, the HVG overlap tables, the keys regressed and the labels' keys."""
    from .. import pp
    from .._keys import leiden_keys
    from ._leiden import leiden

    if pp.is_lazy(sub):
        sub, hvg_overlap, hvg_genes, regressed = _hvg_pca_lazy(
            adata, sub, name=name, hvg_flavor=hvg_flavor, min_mean=min_mean, max_mean=max_mean, min_disp=min_disp,
            n_top_genes=n_top_genes, hvg_batch_key=hvg_batch_key, regress_out=regress_out, max_value=max_value,
            n_comps=n_comps)
    else:
        # ---- HVGs and their overlap with the parent's
        pp.highly_variable_genes(
            sub, flavor=hvg_flavor, min_mean=min_mean, max_mean=max_mean, min_disp=min_disp,
            n_top_genes=n_top_genes, batch_key=hvg_batch_key,
        )
        sub.raw = sub
        hvg_overlap, hvg_genes = _hvg_overlap(adata, sub)

        # ---- regress out (constant covariates dropped), scale, PCA
        regressed = _regressable(sub, name, regress_out)
        sub = pp.scale_pca(sub, regress_out=regressed, max_value=max_value, n_comps=n_comps, svd_solver=svd_solver, random_state=random_state)

    # ---- Harmony, graph, Leiden, UMAP
    rep = "X_pca"
    if batch_key is not None:
        pp.harmony(sub, batch_key=batch_key, min_cells_per_batch=min_cells_per_batch, random_state=random_state)
        rep = "X_pca_harmony"
    dims = sub.obsm[rep].shape[1]
    if n_pcs > dims:
        logger.warning("subcluster %r: n_pcs reduced from %d to %d (dimensions of %s)", name, n_pcs, dims, rep)
    pp.neighbors(sub, use_rep=rep, n_pcs=min(n_pcs, dims), n_neighbors=n_neighbors, backend=knn_backend,
                 min_recall=knn_min_recall, random_state=random_state)
    leiden(sub, resolutions=resolutions, key_added=key_added, flavor=leiden_flavor,
           n_iterations=-1 if leiden_flavor == "leidenalg" else 2, random_state=random_state)
    keys = leiden_keys(key_added, resolutions)
    pp.umap(sub, key_added="X_umap", min_dist=umap_min_dist, random_state=random_state, n_epochs=umap_n_epochs,
            init=umap_init, worker=umap_worker)

    return sub, hvg_overlap, hvg_genes, regressed, keys


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
                raise InputError(f"regress_out key {key!r} has NaN or inf values in {int((~np.isfinite(v)).sum())} selected cell(s)")
            if np.ptp(v) == 0:
                logger.warning("subcluster %r: regress_out key %r is constant in the subset (%g); not regressed", name, key, v[0])
                continue
        elif vals.nunique() < 2:
            logger.warning("subcluster %r: regress_out key %r has a single value in the subset; not regressed", name, key)
            continue
        regressed.append(key)
    return regressed


def _hvg_pca_lazy(adata: AnnData, sub: AnnData, *, name, hvg_flavor, min_mean, max_mean, min_disp, n_top_genes,
                  hvg_batch_key, regress_out, max_value, n_comps):
    """Out of core (``sub.X`` = the subset's counts, a Dask array): normalize + log1p per chunk, HVGs
    (scanpy on Dask), then regress out + scale + PCA implicitly (:func:`scclust.pp._lazy.pca_implicit`).
    Returns the HVG AnnData (``.raw``: the HVGs and the parent's ``.raw`` genes), the HVG overlap
    tables and the keys regressed."""
    import scanpy as sc

    from .._dask import compute_rows, persist
    from ..pp._lazy import _covariates, _lognorm_block, pca_implicit

    info = adata.uns["counts_store"]
    target_sum = float(info.get("target_sum", 1e4))
    # the passes below (HVGs, moments, cross-products, scores) read the subset's counts once, from
    # the store, then from the workers' memory: ~8 bytes per non-zero (3.1 GB for 400,000 cells of 1M)
    nbytes = 8.0 * info.get("nnz", 0) * sub.n_obs / max(int(info.get("n_obs", 0)), 1)
    X = persist(sub.X, nbytes=nbytes, what=f"subcluster {name!r}: the counts of its {sub.n_obs:,} cells")
    lognorm = X.map_blocks(_lognorm_block, target_sum, dtype=np.float32)
    ln = AnnData(X=lognorm, obs=sub.obs, var=sub.var.copy())
    ln.uns["log1p"] = {"base": None}
    kw = {"min_mean": min_mean, "max_mean": max_mean, "min_disp": min_disp} if n_top_genes is None else {}
    sc.pp.highly_variable_genes(ln, flavor=hvg_flavor, n_top_genes=n_top_genes, batch_key=hvg_batch_key, **kw)
    hv = ln.var["highly_variable"].to_numpy(dtype=bool)
    if hv.sum() < 2:
        raise InputError(f"subcluster {name!r}: only {int(hv.sum())} highly variable gene(s); relax min_mean / min_disp "
                         "or set n_top_genes")
    hvg_overlap, hvg_genes = _hvg_overlap(adata, ln)
    regressed = _regressable(sub, name, regress_out)
    n_eff = min(n_comps, sub.n_obs - 1, int(hv.sum()) - 1)
    pca = pca_implicit(lognorm[:, np.flatnonzero(hv)], covariates=_covariates(sub.obs, regressed), n_comps=n_eff,
                       max_value=max_value)
    keep_raw = hv | ln.var_names.isin(adata.raw.var_names if adata.raw is not None else [])
    scores, Xraw = compute_rows(pca["scores_lazy"], lognorm[:, np.flatnonzero(keep_raw)],
                                what=f"subcluster {name!r}: PCA scores and the log-normalized HVGs")
    Xraw = sparse.csr_matrix(Xraw)
    out = AnnData(X=Xraw[:, np.flatnonzero(hv[keep_raw])], obs=sub.obs.copy(), var=ln.var.loc[hv].copy())
    out.raw = AnnData(X=Xraw, obs=sub.obs[[]], var=ln.var.loc[keep_raw].copy())
    out.obsm["X_pca"] = scores
    out.varm["PCs"] = pca["loadings"].astype(np.float32)
    out.uns["pca"] = {"variance": pca["variance"], "variance_ratio": pca["variance_ratio"]}
    out.uns["counts_store"] = dict(adata.uns["counts_store"])
    return out, hvg_overlap, hvg_genes, regressed


def transfer_subclusters(adata: AnnData, *, subset: AnnData, name: str | None = None, keys: Sequence[str] | None = None) -> list[str]:
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
        raise MissingKeyError("no subclustering keys given and none recorded in .uns['subcluster']; run tl.subcluster first")
    for key in keys:
        check_obs(subset, key, what="subclustering key")
    missing = subset.obs_names.difference(adata.obs_names)
    if len(missing):
        raise InputError(f"{len(missing)} subset cell(s) are not in the parent (first: {missing[0]!r}); pass the parent the subset was taken from")
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
        cats = list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype) else sorted(labels.astype(str).unique())
        values = np.full(adata.n_obs, NOT_IN_SUBSET, dtype=object)
        values[pos] = [prefix + str(v) for v in labels.astype(str)]
        adata.obs[key] = pd.Categorical(values, categories=[prefix + str(c) for c in cats] + [NOT_IN_SUBSET])
    store = adata.uns.setdefault("subcluster", {})
    store[name] = {"keys": keys, "selected": list(info.get("selected", [])), "n_cells": int(subset.n_obs)}
    return keys


# --------------------------------------------------------------------------------------- helpers
def _check_params(*, select, min_cells, n_neighbors, min_score, small_batches, hvg_flavor, leiden_flavor, resolutions) -> None:
    if select not in ("markers", "clusters", "obs"):
        raise ConfigError(f"select {select!r} is not one of 'markers', 'clusters', 'obs'")
    if small_batches not in ("error", "drop"):
        raise ConfigError(f"small_batches {small_batches!r} is not one of 'error', 'drop'")
    if hvg_flavor not in ("seurat", "cell_ranger"):
        raise ConfigError(
            f"hvg_flavor {hvg_flavor!r} is not one of 'seurat', 'cell_ranger' (seurat_v3 needs counts, which .raw does not hold)"
        )
    if leiden_flavor not in ("leidenalg", "igraph"):
        raise ConfigError(f"leiden_flavor {leiden_flavor!r} is not one of 'leidenalg', 'igraph'")
    if not 0 < min_score <= 1:
        raise ConfigError(f"min_score must be in (0, 1]; got {min_score}")
    if min_cells < n_neighbors:
        raise ConfigError(f"min_cells ({min_cells}) must be at least n_neighbors ({n_neighbors})")
    if not list(resolutions):
        raise ConfigError("resolutions must list at least one value")


def _groups(adata: AnnData, groupby: str) -> pd.Series:
    labels = check_obs(adata, groupby, what="groupby")
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype(str).astype("category")
    return labels


def _select_by_clusters(adata: AnnData, groupby: str, clusters: Sequence[str] | None) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
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
    table = pd.DataFrame({"n_cells": [int(sizes.get(c, 0)) for c in cats], "selected": [c in wanted for c in cats]},
                         index=pd.Index(cats, name=groupby))
    return mask, table, [c for c in cats if c in wanted]


def _select_by_query(adata: AnnData, groupby: str, obs_query: str | None) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    if not obs_query:
        raise ConfigError("select='obs' needs obs_query, a condition on .obs columns (e.g. \"cell_type == 'NK'\")")
    try:
        res = adata.obs.eval(obs_query)
    except Exception as err:  # noqa: BLE001 - any failure of the user's expression is a config error
        raise ConfigError(
            f"obs_query {obs_query!r} cannot be evaluated on .obs ({type(err).__name__}: {err}); columns: {choices(adata.obs.columns)}"
        ) from None
    res = pd.Series(res, index=adata.obs_names) if not isinstance(res, pd.Series) else res
    if res.dtype != bool:
        raise ConfigError(f"obs_query {obs_query!r} must give True/False per cell; got values of type {res.dtype}")
    mask = res.to_numpy()
    if groupby in adata.obs:
        lab = adata.obs[groupby].astype(str)
        table = pd.DataFrame({"n_cells": lab.value_counts(), "n_selected": lab[mask].value_counts()}).fillna(0).astype(int)
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
        raise ConfigError("markers must give at least one marker set, e.g. {T: [CD3E], NK: [GNLY, NKG7]}")
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
            warnings.warn(f"marker set {set_name!r}: {', '.join(absent)} not in .raw; scoring with {', '.join(present)}",
                          ScclustWarning, stacklevel=3)
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
            logger.warning("marker set %r does not separate the clusters of %r (scores %.3g-%.3g); it selects nothing", set_name, groupby, lo, hi)
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
        raise InputError(f"no cluster of {groupby!r} passes the marker rule (min_score={min_score}); see the scores or use select='clusters'")
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
    genes = pd.DataFrame({"parent": [g in p for g in union], "subset": [g in s for g in union]}, index=pd.Index(union, name="gene"))
    return overlap, genes


def _cells_per_sample(parent: AnnData, sub: AnnData, key: str | None) -> pd.DataFrame:
    if key is None:
        return pd.DataFrame({"n_parent": [parent.n_obs], "n_subset": [sub.n_obs]}, index=pd.Index(["all"], name="sample"))
    par = parent.obs[key].astype(str).value_counts()
    sb = sub.obs[key].astype(str).value_counts()
    order = [str(c) for c in (parent.obs[key].cat.categories if isinstance(parent.obs[key].dtype, pd.CategoricalDtype) else sorted(par.index))]
    df = pd.DataFrame({"n_parent": par.reindex(order).fillna(0).astype(int), "n_subset": sb.reindex(order).fillna(0).astype(int)})
    df["fraction"] = df["n_subset"] / df["n_parent"].where(df["n_parent"] > 0)
    df.index.name = key
    return df
