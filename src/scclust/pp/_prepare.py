"""The upstream chain for raw counts, in reusable steps and step groups.

``prepare`` = :func:`qc_metrics` + :func:`filter_cells_genes` -> :func:`normalize` (``.raw`` kept)
-> :func:`reprocess` (:func:`highly_variable_genes` -> :func:`scale_pca` -> :func:`harmony` ->
:func:`~scclust.pp.neighbors`) -> :func:`~scclust.pp.umap`. A subclustering
(:func:`scclust.tl.subcluster`) runs the same :func:`reprocess` on its cells.

The options of each step are one step group (:class:`scclust._params.Group`), generated from the
step function's signature: :data:`QC`, :data:`HVG`, :data:`PCA`, :data:`Graph`, :data:`Umap`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._checks import check_n_obs, check_obs, get_rep
from .._errors import ConfigError, InputError, MissingKeyError
from .._params import Group, params_model, validated
from .._types import GeneList, KeyList, PositiveInt
from ._neighbors import neighbors
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


@validated
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

    Parameters
    ----------
    adata
        Raw counts.
    mt_prefix
        Prefix of mitochondrial genes (case-insensitive).
    ribo_prefixes
        Prefixes of ribosomal genes (case-insensitive).
    hb_pattern
        Regular expression of haemoglobin genes.
    """
    import scanpy as sc

    names = adata.var_names.str.upper()
    adata.var["mt"] = names.str.startswith(mt_prefix.upper())
    adata.var["ribo"] = names.str.startswith(tuple(p.upper() for p in ribo_prefixes))
    adata.var["hb"] = names.str.contains(hb_pattern, regex=True)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt", "ribo", "hb"], percent_top=None, log1p=False, inplace=True)


@validated
def normalize(adata: AnnData, *, target_sum: float = 1e4) -> None:
    """Keep counts in ``.layers["counts"]``, ``normalize_total`` + ``log1p``, and set ``.raw``.

    Parameters
    ----------
    adata
        Raw counts (non-negative integers) in ``.X``.
    target_sum
        Counts per cell after normalization (``sc.pp.normalize_total``).
    """
    import scanpy as sc

    X = adata.X
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and (np.any(data < 0) or not np.allclose(data[:100_000], np.round(data[:100_000]))):
        raise InputError(
            "prepare expects raw counts in .X (non-negative integers); this .X looks normalized. "
            "Drop the 'prepare' stage for an already integrated AnnData"
        )
    adata.layers["counts"] = X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.raw = adata


