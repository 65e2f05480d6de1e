"""A sketch: a seeded subset of the cells that keeps the embedding's geometry, to cluster instead
of every cell (:func:`sketch`); the labels go back to every cell with
:func:`scclust.tl.project_labels`."""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
from anndata import AnnData

from .._checks import get_rep
from .._errors import InputError
from .._params import validated
from .._types import Fraction, PositiveInt

logger = logging.getLogger(__name__)

__all__ = ["SKETCH_METHODS", "sketch", "sketch_indices"]

SKETCH_METHODS = ("hybrid", "geometric", "uniform", "leverage")
#: share of a ``"hybrid"`` sketch drawn by the geometric covering (the rest uniformly)
HYBRID_GEOMETRIC_SHARE = 0.2
#: the grid search stops when the non-empty boxes are within this fraction of the sketch size
_BOX_TOLERANCE = 0.1
_MAX_ITER = 60


@validated
def sketch(
    adata: AnnData,
    *,
    n_cells: PositiveInt | None = None,
    fraction: Fraction = 0.05,
    method: Literal["hybrid", "geometric", "uniform", "leverage"] = "hybrid",
    use_rep: str = "X_pca",
    n_pcs: PositiveInt | None = None,
    random_state: int = 0,
    key_added: str = "sketch",
    copy: bool = False,
) -> AnnData | None:
    """Select a sketch of the cells: a seeded subset that keeps the embedding's geometry.

    Clustering a sketch of 5 % of 10,000,000 cells and projecting its labels to every cell
    (:func:`scclust.tl.project_labels`) takes a fraction of the time and memory of clustering every
    cell. The same data, size, method and seed give the same sketch.

    - ``"hybrid"`` (the default): :data:`HYBRID_GEOMETRIC_SHARE` (a fifth) of the sketch drawn by
      the geometric covering below from the cells not drawn uniformly for the rest. The uniform
      part keeps the densities that Leiden's partition at a given resolution depends on; the
      covering adds cells of every region, so a rare population keeps several times its share.
      Measured on simulated data with a planted population (benchmarks page): the clusterings
      projected from a hybrid sketch agree with the full path as well as a uniform sketch's do,
      while a purely geometric sketch's agree less (its flattened densities change which clusters
      Leiden splits), and the hybrid kept 3 times the uniform sketch's cells of the planted population.
    - ``"geometric"`` (geometric sketching, Hie et al. 2019, the ``geosketch`` package's regular-grid
      variant): the embedding (shifted to 0, scaled by its largest range) is covered by a grid of
      equal cubes whose side is bisected until about ``n_cells`` cubes hold cells; cubes are then
      visited in a seeded random order, one seeded random cell from each per round, until the
      sketch is full. Dense regions give fewer cells per cell of theirs than sparse ones: a rare
      population keeps more of its cells than under uniform sampling. Vectorised: each round of the
      bisection hashes every cell's cube (64-bit) and counts the distinct hashes (about 1 s per
      10,000,000 cells x 30 dims and round, some 20 rounds). ``geosketch`` itself loops over cells in
      Python and holds a cells x dims float64 table and a dictionary of every cube: hours and tens
      of GB at that size.
    - ``"uniform"``: cells drawn uniformly without replacement (densities kept; a population of
      0.05 % keeps 0.05 % of the sketch).
    - ``"leverage"``: Seurat v5's ``SketchData`` rule, cells drawn without replacement with
      probability proportional to their statistical leverage in the embedding (the squared
      Mahalanobis norm of the centred row, ``x (X'X)^-1 x'``), by Efraimidis-Spirakis keys.

    Memory at 10,000,000 cells x 30 dims: the float32 rows (1.2 GB, a copy of ``use_rep``'s
    columns), and per cell a 64-bit cube hash, a random key and an order (about 0.3 GB).

    Parameters
    ----------
    adata
        Annotated data matrix.
    n_cells
        Cells in the sketch; ``None``: ``fraction`` of the cells.
    fraction
        Share of the cells in the sketch when ``n_cells`` is not given (0.05: 500,000 of 10,000,000).
    method
        How the sketch is drawn: ``"hybrid"``, ``"geometric"``, ``"uniform"`` or ``"leverage"`` (see above).
    use_rep
        Key in ``.obsm`` whose geometry the sketch keeps (``"X"`` for ``.X``).
    n_pcs
        Use the first ``n_pcs`` dimensions of ``use_rep``; all when ``None``.
    random_state
        Seed of the draw.
    key_added
        The ``.obs`` column marking the sketch's cells and the ``.uns`` key of its parameters.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy), having written ``.obs[key_added]`` (``True`` for the cells of the sketch)
    and ``.uns[key_added]``: ``params``, ``n_cells`` (the sketch's size), ``n_obs`` (of all cells)
    and, for ``"geometric"`` and ``"hybrid"``, ``boxes`` (non-empty cubes of the covering) and
    ``box_side`` (their side, the embedding scaled to a largest range of 1).
    """
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep, n_pcs)
    n = X.shape[0]
    size = n_cells if n_cells is not None else round(fraction * n)
    if size >= n:
        raise InputError(
            f"a sketch of {size} cells is not smaller than the data ({n} cells); give a smaller n_cells or "
            "fraction, or leave the sketch stage out"
        )
    if size < 10:
        raise InputError(
            f"a sketch of {size} cells is too small to cluster (need at least 10); raise n_cells or fraction"
        )
    t0 = time.perf_counter()
    info: dict = {}
    idx = sketch_indices(X, size, method=method, random_state=random_state, info=info)
    mask = np.zeros(n, bool)
    mask[idx] = True
    adata.obs[key_added] = mask
    adata.uns[key_added] = {
        "params": {
            "n_cells": n_cells,
            "fraction": fraction,
            "method": method,
            "use_rep": use_rep,
            **({"n_pcs": n_pcs} if n_pcs is not None else {}),
            "random_state": random_state,
        },
        "n_cells": int(size),
        "n_obs": int(n),
        **info,
    }
    logger.info(
        "sketch %r: %d of %d cells (%.2f %%), %s%s, in %.1f s",
        key_added,
        size,
        n,
        100 * size / n,
        method,
        f" ({info['boxes']} non-empty cubes)" if "boxes" in info else "",
        time.perf_counter() - t0,
    )
    return adata if copy else None


