"""The out-of-core upstream chain: raw counts on disk -> the tutorial-shaped integrated AnnData.

The counts are a Dask array of SciPy CSR row chunks read lazily from ``.h5ad`` / ``.zarr``
(:func:`read_counts_lazy`); nothing of size cells x genes is ever held in memory or densified. The
steps are Dask computations, so they run on whatever cluster :func:`scclust._dask.dask_client`
gives (a local one by default, a SLURM / Kubernetes one by address):

1. one pass: per-cell QC metrics, the QC lab's cell filters (fixed thresholds, so they apply inside
   the pass) and per-gene detection among the kept cells (the gene filter);
2. normalize_total + log1p per chunk (lazy) and ``sc.pp.highly_variable_genes`` on that Dask array
   (scanpy's own code: the same HVGs as in memory);
3. one pass: the cross-products of [HVG block | covariates] per chunk, summed by Dask's tree
   reduction; then, in memory, the eigen-decomposition of the gene x gene correlation matrix of the
   residualised HVG matrix (:func:`pca_implicit`). This is PCA of ``scale(regress_out(X))`` exactly,
   without ``sc.pp.scale``'s clip at ``max_value``;
4. one pass: the scores per chunk (``X W - C B W``) and the log-normalized HVG matrix (sparse);
5. in memory on the cells x 50 embedding: Harmony, neighbours, UMAP (the in-memory path's code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._errors import InputError, MissingFileError
from .._params import validated

logger = logging.getLogger(__name__)

#: non-zeros per chunk: ~240 MB of CSR (float32 data + int32 indices), ~20,000 cells at 1,000 genes per cell
CHUNK_NNZ = 20_000_000
#: above this many non-zeros ``backend: auto`` runs prepare out of core (the in-memory chain holds
#: counts, .layers["counts"], .raw and the dense scaled HVG matrix: ~40 bytes per non-zero + 8 kB per cell)
AUTO_NNZ = 150_000_000

__all__ = [
    "choose_backend",
    "is_lazy",
    "pca_implicit",
    "qc_normalize_lazy",
    "read_counts",
    "read_counts_lazy",
    "reduce_lazy",
    "store_nnz",
]


# ------------------------------------------------------------------------------------------ reading
@validated
def is_lazy(adata: AnnData) -> bool:
    """Whether ``adata.X`` is a Dask array (read out of core)."""
    return type(adata.X).__module__.startswith("dask.")


def _store_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zarr") or (path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())):
        return "zarr"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".h5"):
        return "10x"
    raise InputError(f"cannot read {str(path)!r} out of core: give an .h5ad, a .zarr store or a 10x .h5 file")


def store_nnz(path: str | Path) -> tuple[int, int, int]:
    """``(n_obs, n_vars, nnz)`` of a store's ``X`` without reading it (10x ``.h5``: its ``matrix/data``)."""
    import h5py

    path = Path(path)
    kind = _store_kind(path)
    if kind == "zarr":
        import zarr

        g = zarr.open_group(str(path), mode="r")
        X = g["X"]
        shape = tuple(X.attrs["shape"]) if "shape" in X.attrs else X.shape
        nnz = X["data"].shape[0] if "data" in X else int(np.prod(shape))
        return int(shape[0]), int(shape[1]), int(nnz)
    with h5py.File(path, "r") as f:
        if kind == "10x":
            m = f["matrix"]
            n_vars, n_obs = (int(s) for s in m["shape"][()])
            return n_obs, n_vars, int(m["data"].shape[0])
        X = f["X"]
        if isinstance(X, h5py.Dataset):
            return int(X.shape[0]), int(X.shape[1]), int(X.shape[0] * X.shape[1])
        shape = tuple(int(s) for s in X.attrs["shape"])
        return shape[0], shape[1], int(X["data"].shape[0])


def choose_backend(spec: Any, backend: str) -> tuple[str, str]:
    """``(backend, reason)`` for ``prepare``: ``auto`` is ``dask`` above :data:`AUTO_NNZ` non-zeros."""
    from .._input import parse_input

    spec = parse_input(spec)
    if backend != "auto":
        return backend, "set in the config (prepare.backend)"
    if spec.is_builtin:
        return (
            ("dask", "built-in counts store (read lazily)")
            if spec.name == "counts_store"
            else ("memory", "built-in dataset")
        )
    path = spec.path
    try:
        n_obs, n_vars, nnz = store_nnz(path)
    except (OSError, KeyError, InputError):
        return "memory", "size unknown"
    if nnz > AUTO_NNZ:
        return "dask", f"{nnz:,} non-zeros ({n_obs:,} cells x {n_vars:,} genes) > {AUTO_NNZ:,}"
    return "memory", f"{nnz:,} non-zeros ({n_obs:,} cells x {n_vars:,} genes) <= {AUTO_NNZ:,}"