@validated
def highly_variable_genes(
    adata: AnnData,
    *,
    flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat",
    min_mean: float = 0.0125,
    max_mean: float = 3.0,
    min_disp: float = 0.5,
    n_top_genes: Annotated[int, Field(ge=2)] | None = None,
    batch_key: str | None = None,
) -> None:
    """``sc.pp.highly_variable_genes`` with the lab's defaults; writes ``.var["highly_variable"]``.

    Parameters
    ----------
    adata
        Log-normalized expression in ``.X``.
    flavor
        scanpy's method: ``seurat`` (the lab's), ``cell_ranger``, or ``seurat_v3`` (reads raw counts
        from ``.layers["counts"]`` and needs ``n_top_genes``).
    min_mean, max_mean, min_disp
        Cut-offs on the mean and the normalized dispersion (``seurat`` / ``cell_ranger``; ignored
        when ``n_top_genes`` is given).
    n_top_genes
        Keep this many genes, ranked by normalized dispersion, instead of the cut-offs.
    batch_key
        Batch-aware selection (scanpy's ``batch_key``: genes variable within batches, ranked by the
        number of batches); ``None`` (the lab's): all cells at once.
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


@validated
def scale_pca(
    adata: AnnData,
    *,
    regress_out: KeyList = (),
    max_value: Annotated[float, Field(gt=0)] | None = 10.0,
    n_comps: Annotated[int, Field(ge=2)] = 50,
    svd_solver: Literal["arpack", "randomized", "auto", "full", "lobpcg"] = "arpack",
    random_state: int = 0,
) -> AnnData:
    """Restrict to highly variable genes, regress out, scale and run PCA.

    Parameters
    ----------
    adata
        Log-normalized expression with ``.var["highly_variable"]``.
    regress_out
        ``.obs`` keys regressed out before scaling (``sc.pp.regress_out``); empty: none.
    max_value
        Clip scaled values at this value (``sc.pp.scale``); ``None``: no clipping.
    n_comps
        Principal components (reduced, with a warning, when the data has fewer cells or genes).
    svd_solver
        ``sc.pp.pca``'s solver (in memory; the out-of-core PCA is exact).
    random_state
        Seed of the solver.

    Returns
    -------
    The HVG AnnData (``.raw`` and ``.obs`` carried over) with ``.obsm["X_pca"]``.
    """
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


@validated
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

    Parameters
    ----------
    adata
        Annotated data matrix with the embedding ``use_rep``.
    batch_key
        ``.obs`` column of the batches to integrate.
    use_rep
        The embedding corrected (``.obsm`` key).
    key_added
        ``.obsm`` key of the corrected embedding.
    max_iter_harmony
        Harmony's iterations (harmonypy's ``max_iter_harmony``).
    theta
        Diversity penalty (harmonypy's ``theta``).
    min_cells_per_batch
        Fewest cells a batch needs (an error names smaller ones).
    random_state
        Seed of Harmony's k-means.
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
    meta[batch_key] = (
        col.cat.remove_unused_categories() if isinstance(col.dtype, pd.CategoricalDtype) else batches.to_numpy()
    )
    hlog = logging.getLogger("harmonypy")
    level = hlog.level
    hlog.setLevel(logging.WARNING)
    try:
        ho = harmonypy.run_harmony(
            X,
            meta,
            [batch_key],
            max_iter_harmony=max_iter_harmony,
            theta=theta,
            random_state=random_state,
            verbose=False,
        )
    finally:
        hlog.setLevel(level)
    Z = np.asarray(ho.Z_corr)
    if Z.shape != X.shape:
        Z = Z.T
    # harmonypy's dtype (float64), as scanpy's harmony_integrate stores it: the neighbour search then
    # computes the same distances as the lab's, to the last bit
    adata.obsm[key_added] = np.ascontiguousarray(Z)


def _filter_table(
    obs: pd.DataFrame, *, min_genes: int, max_genes: int | None, max_pct_mt: float | None, batch_key: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The cells the QC lab's cell filters remove (a mask) and the removed-per-batch table
    (see :func:`filter_cells_genes`); shared by the in-memory and the out-of-core chains."""
    n = len(obs)
    n_genes = obs["n_genes_by_counts"].to_numpy()
    fails = {
        "removed_min_genes": n_genes < min_genes,
        "removed_max_genes": n_genes > max_genes if max_genes is not None else np.zeros(n, bool),
        "removed_max_pct_mt": obs["pct_counts_mt"].to_numpy() > max_pct_mt
        if max_pct_mt is not None
        else np.zeros(n, bool),
    }
    drop = np.logical_or.reduce(list(fails.values()))
    groups = obs[batch_key].astype(str).to_numpy() if batch_key is not None else np.full(n, "all")
    table = pd.DataFrame({"batch": groups, **fails, "removed": drop}).groupby("batch", sort=True).sum()
    table.insert(0, "n_cells", pd.Series(groups).value_counts().reindex(table.index).to_numpy())
    table["kept"] = table["n_cells"] - table["removed"]
    if drop.all():
        raise InputError(
            f"the QC filters remove all {n} cells (min_genes={min_genes}, max_genes={max_genes}, "
            f"max_pct_mt={max_pct_mt}); relax them"
        )
    return table, drop


