"""``kmeans``: k-means at several k (:func:`scclust.tl.kmeans`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .._keys import kmeans_keys
from .._types import ClusterCounts
from ._base import Makes, Params, Ref, Stage
from ._clustering import clustering_run


class KMeansParams(Params):
    """k-means at several k (:func:`scclust.tl.kmeans`)."""

    n_clusters: ClusterCounts = Field([5, 10, 15], min_length=1)
    use_rep: str = "X_pca"
    n_pcs: int | None = Field(None, ge=1)
    n_init: int | Literal["auto"] = 10
    max_iter: int = Field(300, ge=1)
    random_state: int = 0
    key_added: str = "kmeans"

    @field_validator("n_init")
    @classmethod
    def _n_init(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("n_init must be >= 1 or 'auto'")
        return v



STAGE = Stage(
    name="kmeans", params=KMeansParams, run=clustering_run("kmeans"), repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=kmeans_keys(p.key_added, p.n_clusters)),
    description="k-means at several k, several starts",
    waits_for_background=False,
)
