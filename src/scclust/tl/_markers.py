"""Marker genes of each cluster: one cluster against the rest (or a reference cluster).

The statistics are those of :func:`scanpy.tl.rank_genes_groups` (Wilcoxon rank-sum with tie
correction, Welch's t-test, log fold changes, Benjamini-Hochberg adjusted p-values), plus the
fraction of cells expressing each gene inside and outside the cluster and the AUROC, computed by a
sparse rank engine: genes are processed in blocks; for each block the non-zero values of every gene
are sorted once (one ``np.sort`` of 64-bit keys that pack gene, value and cluster) and the zeros of a
gene share one tied rank, so nothing of size cells x genes is ever dense and the work is
``O(nnz log nnz)``. When the run's counts live in a counts store (out-of-core ``prepare``, ``.raw``
holding only some genes), the same engine runs on Dask: one pass over the store writes each gene
block's keys to a scratch folder, then one task per block sorts and ranks them.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._checks import check_groupby
from .._errors import ConfigError, InputError, MissingKeyError, choices
from .._params import validated
from .._types import GeneList, KeyList

logger = logging.getLogger(__name__)

__all__ = ["marker_expression", "marker_table", "markers", "markers_key", "top_markers"]

#: non-zeros of one gene block in memory (the sort keys take 8 bytes each, the temporaries ~50)
BLOCK_NNZ = 20_000_000
#: non-zeros of one gene block sorted by one Dask task (8 bytes each)
DASK_BLOCK_NNZ = 200_000_000
#: at most this many genes in one block (16 bits of the sort key)
_MAX_BLOCK_GENES = 65_535
#: at most this many groups (16 bits of the sort key; one is the cells without a label)
_MAX_GROUPS = 65_534
_ZERO32 = np.uint64(0x80000000)  # the ordered bits of +0.0: positive values sort above it

Fraction01 = Annotated[float, Field(ge=0, le=1)]


def markers_key(groupby: str) -> str:
    """``.uns`` key of the markers of a clustering: ``markers_{groupby}``."""
    return f"markers_{groupby}"


# ------------------------------------------------------------------------------------------ engine
# A non-zero entry is one 64-bit key: gene within its block (16 bits) | its value as an ordered
# integer (32 bits: float32 bits flipped so that integer order is value order) | its group (16 bits).
# One sort of a block's keys orders every gene's values; a run of equal (gene, value) is a tie.


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as unsigned integers in the same order (uint64, 32 bits used)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    neg = (bits >> np.uint64(31)).astype(bool)
    bits[neg] = ~bits[neg] & np.uint64(0xFFFFFFFF)
    bits[~neg] |= _ZERO32
    return bits


def _pack(gene: np.ndarray, vbits: np.ndarray, group: np.ndarray) -> np.ndarray:
    return (gene.astype(np.uint64) << np.uint64(48)) | (vbits << np.uint64(16)) | group.astype(np.uint64)


@functools.cache
def _kernels():
    """The compiled kernels (numba, a dependency of scanpy; compiled once, cached on disk)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def pack_csr(data, indices, indptr, codes, g0, g1, keys, sums, sumsq, nnz):  # pragma: no cover - compiled
        """Keys of the stored non-zeros of columns g0:g1 of a float32 CSR matrix (rows: cells), and
        per group x gene the sum, the sum of squares (squares in float32, as scanpy) and non-zeros."""
        k = 0
        for r in range(indptr.size - 1):
            grp = codes[r]
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                v = data[p]
                if c < g0 or c >= g1 or v == 0:
                    continue
                u = np.uint64(np.float32(v).view(np.uint32))
                u = ~u & np.uint64(0xFFFFFFFF) if u >> np.uint64(31) else u | np.uint64(0x80000000)
                g = c - g0
                keys[k] = (np.uint64(g) << np.uint64(48)) | (u << np.uint64(16)) | np.uint64(grp)
                k += 1
                sums[grp, g] += v
                sumsq[grp, g] += v * v
                nnz[grp, g] += 1
        return k

    @numba.njit(cache=True, nogil=True)
    def ranks(keys, gene_start, group_of, n_cells, zero, ranksum, ties, zero_rank, nnz):  # pragma: no cover
        """Per gene of a block (its SORTED keys): rank sum and non-zeros per group (``group_of``:
        the group of each code, -1 = cell left out), ties averaged, zeros one tie among
        ``n_cells`` cells; the tie term sum(t^3 - t) and the rank the zeros share."""
        for g in range(gene_start.size - 1):
            a, b = gene_start[g], gene_start[g + 1]
            m = 0
            neg = 0
            for i in range(a, b):
                if group_of[keys[i] & np.uint64(0xFFFF)] >= 0:
                    m += 1
                    if ((keys[i] >> np.uint64(16)) & np.uint64(0xFFFFFFFF)) < zero:
                        neg += 1
            z = float(n_cells - m)
            t = z * z * z - z
            pos = 0
            i = a
            while i < b:
                gv = keys[i] >> np.uint64(16)
                j = i
                c = 0
                while j < b and (keys[j] >> np.uint64(16)) == gv:
                    if group_of[keys[j] & np.uint64(0xFFFF)] >= 0:
                        c += 1
                    j += 1
                if c > 0:
                    r = pos + 1.0 + (c - 1) / 2.0
                    if (gv & np.uint64(0xFFFFFFFF)) >= zero:
                        r += z
                    for q in range(i, j):
                        grp = group_of[keys[q] & np.uint64(0xFFFF)]
                        if grp >= 0:
                            ranksum[grp, g] += r
                            nnz[grp, g] += 1
                    cf = float(c)
                    t += cf * cf * cf - cf
                    pos += c
                i = j
            ties[g] = t
            zero_rank[g] = neg + (z + 1.0) / 2.0

    return pack_csr, ranks


