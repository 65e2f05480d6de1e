"""The upstream chain for raw counts, in reusable pieces.

``prepare`` = :func:`qc_metrics` -> normalize + log1p (``.raw`` kept) -> :func:`highly_variable_genes`
-> :func:`scale_pca` -> :func:`harmony` -> :func:`~scclust.pp.neighbors` -> :func:`umap`.
The subclustering stage calls the same pieces on a subset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._checks import check_n_obs, check_obs, get_rep
from .._errors import ConfigError, InputError, MissingKeyError, choices
from .._types import KeyList, validated
from ._umap import umap

logger = logging.getLogger(__name__)



@contextlib.contextmanager
def _step(seconds: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the wall time of the block to ``seconds[name]`` (per-step times of prepare, logged)."""
    t0 = time.perf_counter()
    yield
    if seconds is not None:
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t0, 3)
        logger.debug("prepare: %s %.1f s", name, seconds[name])


def _is_dask(X: Any) -> bool:
    return type(X).__module__.startswith("dask.")


def qc_metrics(
    adata: AnnData,
    *,
    mt_prefix: str = "MT-",
    ribo_prefixes: Sequence[str] = ("RPS", "RPL"),
    hb_pattern: str = r"^HB[^(P)]",
) -> None:
    """Flag mitochondrial / ribosomal / haemoglobin genes and add ``sc.pp.calculate_qc_metrics``.

    Writes ``.var["mt"|"ribo"|"hb"]`` and ``.obs`` columns ``n_genes_by_counts``, ``total_counts``,
    ``total_counts_{mt,ribo,hb}``, ``pct_counts_{mt,ribo,hb}`` (the lab's names).
    """
    import scanpy as sc

    names = adata.var_names.str.upper()
    adata.var["mt"] = names.str.startswith(mt_prefix.upper())
    adata.var["ribo"] = names.str.startswith(tuple(p.upper() for p in ribo_prefixes))
    adata.var["hb"] = names.str.contains(hb_pattern, regex=True)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt", "ribo", "hb"], percent_top=None, log1p=False, inplace=True)


def normalize(adata: AnnData, *, target_sum: float = 1e4) -> None:
    """Keep counts in ``.layers["counts"]``, ``normalize_total`` + ``log1p``, and set ``.raw``."""
    import scanpy as sc

    X = adata.X
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and (np.any(data < 0) or not np.allclose(data[: 100_000], np.round(data[: 100_000]))):
        raise InputError(
            "prepare expects raw counts in .X (non-negative integers); this .X looks normalized. "
            "Drop the 'prepare' stage for an already integrated AnnData"
        )
    adata.layers["counts"] = X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.raw = adata


def highly_variable_genes(
    adata: AnnData,
    *,
    flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat",
    min_mean: float = 0.0125,
    max_mean: float = 3.0,
    min_disp: float = 0.5,
    n_top_genes: int | None = None,
    batch_key: str | None = None,
) -> None:
    """``sc.pp.highly_variable_genes`` with the lab's defaults; writes ``.var["highly_variable"]``.

    ``seurat_v3`` needs counts: it reads ``.layers["counts"]``.
    """
    import scanpy as sc

    if batch_key is not None:
        check_obs(adata, batch_key, what="batch_key")
    kw = {"layer": "counts"} if flavor == "seurat_v3" else {}
    if flavor == "seurat_v3":
        if "counts" not in adata.layers:
            raise MissingKeyError("flavor 'seurat_v3' needs raw counts in .layers['counts']")
        if n_top_genes is None:
            raise ConfigError("flavor 'seurat_v3' needs n_top_genes")
    else:
        kw.update(min_mean=min_mean, max_mean=max_mean, min_disp=min_disp)
    sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top_genes, batch_key=batch_key, **kw)
    n_hvg = int(adata.var["highly_variable"].sum())
    if n_hvg < 2:
        raise InputError(f"only {n_hvg} highly variable gene(s) found; relax min_mean / min_disp or set n_top_genes")
    logger.info("%d highly variable genes", n_hvg)


