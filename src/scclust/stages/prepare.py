"""``prepare``: raw counts -> the tutorial-shaped integrated AnnData (:func:`scclust.pp.prepare`)."""

from __future__ import annotations

import logging

from .. import pp
from .._keys import PREPARE_OBSM, QC_COLUMNS
from .._params import params_model
from ..pp._prepare import umap_key
from ._base import Makes, Ref, Stage, moved_keys

#: keys of the flat layout and where they live now
MOVED = {
    **{k: f"qc.{k}" for k in ("min_genes", "max_genes", "max_pct_mt", "min_cells")},
    "hvg_flavor": "hvg.flavor",
    "hvg_batch_key": "hvg.batch_key",
    **{k: f"hvg.{k}" for k in ("min_mean", "max_mean", "min_disp", "n_top_genes")},
    **{k: f"pca.{k}" for k in ("regress_out", "max_value", "n_comps")},
    "n_neighbors": "graph.n_neighbors",
    "n_pcs": "graph.n_pcs",
    "knn_backend": "graph.backend",
    "knn_min_recall": "graph.min_recall",
    "umap_min_dist": "umap.min_dist",
    "umap_n_epochs": "umap.n_epochs",
    "umap_init": "umap.init",
    "compute_umap": "umap (umap: null for no UMAP)",
}

PrepareParams = params_model(pp.prepare, name="PrepareParams", exclude=("raw_genes",), base=moved_keys(MOVED))


def run(adata, p, ctx):
    from .. import pl
    from .._dask import dask_client
    from ..pp._lazy import choose_backend

    backend, reason = choose_backend(ctx.cfg.input, p.backend)
    if pp.is_lazy(adata):
        backend = "dask"
    logging.getLogger(__name__).info("prepare: backend %s (%s)", backend, reason)
    batch_key = p.batch_key
    if batch_key is not None and batch_key not in adata.obs and "batch_key" not in p.model_fields_set:
        logging.getLogger(__name__).info(
            "prepare: the default batch_key %r is not a column of the input: one batch, "
            "Harmony skipped (name your batch column in prepare.batch_key)",
            batch_key,
        )
        batch_key = None
    # the layout runs in the run's background process while the next stages run (promised for its key)
    kw = p.model_dump(exclude={"backend", "umap", "batch_key"}) | {"batch_key": batch_key, "umap": None}
    if backend == "dask":
        with dask_client(**ctx.cfg.dask.model_dump()):
            out = pp.prepare(adata, **kw, backend="dask", raw_genes=list(ctx.named_genes))
    else:
        out = pp.prepare(adata, **kw, backend="memory")
    if p.umap is not None:
        harmonized = out.uns["prepare"]["harmony"]
        key = umap_key(harmonized)
        # configs written for integrated data name X_umap_harmony: without Harmony, the same layout
        ctx.umap(
            out,
            key_added=key,
            params=p.umap,
            random_state=p.random_state,
            wait=False,
            aliases=() if harmonized else ("X_umap_harmony",),
        )
    out.uns["prepare"]["backend_reason"] = reason
    info = out.uns["prepare"]
    ctx.save_table(info["filtered"], "prepare_qc_filtered", index=False)
    ctx.save_table(info["hvg"], "prepare_hvg", index=False)
    ctx.save_figure(pl.pca_variance(out, mark=p.graph.n_pcs), "prepare_pca_variance")
    ctx.save_figure(pl.highly_variable_genes(info["hvg"]), "prepare_hvg")
    return out


def _record(adata, p) -> dict:
    info = adata.uns.get("prepare", {})
    out = {
        "backend": info.get("backend"),
        "backend_reason": info.get("backend_reason"),
        "step_seconds": dict(info.get("seconds", {})),
        "knn": dict(adata.uns.get("neighbors", {}).get("knn", {})),
    }
    if "counts_store" in adata.uns:
        from ..pp._lazy import lazy_info

        out["counts_store"] = lazy_info(adata)
    return out


