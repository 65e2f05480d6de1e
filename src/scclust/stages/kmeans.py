"""``kmeans``: k-means at several k (:func:`scclust.tl.kmeans`)."""

from __future__ import annotations

from .. import tl
from .._keys import kmeans_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

KMeansParams = params_model(tl.kmeans, name="KMeansParams")


STAGE = Stage(
    name="kmeans",
    params=KMeansParams,
    run=clustering_run("kmeans"),
    repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=kmeans_keys(p.key_added, p.n_clusters)),
    on_sketch=True,
    description="k-means at several k, several starts",
    obsm_reads="declared",
)
