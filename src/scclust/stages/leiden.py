"""``leiden``: Leiden / Louvain at several resolutions (:func:`scclust.tl.leiden`)."""

from __future__ import annotations

from .. import tl
from .._keys import leiden_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

#: ``resolution`` (scanpy's name for a single resolution) is the notebook's; a config lists ``resolutions``
LeidenParams = params_model(tl.leiden, name="LeidenParams", exclude=("resolution",))


STAGE = Stage(
    name="leiden",
    params=LeidenParams,
    run=clustering_run("leiden"),
    repeat="list",
    default=True,
    reads=(Ref("neighbors_key", "graph"),),
    makes=lambda p: Makes(obs=leiden_keys(p.key_added, p.resolutions)),
    record=lambda adata, p: {"edges": adata.uns[p.key_added].get("edges")},
    on_sketch=True,
    description="Leiden / Louvain at several resolutions",
    obsm_reads="declared",
)