def _chunk_rows(n_obs: int, nnz: int, chunk_cells: int | None) -> int:
    if chunk_cells:
        return int(chunk_cells)
    per_cell = max(nnz / max(n_obs, 1), 1.0)
    return int(np.clip(CHUNK_NNZ / per_cell, 1_000, 100_000))


@validated
def read_counts_lazy(path: str | Path, *, chunk_cells: int | None = None) -> AnnData:
    """An AnnData whose ``.X`` is a Dask array of CSR row chunks read lazily from ``path``;
    ``.obs`` / ``.var`` in memory. ``.h5ad`` and ``.zarr`` stay on disk; a 10x ``.h5`` is read into
    memory (small inputs) and wrapped. ``chunk_cells``: rows per chunk (default: ~20 M non-zeros).

    Parameters
    ----------
    chunk_cells
        Cells per chunk (default: ~20 million non-zeros per chunk).
    """
    import anndata as ad
    from anndata.experimental import read_elem_lazy

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"counts store not found: {path}")
    kind = _store_kind(path)
    n_obs, _, nnz = store_nnz(path)
    rows = _chunk_rows(n_obs, nnz, chunk_cells)
    try:
        if kind == "10x":
            import scanpy as sc

            mem = sc.read_10x_h5(path)
            mem.var_names_make_unique()
            X = _wrap_csr(sparse.csr_matrix(mem.X), rows)
            return AnnData(X=X, obs=mem.obs, var=mem.var)
        if kind == "zarr":
            import zarr

            g = zarr.open_group(str(path), mode="r")
            obs, var = ad.io.read_elem(g["obs"]), ad.io.read_elem(g["var"])
            X = read_elem_lazy(g["X"], chunks=(rows, -1))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                obs, var = ad.io.read_elem(f["obs"]), ad.io.read_elem(f["var"])
                if isinstance(f["X"], h5py.Dataset):
                    raise InputError(f"{path}: .X is dense; the out-of-core path reads sparse (CSR) counts")
                if f["X"].attrs.get("encoding-type") != "csr_matrix":
                    raise InputError(
                        f"{path}: .X is {f['X'].attrs.get('encoding-type')}; the out-of-core path "
                        "reads CSR (rows = cells); rewrite it as CSR"
                    )
                X = read_elem_lazy(f["X"], chunks=(rows, -1))  # chunks reopen the file by path
    except (InputError, MissingFileError):
        raise
    except Exception as err:
        raise InputError(f"cannot read {path} lazily: {type(err).__name__}: {err}") from None
    adata = AnnData(X=X, obs=obs, var=var)
    adata.uns["counts_store"] = {
        "path": str(path.resolve()),
        "format": kind,
        "n_obs": int(n_obs),
        "n_vars": int(adata.n_vars),
        "nnz": int(nnz),
    }
    return adata


def _wrap_csr(X: sparse.csr_matrix, rows: int):
    import dask.array as da

    return da.from_array(
        X, chunks=(rows, -1), asarray=False, fancy=False, meta=sparse.csr_matrix((0, 0), dtype=X.dtype)
    )


@validated
def read_counts(adata: AnnData, *, chunk_cells: int | None = None) -> AnnData:
    """The raw counts of ``adata``'s cells (all genes of the store), lazily, from the store that
    ``adata.uns["counts_store"]`` references (written by the out-of-core ``prepare``).

    Parameters
    ----------
    chunk_cells
        Cells per chunk (default: ~20 million non-zeros per chunk).
    """
    info = adata.uns.get("counts_store")
    if not info:
        raise InputError(
            "no .uns['counts_store']: this AnnData does not reference a counts store (its counts, if "
            "any, are in .raw or .layers)"
        )
    store = read_counts_lazy(info["path"], chunk_cells=chunk_cells)
    pos = store.obs_names.get_indexer(adata.obs_names)
    if (pos < 0).any():
        raise InputError(
            f"{int((pos < 0).sum())} cell(s) of this AnnData are not in the counts store {info['path']} "
            f"(first: {adata.obs_names[pos < 0][0]!r}); was the store replaced?"
        )
    same = pos.size == store.n_obs and np.array_equal(pos, np.arange(pos.size))
    X = store.X if same else store.X[pos]  # Dask reads only the chunks that hold these rows
    out = AnnData(X=X, obs=adata.obs.copy(), var=store.var.copy())
    out.uns["counts_store"] = dict(info)
    return out


