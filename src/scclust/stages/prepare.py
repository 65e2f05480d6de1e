"""``prepare``: raw counts -> the tutorial-shaped integrated AnnData (:func:`scclust.pp.prepare`)."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from .._keys import PREPARE_OBSM, QC_COLUMNS
from .._types import KeyList
from ._base import Makes, Params, Ref, Stage


class PrepareParams(Params):
    """Raw counts -> integrated AnnData (:func:`scclust.pp.prepare`)."""

    batch_key: str | None = Field("sample", description="batch column for Harmony; null or a single batch: Harmony is skipped")
    min_genes: int = Field(0, ge=0, description="cells with fewer detected genes are removed (the QC lab: 200)")
    max_genes: int | None = Field(None, ge=1, description="cells with more detected genes are removed (doublet-like)")
    max_pct_mt: float | None = Field(None, gt=0, le=100, description="cells with a higher % of mitochondrial counts are removed (the QC lab: 20)")
    min_cells: int = Field(0, ge=0, description="genes detected in fewer cells are removed (the QC lab: 3)")
    target_sum: float = Field(1e4, gt=0)
    hvg_flavor: Literal["seurat", "cell_ranger", "seurat_v3"] = "seurat"
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    n_top_genes: int | None = Field(None, ge=2)
    hvg_batch_key: str | None = Field(None, description="batch-aware HVGs (scanpy's batch_key: genes variable within "
                                      "batches, ranked by the number of batches); null: all cells at once (the lab)")
    regress_out: KeyList = []
    max_value: float | None = Field(10.0, gt=0)
    n_comps: int = Field(50, ge=2)
    n_neighbors: int = Field(20, ge=2)
    n_pcs: int = Field(30, ge=1)
    knn_backend: Literal["auto", "exact", "ivf", "flat", "hnsw"] = Field(
        "auto", description="the kNN graph's backend, as neighbors.backend (auto: exact up to 50,000 cells, ivf above, "
                            "flat where ivf would probe more than 1/2 of its lists)")
    knn_min_recall: float = Field(0.995, gt=0, le=1, description="as neighbors.min_recall: ivf widens its search until "
                                  "this recall on 1,000 cells")
    umap_min_dist: float = Field(0.5, ge=0)
    umap_n_epochs: int | None = Field(None, ge=1, description="UMAP layout epochs; null: umap-learn's default (200 "
                                      "above 10,000 cells); time is proportional to it (README, Large data)")
    umap_init: Literal["auto", "spectral", "pca"] = Field(
        "auto", description="UMAP start: spectral (scanpy's), pca (first two Harmony dims) or auto: spectral up to "
                            "200,000 cells (its eigensolver did not finish in 13 min at 1M), pca above")
    compute_umap: bool = Field(True, description="false: no X_umap_harmony (later stages must not need it)")
    random_state: int = 0
    backend: Literal["auto", "memory", "dask"] = Field(
        "auto", description="memory: counts in memory (scanpy's chain); dask: out of core, counts read lazily from the "
        "store in chunks on a Dask cluster (the top-level 'dask' section); auto: dask above 150 million non-zeros "
        "(read from the file's header), recorded in the manifest")
    chunk_cells: int | None = Field(None, ge=100, description="dask backend: cells per chunk (default: ~20 million "
                                    "non-zeros per chunk)")


def run(adata, p: PrepareParams, ctx):
    from .. import pl, pp
    from .._dask import dask_client
    from ..pp._lazy import choose_backend
    from ..tl._subcluster import TNK_MARKERS

    backend, reason = choose_backend(ctx.cfg.input, p.backend)
    if pp.is_lazy(adata):
        backend = "dask"
    logging.getLogger(__name__).info("prepare: backend %s (%s)", backend, reason)
    # with a background worker the UMAP layout is left running there while the next stages run
    # (the runner writes it in before a stage that may read it: RunContext.defer)
    background = p.compute_umap and ctx.umap_worker is not None
    kw = p.model_dump(exclude={"backend"}) | {"compute_umap": p.compute_umap and not background}
    if backend == "dask":
        with dask_client(**ctx.cfg.dask.model_dump()):
            out = pp.prepare(adata, **kw, backend="dask",
                             raw_genes=[*ctx.named_genes, *(g for genes in TNK_MARKERS.values() for g in genes)])
    else:
        out = pp.prepare(adata, **kw, backend="memory")
    if background:
        ctx.defer(pp.umap(out, key_added="X_umap_harmony", min_dist=p.umap_min_dist, random_state=p.random_state,
                          n_epochs=p.umap_n_epochs, init=p.umap_init, worker=ctx.umap_worker, wait=False))
    out.uns["prepare"]["backend_reason"] = reason
    info = out.uns["prepare"]
    ctx.save_table(info["filtered"], "prepare_qc_filtered", index=False)
    ctx.save_table(info["hvg"], "prepare_hvg", index=False)
    ctx.save_figure(pl.pca_variance(out, mark=p.n_pcs), "prepare_pca_variance")
    ctx.save_figure(pl.highly_variable_genes(info["hvg"]), "prepare_hvg")
    return out


def _record(adata, p: PrepareParams) -> dict:
    info = adata.uns.get("prepare", {})
    out = {"backend": info.get("backend"), "backend_reason": info.get("backend_reason"),
           "step_seconds": dict(info.get("seconds", {})),
           "knn": dict(adata.uns.get("neighbors", {}).get("knn", {}))}
    if "counts_store" in adata.uns:
        from ..pp._lazy import lazy_info

        out["counts_store"] = lazy_info(adata)
    return out


def _lazy_input(p: PrepareParams, spec: str) -> str | None:
    """Why the run reads its input lazily (prepare runs out of core), or None."""
    from ..pp._lazy import choose_backend

    backend, reason = choose_backend(spec, p.backend)
    return reason if backend == "dask" and not spec.startswith("builtin:") else None


def _makes(p: PrepareParams) -> Makes:
    obsm = [k for k in PREPARE_OBSM if p.compute_umap or k != "X_umap_harmony"]
    return Makes(obs_other=list(QC_COLUMNS), obsm=obsm, intermediate_graphs=["neighbors"])


STAGE = Stage(
    name="prepare", params=PrepareParams, run=run,
    reads=(Ref("batch_key", "batch"), Ref("hvg_batch_key", "batch"), Ref("regress_out", "obs")),
    makes=_makes, record=_record, lazy_input=_lazy_input, computes_umap=lambda p: p.compute_umap, rebuilds_data=True,
    description="QC filters and metrics, normalize, HVG, PCA, Harmony, UMAP",
)
