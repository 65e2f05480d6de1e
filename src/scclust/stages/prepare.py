"""``prepare``: raw counts -> the tutorial-shaped integrated AnnData (:func:`scclust.pp.prepare`)."""

from __future__ import annotations

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
    regress_out: KeyList = []
    max_value: float | None = Field(10.0, gt=0)
    n_comps: int = Field(50, ge=2)
    n_neighbors: int = Field(20, ge=2)
    n_pcs: int = Field(30, ge=1)
    umap_min_dist: float = Field(0.5, ge=0)
    compute_umap: bool = Field(True, description="false: no X_umap_harmony (later stages must not need it)")
    random_state: int = 0


def run(adata, p: PrepareParams, ctx):
    from .. import pl, pp

    out = pp.prepare(adata, umap_worker=ctx.umap_worker, **p.model_dump())
    info = out.uns["prepare"]
    ctx.save_table(info["filtered"], "prepare_qc_filtered", index=False)
    ctx.save_table(info["hvg"], "prepare_hvg", index=False)
    ctx.save_figure(pl.pca_variance(out, mark=p.n_pcs), "prepare_pca_variance")
    ctx.save_figure(pl.highly_variable_genes(info["hvg"]), "prepare_hvg")
    return out


def _makes(p: PrepareParams) -> Makes:
    obsm = [k for k in PREPARE_OBSM if p.compute_umap or k != "X_umap_harmony"]
    return Makes(obs_other=list(QC_COLUMNS), obsm=obsm, intermediate_graphs=["neighbors"])


STAGE = Stage(
    name="prepare", params=PrepareParams, run=run,
    reads=(Ref("batch_key", "batch"), Ref("regress_out", "obs")),
    makes=_makes, computes_umap=lambda p: p.compute_umap, rebuilds_data=True,
    description="QC filters and metrics, normalize, HVG, PCA, Harmony, UMAP",
)