# ------------------------------------------------------------------------------------------ per-chunk kernels
def _qc_block(X: sparse.csr_matrix, flags: np.ndarray) -> np.ndarray:
    """Per cell: genes detected, total counts, totals of each flag column (mt, ribo, hb)."""
    X = sparse.csr_matrix(X)
    out = np.empty((X.shape[0], 2 + flags.shape[1]), dtype=np.float64)
    out[:, 0] = np.diff(X.indptr) if not (X.data == 0).any() else (X > 0).sum(axis=1).A1
    out[:, 1] = X.sum(axis=1).A1
    out[:, 2:] = np.asarray(X @ flags.astype(np.float64))
    return out


def _gene_block(X: sparse.csr_matrix, keep: np.ndarray) -> np.ndarray:
    """Per gene (3 x genes): cells detected (all cells), total counts (all), cells detected among ``keep``."""
    X = sparse.csr_matrix(X)
    det = (X > 0).astype(np.float64)
    out = np.empty((3, X.shape[1]), dtype=np.float64)
    out[0] = det.sum(axis=0).A1
    out[1] = X.sum(axis=0).A1
    out[2] = det[keep].sum(axis=0).A1 if keep.any() else 0.0
    return out[None]


def _lognorm_block(X: sparse.csr_matrix, target_sum: float) -> sparse.csr_matrix:
    """normalize_total(target_sum) + log1p of a chunk of counts (float32, as scanpy)."""
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    tot = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, tot, out=np.zeros_like(tot, dtype=np.float64), where=tot > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
    np.log1p(X.data, out=X.data)
    return X


