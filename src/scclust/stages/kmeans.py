"""``kmeans``: k-means at several k (:func:`scclust.tl.kmeans`)."""

from __future__ import annotations

from .. import tl
from .._keys import kmeans_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

KMeansParams = params_model(tl.kmeans, name="KMeansParams")


def memory(p, sizes):
    """Peak: ``50 MB + 2 x n x dims x 4 + 8 x n`` (scikit-learn's copy of the rows and its centred
    copy, the labels; starts run one after the other). Measured: 50,000 cells, 50 dims: 4 MiB added
    (estimate 67 MiB: scikit-learn had been imported by the kNN search)."""
    from .._memory import Estimate, cells

    n, d = sizes.n_obs, sizes.dim(p.use_rep, p.n_pcs)
    return Estimate(
        parts=(
            ("scikit-learn", 50e6),
            (f"rows {cells(n)} x {d} float32, copied and centred", 2 * n * d * 4.0),
            ("labels", 8.0 * n),
        ),
        options="fewer dims (n_pcs), or cluster a sketch (add the sketch stage)",
    )


STAGE = Stage(
    name="kmeans",
    params=KMeansParams,
    run=clustering_run("kmeans"),
    repeat="list",
    reads=(Ref("use_rep", "rep"),),
    makes=lambda p: Makes(obs=kmeans_keys(p.key_added, p.n_clusters)),
    on_sketch=True,
    memory=memory,
    description="k-means at several k, several starts",
    obsm_reads="declared",
)
