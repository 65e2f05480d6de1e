"""k-means at several k in one call (scikit-learn's :class:`~sklearn.cluster.KMeans`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

from anndata import AnnData
from pydantic import Field

from .._checks import get_rep
from .._colors import write_colors
from .._errors import ConfigError, InputError
from .._keys import kmeans_keys
from .._params import validated
from .._types import ClusterCounts, PositiveInt
from ._labels import store_labels

logger = logging.getLogger(__name__)


@validated
def kmeans(
    adata: AnnData,
    *,
    n_clusters: Annotated[ClusterCounts, Field(min_length=1)] = (5, 10, 15),
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    n_init: PositiveInt | Literal["auto"] = 10,
    max_iter: PositiveInt = 300,
    random_state: int = 0,
    key_added: str = "kmeans",
    copy: bool = False,
) -> AnnData | None:
    """k-means clustering of an embedding for each ``k`` in ``n_clusters``.

    Each ``k`` is one call of :class:`sklearn.cluster.KMeans` (k-means++ initialisation, Lloyd
    iterations, the best of ``n_init`` starts by inertia) with ``random_state`` as seed, on the
    array read from ``.obsm[use_rep]`` unchanged (same dtype), so the labels and inertia equal
    ``KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=random_state)`` on the
    same data. The NBIS scanpy lab is ``n_init="auto"`` (scikit-learn's default: one k-means++
    start) on all 50 dims of ``X_pca_harmony``; its Seurat twin uses 100 starts (``n_init=100``).

    Parameters
    ----------
    adata
        Annotated data matrix.
    n_clusters
        The values of k (each between 1 and the number of cells); duplicates are dropped.
    use_rep
        Key in ``.obsm`` (``"X"`` for ``.X``).
    n_pcs
        Use the first ``n_pcs`` dimensions of ``use_rep``; all when ``None``.
    n_init
        Number of k-means++ starts per k (the best by inertia is kept), or ``"auto"``
        (scikit-learn's default, one start).
    max_iter
        Maximum Lloyd iterations per start.
    random_state
        Seed.
    key_added
        Prefix of the label columns: ``f"{key_added}{k}"`` (the lab's ``kmeans5``, ``kmeans10``).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), having written ``.obs[f"{key_added}{k}"]`` for each k (categorical
    labels ``"0"``, ``"1"``, ... numbered by decreasing cluster size, natsorted categories; an
    existing column is overwritten, named in an INFO log line), ``.uns[f"{key_added}{k}_colors"]``
    (one hex colour per category, the colours of scclust's figures; they follow the clustering
    tree across the values of k) and ``.uns[key_added]`` with ``params`` and ``clusterings``: per
    label key ``n_clusters``, ``inertia`` (within-cluster sum of squares of the best start) and ``n_iter``.
    """
    from sklearn.cluster import KMeans

    ks = _check_ks(n_clusters, adata.n_obs, what="n_clusters")
    X = get_rep(adata, use_rep, n_pcs)
    adata = adata.copy() if copy else adata
    summary = {}
    for k, key in zip(ks, kmeans_keys(key_added, ks), strict=True):
        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=random_state).fit(X)
        found = store_labels(adata, key, km.labels_)
        summary[key] = {"n_clusters": found, "inertia": float(km.inertia_), "n_iter": int(km.n_iter_)}
        logger.info("%s: %d clusters, inertia %.6g, %d iterations", key, found, km.inertia_, km.n_iter_)
    adata.uns[key_added] = {
        "params": {
            "n_clusters": ks,
            "use_rep": use_rep,
            "n_pcs": n_pcs,
            "n_init": n_init,
            "max_iter": max_iter,
            "random_state": random_state,
        },
        "clusterings": summary,
    }
    write_colors(adata, list(summary))
    return adata if copy else None


def _check_ks(values: Sequence[int], n_obs: int, *, what: str) -> list[int]:
    """Integers in ``[1, n_obs]``, duplicates dropped (order kept); raise naming the bad value."""
    if isinstance(values, int | float):
        values = [values]
    ks: list[int] = []
    for k in values:
        if isinstance(k, bool) or not float(k).is_integer():
            raise ConfigError(f"{what} must be whole numbers; got {k!r}")
        k = int(k)
        if k < 1:
            raise ConfigError(f"{what} must be >= 1; got {k}")
        if k > n_obs:
            raise InputError(f"{what}={k} is larger than the number of cells ({n_obs})")
        if k not in ks:
            ks.append(k)
    return ks