def _gram_block(X: sparse.csr_matrix, C: np.ndarray) -> np.ndarray:
    """``[X C]^T [X C]`` of one chunk (float64), as a (1, m, m) block."""
    Xd = X.toarray().astype(np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    A = np.hstack([Xd, C])
    return (A.T @ A)[None]


def _score_block(X: sparse.csr_matrix, C: np.ndarray, W: np.ndarray, BW: np.ndarray) -> np.ndarray:
    return np.asarray((X @ W) - C @ BW, dtype=np.float32)


def _moments_block(X: sparse.csr_matrix, C: np.ndarray) -> np.ndarray:
    """Per gene: sum of squares (row 0); then ``C^T X`` (p rows) and ``C^T C`` (padded): (1, 1 + 2p, g)."""
    X = sparse.csr_matrix(X, dtype=np.float64)
    g, p = X.shape[1], C.shape[1]
    out = np.zeros((1 + 2 * p, max(g, p)))
    out[0, :g] = X.multiply(X).sum(axis=0).A1
    out[1 : 1 + p, :g] = np.asarray((X.T @ C).T)
    out[1 + p :, :p] = C.T @ C
    return out[None]


def _clipped_block(X: sparse.csr_matrix, C: np.ndarray, B: np.ndarray, std: np.ndarray, max_value: float) -> np.ndarray:
    """The chunk of ``clip(scale(regress_out(X)), -max_value, max_value)``, dense (chunk x HVGs)."""
    Z = X.toarray().astype(np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    Z -= C @ B
    Z /= std
    return np.clip(Z, -max_value, max_value, out=Z)


def _clipped_gram_block(X, C, B, std, max_value) -> np.ndarray:
    """``Z^T Z`` and the column sums of the chunk's clipped scaled block (``Z``, values in
    [-max_value, max_value]). The product is taken in float32, the precision of ``sc.pp.scale`` +
    ``sc.pp.pca`` in memory, at half the time of float64 (the O(cells x HVGs^2) step of prepare;
    relative error ~1e-6 per chunk); chunks are summed in float64."""
    Z = _clipped_block(X, C, B, std, max_value)
    out = np.empty((Z.shape[1] + 1, Z.shape[1]))
    out[-1] = Z.sum(axis=0)
    Z = Z.astype(np.float32)
    out[:-1] = Z.T @ Z
    return out[None]


def _clipped_score_block(X, C, B, std, max_value, mean_z, V) -> np.ndarray:
    Z = _clipped_block(X, C, B, std, max_value)
    return ((Z - mean_z) @ V).astype(np.float32)


# ------------------------------------------------------------------------------------------ PCA
def pca_implicit(
    X, *, covariates: np.ndarray | None = None, n_comps: int = 50, max_value: float | None = None
) -> dict[str, Any]:
    """PCA of ``scale(regress_out(X, covariates), max_value)`` without ever forming it.

    ``X``: a cells x genes Dask array of CSR (or dense) chunks (the HVG block); ``covariates``:
    cells x p (an intercept is always added).

    ``max_value=None`` (implicit, two passes): one pass sums ``[X C]^T [X C]`` over chunks; the
    residual cross-products ``S = X^T X - X^T C (C^T C)^-1 C^T X`` give the genes' standard
    deviations (ddof 1, zero -> 1 as ``sc.pp.scale``) and the correlation matrix, whose top
    eigenvectors ``V`` are the loadings; the second pass gives the scores ``X W - C B W`` with
    ``W = D^-1 V`` and ``B = (C^T C)^-1 C^T X``. No chunk is densified beyond its HVG block.

    ``max_value`` set (three passes; exactly ``sc.pp.scale(max_value)`` + ``sc.pp.pca``): a pass of
    per-gene moments gives ``B`` and the standard deviations; a pass sums the cross-products of
    each chunk's clipped scaled block (dense chunk x HVGs, ~320 MB at 20,000 cells x 2,000 genes);
    the eigenvectors of their covariance (re-centred, as PCA does after the clip) are the loadings;
    a last pass gives the scores.

    Returns ``scores_lazy`` (a Dask array, cells x n_comps float32), ``loadings`` (genes x
    n_comps), ``variance``, ``variance_ratio``, ``mean``, ``std``.
    """
    import dask.array as da

    from .._dask import compute

    n, g = X.shape
    C = (
        np.ones((n, 1))
        if covariates is None
        else np.hstack([np.ones((n, 1)), np.asarray(covariates, dtype=np.float64)])
    )
    p = C.shape[1]
    Cd = da.from_array(C, chunks=(X.chunks[0], p))
    if max_value is None:
        m = g + p
        grams = da.blockwise(
            _gram_block,
            "bxy",
            X,
            "bg",
            Cd,
            "bc",
            new_axes={"x": m, "y": m},
            adjust_chunks={"b": 1},
            dtype=np.float64,
            concatenate=True,
            meta=np.empty((0, 0, 0)),
        )
        (G,) = compute(grams.sum(axis=0), what="PCA: cross-products of the HVG matrix (pass 4 over the counts)")
        XtX, XtC, CtC = G[:g, :g], G[:g, g:], G[g:, g:]
        sumsq = np.diag(XtX)
    else:
        w = max(g, p)
        mom = da.blockwise(
            _moments_block,
            "bkx",
            X,
            "bg",
            Cd,
            "bc",
            new_axes={"k": 1 + 2 * p, "x": w},
            adjust_chunks={"b": 1},
            dtype=np.float64,
            concatenate=True,
            meta=np.empty((0, 0, 0)),
        )
        (M,) = compute(mom.sum(axis=0), what="PCA: per-gene moments of the HVG matrix (pass 4 over the counts)")
        sumsq, XtC, CtC = M[0, :g], M[1 : 1 + p, :g].T, M[1 + p :, :p]
    B = np.linalg.lstsq(CtC, XtC.T, rcond=None)[0]  # p x g: regression coefficients (incl. the intercept)
    mean = XtC[:, 0] / n
    resid_ss = sumsq - np.einsum("gp,pg->g", XtC, B)  # diag of X^T X - X^T C B
    std = np.sqrt(np.clip(resid_ss / (n - 1), 0, None))
    std[std == 0] = 1.0
    if max_value is None:
        R = ((XtX - XtC @ B) / np.outer(std, std)) / (n - 1)
        mean_z = None
    else:
        grams = da.blockwise(
            _clipped_gram_block,
            "bxy",
            X,
            "bg",
            Cd,
            "bc",
            B,
            None,
            std,
            None,
            max_value,
            None,
            new_axes={"x": g + 1, "y": g},
            adjust_chunks={"b": 1},
            dtype=np.float64,
            concatenate=True,
            meta=np.empty((0, 0, 0)),
        )
        (G,) = compute(
            grams.sum(axis=0), what="PCA: cross-products of the clipped scaled HVG matrix (pass 5 over the counts)"
        )
        mean_z = G[-1] / n
        R = (G[:-1] - n * np.outer(mean_z, mean_z)) / (n - 1)
    evals, evecs = np.linalg.eigh(R)
    order = np.argsort(evals)[::-1][:n_comps]
    evals, V = evals[order], evecs[:, order]
    # sign convention: the largest |loading| of each component positive (deterministic)
    V *= np.sign(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])])
    if max_value is None:
        W = V / std[:, None]
        scores = da.blockwise(
            _score_block,
            "bk",
            X,
            "bg",
            Cd,
            "bc",
            W,
            None,
            B @ W,
            None,
            new_axes={"k": V.shape[1]},
            dtype=np.float32,
            concatenate=True,
            meta=np.empty((0, 0), dtype=np.float32),
        )
    else:
        scores = da.blockwise(
            _clipped_score_block,
            "bk",
            X,
            "bg",
            Cd,
            "bc",
            B,
            None,
            std,
            None,
            max_value,
            None,
            mean_z,
            None,
            V,
            None,
            new_axes={"k": V.shape[1]},
            dtype=np.float32,
            concatenate=True,
            meta=np.empty((0, 0), dtype=np.float32),
        )
    return {
        "scores_lazy": scores,
        "loadings": V,
        "variance": evals,
        "variance_ratio": evals / np.trace(R),
        "mean": mean,
        "std": std,
    }


