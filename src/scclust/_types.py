"""Parameter types shared by the config models and the functions they call.

Every choice list and constraint lives here once. A stage's ``*Params`` model and the public
function it calls annotate the same parameter with the same type, and both validate through it:
the model when a config is loaded, the function (through :func:`validated`) when called from a
notebook. ``tests/test_config.py`` checks that the annotations are the same objects.

List types accept a scalar (``resolutions=0.8``, ``color="leiden_0.8"``) and any sequence
(a tuple, a NumPy array) and validate to a list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError, validate_call

__all__ = [
    "ClusterCounts", "Distance", "GeneList", "HclustMetric", "Heights", "KeyList", "KnnMetric", "Linkage",
    "NJobs", "PositiveInt", "Resolutions", "as_list", "validated",
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
Distance = Literal["euclidean", "sqeuclidean", "cityblock", "chebyshev", "minkowski", "seuclidean", "cosine",
                   "correlation", "braycurtis", "canberra"]
#: kNN distances
KnnMetric = Literal["euclidean", "cosine", "correlation", "manhattan"]

PositiveInt = Annotated[int, Field(ge=1)]
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


F = TypeVar("F", bound=Callable[..., Any])


def validated(func: F) -> F:
    """Validate a public function's arguments against its annotations (the shared types above).

    A bad argument raises :class:`scclust._errors.ConfigError` with the same one-line message a
    config gets. Arguments are converted as the types say (a scalar resolution becomes a list).
    Errors raised inside the function itself pass through unchanged.
    """
    import threading
    import typing

    state = threading.local()
    hints = typing.get_type_hints(func, include_extras=True)

    @functools.wraps(func)
    def body(*args: Any, **kwargs: Any) -> Any:
        state.entered = True
        return func(*args, **kwargs)

    body.__annotations__ = hints
    checked = validate_call(body, config=ConfigDict(arbitrary_types_allowed=True))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state.entered = False
        try:
            return checked(*args, **kwargs)
        except ValidationError as err:
            if getattr(state, "entered", False):
                raise
            from ._errors import ConfigError
            from .config import format_validation_error

            raise ConfigError(f"{func.__name__}(): {format_validation_error(err, root=None)}") from None

    return wrapper  # type: ignore[return-value]


def check_linkage_metric(method: str, metric: str, *, allow_non_euclidean: bool | None = False, prefix: str = "") -> None:
    """centroid / median / ward need Euclidean distances unless ``allow_non_euclidean`` (None: not offered)."""
    if method in EUCLIDEAN_LINKAGES and metric != "euclidean" and not allow_non_euclidean:
        hint = ("" if allow_non_euclidean is None else
                ", or set allow_non_euclidean to reproduce R's hclust on a non-Euclidean dissimilarity "
                "(the Seurat lab's ward.D2 on (1 - r) / 2)")
        raise ValueError(
            f"{prefix}method {method!r} needs {prefix}metric 'euclidean' (got {metric!r}); "
            f"with other metrics use single, complete, average or weighted{hint}"
        )