def sketch_indices(
    X: np.ndarray, size: int, *, method: str = "geometric", random_state: int = 0, info: dict | None = None
) -> np.ndarray:
    """Sorted row indices of a sketch of ``size`` rows of ``X`` (see :func:`sketch`)."""
    n = X.shape[0]
    rng = np.random.default_rng([random_state, 29])
    if method == "uniform":
        return np.sort(rng.choice(n, size, replace=False))
    if method == "leverage":
        return _leverage(X, size, rng)
    if method == "geometric":
        return _geometric(X, size, rng, {} if info is None else info)
    if method == "hybrid":
        n_geo = round(HYBRID_GEOMETRIC_SHARE * size)
        uni = np.sort(rng.choice(n, size - n_geo, replace=False))
        rest = np.setdiff1d(np.arange(n), uni, assume_unique=True)
        geo = rest[_geometric(X[rest], n_geo, rng, {} if info is None else info)]
        return np.sort(np.concatenate([uni, geo]))
    raise InputError(f"method {method!r} is not one of {', '.join(map(repr, SKETCH_METHODS))}")


def _leverage(X: np.ndarray, size: int, rng: np.random.Generator, block: int = 262_144) -> np.ndarray:
    """Draw ``size`` rows with probability proportional to their leverage, without replacement."""
    n, d = X.shape
    mean = np.zeros(d)
    for s in range(0, n, block):
        mean += X[s : s + block].sum(axis=0, dtype=np.float64)
    mean /= n
    G = np.zeros((d, d))
    for s in range(0, n, block):
        B = X[s : s + block].astype(np.float64) - mean
        G += B.T @ B
    L = np.linalg.cholesky(G + 1e-12 * np.trace(G) / d * np.eye(d))
    keys = np.empty(n)
    for s in range(0, n, block):
        B = X[s : s + block].astype(np.float64) - mean
        lev = (np.linalg.solve(L, B.T) ** 2).sum(axis=0)
        # Efraimidis-Spirakis: the `size` largest u^(1/w) (as log u / w) are a draw without replacement
        # with probabilities proportional to w
        keys[s : s + block] = np.log(rng.random(B.shape[0])) / np.maximum(lev, 1e-300)
    return np.sort(np.argpartition(-keys, size - 1)[:size])


def _box_ids(Z: np.ndarray, unit: float) -> np.ndarray:
    """A 64-bit hash of each row's grid cube of side ``unit`` (FNV-1a style over the dimensions)."""
    h = np.full(Z.shape[0], 14695981039346656037, dtype=np.uint64)
    prime = np.uint64(1099511628211)
    for j in range(Z.shape[1]):
        c = np.floor(Z[:, j] / unit).astype(np.int64).view(np.uint64)
        h ^= c
        h *= prime
    return h


def _geometric(X: np.ndarray, size: int, rng: np.random.Generator, info: dict) -> np.ndarray:
    """Geometric sketching on a regular grid (see :func:`sketch`)."""
    Z = np.asarray(X, dtype=np.float32)
    Z = Z - Z.min(axis=0)
    top = float(Z.max())
    if top > 0:
        Z /= top
    lo, hi = 0.0, 1.0 + 1e-6  # side of a cube: hi gives one cube
    for _ in range(_MAX_ITER):
        unit = (lo + hi) / 2
        h = _box_ids(Z, unit)
        n_boxes = np.unique(h).size
        if abs(n_boxes - size) <= _BOX_TOLERANCE * size:
            break
        if n_boxes > size:
            lo = unit
        else:
            hi = unit
    del Z
    ids = np.unique(h, return_inverse=True)[1].ravel()
    del h
    info.update(boxes=int(n_boxes), box_side=float(unit))
    # rounds: each cube gives its r-th cell (a seeded random order within the cube) in round r;
    # within a round, cubes come in a seeded random order
    u = rng.random(ids.size)
    order = np.lexsort((u, ids))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    rank = np.empty(ids.size, np.int64)
    rank[order] = np.arange(ids.size) - np.repeat(starts, np.diff(np.r_[starts, ids.size]))
    box_rank = rng.permutation(n_boxes)
    key = rank * n_boxes + box_rank[ids]
    return np.sort(np.argpartition(key, size - 1)[:size])