def _lazy_input(p, spec) -> str | None:
    """Why the run reads its input lazily (prepare runs out of core), or None."""
    from ..pp._lazy import choose_backend

    backend, reason = choose_backend(spec, p.backend)
    return reason if backend == "dask" and not spec.is_builtin else None


def _makes(p) -> Makes:
    obsm = [k for k in PREPARE_OBSM if p.umap is not None or k != "X_umap_harmony"]
    if p.umap is not None and (p.batch_key is None or "batch_key" not in p.model_fields_set):
        obsm.append("X_umap")  # without Harmony (no batch column): scanpy's name
    return Makes(obs_other=list(QC_COLUMNS), obsm=obsm, intermediate_graphs=["neighbors"])


#: share of the HVG matrix's values stored out of core (log-normalized counts are sparse)
HVG_DENSITY = 0.1


def memory(p, sizes):
    """Peak on ``n`` cells, ``h`` HVGs (``hvg.n_top_genes``, else
    :data:`scclust.pp._prepare.HVG_ASSUMED`), ``c`` = ``pca.n_comps``:
    0.9 GB (libraries: scanpy alone takes 0.27 GB; buffers) + the embeddings (``8 x n x c x 4``: PCA,
    Harmony's copies) + the graph (as :mod:`~scclust.stages.neighbors`: ``2 n d 4 + 48 n k``), and

    - in memory: the copies of the counts (``3 x nnz x 8``: the filtered copy, the log-normalized
      ``.raw``, the HVG subset) and the scaled HVG matrix, dense, twice (``2 x n x h x 4``);
    - out of core: the HVG matrix kept in ``.X`` (``n x h x 8`` at :data:`HVG_DENSITY`); the counts
      stay on disk and the Dask workers have their own limit (``dask.memory_limit``).

    Measured in memory at 20,000 cells x 2,000 genes (13 million values, 210 HVGs chosen): 857 MiB
    added (estimate 1,521 MiB); out of core, the run's own process holds 3-6 GB per million cells
    (estimate 6.1 GB with 3,000 HVGs assumed).
    """
    from .._memory import Estimate, cells
    from ..pp._neighbors import BYTES_PER_NEIGHBOUR
    from ..pp._prepare import HVG_ASSUMED

    n = sizes.n_obs
    h = min(p.hvg.n_top_genes or HVG_ASSUMED, sizes.n_vars or HVG_ASSUMED)
    c, k = p.pca.n_comps, p.graph.n_neighbors
    d = min(p.graph.n_pcs or c, c)
    parts = [
        ("libraries (scanpy, Harmony, the kNN search) and buffers", 900e6),
        (f"embeddings {cells(n)} x {c} float32, 8 copies", 8 * n * c * 4.0),
        (f"kNN graph {cells(n)} x {k}", 2 * n * d * 4.0 + BYTES_PER_NEIGHBOUR * n * k),
    ]
    if sizes.nnz is not None:
        parts += [
            (f"counts {sizes.nnz:,} values, 3 copies", 3 * sizes.nnz * 8.0),
            (f"scaled HVG matrix {cells(n)} x {h} float32, twice", 2 * n * h * 4.0),
        ]
        options = "fewer HVGs (hvg.n_top_genes), or backend: dask (the counts read from disk in chunks)"
    else:
        parts.append((f"HVG matrix {cells(n)} x {h} (sparse)", n * h * 8.0 * HVG_DENSITY))
        options = "fewer HVGs (hvg.n_top_genes)"
    return Estimate(parts=tuple(parts), options=options)


STAGE = Stage(
    name="prepare",
    params=PrepareParams,
    run=run,
    reads=(Ref("batch_key", "batch", explicit_only=True), Ref("hvg.batch_key", "batch"), Ref("pca.regress_out", "obs")),
    makes=_makes,
    record=_record,
    lazy_input=_lazy_input,
    computes_umap=lambda p: p.umap is not None,
    rebuilds_data=True,
    memory=memory,
    description="QC filters and metrics, normalize, HVG, PCA, Harmony, UMAP",
)