@validated
def filter_cells_genes(
    adata: AnnData,
    *,
    min_genes: Annotated[int, Field(ge=0)] = 0,
    max_genes: PositiveInt | None = None,
    max_pct_mt: Annotated[float, Field(gt=0, le=100)] | None = None,
    min_cells: Annotated[int, Field(ge=0)] = 0,
    batch_key: str | None = None,
) -> pd.DataFrame:
    """The NBIS QC lab's filters, in place: cells with fewer than ``min_genes`` or more than
    ``max_genes`` detected genes or more than ``max_pct_mt`` % mitochondrial counts, then genes
    detected in fewer than ``min_cells`` of the remaining cells (``sc.pp.filter_cells`` /
    ``filter_genes`` rules). Needs :func:`qc_metrics` first.

    Parameters
    ----------
    adata
        Counts with :func:`qc_metrics`' columns.
    min_genes
        Cells with fewer detected genes are removed (the QC lab: 200).
    max_genes
        Cells with more detected genes are removed (doublet-like); ``None``: no upper bound.
    max_pct_mt
        Cells with a higher percentage of mitochondrial counts are removed (the QC lab: 20).
    min_cells
        Genes detected in fewer of the remaining cells are removed (the QC lab: 3).
    batch_key
        ``.obs`` column the removed-cells table is broken down by (``None``: one row ``all``).

    Returns
    -------
    Cells removed per batch (one row per ``batch_key`` value, or one row ``all``): ``n_cells``
    before, ``removed_min_genes``, ``removed_max_genes``, ``removed_max_pct_mt`` (a cell failing
    several filters counts under each), ``removed`` (cells removed), ``kept``; and the number of genes removed in
    ``df.attrs["genes_removed"]``.
    """
    table, drop = _filter_table(
        adata.obs, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt, batch_key=batch_key
    )
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


# ------------------------------------------------------------------------------------------ step groups
#: QC filters (:func:`filter_cells_genes`; the removed-cells table is broken down by prepare's batch_key)
QC = params_model(filter_cells_genes, name="QC", base=Group, exclude=("batch_key",))
#: HVGs a memory estimate assumes when ``hvg.n_top_genes`` is not set (the cutoffs choose them from the data)
HVG_ASSUMED = 3000
#: highly variable genes (:func:`highly_variable_genes`)
HVG = params_model(highly_variable_genes, name="HVG", base=Group)
#: regress out, scale and PCA (:func:`scale_pca`; the seed is the caller's ``random_state``)
PCA = params_model(scale_pca, name="PCA", base=Group, exclude=("random_state",))
#: the kNN graph of the (Harmony) embedding (:func:`scclust.pp.neighbors`)
Graph = params_model(
    neighbors, name="Graph", base=Group, include=("n_neighbors", "n_pcs", "metric", "backend", "min_recall")
)
#: the UMAP layout (:func:`scclust.pp.umap`)
Umap = params_model(umap, name="Umap", base=Group, include=("min_dist", "n_epochs", "init", "method"))
#: prepare's graph: 20 neighbours on 30 Harmony dimensions (the lab's)
PrepareGraph = Graph.with_defaults("PrepareGraph", n_neighbors=20, n_pcs=30)


def _embed(
    out: AnnData,
    *,
    batch_key: str | None,
    min_cells_per_batch: int,
    graph: Graph,
    random_state: int,
    seconds: dict[str, float] | None,
    what: str,
) -> str:
    """Harmony on ``batch_key`` (skipped, logged, for None or one batch) and the kNN graph on the
    result; returns the embedding the graph was built on (``X_pca_harmony`` or ``X_pca``)."""
    n_batches = out.obs[batch_key].nunique() if batch_key is not None else 1
    with _step(seconds, "harmony"):
        if n_batches > 1:
            harmony(out, batch_key=batch_key, min_cells_per_batch=min_cells_per_batch, random_state=random_state)
            rep = "X_pca_harmony"
        else:
            logger.info(
                "%s: %s; Harmony skipped", what, "no batch_key" if batch_key is None else f"one batch in {batch_key!r}"
            )
            rep = "X_pca"
    dims = out.obsm[rep].shape[1]
    n_pcs = graph.n_pcs if graph.n_pcs is not None else dims
    if n_pcs > dims:
        logger.info("%s: graph.n_pcs reduced from %d to %d (the dimensions of %s)", what, n_pcs, dims, rep)
    with _step(seconds, "neighbors"):
        neighbors(out, use_rep=rep, **(graph.model_dump() | {"n_pcs": min(n_pcs, dims)}), random_state=random_state)
    return rep


