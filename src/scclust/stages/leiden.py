"""``leiden``: Leiden / Louvain at several resolutions (:func:`scclust.tl.leiden`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._keys import leiden_keys
from .._types import NJobs, Resolutions
from ._base import Makes, Params, Ref, Stage
from ._clustering import clustering_run


class LeidenParams(Params):
    """Leiden / Louvain at several resolutions (:func:`scclust.tl.leiden`)."""

    resolutions: Resolutions = [1.0]
    neighbors_key: str = "neighbors"
    key_added: str = "leiden"
    flavor: Literal["igraph", "leidenalg", "louvain"] = "igraph"
    n_iterations: int = 2
    use_weights: bool = True
    random_state: int = 0
    n_jobs: NJobs = Field(1, description="processes for the resolutions (-1: one per core); labels do not depend on it")
    edges: Literal["auto", "both", "once"] = Field(
        "auto", description="igraph graph: both = scanpy's (each pair twice), once = half the memory; auto: both up to 50,000 cells")



STAGE = Stage(
    name="leiden", params=LeidenParams, run=clustering_run("leiden"), repeat="list", default=True,
    reads=(Ref("neighbors_key", "graph"),),
    makes=lambda p: Makes(obs=leiden_keys(p.key_added, p.resolutions)),
    record=lambda adata, p: {"edges": adata.uns[p.key_added].get("edges")},
    description="Leiden / Louvain at several resolutions",
    waits_for_background=False,
)