def scale_pca(
    adata: AnnData,
    *,
    regress_out: Sequence[str] = (),
    max_value: float | None = 10.0,
    n_comps: int = 50,
    svd_solver: str = "arpack",
    random_state: int = 0,
) -> AnnData:
    """Restrict to highly variable genes, regress out, scale and run PCA. Returns the HVG AnnData
    (``.raw`` and ``.obs`` carried over) with ``.obsm["X_pca"]``."""
    import scanpy as sc

    if "highly_variable" not in adata.var:
        raise MissingKeyError("no .var['highly_variable']; run highly_variable_genes first")
    sub = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    if sparse.issparse(sub.X):  # scaling densifies anyway; do it explicitly (HVGs only)
        sub.X = sub.X.toarray()
    if regress_out:
        for key in regress_out:
            check_obs(sub, key, what="regress_out key")
        sc.pp.regress_out(sub, list(regress_out))
    sc.pp.scale(sub, max_value=max_value)
    n_comps_eff = min(n_comps, sub.n_obs - 1, sub.n_vars - 1)
    if n_comps_eff < n_comps:
        logger.warning("n_comps reduced from %d to %d (data is %d x %d)", n_comps, n_comps_eff, sub.n_obs, sub.n_vars)
    sc.pp.pca(sub, n_comps=n_comps_eff, svd_solver=svd_solver, random_state=random_state)
    return sub


def harmony(
    adata: AnnData,
    *,
    batch_key: str = "sample",
    use_rep: str = "X_pca",
    key_added: str = "X_pca_harmony",
    max_iter_harmony: int = 10,
    theta: float = 2.0,
    min_cells_per_batch: int = 10,
    random_state: int = 0,
) -> None:
    """Harmony (harmonypy called directly) on ``batch_key``; writes ``.obsm[key_added]`` (cells x dims).

    harmonypy 2.x returns ``Z_corr`` as cells x dims, 0.0.x as dims x cells: both are handled.
    Batches smaller than ``min_cells_per_batch`` are an error (Harmony's clustering is unstable there).
    """
    import harmonypy

    batches = check_obs(adata, batch_key, what="batch_key").astype(str)
    counts = batches.value_counts()
    if counts.size < 2:
        logger.warning("batch_key %r has a single value; Harmony skipped, %r copied", batch_key, use_rep)
        adata.obsm[key_added] = get_rep(adata, use_rep).copy()
        return
    small = counts[counts < min_cells_per_batch]
    if len(small):
        raise InputError(
            f"batch(es) with fewer than {min_cells_per_batch} cells for Harmony on {batch_key!r}: "
            f"{', '.join(f'{b} ({n})' for b, n in small.items())}; drop them, choose another batch_key, "
            "or lower min_cells_per_batch"
        )
    X = get_rep(adata, use_rep)
    meta = adata.obs[[batch_key]].copy()
    col = adata.obs[batch_key]
    # harmonypy orders the batches as pandas' get_dummies does: a categorical's own order (scanpy's
    # harmony_integrate passes .obs as it is), else sorted. The same order gives the lab's numbers to
    # the last bit; another order the same result up to float rounding.
    meta[batch_key] = col.cat.remove_unused_categories() if isinstance(col.dtype, pd.CategoricalDtype) else batches.to_numpy()
    hlog = logging.getLogger("harmonypy")
    level = hlog.level
    hlog.setLevel(logging.WARNING)
    try:
        ho = harmonypy.run_harmony(
            X, meta, [batch_key], max_iter_harmony=max_iter_harmony, theta=theta, random_state=random_state, verbose=False
        )
    finally:
        hlog.setLevel(level)
    Z = np.asarray(ho.Z_corr)
    if Z.shape != X.shape:
        Z = Z.T
    # harmonypy's dtype (float64), as scanpy's harmony_integrate stores it: the neighbour search then
    # computes the same distances as the lab's, to the last bit
    adata.obsm[key_added] = np.ascontiguousarray(Z)


