"""``hclust``: one hierarchical tree cut at several k / heights (:func:`scclust.tl.hclust`)."""

from __future__ import annotations

from .. import tl
from .._keys import hclust_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

HclustParams = params_model(tl.hclust, name="HclustParams")


STAGE = Stage(
    name="hclust",
    params=HclustParams,
    run=clustering_run("hclust"),
    repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=hclust_keys(p.key_added, p.n_clusters, p.heights)),
    record=lambda adata, p: {k: adata.uns[p.key_added].get(k) for k in ("backend", "estimated_exact_seconds")},
    on_sketch=True,
    description="hierarchical clustering (every scipy linkage), one tree cut at several k",
    obsm_reads="declared",
)