# ------------------------------------------------------------------------------------------ the chain
def qc_filter_lazy(
    adata: AnnData,
    *,
    min_genes: int,
    max_genes: int | None,
    max_pct_mt: float | None,
    min_cells: int,
    batch_key: str | None,
    mt_prefix: str = "MT-",
    ribo_prefixes: Sequence[str] = ("RPS", "RPL"),
    hb_pattern: str = r"^HB[^(P)]",
) -> tuple[AnnData, pd.DataFrame]:
    """QC metrics, cell and gene filters in one pass over the counts. Same columns, rules and
    removed-per-batch table as :func:`~scclust.pp.qc_metrics` + :func:`~scclust.pp.filter_cells_genes`."""
    import dask.array as da

    from .._dask import compute
    from ._prepare import _filter_table

    names = adata.var_names.str.upper()
    var = adata.var.copy()
    var["mt"] = names.str.startswith(mt_prefix.upper())
    var["ribo"] = names.str.startswith(tuple(p.upper() for p in ribo_prefixes))
    var["hb"] = names.str.contains(hb_pattern, regex=True)
    flags = var[["mt", "ribo", "hb"]].to_numpy(dtype=np.float64)
    X = adata.X
    qc_lazy = X.map_blocks(_qc_block, flags, dtype=np.float64, chunks=(X.chunks[0], (5,)), meta=np.empty((0, 0)))
    (qc,) = compute(qc_lazy, what="QC metrics (pass 1 over the counts)")
    obs = adata.obs.copy()
    obs["n_genes_by_counts"] = qc[:, 0].astype(np.int32)
    obs["total_counts"] = qc[:, 1].astype(np.float32)
    for j, key in enumerate(("mt", "ribo", "hb")):
        obs[f"total_counts_{key}"] = qc[:, 2 + j].astype(np.float32)
        obs[f"pct_counts_{key}"] = np.divide(100 * qc[:, 2 + j], qc[:, 1], out=np.zeros(len(qc)), where=qc[:, 1] > 0)
    table, drop = _filter_table(
        obs, min_genes=min_genes, max_genes=max_genes, max_pct_mt=max_pct_mt, batch_key=batch_key
    )
    keep = ~drop
    keep_d = da.from_array(keep, chunks=(X.chunks[0],))
    genes_lazy = da.blockwise(
        _gene_block,
        "bkg",
        X,
        "bg",
        keep_d,
        "b",
        new_axes={"k": 3},
        adjust_chunks={"b": 1},
        dtype=np.float64,
        concatenate=True,
        meta=np.empty((0, 0, 0)),
    )
    (gstats,) = compute(genes_lazy.sum(axis=0), what="gene filter (pass 2 over the counts)")
    var["n_cells_by_counts"] = gstats[0].astype(np.int64)
    var["mean_counts"] = gstats[1] / adata.n_obs
    var["pct_dropout_by_counts"] = 100 * (1 - gstats[0] / adata.n_obs)
    var["total_counts"] = gstats[1]
    gene_drop = gstats[2] < min_cells
    if gene_drop.all():
        raise InputError(f"min_cells={min_cells} removes every gene; lower it")
    table.attrs["genes_removed"] = int(gene_drop.sum())
    if drop.any():
        logger.info("prepare: QC filters removed %d of %d cells", int(drop.sum()), drop.size)
    if gene_drop.any():
        logger.info("prepare: %d genes detected in fewer than %d cells removed", int(gene_drop.sum()), min_cells)
    Xf = X[np.flatnonzero(keep)] if drop.any() else X
    Xf = Xf[:, np.flatnonzero(~gene_drop)] if gene_drop.any() else Xf
    out = AnnData(X=Xf, obs=obs.loc[keep], var=var.loc[~gene_drop])
    out.uns.update(adata.uns)
    return out, table