def _new_stats(n_groups: int, n_genes: int, sums: bool = True) -> dict[str, np.ndarray]:
    out = {
        "ranksum": np.zeros((n_groups, n_genes)),
        "nnz": np.zeros((n_groups, n_genes), np.int64),
        "ties": np.zeros(n_genes),
        "zero_rank": np.zeros(n_genes),
    }
    if sums:
        out["sum"] = np.zeros((n_groups, n_genes))
        out["sumsq"] = np.zeros((n_groups, n_genes))
    return out


def _rank_block(
    keys: np.ndarray, n_genes: int, group_of: np.ndarray, n_groups: int, n_cells: int, zero: np.uint64
) -> dict[str, np.ndarray]:
    """:func:`_kernels`' ``ranks`` on one block's sorted keys."""
    out = _new_stats(n_groups, n_genes, sums=False)
    gene_start = np.searchsorted(keys, np.arange(n_genes + 1, dtype=np.uint64) << np.uint64(48))
    _kernels()[1](
        keys, gene_start, group_of, n_cells, np.uint64(zero), out["ranksum"], out["ties"], out["zero_rank"], out["nnz"]
    )
    return out


def _block_keys(X: Any, codes: np.ndarray, n_groups: int, g0: int, g1: int) -> tuple[np.ndarray, np.uint64, dict]:
    """Unsorted keys of columns ``g0:g1`` of ``X`` (cells x genes), the value code of zero, and the
    group x gene sums, sums of squares and non-zeros of those columns."""
    B = g1 - g0
    sums = {"sum": np.zeros((n_groups, B)), "sumsq": np.zeros((n_groups, B)), "nnz": np.zeros((n_groups, B), np.int64)}
    if sparse.issparse(X) and X.format == "csr" and X.dtype == np.float32:
        sub = X[:, g0:g1]  # scipy's C++ column slice: O(nnz)
        keys = np.empty(sub.nnz, np.uint64)
        k = _kernels()[0](sub.data, sub.indices, sub.indptr, codes, 0, B, keys, sums["sum"], sums["sumsq"], sums["nnz"])
        return keys[:k], _ZERO32, sums
    if sparse.issparse(X):
        sub = sparse.csc_matrix(X[:, g0:g1])
        rows, vals = sub.indices.astype(np.int64), sub.data
        cols = np.repeat(np.arange(B), np.diff(sub.indptr))
    else:
        block = np.asarray(X[:, g0:g1])
        rows, cols = np.nonzero(block)
        vals = block[rows, cols]
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    group = codes[rows]
    idx = group * B + cols
    v = vals.astype(np.float64)
    v2 = (vals * vals).astype(np.float64)  # squares in the data's precision, as scanpy
    sums["sum"] = np.bincount(idx, weights=v, minlength=n_groups * B).reshape(n_groups, B)
    sums["sumsq"] = np.bincount(idx, weights=v2, minlength=n_groups * B).reshape(n_groups, B)
    sums["nnz"] = np.bincount(idx, minlength=n_groups * B).reshape(n_groups, B)
    exact32 = vals.dtype == np.float32 or np.array_equal(vals.astype(np.float32), vals)
    if exact32:
        return _pack(cols, _ordered_bits(vals.astype(np.float32)), group), _ZERO32, sums
    uniq, inv = np.unique(vals, return_inverse=True)  # other values: keyed by their rank among the distinct ones
    return _pack(cols, inv.astype(np.uint64), group), np.uint64(np.searchsorted(uniq, 0)), sums