def _reduce(
    adata: AnnData,
    *,
    hvg: HVG,
    pca: PCA,
    random_state: int,
    raw_genes: Sequence[str] | None,
    seconds: dict[str, float] | None,
    what: str,
) -> AnnData:
    """HVGs -> (regress out) scale -> PCA of log-normalized expression (``.X``, in memory or a Dask
    array). Returns the HVG AnnData with ``.raw`` (every gene in memory; out of core the HVGs and
    ``raw_genes``, or every gene when ``raw_genes`` is None), ``X_pca`` and ``.uns["hvg_table"]``."""
    if _is_dask(adata.X):
        from ._lazy import reduce_lazy

        return reduce_lazy(adata, hvg=hvg, pca=pca, raw_genes=raw_genes, seconds=seconds, what=what)
    with _step(seconds, "hvg"):
        highly_variable_genes(adata, **hvg.model_dump())
        if adata.raw is None:  # prepare's normalize set it; a subset's all-gene matrix becomes its .raw
            adata.raw = adata
        table = adata.var[[c for c in ("means", "dispersions_norm", "highly_variable") if c in adata.var]].copy()
    with _step(seconds, "scale_pca"):
        out = scale_pca(adata, **pca.model_dump(), random_state=random_state)
    out.uns["hvg_table"] = table
    return out


@validated
def reprocess(
    adata: AnnData,
    *,
    batch_key: str | None = "sample",
    hvg: HVG = HVG(),
    pca: PCA = PCA(),
    graph: Graph = Graph(),
    min_cells_per_batch: PositiveInt = 10,
    random_state: int = 0,
) -> AnnData:
    """The re-processing chain of log-normalized expression: HVGs, scaling + PCA, Harmony, kNN graph.

    :func:`prepare` runs it after QC and normalization, :func:`scclust.tl.subcluster` on the
    selected cells. In memory, or out of core when ``.X`` is a Dask array (HVGs by scanpy on Dask,
    PCA of the scaled matrix chunk by chunk: :func:`scclust.pp._lazy.pca_implicit`).

    Parameters
    ----------
    adata
        Log-normalized expression of every gene in ``.X`` (and the ``.obs`` columns named).
    batch_key
        ``.obs`` column for Harmony; ``None`` or a single batch: Harmony is skipped (logged) and the
        graph is built on ``X_pca``.
    hvg
        Highly variable genes: :func:`highly_variable_genes`'s options.
    pca
        Regress out, scale, PCA: :func:`scale_pca`'s options.
    graph
        The kNN graph on the (Harmony) embedding: :func:`scclust.pp.neighbors`'s options.
    min_cells_per_batch
        Fewest cells a batch needs for Harmony.
    random_state
        Seed of PCA, Harmony and the graph.

    Returns
    -------
    A new AnnData of the highly variable genes (``.X`` scaled), ``.raw`` = the input's genes
    (log-normalized), ``.obsm["X_pca"]``, ``.obsm["X_pca_harmony"]`` (when Harmony ran), the graph
    (``.obsp["connectivities"]``, ``.obsp["distances"]``, ``.uns["neighbors"]``) and
    ``.uns["hvg_table"]`` (every gene's mean, normalized dispersion and HVG flag).
    """
    out = _reduce(adata, hvg=hvg, pca=pca, random_state=random_state, raw_genes=None, seconds=None, what="reprocess")
    _embed(
        out,
        batch_key=batch_key,
        min_cells_per_batch=min_cells_per_batch,
        graph=graph,
        random_state=random_state,
        seconds=None,
        what="reprocess",
    )
    return out