def qc_normalize_lazy(
    adata: AnnData, *, batch_key: str | None, qc: Any, target_sum: float, seconds: dict[str, float] | None = None
) -> tuple[AnnData, pd.DataFrame, bool]:
    """Steps 1-2 of the module docstring on ``adata`` (``.X`` a Dask array of counts): QC metrics and
    filters in one pass, then normalize_total + log1p per chunk (lazy).

    Returns the log-normalized AnnData (``.X`` a Dask array; QC columns in ``.obs``), the
    removed-per-batch table, and whether ``.raw`` can hold every gene (<= :data:`AUTO_NNZ` non-zeros).
    """
    from .._checks import check_n_obs
    from ._prepare import _step

    with _step(seconds, "qc_filter"):
        _check_counts(adata.X)
        filt, table = qc_filter_lazy(adata, **qc.model_dump(), batch_key=batch_key)
        check_n_obs(filt, 20, what="prepare after the QC filters")
    lognorm = filt.X.map_blocks(_lognorm_block, target_sum, dtype=np.float32)
    ln = AnnData(X=lognorm, obs=filt.obs, var=filt.var)
    ln.uns["log1p"] = {"base": None}
    nnz_est = int(filt.X.shape[0]) * float(filt.var["n_cells_by_counts"].mean())  # upper bound after the filters
    return ln, table, nnz_est <= AUTO_NNZ


