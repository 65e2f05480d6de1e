"""Marker genes of each cluster: one cluster against the rest (or a reference cluster).

The statistics are those of :func:`scanpy.tl.rank_genes_groups` (Wilcoxon rank-sum with tie
correction, Welch's t-test, log fold changes, Benjamini-Hochberg adjusted p-values), plus the
fraction of cells expressing each gene inside and outside the cluster and the AUROC, computed by a
sparse rank engine: genes are processed in blocks; for each block the non-zero values of every gene
are sorted once (one ``np.sort`` of 64-bit keys that pack gene, value and cluster) and the zeros of a
gene share one tied rank, so nothing of size cells x genes is ever dense and the work is
``O(nnz log nnz)``. When the run's counts live in a counts store (out-of-core ``prepare``, ``.raw``
holding only some genes), the same engine runs on Dask in one pass over the store per gene block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field
from scipy import sparse

from .._checks import check_groupby
from .._errors import ConfigError, InputError, MissingKeyError, choices
from .._params import validated

logger = logging.getLogger(__name__)

__all__ = ["marker_table", "markers", "markers_key"]

#: non-zeros of one gene block in memory (the sort keys take 8 bytes each, the temporaries ~50)
BLOCK_NNZ = 20_000_000
#: non-zeros of one gene block sorted by one Dask task (8 bytes each; statistics in sub-blocks)
DASK_BLOCK_NNZ = 150_000_000
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
def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as unsigned integers in the same order (uint64, 32 bits used)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    neg = (bits >> np.uint64(31)).astype(bool)
    bits[neg] = ~bits[neg] & np.uint64(0xFFFFFFFF)
    bits[~neg] |= _ZERO32
    return bits


def _values_from_bits(vb: np.ndarray) -> np.ndarray:
    pos = vb >= _ZERO32
    out = np.where(pos, vb ^ _ZERO32, ~vb & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return out.view(np.float32)


def _pack(gene: np.ndarray, vbits: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Sort keys: gene (16 bits) | ordered value (32 bits) | group (16 bits)."""
    return (gene.astype(np.uint64) << np.uint64(48)) | (vbits << np.uint64(16)) | group.astype(np.uint64)


def _keys(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.uint64, np.ndarray | None]:
    """Unsorted keys of one gene block's non-zeros (``cols``: genes within the block) and the
    positive threshold of the value bits. float32 values (and float64 values that are exactly
    float32) are keyed by their bits; other values by their rank among the block's distinct values,
    and then returned too (sums are taken from them)."""
    keep = vals != 0
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    group = codes[rows]
    if vals.dtype == np.float32 or (vals.dtype.kind == "f" and np.array_equal(vals.astype(np.float32), vals)) \
            or (vals.dtype.kind in "iu" and np.abs(vals).max(initial=0) < 2**24):
        return _pack(cols, _ordered_bits(vals.astype(np.float32, copy=False)), group), _ZERO32, None
    uniq, inv = np.unique(vals, return_inverse=True)
    zero = np.uint64(np.searchsorted(uniq, 0))
    return _pack(cols, inv.astype(np.uint64), group), zero, vals.astype(np.float64)