def _gene_blocks(nnz_per_gene: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Contiguous gene ranges of at most ``budget`` non-zeros (one gene may exceed it alone)."""
    blocks, g0, acc = [], 0, 0
    for g, c in enumerate(np.asarray(nnz_per_gene)):
        if g > g0 and (acc + c > budget or g - g0 >= _MAX_BLOCK_GENES):
            blocks.append((g0, g))
            g0, acc = g, 0
        acc += int(c)
    blocks.append((g0, len(nnz_per_gene)))
    return blocks


def _comparisons_stats(
    keys: np.ndarray, B: int, comparisons: list[tuple[np.ndarray, int]], zero: np.uint64
) -> list[dict]:
    return [_rank_block(keys, B, group_of, 2, n_sub, zero) for group_of, n_sub in comparisons]


def _stats_memory(
    X: Any, codes: np.ndarray, n_groups: int, comparisons: list[tuple[np.ndarray, int]], block_nnz: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Statistics of every gene of an in-memory matrix (cells x genes): over all cells (``codes``:
    group per cell, ``n_groups`` with the unlabelled cells) and, per entry of ``comparisons``
    (``(group_of, n_cells)``: codes mapped to 0 / 1 / -1 = left out), over a subset of them."""
    n_cells, G = X.shape
    if sparse.issparse(X):
        X = X if X.format in ("csr", "csc") else sparse.csr_matrix(X)
        nnz_gene = np.diff(X.indptr) if X.format == "csc" else np.bincount(X.indices, minlength=G)
    else:
        X = np.asarray(X)
        nnz_gene = np.full(G, n_cells)
    total = _new_stats(n_groups, G)
    pairs = [_new_stats(2, G, sums=False) for _ in comparisons]
    identity = np.arange(n_groups, dtype=np.int64)
    for g0, g1 in _gene_blocks(nnz_gene, block_nnz):
        keys, zero, sums = _block_keys(X, codes, n_groups, g0, g1)
        keys.sort()
        part = _rank_block(keys, g1 - g0, identity, n_groups, n_cells, zero)
        part.update(sum=sums["sum"], sumsq=sums["sumsq"])
        for k, v in part.items():
            total[k][..., g0:g1] = v
        for acc, part in zip(pairs, _comparisons_stats(keys, g1 - g0, comparisons, zero), strict=True):
            for k, v in part.items():
                acc[k][..., g0:g1] = v
        logger.debug("markers: genes %d-%d of %d", g0, g1, G)
    return total, pairs


# ------------------------------------------------------------------------------------------ out of core
def _store_chunk(
    X: sparse.csr_matrix,
    rows0: int,
    kept: np.ndarray | None,
    target_sum: float,
    blocks: list[tuple[int, int]],
    codes: np.ndarray,
    n_groups: int,
    folder: str,
    chunk: int,
) -> dict:
    """One row chunk of raw counts, read once: log-normalized as the out-of-core ``prepare`` did
    (totals over the kept genes), its keys written per gene block to ``{folder}/{block}/{chunk}``;
    returns the group x gene sums, sums of squares and non-zeros, and the keys per block."""
    from ..pp._lazy import _lognorm_block

    X = sparse.csr_matrix(X)
    if kept is not None:
        X = X[:, kept]
    X = _lognorm_block(X, target_sum)
    codes = codes[rows0 : rows0 + X.shape[0]]
    G = X.shape[1]
    out = {
        "sum": np.zeros((n_groups, G)),
        "sumsq": np.zeros((n_groups, G)),
        "nnz": np.zeros((n_groups, G), np.int64),
        "n_keys": [],
    }
    for j, (g0, g1) in enumerate(blocks):
        keys, _, sums = _block_keys(X, codes, n_groups, g0, g1)
        for k in ("sum", "sumsq", "nnz"):
            out[k][:, g0:g1] = sums[k]
        keys.tofile(f"{folder}/{j}/{chunk}")
        out["n_keys"].append(int(keys.size))
    return out


def _store_block(
    n_keys: list[int],
    folder: str,
    j: int,
    n_genes: int,
    n_groups: int,
    n_cells: int,
    comparisons: list[tuple[np.ndarray, int]],
) -> tuple[dict, list[dict]]:
    """One gene block: the chunks' keys read into one array (deleted from the scratch folder),
    sorted once, ranked."""
    import os

    keys = np.empty(sum(n_keys), np.uint64)
    at = 0
    for chunk, n in enumerate(n_keys):
        path = f"{folder}/{j}/{chunk}"
        keys[at : at + n] = np.fromfile(path, dtype=np.uint64, count=n)
        at += n
        os.remove(path)
    keys.sort()
    total = _rank_block(keys, n_genes, np.arange(n_groups, dtype=np.int64), n_groups, n_cells, _ZERO32)
    return total, _comparisons_stats(keys, n_genes, comparisons, _ZERO32)


def _stats_store(
    adata: AnnData,
    codes: np.ndarray,
    n_groups: int,
    comparisons: list,
    *,
    chunk_cells: int | None,
    block_nnz: int,
    scratch_dir: str | None,
) -> tuple[pd.Index, dict, list[dict]]:
    """The statistics of every kept gene from the counts store, in two Dask steps: one pass over
    the store (each row chunk read once, its sort keys written per gene block to a scratch folder),
    then one task per gene block (its keys sorted once and ranked)."""
    import shutil
    import tempfile

    import dask

    from .._dask import _client, _reporting
    from ..pp._lazy import read_counts

    info = adata.uns["counts_store"]
    counts = read_counts(adata, chunk_cells=chunk_cells)
    kept = np.asarray(info.get("genes_kept", np.ones(counts.n_vars, bool)), dtype=bool)
    genes = counts.var_names[kept]
    target_sum = float(info.get("target_sum", 1e4))
    G, n_cells = int(kept.sum()), counts.n_obs
    nnz_est = float(info.get("nnz", 0)) * n_cells / max(int(info.get("n_obs", n_cells)), 1) * G / max(counts.n_vars, 1)
    width = int(np.clip(block_nnz / max(nnz_est / max(G, 1), 1.0), 1, _MAX_BLOCK_GENES))
    blocks = [(g0, min(g0 + width, G)) for g0 in range(0, G, width)]
    root = scratch_dir or dask.config.get("temporary-directory", None) or None
    folder = tempfile.mkdtemp(prefix="scclust-markers-", dir=root)
    logger.info(
        "markers: %d genes of %s: one pass over the store, then %d block(s) of %d genes (scratch %s)",
        G,
        info["path"],
        len(blocks),
        width,
        folder,
    )
    try:
        for j in range(len(blocks)):
            Path(folder, str(j)).mkdir()
        chunks = counts.X.to_delayed().ravel()
        offsets = np.concatenate([[0], np.cumsum(counts.X.chunks[0])])[:-1]
        codes_d = dask.delayed(codes, pure=True)
        kept_d = dask.delayed(None if kept.all() else kept, pure=True)
        comps_d = dask.delayed(comparisons, pure=True)
        parts = [
            dask.delayed(_store_chunk, pure=True)(d, int(o), kept_d, target_sum, blocks, codes_d, n_groups, folder, i)
            for i, (d, o) in enumerate(zip(chunks, offsets, strict=True))
        ]
        sizes = dask.delayed(lambda *ps: [[p["n_keys"][j] for p in ps] for j in range(len(blocks))])(*parts)
        sums = dask.delayed(lambda *ps: {k: sum(p[k] for p in ps) for k in ("sum", "sumsq", "nnz")})(*parts)
        ranked = [
            dask.delayed(_store_block)(sizes[j], folder, j, g1 - g0, n_groups, n_cells, comps_d)
            for j, (g0, g1) in enumerate(blocks)
        ]
        total = _new_stats(n_groups, G)
        pairs = [_new_stats(2, G, sums=False) for _ in comparisons]
        client = _client()
        with _reporting("markers from the counts store"):
            if client is None:
                results = dask.compute(sums, *ranked)
            else:
                from distributed import as_completed

                futures = client.compute([sums, *ranked])
                where = {f.key: i for i, f in enumerate(futures)}
                results = [None] * len(futures)
                for future, value in as_completed(futures, with_results=True):
                    results[where[future.key]] = value
                    if where[future.key] > 0:
                        g1 = blocks[where[future.key] - 1][1]
                        logger.info("markers: genes up to %d of %d ranked", g1, G)
        for k in ("sum", "sumsq"):
            total[k] = results[0][k]
        for (g0, g1), (t, ps) in zip(blocks, results[1:], strict=True):
            for acc, part in zip([total, *pairs], [t, *ps], strict=True):
                for k, v in part.items():
                    acc[k][..., g0:g1] = v
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return genes, total, pairs


# ------------------------------------------------------------------------------------------ inputs
def _looks_like_counts(X: Any) -> bool:
    data = X.data if sparse.issparse(X) else np.asarray(X).ravel()
    sample = data[:100_000]
    return sample.size > 0 and bool(np.all(sample == np.round(sample))) and float(sample.max()) > 1


def _source(adata: AnnData, use_raw: bool | None, layer: str | None) -> tuple[Any, pd.Index, str, bool]:
    """(matrix, gene names, description, from the store) of the expression tested."""
    info = adata.uns.get("counts_store")
    if layer is not None:
        if use_raw:
            raise ConfigError("give use_raw or layer, not both (layer reads adata.layers, use_raw reads .raw)")
        if layer not in adata.layers:
            raise MissingKeyError(f"layer {layer!r} not in .layers; available: {choices(adata.layers.keys())}")
        return adata.layers[layer], adata.var_names, f".layers[{layer!r}]", False
    raw_incomplete = bool(info) and not bool(info.get("raw_complete", True))
    if use_raw is None and raw_incomplete:
        return None, pd.Index([]), f"the counts store {info.get('path')}", True
    use = adata.raw is not None if use_raw is None else use_raw
    if use:
        if adata.raw is None:
            raise InputError("use_raw=True but adata.raw is not set; use use_raw=False or None")
        return adata.raw.X, adata.raw.var_names, ".raw", False
    return adata.X, adata.var_names, ".X", False


def _check_expression(X: Any, where: str) -> None:
    if type(X).__module__.startswith("dask."):
        raise InputError(
            f"{where} is a Dask array; markers read expression in memory, or from the counts store "
            "that .uns['counts_store'] names"
        )
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and _looks_like_counts(X):
        raise InputError(
            f"markers need log-normalized expression; {where} holds integer counts: normalize and "
            "log-transform first (sc.pp.normalize_total + sc.pp.log1p, or the prepare stage), or "
            "name a log-normalized layer"
        )
    if data.size and float(np.nanmin(data)) < 0:
        raise InputError(
            f"markers need log-normalized expression (>= 0); {where} has negative values (scaled "
            "data?): use .raw or a log-normalized layer"
        )


def _groups(adata: AnnData, groupby: str) -> tuple[np.ndarray, list[str]]:
    """Group code per cell (-1: no label) and the non-empty groups, checked to be a clustering."""
    labels = check_groupby(adata, groupby)
    cats = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy().astype(np.int64)
    sizes = np.bincount(codes[codes >= 0], minlength=len(cats))
    if len(cats) > 1000 or len(cats) > adata.n_obs / 2:
        raise InputError(
            f"groupby {groupby!r} has {len(cats)} groups for {adata.n_obs} cells: not a clustering "
            "(name a column of cluster labels, e.g. leiden_0.6)"
        )
    single = [c for c, s in zip(cats, sizes, strict=True) if s == 1]
    if single:
        raise InputError(
            f"groupby {groupby!r}: cluster(s) {choices(single)} hold a single cell; markers need at least "
            "2 cells per cluster (merge or remove them)"
        )
    if (sizes == 0).any():
        logger.info("markers: empty categories of %s left out: %s", groupby, choices(np.asarray(cats)[sizes == 0]))
    present = [c for c, s in zip(cats, sizes, strict=True) if s > 0]
    if len(present) < 2:
        raise InputError(f"groupby {groupby!r} has {len(present)} non-empty cluster(s); markers need at least 2")
    remap = np.full(len(cats) + 1, -1, np.int64)
    remap[np.flatnonzero(sizes > 0)] = np.arange(len(present))
    return remap[codes], present


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels' ``fdr_bh``, as scanpy)."""
    n = p.size
    order = np.argsort(p)
    ps = p[order]
    adj = np.minimum.accumulate((ps / (np.arange(1, n + 1) / float(n)))[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


# ------------------------------------------------------------------------------------------ the tool
def _check(args: dict) -> None:
    if args.get("layer") is not None and args.get("use_raw"):
        raise ValueError("give use_raw or layer, not both (layer reads adata.layers, use_raw reads .raw)")


@validated(check=_check)
def markers(
    adata: AnnData,
    *,
    groupby: str,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var"] = "wilcoxon",
    reference: str = "rest",
    tie_correct: bool = True,
    use_raw: bool | None = None,
    layer: str | None = None,
    min_in_group_fraction: Fraction01 = 0.25,
    max_out_group_fraction: Fraction01 = 0.5,
    min_fold_change: float = 1.0,
    chunk_cells: Annotated[int, Field(ge=100)] | None = None,
    scratch_dir: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Marker genes of every cluster of ``groupby``: each cluster against the rest of the cells
    (or against the ``reference`` cluster), on log-normalized expression of every gene.

    Per gene and cluster: the Wilcoxon rank-sum z-score (ties averaged; ``tie_correct``: the
    variance corrected for ties), or Welch's t statistic (``method``), its two-sided p-value and
    the Benjamini-Hochberg adjusted p-value over all genes; the log2 fold change of
    :func:`scanpy.tl.rank_genes_groups` (``log2((expm1(mean_in) + 1e-9) / (expm1(mean_out) + 1e-9))``
    of the mean log-expression); the fraction of cells with expression > 0 inside and outside the
    cluster; and the AUROC (the probability that a cell of the cluster expresses the gene more than
    a cell outside it, ties counted one half; the Wilcoxon U statistic over its maximum). The
    scores, p-values and fold changes equal ``sc.tl.rank_genes_groups(method=..., tie_correct=...)``
    (Wilcoxon and t-tests, to floating-point rounding).

    Expression: ``layer`` when given; else ``.raw`` when present (``use_raw=None``; scanpy's
    convention), else ``.X``. When the run's counts live in a counts store
    (``.uns["counts_store"]`` from the out-of-core ``prepare``) and ``.raw`` holds only some genes,
    every kept gene is read from the store and log-normalized as ``prepare`` did, on Dask (the
    active ``distributed`` client, else Dask's local scheduler): one pass over the store writes the
    sort keys of each gene block to ``scratch_dir``, then one task per gene block sorts and ranks
    them; no process holds the whole matrix. Nothing of size cells x genes is made dense in either
    path.

    Parameters
    ----------
    adata
        Annotated data matrix with log-normalized expression.
    groupby
        The clustering (``.obs`` column of cluster labels).
    method
        ``"wilcoxon"`` (rank-sum), ``"t-test"`` (Welch) or ``"t-test_overestim_var"`` (scanpy's
        t-test with the rest's variance over the cluster's size).
    reference
        ``"rest"``: each cluster against all other cells; a cluster name: each other cluster
        against that one (the reference gets no markers).
    tie_correct
        Wilcoxon: correct the variance of the rank sum for ties (the zeros of a gene are one large tie).
    use_raw
        Read expression from ``.raw`` (``None``: when present; scanpy's convention).
    layer
        Read expression from ``.layers[layer]`` instead (not with ``use_raw=True``).
    min_in_group_fraction
        Marker filter (as ``sc.tl.filter_rank_genes_groups``): expressed in more than this fraction
        of the cluster's cells.
    max_out_group_fraction
        Marker filter: expressed in less than this fraction of the other cells.
    min_fold_change
        Marker filter: log2 fold change above this.
    chunk_cells
        From a counts store: cells per chunk read (default: ~20 million non-zeros per chunk).
    scratch_dir
        From a counts store: where the sort keys of the gene blocks are kept between the pass over
        the store and the ranking (8 bytes per non-zero, removed at the end); default Dask's
        ``temporary-directory``, else the system's. On a cluster of several machines, a folder every
        worker sees.
    key_added
        ``.uns`` key of the results; default ``markers_{groupby}``.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), having written ``.uns[key_added]`` in the layout of
    ``sc.tl.rank_genes_groups``: ``params`` (``groupby``, ``reference``, ``method``, ``use_raw``,
    ``layer``, ``corr_method``, ``tie_correct``, the three filters, ``source``), per cluster
    structured arrays sorted by decreasing score ``names``, ``scores``, ``logfoldchanges``,
    ``pvals``, ``pvals_adj`` and ``auroc``, and genes x clusters DataFrames ``pts``, ``means``
    (mean log-expression) and (against the rest) ``pts_rest``.
    ``sc.get.rank_genes_groups_df(adata, group=None, key=key_added)`` and
    ``sc.pl.rank_genes_groups_dotplot(adata, key=key_added)`` read it; :func:`marker_table` gives
    the table with the filters applied.
    """
    import time

    from scipy import stats

    t0 = time.perf_counter()
    adata = adata.copy() if copy else adata
    codes, groups = _groups(adata, groupby)
    K = len(groups)
    if K > _MAX_GROUPS:
        raise InputError(f"groupby {groupby!r} has {K} clusters; at most {_MAX_GROUPS}")
    if reference != "rest" and reference not in groups:
        raise ConfigError(
            f"reference {reference!r} is not a cluster of {groupby!r}; choose from {choices(groups)} or 'rest'"
        )
    X, var_names, where, from_store = _source(adata, use_raw, layer)
    if not from_store:
        _check_expression(X, where)
    codes_all = np.where(codes < 0, K, codes)  # the unlabelled cells: one more group, part of every rest
    n_groups = K + 1
    sizes = np.bincount(codes_all, minlength=n_groups).astype(np.float64)
    n = float(adata.n_obs)
    ref = groups.index(reference) if reference != "rest" else None
    tested = [k for k in range(K) if k != ref]
    comparisons = []
    if ref is not None:
        for k in tested:
            group_of = np.full(n_groups, -1, np.int64)
            group_of[k], group_of[ref] = 0, 1
            comparisons.append((group_of, int(sizes[k] + sizes[ref])))
    if from_store:
        var_names, st, pairs = _stats_store(
            adata,
            codes_all,
            n_groups,
            comparisons,
            chunk_cells=chunk_cells,
            block_nnz=DASK_BLOCK_NNZ,
            scratch_dir=scratch_dir,
        )
    else:
        st, pairs = _stats_memory(X, codes_all, n_groups, comparisons, BLOCK_NNZ)
    G = len(var_names)
    base = adata.uns.get("log1p", {}).get("base")
    expm1 = (lambda x: np.expm1(x * np.log(base))) if base is not None else np.expm1
    S, Q, N = st["sum"], st["sumsq"], st["nnz"].astype(np.float64)
    tot_s, tot_q, tot_n = S.sum(axis=0), Q.sum(axis=0), N.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # the unlabelled cells' group may be empty
        means = S / sizes[:, None]
        pts = N / sizes[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):  # scanpy's formula (the same rounding)
        var = (Q / sizes[:, None] - means**2) * (sizes[:, None] / (sizes[:, None] - 1))
    var = np.maximum(var, 0)
    tc_all = 1 - st["ties"] / (n**3 - n) if tie_correct else np.ones(G)
    res: dict[str, dict[str, np.ndarray]] = {f: {} for f in ("scores", "pvals", "pvals_adj", "logfoldchanges", "auroc")}
    pts_rest = {}
    for j, k in enumerate(tested):
        n1 = sizes[k]
        if ref is None:
            n0 = n - n1
            m0 = (tot_s - S[k]) / n0
            v0 = np.maximum(((tot_q - Q[k]) / n0 - m0**2) * (n0 / (n0 - 1)), 0)
            pts_rest[groups[k]] = (tot_n - N[k]) / n0
            R, nn, tc = st["ranksum"][k] + (n1 - N[k]) * st["zero_rank"], n, tc_all
        else:
            n0 = sizes[ref]
            m0, v0 = means[ref], var[ref]
            p = pairs[j]
            nn = n1 + n0
            R = p["ranksum"][0] + (n1 - p["nnz"][0]) * p["zero_rank"]
            tc = 1 - p["ties"] / (nn**3 - nn) if tie_correct else np.ones(G)
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = (R - n1 * (n1 + 1) / 2) / (n1 * n0)
            if method == "wilcoxon":
                z = (R - n1 * (nn + 1) / 2.0) / np.sqrt(tc * n1 * n0 * (nn + 1) / 12.0)
                z[np.isnan(z)] = 0
                pv = 2 * stats.distributions.norm.sf(np.abs(z))
            else:
                n_rest = n0 if method == "t-test" else n1
                z, pv = stats.ttest_ind_from_stats(
                    mean1=means[k],
                    std1=np.sqrt(var[k]),
                    nobs1=n1,
                    mean2=m0,
                    std2=np.sqrt(v0),
                    nobs2=n_rest,
                    equal_var=False,
                )
                z[np.isnan(z)] = 0
                pv[np.isnan(pv)] = 1
        lfc = np.log2((expm1(means[k]) + 1e-9) / (expm1(m0) + 1e-9))
        name = groups[k]
        res["scores"][name], res["pvals"][name], res["pvals_adj"][name] = z, pv, _bh(pv.copy())
        res["logfoldchanges"][name], res["auroc"][name] = lfc, auroc
    names = [groups[k] for k in tested]
    order = {g: np.argsort(-res["scores"][g], kind="stable") for g in names}
    out: dict[str, Any] = {
        "params": {
            "groupby": groupby,
            "reference": reference,
            "method": method,
            "use_raw": where == ".raw",
            "layer": layer,
            "corr_method": "benjamini-hochberg",
            "tie_correct": bool(tie_correct),
            "source": where,
            "min_in_group_fraction": float(min_in_group_fraction),
            "max_out_group_fraction": float(max_out_group_fraction),
            "min_fold_change": float(min_fold_change),
        }
    }
    gene_arr = np.asarray(var_names, dtype=object)
    out["names"] = np.rec.fromarrays([gene_arr[order[g]] for g in names], names=names)
    dtypes = {
        "scores": np.float32,
        "logfoldchanges": np.float32,
        "pvals": np.float64,
        "pvals_adj": np.float64,
        "auroc": np.float32,
    }
    for field, dt in dtypes.items():
        out[field] = np.rec.fromarrays([res[field][g][order[g]].astype(dt) for g in names], names=names)
    out["pts"] = pd.DataFrame(pts[:K].T, index=pd.Index(var_names), columns=groups)
    out["means"] = pd.DataFrame(means[:K].T, index=pd.Index(var_names), columns=groups)
    if ref is None:
        out["pts_rest"] = pd.DataFrame(pts_rest, index=pd.Index(var_names))
    key = key_added or markers_key(groupby)
    adata.uns[key] = out
    logger.info(
        "markers of %s (%d clusters, %d genes of %s, %s) in %.1f s: .uns[%r]",
        groupby,
        K,
        G,
        where,
        method,
        time.perf_counter() - t0,
        key,
    )
    return adata if copy else None


def _result(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or "names" not in adata.uns[key]:
        made = [k for k, v in adata.uns.items() if isinstance(v, dict) and "names" in v and "params" in v]
        raise MissingKeyError(
            f"no markers in .uns[{key!r}]; run scclust.tl.markers (the 'markers' stage) first "
            f"(markers available: {choices(made)})"
        )
    return adata.uns[key]


@validated
def marker_table(
    adata: AnnData,
    *,
    key: str,
    n_genes: Annotated[int, Field(ge=1)] | None = None,
    passing: bool = False,
) -> pd.DataFrame:
    """The markers stored by :func:`markers` as one long table.

    Parameters
    ----------
    adata
        Annotated data matrix with ``.uns[key]``.
    key
        ``.uns`` key of the markers (``markers_{groupby}``).
    n_genes
        At most this many genes per cluster (the highest scores); ``None``: all.
    passing
        Only genes that pass the marker filters stored with the result (fraction inside >
        ``min_in_group_fraction``, fraction outside < ``max_out_group_fraction``, log2 fold change
        > ``min_fold_change``; those of ``sc.tl.filter_rank_genes_groups``).

    Returns
    -------
    A DataFrame with ``cluster``, ``rank`` (1 = highest score), ``gene``, ``score``,
    ``logfoldchange``, ``pval``, ``pval_adj``, ``auroc``, ``pct_in``, ``pct_out`` (NaN against a
    reference cluster) and ``passes`` (the filters), in cluster order then rank. ``adata`` is not
    modified.
    """
    res = _result(adata, key)
    p = res["params"]
    parts = []
    for cl in res["names"].dtype.names:
        genes = pd.Index(np.asarray(res["names"][cl], dtype=object).astype(str))
        df = pd.DataFrame(
            {
                "cluster": cl,
                "rank": np.arange(1, len(genes) + 1),
                "gene": genes,
                "score": np.asarray(res["scores"][cl], dtype=np.float64),
                "logfoldchange": np.asarray(res["logfoldchanges"][cl], dtype=np.float64),
                "pval": res["pvals"][cl],
                "pval_adj": res["pvals_adj"][cl],
                "auroc": np.asarray(res["auroc"][cl], dtype=np.float64) if "auroc" in res else np.nan,
                "pct_in": res["pts"][cl].reindex(genes).to_numpy(),
            }
        )
        df["pct_out"] = res["pts_rest"][cl].reindex(genes).to_numpy() if "pts_rest" in res else np.nan
        passes = (df["pct_in"] > p.get("min_in_group_fraction", 0.25)) & (
            df["logfoldchange"] > p.get("min_fold_change", 1.0)
        )
        if "pts_rest" in res:
            passes &= df["pct_out"] < p.get("max_out_group_fraction", 0.5)
        df["passes"] = passes.to_numpy()
        if passing:
            df = df[df["passes"]]
        if n_genes is not None:
            df = df.head(n_genes)
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out["cluster"] = pd.Categorical(out["cluster"], categories=list(res["names"].dtype.names))
    return out


@validated
def top_markers(
    adata: AnnData,
    *,
    key: str,
    n_genes: Annotated[int, Field(ge=1)] = 5,
    passing: bool = True,
    clusters: KeyList | None = None,
) -> dict[str, list[str]]:
    """The best markers of each cluster, from :func:`markers`' results.

    Parameters
    ----------
    adata
        Annotated data matrix with ``.uns[key]``.
    key
        ``.uns`` key of the markers (``markers_{groupby}``).
    n_genes
        Markers per cluster (highest score first).
    passing
        Only genes that pass the marker filters (a cluster with none gets an empty list).
    clusters
        These clusters, in this order (default: all, in the stored order).

    Returns
    -------
    ``{cluster: [gene, ...]}``; ``adata`` is not modified.
    """
    table = marker_table(adata, key=key, passing=passing)
    names = list(_result(adata, key)["names"].dtype.names) if clusters is None else list(clusters)
    return {c: list(table.loc[table["cluster"] == c, "gene"].head(n_genes)) for c in names}


@validated
def marker_expression(adata: AnnData, *, key: str, genes: GeneList) -> AnnData:
    """Log-normalized expression of ``genes`` for every cell, from where :func:`markers` read it
    (``.raw``, ``.X``, a layer, or the counts store: one Dask pass over it).

    For the figures of markers that the in-memory matrices do not hold (a run whose ``.raw`` has
    only some genes).

    Parameters
    ----------
    adata
        Annotated data matrix with ``.uns[key]``.
    key
        ``.uns`` key of the markers (``markers_{groupby}``).
    genes
        Genes (of those the markers were computed on).

    Returns
    -------
    A small AnnData (cells x these genes, sparse) with ``adata``'s ``.obs``, ``.obsm`` and ``.uns``
    entries for dendrograms, colours and the markers of ``key``; ``adata`` is not modified.
    """
    res = _result(adata, key)
    p = res["params"]
    genes = list(dict.fromkeys(genes))
    if str(p.get("source", "")).startswith("the counts store"):
        from .._dask import compute_rows
        from ..pp._lazy import _lognorm_block, read_counts

        info = adata.uns["counts_store"]
        counts = read_counts(adata)
        kept = np.asarray(info.get("genes_kept", np.ones(counts.n_vars, bool)), dtype=bool)
        names = counts.var_names[kept]
        idx = names.get_indexer(genes)
        X = counts.X[:, np.flatnonzero(kept)] if not kept.all() else counts.X
        ln = X.map_blocks(_lognorm_block, float(info.get("target_sum", 1e4)), dtype=np.float32)
        (sub,) = compute_rows(ln[:, idx], what=f"markers: expression of {len(genes)} marker genes")
        X = sparse.csr_matrix(sub)
    else:
        layer = p.get("layer")
        if layer is not None:
            src, names = adata.layers[layer], adata.var_names
        elif p.get("use_raw"):
            src, names = adata.raw.X, adata.raw.var_names
        else:
            src, names = adata.X, adata.var_names
        X = sparse.csr_matrix(src[:, names.get_indexer(genes)])
    out = AnnData(X=X, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes)))
    for k, v in adata.obsm.items():
        out.obsm[k] = v
    out.uns.update(
        {k: v for k, v in adata.uns.items() if k.startswith("dendrogram_") or k.endswith("_colors") or k == key}
    )
    return out