def reduce_lazy(
    ln: AnnData,
    *,
    hvg: Any,
    pca: Any,
    raw_genes: Sequence[str] | None,
    seconds: dict[str, float] | None = None,
    what: str = "prepare",
) -> AnnData:
    """Steps 2-4 of the module docstring on log-normalized expression (``ln.X`` a Dask array):
    HVGs (scanpy on Dask), regress out + scale + PCA implicitly (:func:`pca_implicit`), then the
    scores and the log-normalized matrix for ``.raw`` in one last pass.

    ``.raw``: every gene when ``raw_genes`` is None, else the HVGs and ``raw_genes``. Returns the
    HVG AnnData (``.X`` log-normalized HVGs, CSR in memory; ``.obsm["X_pca"]``; ``.uns["pca"]``;
    ``.varm["PCs"]``; ``.uns["hvg_table"]``).
    """
    import scanpy as sc

    from .._dask import compute_rows
    from ._prepare import _step

    if hvg.flavor == "seurat_v3":
        raise InputError(
            "hvg.flavor 'seurat_v3' is not offered out of core (it needs a second copy of the counts); "
            "use 'seurat' or 'cell_ranger', or prepare.backend: memory"
        )
    kw = (
        {"min_mean": hvg.min_mean, "max_mean": hvg.max_mean, "min_disp": hvg.min_disp}
        if hvg.n_top_genes is None
        else {}
    )
    logger.info("Dask: highly variable genes (one pass over the counts)")
    with _step(seconds, "hvg"):
        if hvg.batch_key is not None and hvg.batch_key not in ln.obs:
            from .._errors import MissingKeyError, choices

            raise MissingKeyError(f"hvg.batch_key {hvg.batch_key!r} not in .obs; available: {choices(ln.obs.columns)}")
        sc.pp.highly_variable_genes(ln, flavor=hvg.flavor, n_top_genes=hvg.n_top_genes, batch_key=hvg.batch_key, **kw)
    hv = ln.var["highly_variable"].to_numpy(dtype=bool)
    if hv.sum() < 2:
        raise InputError(
            f"{what}: only {int(hv.sum())} highly variable gene(s) found; relax min_mean / min_disp or set n_top_genes"
        )
    logger.info("%d highly variable genes", int(hv.sum()))
    table = ln.var[[c for c in ("means", "dispersions_norm", "highly_variable") if c in ln.var]].copy()
    lognorm = ln.X
    cov = _covariates(ln.obs, pca.regress_out)
    n_eff = min(pca.n_comps, ln.n_obs - 1, int(hv.sum()) - 1)
    if n_eff < pca.n_comps:
        logger.warning("n_comps reduced from %d to %d (data is %d x %d)", pca.n_comps, n_eff, ln.n_obs, int(hv.sum()))
    with _step(seconds, "scale_pca"):
        res = pca_implicit(lognorm[:, np.flatnonzero(hv)], covariates=cov, n_comps=n_eff, max_value=pca.max_value)
    keep_raw = np.ones(ln.n_vars, bool) if raw_genes is None else hv | ln.var_names.isin(list(raw_genes))
    with _step(seconds, "scores_raw"):
        scores, Xraw = compute_rows(
            res["scores_lazy"],
            lognorm[:, np.flatnonzero(keep_raw)],
            what=f"{what}: PCA scores and the log-normalized matrix for .raw (last pass)",
        )
    Xraw = sparse.csr_matrix(Xraw)
    raw = AnnData(X=Xraw, obs=ln.obs[[]], var=ln.var.loc[keep_raw].copy())
    out = AnnData(X=Xraw[:, np.flatnonzero(hv[keep_raw])], obs=ln.obs.copy(), var=ln.var.loc[hv].copy())
    out.raw = raw
    logger.info(
        "%s: .raw holds %s (%d genes)",
        what,
        "every gene" if keep_raw.all() else "the HVGs and the genes named",
        int(keep_raw.sum()),
    )
    out.obsm["X_pca"] = scores
    out.varm["PCs"] = res["loadings"].astype(np.float32)
    out.uns["pca"] = {
        "variance": res["variance"],
        "variance_ratio": res["variance_ratio"],
        "params": {
            "zero_center": True,
            "implicit_scale": True,
            "max_value": pca.max_value,
            "regress_out": list(pca.regress_out),
        },
    }
    out.uns["log1p"] = {"base": None}
    out.uns["hvg_table"] = table
    return out


def _check_counts(X) -> None:
    """The first chunk must hold non-negative integers (raw counts)."""
    block = X.blocks[0].compute(scheduler="synchronous")
    data = block.data if sparse.issparse(block) else np.asarray(block)
    if data.size and (np.any(data < 0) or not np.allclose(data[:100_000], np.round(data[:100_000]))):
        raise InputError(
            "prepare expects raw counts in .X (non-negative integers); this .X looks normalized. "
            "Drop the 'prepare' stage for an already integrated AnnData"
        )


def _covariates(obs: pd.DataFrame, keys: Sequence[str]) -> np.ndarray | None:
    """Numeric keys as columns, categorical ones as indicator columns (first level dropped): the
    OLS that ``sc.pp.regress_out`` fits per gene."""
    from .._errors import MissingKeyError, choices

    cols = []
    for key in keys:
        if key not in obs:
            raise MissingKeyError(f"regress_out key {key!r} not in .obs; available: {choices(obs.columns)}")
        vals = obs[key]
        if pd.api.types.is_numeric_dtype(vals):
            cols.append(vals.to_numpy(dtype=np.float64)[:, None])
        else:
            cols.append(pd.get_dummies(vals.astype(str), drop_first=True).to_numpy(dtype=np.float64))
    return np.hstack(cols) if cols else None


def lazy_info(adata: AnnData) -> dict[str, Any]:
    """What the manifest records about an out-of-core run."""
    info = adata.uns.get("counts_store", {})
    return {k: info[k] for k in ("path", "format", "n_obs", "n_vars", "nnz") if k in info}
