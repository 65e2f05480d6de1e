"""Parameter types shared by the config models and the functions they call.

A choice list or constraint used by more than one function lives here once; the functions'
signatures use these types, and the config models are generated from the signatures
(:mod:`scclust._params`).

List types accept a scalar (``resolutions=0.8``, ``color="leiden_0.8"``) and any sequence
(a tuple, a NumPy array) and validate to a list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "ClusterCounts",
    "Distance",
    "Fraction",
    "GeneList",
    "HclustMetric",
    "Heights",
    "KeyList",
    "KnnBackend",
    "KnnMetric",
    "Linkage",
    "NJobs",
    "PositiveInt",
    "Resolutions",
    "as_list",
]


def as_list(value: Any) -> Any:
    """A scalar (or a string) becomes a one-element list; tuples, arrays and other iterables a list."""
    if value is None or isinstance(value, list | dict):
        return value
    if isinstance(value, str | bytes | int | float):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _positive(values: list[float]) -> list[float]:
    bad = [v for v in values if not v > 0]
    if bad:
        raise ValueError(f"every resolution must be > 0; got {bad}")
    return values


def _non_negative(values: list[float]) -> list[float]:
    bad = [v for v in values if not v >= 0]
    if bad:
        raise ValueError(f"every height must be >= 0; got {bad}")
    return values


def _n_jobs(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError("n_jobs must be >= 1, or -1 for one process per core")
    return value


#: the linkage methods of :func:`scipy.cluster.hierarchy.linkage`
Linkage = Literal["single", "complete", "average", "weighted", "centroid", "median", "ward"]
#: linkages defined only on Euclidean distances
EUCLIDEAN_LINKAGES = ("centroid", "median", "ward")
#: distances for hierarchical clustering of cells (correlation is (1 - r) / 2)
HclustMetric = Literal["euclidean", "correlation", "cosine", "cityblock"]
#: distances of :func:`scipy.spatial.distance.pdist` offered for heatmaps
Distance = Literal[
    "euclidean",
    "sqeuclidean",
    "cityblock",
    "chebyshev",
    "minkowski",
    "seuclidean",
    "cosine",
    "correlation",
    "braycurtis",
    "canberra",
]
#: kNN distances
KnnMetric = Literal["euclidean", "cosine", "correlation", "manhattan"]
#: kNN search backends (:func:`scclust.pp.neighbors`); ``auto`` chooses by size
KnnBackend = Literal["auto", "exact", "ivf", "flat", "hnsw"]

PositiveInt = Annotated[int, Field(ge=1)]
#: a fraction in (0, 1]
Fraction = Annotated[float, Field(gt=0, le=1)]
#: Leiden / Louvain resolutions: one or more, each > 0
Resolutions = Annotated[list[float], BeforeValidator(as_list), Field(min_length=1), AfterValidator(_positive)]
#: numbers of clusters k, each >= 1 (a repeated k gives the same labels once)
ClusterCounts = Annotated[list[PositiveInt], BeforeValidator(as_list)]
#: tree cut heights, each >= 0
Heights = Annotated[list[float], BeforeValidator(as_list), AfterValidator(_non_negative)]
#: ``.obs`` keys (a single key is taken as a list of one)
KeyList = Annotated[list[str], BeforeValidator(as_list)]
#: gene names (a single name is taken as a list of one)
GeneList = Annotated[list[str], BeforeValidator(as_list)]
#: processes: >= 1, or -1 for one per core
NJobs = Annotated[int, AfterValidator(_n_jobs)]


def check_linkage_metric(
    method: str, metric: str, *, allow_non_euclidean: bool | None = False, prefix: str = ""
) -> None:
    """centroid / median / ward need Euclidean distances unless ``allow_non_euclidean`` (None: not offered)."""
    if method in EUCLIDEAN_LINKAGES and metric != "euclidean" and not allow_non_euclidean:
        hint = (
            ""
            if allow_non_euclidean is None
            else ", or set allow_non_euclidean to reproduce R's hclust on a non-Euclidean dissimilarity "
            "(the Seurat lab's ward.D2 on (1 - r) / 2)"
        )
        raise ValueError(
            f"{prefix}method {method!r} needs {prefix}metric 'euclidean' (got {metric!r}); "
            f"with other metrics use single, complete, average or weighted{hint}"
        )