def _block_stats(keys: np.ndarray, n_genes: int, n_groups: int, n_cells: int, zero: np.uint64,
                 group_of: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per gene of a block, from its SORTED keys: per group (``n_groups`` x ``n_genes``) the rank
    sum (ranks among ``n_cells`` cells, ties averaged, the zeros of a gene one tie), the number of
    non-zeros, the sum and the sum of squares of the values (when ``zero`` is the float32 zero, the
    values are read from the keys); per gene the tie term ``sum(t^3 - t)``.

    ``group_of``: the group of each cell-group code in the keys (a reference comparison maps the
    codes of two groups to 0 and 1)."""
    out = {"ranksum": np.zeros((n_groups, n_genes)), "nnz": np.zeros((n_groups, n_genes), np.int64),
           "ties": np.zeros(n_genes)}
    n = keys.size
    gene = (keys >> np.uint64(48)).astype(np.int64)
    group = (keys & np.uint64(0xFFFF)).astype(np.int64)
    if group_of is not None:
        group = group_of[group]
    vb = (keys >> np.uint64(16)) & np.uint64(0xFFFFFFFF)
    gene_start = np.searchsorted(gene, np.arange(n_genes + 1))
    gene_nnz = np.diff(gene_start)
    z = n_cells - gene_nnz  # zeros per gene
    if n:
        gv = keys >> np.uint64(16)
        first = np.empty(n, bool)
        first[0] = True
        np.not_equal(gv[1:], gv[:-1], out=first[1:])
        del gv
        starts = np.flatnonzero(first)
        del first
        lengths = np.diff(np.append(starts, n))
        g_run = gene[starts]
        positive = vb[starts] >= zero
        # 1-based rank of a run's first value: position in its gene, after the zeros when positive
        rank = (starts - gene_start[g_run] + 1).astype(np.float64)
        rank[positive] += z[g_run[positive]]
        rank += (lengths - 1) / 2.0  # ties averaged
        idx = group * n_genes + gene  # group-major flat index
        out["ranksum"] = np.bincount(idx, weights=np.repeat(rank, lengths), minlength=n_groups * n_genes).reshape(n_groups, n_genes)
        out["nnz"] = np.bincount(idx, minlength=n_groups * n_genes).reshape(n_groups, n_genes)
        lf = lengths.astype(np.float64)
        out["ties"] = np.bincount(g_run, weights=lf ** 3 - lf, minlength=n_genes)
        n_neg = np.bincount(g_run[~positive], weights=lengths[~positive], minlength=n_genes)
        if zero == _ZERO32:
            v = _values_from_bits(vb)
            out["sum"] = np.bincount(idx, weights=v, minlength=n_groups * n_genes).reshape(n_groups, n_genes)
            # squares in float32, sums in float64: scanpy's sparse mean / variance
            out["sumsq"] = np.bincount(idx, weights=v * v, minlength=n_groups * n_genes).reshape(n_groups, n_genes)
    else:
        n_neg = np.zeros(n_genes)
        if zero == _ZERO32:
            out["sum"] = np.zeros((n_groups, n_genes))
            out["sumsq"] = np.zeros((n_groups, n_genes))
    zf = z.astype(np.float64)
    out["ties"] += zf ** 3 - zf
    out["zero_rank"] = n_neg + (zf + 1) / 2.0  # the rank every zero of the gene shares
    return out


def _accumulate(total: dict[str, np.ndarray], part: dict[str, np.ndarray], g0: int, g1: int) -> None:
    for k, v in part.items():
        total[k][..., g0:g1] = v


def _gene_blocks(nnz_per_gene: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Contiguous gene ranges of at most ``budget`` non-zeros (one gene may exceed it alone)."""
    blocks, g0, acc = [], 0, 0
    for g, c in enumerate(nnz_per_gene):
        if g > g0 and (acc + c > budget or g - g0 >= _MAX_BLOCK_GENES):
            blocks.append((g0, g))
            g0, acc = g, 0
        acc += int(c)
    blocks.append((g0, len(nnz_per_gene)))
    return blocks


def _block_coo(X: Any, g0: int, g1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell, gene within the block, value) of the stored entries of columns ``g0:g1``."""
    if sparse.issparse(X):
        if X.format == "csc":
            lo, hi = X.indptr[g0], X.indptr[g1]
            cols = np.repeat(np.arange(g1 - g0), np.diff(X.indptr[g0:g1 + 1]))
            return X.indices[lo:hi].astype(np.int64), cols, X.data[lo:hi]
        sub = sparse.csr_matrix(X)[:, g0:g1]
        rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
        return rows, sub.indices.astype(np.int64), sub.data
    block = np.asarray(X[:, g0:g1])
    rows, cols = np.nonzero(block)
    return rows, cols, block[rows, cols]


def _stats_memory(X: Any, codes: np.ndarray, n_groups: int, comparisons: list[tuple[np.ndarray, int]],
                  block_nnz: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Rank statistics of every gene of an in-memory matrix (cells x genes): over all cells
    (``codes``: group per cell, ``n_groups`` with the unlabelled cells) and, per entry of
    ``comparisons`` (``(group_of, n_cells)``: codes mapped to 0 / 1 / -1 = left out), over a subset."""
    n_cells, G = X.shape
    if sparse.issparse(X):
        Xs = X if X.format in ("csr", "csc") else sparse.csr_matrix(X)
        nnz_gene = np.diff(Xs.indptr) if Xs.format == "csc" else np.bincount(Xs.indices, minlength=G)
        X = Xs
    else:
        X = np.asarray(X)
        nnz_gene = np.full(G, n_cells)
    blocks = _gene_blocks(nnz_gene, block_nnz)
    total = {"ranksum": np.zeros((n_groups, G)), "nnz": np.zeros((n_groups, G), np.int64), "ties": np.zeros(G),
             "zero_rank": np.zeros(G), "sum": np.zeros((n_groups, G)), "sumsq": np.zeros((n_groups, G))}
    pairs = [{"ranksum": np.zeros((2, G)), "nnz": np.zeros((2, G), np.int64), "ties": np.zeros(G),
              "zero_rank": np.zeros(G)} for _ in comparisons]
    for g0, g1 in blocks:
        rows, cols, vals = _block_coo(X, g0, g1)
        keys, zero, raw_vals = _keys(rows, cols, vals, codes)
        if raw_vals is not None:  # values that are not float32: sums from the values themselves
            keep = vals != 0
            idx = codes[rows[keep]] * (g1 - g0) + cols[keep]
            s = np.bincount(idx, weights=raw_vals, minlength=n_groups * (g1 - g0)).reshape(n_groups, -1)
            q = np.bincount(idx, weights=raw_vals ** 2, minlength=n_groups * (g1 - g0)).reshape(n_groups, -1)
        del rows, cols, vals
        keys.sort()
        part = _block_stats(keys, g1 - g0, n_groups, n_cells, zero)
        if raw_vals is not None:
            part["sum"], part["sumsq"] = s, q
        _accumulate(total, part, g0, g1)
        for (group_of, n_sub), acc in zip(comparisons, pairs, strict=True):
            sub = keys[group_of[(keys & np.uint64(0xFFFF)).astype(np.int64)] >= 0]
            part = _block_stats(sub, g1 - g0, 2, n_sub, zero, group_of=np.maximum(group_of, 0))
            part.pop("sum", None)
            part.pop("sumsq", None)
            _accumulate(acc, part, g0, g1)
        logger.debug("markers: genes %d-%d of %d", g0, g1, G)
    return total, pairs


# ------------------------------------------------------------------------------------------ out of core
def _store_chunk_keys(X: sparse.csr_matrix, rows0: int, kept: np.ndarray | None, target_sum: float, g0: int, g1: int,
                      codes: np.ndarray) -> np.ndarray:
    """Unsorted keys of genes ``g0:g1`` (of the kept genes) for one row chunk of raw counts,
    log-normalized as the out-of-core ``prepare`` did (totals over the kept genes)."""
    from ..pp._lazy import _lognorm_block

    X = sparse.csr_matrix(X)
    if kept is not None:
        X = X[:, kept]
    X = _lognorm_block(X, target_sum)[:, g0:g1]
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    keys, _, _ = _keys(rows, X.indices.astype(np.int64), X.data, codes[rows0:rows0 + X.shape[0]])
    return keys


def _store_block_stats(pieces: list[np.ndarray], n_genes: int, n_groups: int, n_cells: int,
                       comparisons: list[tuple[np.ndarray, int]]) -> tuple[dict, list[dict]]:
    """One gene block on a Dask worker: the chunks' keys joined and sorted once, statistics in
    sub-blocks of at most :data:`BLOCK_NNZ` non-zeros (the temporaries stay small)."""
    keys = np.concatenate(pieces)
    del pieces
    keys.sort()
    gene = keys >> np.uint64(48)
    bounds = np.searchsorted(gene, np.arange(n_genes + 1, dtype=np.uint64))
    del gene
    sub_blocks = _gene_blocks(np.diff(bounds), BLOCK_NNZ)
    total = {"ranksum": np.zeros((n_groups, n_genes)), "nnz": np.zeros((n_groups, n_genes), np.int64),
             "ties": np.zeros(n_genes), "zero_rank": np.zeros(n_genes), "sum": np.zeros((n_groups, n_genes)),
             "sumsq": np.zeros((n_groups, n_genes))}
    pairs = [{"ranksum": np.zeros((2, n_genes)), "nnz": np.zeros((2, n_genes), np.int64), "ties": np.zeros(n_genes),
              "zero_rank": np.zeros(n_genes)} for _ in comparisons]
    for a, b in sub_blocks:
        k = keys[bounds[a]:bounds[b]] - (np.uint64(a) << np.uint64(48))
        _accumulate(total, _block_stats(k, b - a, n_groups, n_cells, _ZERO32), a, b)
        for (group_of, n_sub), acc in zip(comparisons, pairs, strict=True):
            sub = k[group_of[(k & np.uint64(0xFFFF)).astype(np.int64)] >= 0]
            part = _block_stats(sub, b - a, 2, n_sub, _ZERO32, group_of=np.maximum(group_of, 0))
            part.pop("sum", None)
            part.pop("sumsq", None)
            _accumulate(acc, part, a, b)
    return total, pairs


def _stats_store(adata: AnnData, codes: np.ndarray, n_groups: int, comparisons: list, *, chunk_cells: int | None,
                 block_nnz: int) -> tuple[pd.Index, dict, list[dict]]:
    """The statistics of every kept gene from the counts store, one Dask pass per gene block; at
    most two blocks in flight."""
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
    per_gene = max(nnz_est / max(G, 1), 1.0)
    width = int(np.clip(block_nnz / per_gene, 1, _MAX_BLOCK_GENES))
    blocks = [(g0, min(g0 + width, G)) for g0 in range(0, G, width)]
    logger.info("markers: %d genes of %s in %d block(s) of %d genes (one pass over the store each)", G, info["path"],
                len(blocks), width)
    delayed = counts.X.to_delayed().ravel()
    offsets = np.concatenate([[0], np.cumsum(counts.X.chunks[0])])[:-1]
    kept_arg = None if kept.all() else kept
    codes_d = dask.delayed(codes, pure=True)
    kept_d = dask.delayed(kept_arg, pure=True)
    comps_d = dask.delayed(comparisons, pure=True)

    def graph(g0: int, g1: int):
        pieces = [dask.delayed(_store_chunk_keys, pure=True)(d, int(o), kept_d, target_sum, g0, g1, codes_d)
                  for d, o in zip(delayed, offsets, strict=True)]
        return dask.delayed(_store_block_stats, pure=True)(pieces, g1 - g0, n_groups, n_cells, comps_d)

    total = {"ranksum": np.zeros((n_groups, G)), "nnz": np.zeros((n_groups, G), np.int64), "ties": np.zeros(G),
             "zero_rank": np.zeros(G), "sum": np.zeros((n_groups, G)), "sumsq": np.zeros((n_groups, G))}
    pairs = [{"ranksum": np.zeros((2, G)), "nnz": np.zeros((2, G), np.int64), "ties": np.zeros(G),
              "zero_rank": np.zeros(G)} for _ in comparisons]

    def take(res, g0, g1):
        t, ps = res
        _accumulate(total, t, g0, g1)
        for acc, p in zip(pairs, ps, strict=True):
            _accumulate(acc, p, g0, g1)

    client = _client()
    with _reporting("markers from the counts store"):
        if client is None:
            for i, (g0, g1) in enumerate(blocks):
                (res,) = dask.compute(graph(g0, g1))
                take(res, g0, g1)
                logger.info("markers: block %d of %d done", i + 1, len(blocks))
        else:
            from distributed import wait

            window: list = []
            for i, (g0, g1) in enumerate(blocks):
                window.append((client.compute(graph(g0, g1)), g0, g1))
                if len(window) >= 2 or i == len(blocks) - 1:
                    while window and (len(window) >= 2 or i == len(blocks) - 1):
                        fut, a, b = window.pop(0)
                        wait(fut)
                        take(fut.result(), a, b)
                        del fut
                        logger.info("markers: genes %d of %d done", b, G)
    return genes, total, pairs


# ------------------------------------------------------------------------------------------ inputs
def _looks_like_counts(X: Any) -> bool:
    data = X.data if sparse.issparse(X) else np.asarray(X).ravel()
    sample = data[: 100_000]
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
        raise InputError(f"{where} is a Dask array; markers read expression in memory, or from the counts store "
                         "that .uns['counts_store'] names")
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and _looks_like_counts(X):
        raise InputError(f"markers need log-normalized expression; {where} holds integer counts: normalize and "
                         "log-transform first (sc.pp.normalize_total + sc.pp.log1p, or the prepare stage), or "
                         "name a log-normalized layer")
    if data.size and float(np.nanmin(data)) < 0:
        raise InputError(f"markers need log-normalized expression (>= 0); {where} has negative values (scaled "
                         "data?): use .raw or a log-normalized layer")


def _groups(adata: AnnData, groupby: str) -> tuple[np.ndarray, list[str]]:
    """Group code per cell (-1: no label) and the non-empty groups, checked to be a clustering."""
    labels = check_groupby(adata, groupby)
    cats = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy().astype(np.int64)
    sizes = np.bincount(codes[codes >= 0], minlength=len(cats))
    if len(cats) > 1000 or len(cats) > adata.n_obs / 2:
        raise InputError(f"groupby {groupby!r} has {len(cats)} groups for {adata.n_obs} cells: not a clustering "
                         "(name a column of cluster labels, e.g. leiden_0.6)")
    single = [c for c, s in zip(cats, sizes, strict=True) if s == 1]
    if single:
        raise InputError(f"groupby {groupby!r}: cluster(s) {choices(single)} hold a single cell; markers need at least "
                         "2 cells per cluster (merge or remove them)")
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
    every kept gene is read from the store and log-normalized as ``prepare`` did, in one Dask pass
    per gene block (on the active ``distributed`` client, else Dask's local scheduler); no process
    holds the whole matrix. Nothing of size cells x genes is made dense in either path.

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
    ``pvals``, ``pvals_adj`` and ``auroc``, and genes x clusters DataFrames ``pts`` and (against the
    rest) ``pts_rest``. ``sc.get.rank_genes_groups_df(adata, group=None, key=key_added)`` and
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
        raise ConfigError(f"reference {reference!r} is not a cluster of {groupby!r}; choose from {choices(groups)} "
                          "or 'rest'")
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
        var_names, st, pairs = _stats_store(adata, codes_all, n_groups, comparisons, chunk_cells=chunk_cells,
                                            block_nnz=DASK_BLOCK_NNZ)
    else:
        st, pairs = _stats_memory(X, codes_all, n_groups, comparisons, BLOCK_NNZ)
    G = len(var_names)
    base = adata.uns.get("log1p", {}).get("base")
    expm1 = (lambda x: np.expm1(x * np.log(base))) if base is not None else np.expm1
    S, Q, N = st["sum"], st["sumsq"], st["nnz"].astype(np.float64)
    tot_s, tot_q, tot_n = S.sum(axis=0), Q.sum(axis=0), N.sum(axis=0)
    means = S / sizes[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):  # scanpy's formula (the same rounding)
        var = (Q / sizes[:, None] - means ** 2) * (sizes[:, None] / (sizes[:, None] - 1))
    var = np.maximum(var, 0)
    pts = N / sizes[:, None]
    tc_all = 1 - st["ties"] / (n ** 3 - n) if tie_correct else np.ones(G)
    res: dict[str, dict[str, np.ndarray]] = {f: {} for f in ("scores", "pvals", "pvals_adj", "logfoldchanges", "auroc")}
    pts_rest = {}
    for j, k in enumerate(tested):
        n1 = sizes[k]
        if ref is None:
            n0 = n - n1
            m0 = (tot_s - S[k]) / n0
            v0 = np.maximum(((tot_q - Q[k]) / n0 - m0 ** 2) * (n0 / (n0 - 1)), 0)
            pts_rest[groups[k]] = (tot_n - N[k]) / n0
            R, nn, tc = st["ranksum"][k] + (n1 - N[k]) * st["zero_rank"], n, tc_all
        else:
            n0 = sizes[ref]
            m0, v0 = means[ref], var[ref]
            p = pairs[j]
            nn = n1 + n0
            R = p["ranksum"][0] + (n1 - p["nnz"][0]) * p["zero_rank"]
            tc = 1 - p["ties"] / (nn ** 3 - nn) if tie_correct else np.ones(G)
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = (R - n1 * (n1 + 1) / 2) / (n1 * n0)
            if method == "wilcoxon":
                z = (R - n1 * (nn + 1) / 2.0) / np.sqrt(tc * n1 * n0 * (nn + 1) / 12.0)
                z[np.isnan(z)] = 0
                pv = 2 * stats.distributions.norm.sf(np.abs(z))
            else:
                n_rest = n0 if method == "t-test" else n1
                z, pv = stats.ttest_ind_from_stats(mean1=means[k], std1=np.sqrt(var[k]), nobs1=n1, mean2=m0,
                                                   std2=np.sqrt(v0), nobs2=n_rest, equal_var=False)
                z[np.isnan(z)] = 0
                pv[np.isnan(pv)] = 1
        lfc = np.log2((expm1(means[k]) + 1e-9) / (expm1(m0) + 1e-9))
        name = groups[k]
        res["scores"][name], res["pvals"][name], res["pvals_adj"][name] = z, pv, _bh(pv.copy())
        res["logfoldchanges"][name], res["auroc"][name] = lfc, auroc
    names = [groups[k] for k in tested]
    order = {g: np.argsort(-res["scores"][g], kind="stable") for g in names}
    out: dict[str, Any] = {"params": {
        "groupby": groupby, "reference": reference, "method": method, "use_raw": where == ".raw", "layer": layer,
        "corr_method": "benjamini-hochberg", "tie_correct": bool(tie_correct), "source": where,
        "min_in_group_fraction": float(min_in_group_fraction), "max_out_group_fraction": float(max_out_group_fraction),
        "min_fold_change": float(min_fold_change),
    }}
    gene_arr = np.asarray(var_names, dtype=object)
    out["names"] = np.rec.fromarrays([gene_arr[order[g]] for g in names], names=names)
    dtypes = {"scores": np.float32, "logfoldchanges": np.float32, "pvals": np.float64, "pvals_adj": np.float64,
              "auroc": np.float32}
    for field, dt in dtypes.items():
        out[field] = np.rec.fromarrays([res[field][g][order[g]].astype(dt) for g in names],
                                       names=names)
    out["pts"] = pd.DataFrame(pts[:K].T, index=pd.Index(var_names), columns=groups)
    if ref is None:
        out["pts_rest"] = pd.DataFrame(pts_rest, index=pd.Index(var_names))
    key = key_added or markers_key(groupby)
    adata.uns[key] = out
    logger.info("markers of %s (%d clusters, %d genes of %s, %s) in %.1f s: .uns[%r]", groupby, K, G, where, method,
                time.perf_counter() - t0, key)
    return adata if copy else None


def _result(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or "names" not in adata.uns[key]:
        made = [k for k, v in adata.uns.items() if isinstance(v, dict) and "names" in v and "params" in v]
        raise MissingKeyError(f"no markers in .uns[{key!r}]; run scclust.tl.markers (the 'markers' stage) first "
                              f"(markers available: {choices(made)})")
    return adata.uns[key]


def marker_table(
    adata: AnnData,
    *,
    key: str,
    n_genes: int | None = None,
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
        df = pd.DataFrame({"cluster": cl, "rank": np.arange(1, len(genes) + 1), "gene": genes,
                           "score": np.asarray(res["scores"][cl], dtype=np.float64),
                           "logfoldchange": np.asarray(res["logfoldchanges"][cl], dtype=np.float64),
                           "pval": res["pvals"][cl], "pval_adj": res["pvals_adj"][cl],
                           "auroc": np.asarray(res["auroc"][cl], dtype=np.float64) if "auroc" in res else np.nan,
                           "pct_in": res["pts"][cl].reindex(genes).to_numpy()})
        df["pct_out"] = res["pts_rest"][cl].reindex(genes).to_numpy() if "pts_rest" in res else np.nan
        passes = (df["pct_in"] > p.get("min_in_group_fraction", 0.25)) & (df["logfoldchange"] > p.get("min_fold_change", 1.0))
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


def top_markers(adata: AnnData, *, key: str, n_genes: int = 5, passing: bool = True,
                clusters: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{cluster: [gene, ...]}``: the ``n_genes`` best markers of each cluster (passing the
    filters when ``passing``; a cluster with none gets an empty list)."""
    table = marker_table(adata, key=key, passing=passing)
    names = list(_result(adata, key)["names"].dtype.names) if clusters is None else list(clusters)
    return {c: list(table.loc[table["cluster"] == c, "gene"].head(n_genes)) for c in names}
