"""``hclust``: one hierarchical tree cut at several k / heights (:func:`scclust.tl.hclust`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .._keys import hclust_keys
from .._types import ClusterCounts, HclustMetric, Heights, Linkage, check_linkage_metric
from ._base import Makes, Params, Ref, Stage
from ._clustering import clustering_run


class HclustParams(Params):
    """Hierarchical clustering: one tree cut at several k / heights (:func:`scclust.tl.hclust`)."""

    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    method: Linkage = "ward"
    metric: HclustMetric = "euclidean"
    n_clusters: ClusterCounts = [5, 10, 15]
    heights: Heights = []
    optimal_ordering: bool = False
    backend: Literal["auto", "matrix", "vector", "micro"] = Field(
        "auto", description="auto: the exact tree when its estimated time fits max_exact_seconds, else micro "
        "(exact linkage on k-means micro-clusters weighted by size)")
    allow_non_euclidean: bool = False
    n_micro_clusters: int = Field(1000, ge=2)
    max_exact_seconds: float = Field(120.0, gt=0)
    random_state: int = 0
    key_added: str = "hclust"

    @model_validator(mode="after")
    def _consistent(self) -> HclustParams:
        check_linkage_metric(self.method, self.metric, allow_non_euclidean=self.allow_non_euclidean)
        if not self.n_clusters and not self.heights:
            raise ValueError("give at least one k in n_clusters or one value in heights")
        return self



STAGE = Stage(
    name="hclust", params=HclustParams, run=clustering_run("hclust"), repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=hclust_keys(p.key_added, p.n_clusters, p.heights)),
    record=lambda adata, p: {k: adata.uns[p.key_added].get(k) for k in ("backend", "estimated_exact_seconds")},
    description="hierarchical clustering (every scipy linkage), one tree cut at several k",
    waits_for_background=False,
)