def _filter_table(obs: pd.DataFrame, *, min_genes: int, max_genes: int | None, max_pct_mt: float | None,
                  batch_key: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The cells the QC lab's cell filters remove (a mask) and the removed-per-batch table
    (see :func:`filter_cells_genes`); shared by the in-memory and the out-of-core chains."""
    n = len(obs)
    n_genes = obs["n_genes_by_counts"].to_numpy()
    fails = {
        "removed_min_genes": n_genes < min_genes,
        "removed_max_genes": n_genes > max_genes if max_genes is not None else np.zeros(n, bool),
        "removed_max_pct_mt": obs["pct_counts_mt"].to_numpy() > max_pct_mt if max_pct_mt is not None
        else np.zeros(n, bool),
    }
    drop = np.logical_or.reduce(list(fails.values()))
    groups = obs[batch_key].astype(str).to_numpy() if batch_key is not None else np.full(n, "all")
    table = pd.DataFrame({"batch": groups, **fails, "removed": drop}).groupby("batch", sort=True).sum()
    table.insert(0, "n_cells", pd.Series(groups).value_counts().reindex(table.index).to_numpy())
    table["kept"] = table["n_cells"] - table["removed"]
    if drop.all():
        raise InputError(f"the QC filters remove all {n} cells (min_genes={min_genes}, max_genes={max_genes}, "
                         f"max_pct_mt={max_pct_mt}); relax them")
    return table, drop


def filter_cells_genes(
    adata: AnnData,
    *,
    min_genes: int = 0,
    max_genes: int | None = None,
    max_pct_mt: float | None = None,
    min_cells: int = 0,
    batch_key: str | None = None,
) -> pd.DataFrame:
    """The NBIS QC lab's filters, in place: cells with fewer than ``min_genes`` or more than
    ``max_genes`` detected genes or more than ``max_pct_mt`` % mitochondrial counts, then genes
    detected in fewer than ``min_cells`` of the remaining cells (``sc.pp.filter_cells`` /
    ``filter_genes`` rules). Needs :func:`qc_metrics` first.

    Returns
    -------
    Cells removed per batch (one row per ``batch_key`` value, or one row ``all``): ``n_cells``
    before, ``removed_min_genes``, ``removed_max_genes``, ``removed_max_pct_mt`` (a cell failing
    several filters counts under each), ``removed`` (cells removed), ``kept``; and the number of genes removed in
    ``df.attrs["genes_removed"]``.
    """
    table, drop = _filter_table(adata.obs, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt,
                                batch_key=batch_key)
    if drop.any():
        adata._inplace_subset_obs(~drop)
        logger.info("prepare: QC filters removed %d of %d cells", int(drop.sum()), drop.size)
    n_cells = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    gene_drop = n_cells < min_cells
    if gene_drop.all():
        raise InputError(f"min_cells={min_cells} removes every gene; lower it")
    if gene_drop.any():
        adata._inplace_subset_var(~gene_drop)
        logger.info("prepare: %d genes detected in fewer than %d cells removed", int(gene_drop.sum()), min_cells)
    table.attrs["genes_removed"] = int(gene_drop.sum())
    return table


@validated
def prepare(
    adata: AnnData,
    *,
    batch_key: str | None = "sample",
    min_genes: int = 0,
    max_genes: int | None = None,
    max_pct_mt: float | None = None,
    min_cells: int = 0,
    target_sum: float = 1e4,
    hvg_flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat",
    min_mean: float = 0.0125,
    max_mean: float = 3.0,
    min_disp: float = 0.5,
    n_top_genes: int | None = None,
    hvg_batch_key: str | None = None,
    regress_out: KeyList = (),
    max_value: float | None = 10.0,
    n_comps: int = 50,
    n_neighbors: int = 20,
    n_pcs: int = 30,
    knn_backend: Literal["auto", "exact", "ivf", "flat", "hnsw"] = "auto",
    knn_min_recall: float = 0.995,
    umap_min_dist: float = 0.5,
    umap_n_epochs: int | None = None,
    umap_init: Literal["auto", "spectral", "pca"] = "auto",
    compute_umap: bool = True,
    random_state: int = 0,
    backend: Literal["auto", "memory", "dask"] = "auto",
    chunk_cells: int | None = None,
    raw_genes: Sequence[str] | None = None,
    umap_worker: Any = None,
) -> AnnData:
    """Raw counts -> a tutorial-shaped integrated AnnData.

    ``backend``: ``memory`` (the chain below on an in-memory ``.X``), ``dask`` (out of core:
    :mod:`scclust.pp._lazy`; ``.X`` a Dask array of CSR chunks, e.g. from :func:`read_counts_lazy`,
    or an in-memory matrix cut into ``chunk_cells``-row chunks), ``auto`` (``dask`` when ``.X`` is a
    Dask array). Out of core, nothing of size cells x genes is held in memory: the output has no
    ``.layers["counts"]``; ``.X`` holds the log-normalized HVGs (sparse), ``.raw`` every gene when
    small, else the HVGs and ``raw_genes`` (e.g. the genes a config names), and
    ``.uns["counts_store"]`` references the counts on disk (:func:`scclust.pp.read_counts`). PCA
    of the scaled matrix is computed chunk by chunk (:func:`scclust.pp._lazy.pca_implicit`): with
    ``max_value`` it equals ``sc.pp.scale(max_value)`` + PCA (one extra pass over the data); with
    ``max_value=None`` it needs no dense chunk at all.

    QC metrics and the QC lab's cell / gene filters (:func:`filter_cells_genes`), normalize +
    log1p (``.raw`` = all genes, log-normalized), HVGs, scale, PCA (``X_pca``), Harmony on
    ``batch_key`` (``X_pca_harmony``), neighbours on the Harmony embedding (``knn_backend`` and
    ``knn_min_recall`` are :func:`scclust.pp.neighbors`'s ``backend`` and ``min_recall``) and UMAP
    (``X_umap_harmony``). Returns a new AnnData restricted to the HVGs, as the lab's input.

    With ``batch_key=None`` or a single batch, Harmony is skipped (logged): ``X_pca_harmony`` is
    then a copy of ``X_pca`` so configs written for integrated data run unchanged, and
    ``.uns["prepare"]["harmony"]`` says ``False``.

    Returns
    -------
    The HVG AnnData with ``.obsm["X_pca" | "X_pca_harmony" | "X_umap_harmony"]`` (the UMAP only with
    ``compute_umap``), the QC columns in
    ``.obs``, ``.uns["pca"]["variance_ratio"]`` and ``.uns["prepare"]``: ``filtered`` (cells removed per
    batch), ``genes_removed``, ``harmony`` (bool), ``hvg`` (a DataFrame of every gene's mean,
    normalised dispersion and HVG flag).
    """
    from ._neighbors import neighbors

    check_n_obs(adata, 20, what="prepare")
    if batch_key is not None and batch_key not in adata.obs:
        raise MissingKeyError(f"batch_key {batch_key!r} not in .obs; available: {choices(adata.obs.columns)}")
    seconds: dict[str, float] = {}
    if backend == "auto":
        backend = "dask" if _is_dask(adata.X) else "memory"
    if backend == "dask":
        from ._lazy import _wrap_csr, prepare_lazy

        if not _is_dask(adata.X):
            from ._lazy import _chunk_rows

            X = sparse.csr_matrix(adata.X)
            adata = AnnData(X=_wrap_csr(X, _chunk_rows(X.shape[0], X.nnz, chunk_cells)), obs=adata.obs, var=adata.var,
                            uns=dict(adata.uns))
        out, filtered, hvg = prepare_lazy(
            adata, batch_key=batch_key, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt,
            min_cells=min_cells, target_sum=target_sum, hvg_flavor=hvg_flavor, min_mean=min_mean, max_mean=max_mean,
            min_disp=min_disp, n_top_genes=n_top_genes, hvg_batch_key=hvg_batch_key, regress_out=regress_out,
            n_comps=n_comps, max_value=max_value, raw_genes=raw_genes, seconds=seconds)
    else:
        if _is_dask(adata.X):
            raise ConfigError("prepare: backend 'memory' needs .X in memory; this .X is a Dask array (use backend "
                              "'dask' or 'auto')")
        with _step(seconds, "qc_filter"):
            adata = adata.copy()
            qc_metrics(adata)
            filtered = filter_cells_genes(adata, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt,
                                          min_cells=min_cells, batch_key=batch_key)
            check_n_obs(adata, 20, what="prepare after the QC filters")
        with _step(seconds, "normalize_hvg"):
            normalize(adata, target_sum=target_sum)
            highly_variable_genes(adata, flavor=hvg_flavor, min_mean=min_mean, max_mean=max_mean, min_disp=min_disp,
                                  n_top_genes=n_top_genes, batch_key=hvg_batch_key)
            hvg = adata.var[[c for c in ("means", "dispersions_norm", "highly_variable") if c in adata.var]].copy()
        with _step(seconds, "scale_pca"):
            out = scale_pca(adata, regress_out=regress_out, max_value=max_value, n_comps=n_comps, random_state=random_state)
    n_batches = out.obs[batch_key].nunique() if batch_key is not None else 1
    with _step(seconds, "harmony"):
        if n_batches > 1:
            harmony(out, batch_key=batch_key, random_state=random_state)
        else:
            logger.info("prepare: %s; Harmony skipped, X_pca_harmony is a copy of X_pca",
                        "no batch_key" if batch_key is None else f"one batch in {batch_key!r}")
            out.obsm["X_pca_harmony"] = out.obsm["X_pca"].copy()
    with _step(seconds, "neighbors"):
        neighbors(out, use_rep="X_pca_harmony", n_pcs=min(n_pcs, out.obsm["X_pca_harmony"].shape[1]),
                  n_neighbors=n_neighbors, backend=knn_backend, min_recall=knn_min_recall, random_state=random_state)
    if compute_umap:  # false: no X_umap_harmony (at atlas scale, or when another embedding is drawn)
        with _step(seconds, "umap"):
            umap(out, key_added="X_umap_harmony", min_dist=umap_min_dist, random_state=random_state,
                 n_epochs=umap_n_epochs, init=umap_init, worker=umap_worker)
    out.uns["prepare"] = {"filtered": filtered.reset_index(), "genes_removed": filtered.attrs["genes_removed"],
                          "harmony": n_batches > 1, "hvg": hvg.rename_axis("gene").reset_index(), "backend": backend,
                          "seconds": seconds}
    return out