@validated
def prepare(
    adata: AnnData,
    *,
    batch_key: str | None = "sample",
    qc: QC = QC(),
    target_sum: Annotated[float, Field(gt=0)] = 1e4,
    hvg: HVG = HVG(),
    pca: PCA = PCA(),
    graph: PrepareGraph = PrepareGraph(),
    umap: Umap | None = Umap(),
    random_state: int = 0,
    backend: Literal["auto", "memory", "dask"] = "auto",
    chunk_cells: Annotated[int, Field(ge=100)] | None = None,
    raw_genes: GeneList | None = None,
) -> AnnData:
    """Raw counts -> a tutorial-shaped integrated AnnData.

    QC metrics and the QC lab's cell / gene filters (:func:`filter_cells_genes`), normalize +
    log1p (``.raw`` = all genes, log-normalized), then :func:`reprocess`: HVGs, scale, PCA
    (``X_pca``), Harmony on ``batch_key`` (``X_pca_harmony``), the kNN graph on it; and the UMAP.
    Returns a new AnnData restricted to the HVGs, as the lab's input.

    With ``batch_key=None`` or a single batch, Harmony is skipped (logged): ``X_pca_harmony`` is a
    copy of ``X_pca`` (configs written for integrated data run unchanged), the UMAP is stored as
    scanpy's ``X_umap`` (and, for those configs, as ``X_umap_harmony`` too), and
    ``.uns["prepare"]["harmony"]`` is ``False``.

    Out of core (``backend="dask"``: :mod:`scclust.pp._lazy`; ``.X`` a Dask array of CSR chunks,
    e.g. from :func:`read_counts_lazy`, or an in-memory matrix cut into ``chunk_cells``-row
    chunks), nothing of size cells x genes is held in memory: the output has no
    ``.layers["counts"]``; ``.X`` holds the log-normalized HVGs (sparse), ``.raw`` every gene when
    small, else the HVGs and ``raw_genes``, and ``.uns["counts_store"]`` references the counts on
    disk (:func:`scclust.pp.read_counts`).

    Parameters
    ----------
    adata
        Raw counts (non-negative integers) in ``.X``, in memory or a Dask array.
    batch_key
        Batch column for Harmony (and the removed-cells table); ``None`` or a single batch: Harmony
        is skipped.
    qc
        The QC lab's cell and gene filters: :func:`filter_cells_genes`'s options.
    target_sum
        Counts per cell after normalization (``sc.pp.normalize_total``).
    hvg
        Highly variable genes: :func:`highly_variable_genes`'s options.
    pca
        Regress out, scale, PCA: :func:`scale_pca`'s options.
    graph
        The kNN graph on the Harmony embedding, which the UMAP is computed from (the ``neighbors``
        stage builds the graph the clusterings use; it reuses this one when its options are the same).
    umap
        The UMAP layout: :func:`scclust.pp.umap`'s options; ``None``: no UMAP (later stages must
        not need one).
    random_state
        Seed of PCA, Harmony, the graph and the UMAP.
    backend
        ``memory``: counts in memory (scanpy's chain); ``dask``: out of core, counts read lazily in
        chunks on a Dask cluster; ``auto``: ``dask`` when ``.X`` is a Dask array (a run chooses it
        for a large input file: above 150 million non-zeros, read from the file's header).
    chunk_cells
        Out of core: cells per chunk (default: ~20 million non-zeros per chunk).
    raw_genes
        Out of core at a size where ``.raw`` cannot hold every gene: genes kept in ``.raw`` besides
        the HVGs (a run passes every gene its config names).

    Returns
    -------
    The HVG AnnData with ``.obsm["X_pca" | "X_pca_harmony"]`` and the UMAP (``X_umap_harmony``, or
    ``X_umap`` when Harmony was skipped), the graph of ``graph``, the QC columns in ``.obs``,
    ``.uns["pca"]["variance_ratio"]`` and ``.uns["prepare"]``: ``filtered`` (cells removed per
    batch), ``genes_removed``, ``harmony`` (bool), ``hvg`` (a DataFrame of every gene's mean,
    normalised dispersion and HVG flag), ``backend`` and per-step ``seconds``.
    """
    check_n_obs(adata, 20, what="prepare")
    if batch_key is not None:
        check_obs(adata, batch_key, what="batch_key")
    seconds: dict[str, float] = {}
    if backend == "auto":
        backend = "dask" if _is_dask(adata.X) else "memory"
    if backend == "dask":
        from ._lazy import _chunk_rows, _wrap_csr, qc_normalize_lazy

        if not _is_dask(adata.X):
            X = sparse.csr_matrix(adata.X)
            adata = AnnData(
                X=_wrap_csr(X, _chunk_rows(X.shape[0], X.nnz, chunk_cells)),
                obs=adata.obs,
                var=adata.var,
                uns=dict(adata.uns),
            )
        ln, filtered, keep_all = qc_normalize_lazy(
            adata, batch_key=batch_key, qc=qc, target_sum=target_sum, seconds=seconds
        )
        out = _reduce(
            ln,
            hvg=hvg,
            pca=pca,
            random_state=random_state,
            raw_genes=None if keep_all else list(raw_genes or ()),
            seconds=seconds,
            what="prepare",
        )
        if "counts_store" in adata.uns:
            out.uns["counts_store"] = {
                **adata.uns["counts_store"],
                "genes_kept": adata.var_names.isin(ln.var_names),
                "target_sum": float(target_sum),
                "raw_complete": bool(keep_all),
            }
    else:
        if _is_dask(adata.X):
            raise ConfigError(
                "prepare: backend 'memory' needs .X in memory; this .X is a Dask array (use backend 'dask' or 'auto')"
            )
        with _step(seconds, "qc_filter"):
            adata = adata.copy()
            qc_metrics(adata)
            filtered = filter_cells_genes(adata, **qc.model_dump(), batch_key=batch_key)
            check_n_obs(adata, 20, what="prepare after the QC filters")
        with _step(seconds, "normalize"):
            normalize(adata, target_sum=target_sum)
        out = _reduce(
            adata, hvg=hvg, pca=pca, random_state=random_state, raw_genes=None, seconds=seconds, what="prepare"
        )
    hvg_table = out.uns.pop("hvg_table")
    rep = _embed(
        out,
        batch_key=batch_key,
        min_cells_per_batch=10,
        graph=graph,
        random_state=random_state,
        seconds=seconds,
        what="prepare",
    )
    harmonized = rep == "X_pca_harmony"
    if not harmonized:  # configs written for integrated data name X_pca_harmony: the same embedding
        out.obsm["X_pca_harmony"] = out.obsm["X_pca"].copy()
    if umap is not None:
        with _step(seconds, "umap"):
            key = umap_key(harmonized)
            pp_umap(out, key_added=key, **umap.model_dump(), random_state=random_state)
            if not harmonized:
                out.obsm["X_umap_harmony"] = out.obsm[key]
    out.uns["prepare"] = {
        "filtered": filtered.reset_index(),
        "genes_removed": filtered.attrs["genes_removed"],
        "harmony": harmonized,
        "hvg": hvg_table.rename_axis("gene").reset_index(),
        "backend": backend,
        "seconds": seconds,
    }
    return out


def umap_key(harmonized: bool) -> str:
    """The key of prepare's UMAP: ``X_umap_harmony`` of a batch-corrected embedding, else scanpy's ``X_umap``."""
    return "X_umap_harmony" if harmonized else "X_umap"


pp_umap = umap
