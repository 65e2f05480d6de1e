"""UMAP's layout optimisation on every core, with coordinates that do not depend on the threads.

umap-learn's optimiser (``umap.layouts.optimize_layout_euclidean``) takes the sampled edges one at
a time and moves both ends of each at once; seeded, it runs on one thread, and with
``parallel=True`` its threads move the same points concurrently, so the result changes from run
to run. Here the work of an epoch is done in Jacobi sweeps: a sweep computes every vertex's steps
from the coordinates the previous sweep left, into a second buffer; the threads share out the
vertices, each vertex sums its steps in the order of its edges and writes only its own row, and
the negative samples come from a counter-based generator (splitmix64 of the seed, the epoch, the
edge and the sample) instead of a generator state. No thread reads what another writes in the
same sweep, so the coordinates are the same with any number of threads, in any schedule, on
every rerun (on the same machine and library versions).

Otherwise the maths is umap-learn's: the curve ``1 / (1 + a d^2b)`` with ``a, b`` fitted as
``find_ab_params(1, min_dist)``, ``gamma = 1``, a learning rate starting at 1 and decaying
linearly over the epochs, every step's gradient clipped at 4, 5 negative samples per positive
one, each edge sampled every ``epochs_per_sample`` epochs (by its weight relative to the
largest), the graph's weights below ``max / n_epochs`` dropped, and the start scaled to
``[0, 10]`` (with umap-learn's noise) as ``simplicial_set_embedding`` does. An edge ``i - j``
sampled in an epoch attracts ``i`` once as umap-learn's edge ``i -> j`` (``i`` its head) and once
as its edge ``j -> i`` (``i`` its tail, moved as umap-learn's ``move_other`` moves it), and gives
``i`` that edge's negative samples, as the head of ``i -> j``.

An epoch is :data:`SWEEPS_PER_EPOCH` sweeps, each over one slice of every vertex's edges (the
first eighth of each vertex's edges, then the second, ...): umap-learn applies each step at once,
and one sweep per epoch, every step from the same coordinates, converges more slowly (at 20,000
cells and 100 epochs, the share of graph neighbours kept in 2-D was 0.066 against umap-learn's
0.079; 0.076, 0.077 and 0.078 with 2, 4 and 8 sweeps, and the silhouette of the true types 0.70,
0.69 and 0.67 against 0.67). Variants measured and left (the benchmarks page): applying a
vertex's steps one after the other against the others' previous coordinates makes the layout
depend on the order of the steps; a clipped or averaged sum of the steps damps it; Gauss-Seidel
sweeps colour class by colour class or block by block (deterministic too) separate the types far
more than umap-learn does.

The few lines of umap-learn that prepare the optimisation (``find_ab_params``,
``make_epochs_per_sample``, ``noisy_scale_coords``, the pruning and scaling of
``simplicial_set_embedding``) are reproduced here with the same results
(``tests/pp/test_umap.py``): importing umap-learn compiles pynndescent's numba code, ~15 s in a
fresh process, which this path needs only for the spectral start.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData

#: umap-learn's fixed optimisation constants (``simplicial_set_embedding`` as scanpy calls it)
SPREAD, GAMMA, INITIAL_ALPHA, NEGATIVE_SAMPLE_RATE = 1.0, 1.0, 1.0, 5

#: Jacobi sweeps per epoch, each over one slice of every vertex's edges (see the module docstring):
#: the layout's quality measures reach umap-learn's at 8 (1, 2, 4 measured short of it)
SWEEPS_PER_EPOCH = 8


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """``umap.umap_.find_ab_params``: ``a, b`` of the curve ``1 / (1 + a x^2b)`` fitted to an offset
    exponential decay (same code, so the same values)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.zeros(xv.shape)
    yv[xv < min_dist] = 1.0
    yv[xv >= min_dist] = np.exp(-(xv[xv >= min_dist] - min_dist) / spread)
    params, _ = curve_fit(curve, xv, yv)
    return params[0], params[1]


def default_epochs(n_cells: int) -> int:
    """umap-learn's (and scanpy's) number of epochs: 500 up to 10,000 cells, 200 above."""
    return 500 if n_cells <= 10_000 else 200


def epochs_per_sample(weights: np.ndarray, n_epochs: int, wmax: float | None = None) -> np.ndarray:
    """``umap.umap_.make_epochs_per_sample`` (``wmax``: the largest weight of the whole graph)."""
    wmax = weights.max() if wmax is None else wmax
    result = -1.0 * np.ones(weights.shape[0], dtype=np.float64)
    n_samples = n_epochs * (weights / wmax)
    result[n_samples > 0] = float(n_epochs) / np.float64(n_samples[n_samples > 0])
    return result


def noisy_scale_coords(
    coords: np.ndarray, random_state: np.random.RandomState, max_coord: float = 10.0, noise: float = 0.0001
) -> np.ndarray:
    """``umap.umap_.noisy_scale_coords``: the spectral start scaled, with a little noise."""
    expansion = max_coord / np.abs(coords).max()
    coords = (coords * expansion).astype(np.float32)
    return coords + random_state.normal(scale=noise, size=coords.shape).astype(np.float32)


def prune(graph: sparse.spmatrix, n_epochs: int) -> sparse.coo_matrix:
    """The graph as ``simplicial_set_embedding`` optimises it: weights below ``max / n_epochs`` dropped."""
    coo = sparse.coo_matrix(graph, copy=True)
    coo.sum_duplicates()
    limit = n_epochs if n_epochs > 10 else default_epochs(coo.shape[0])
    coo.data[coo.data < (coo.data.max() / float(limit))] = 0.0
    coo.eliminate_zeros()
    return coo


def start(
    graph: sparse.coo_matrix,
    init: np.ndarray | str,
    random_state: np.random.RandomState,
    *,
    data: np.ndarray | None = None,
    metric: str = "euclidean",
    metric_kwds: dict | None = None,
) -> np.ndarray:
    """The start of the layout as ``simplicial_set_embedding`` makes it: the spectral embedding of the
    pruned ``graph`` (scaled, with noise) or the given coordinates (noise added where points
    coincide), then every dimension scaled to ``[0, 10]`` (float32)."""
    if isinstance(init, str):
        if init != "spectral":
            raise ValueError(f"init {init!r}: 'spectral' or coordinates")
        from umap.spectral import spectral_layout

        emb = spectral_layout(data, graph, 2, random_state, metric=metric, metric_kwds=metric_kwds or {})
        emb = noisy_scale_coords(emb, random_state, max_coord=10, noise=0.0001)
    else:
        emb = np.array(init)
        if np.unique(emb, axis=0).shape[0] < emb.shape[0]:
            from sklearn.neighbors import KDTree

            dist, _ = KDTree(emb).query(emb, k=2)
            nndist = np.mean(dist[:, 1])
            emb = emb + random_state.normal(scale=0.001 * nndist, size=emb.shape).astype(np.float32)
    lo, hi = np.min(emb, 0), np.max(emb, 0)
    return (10.0 * (emb - lo) / (hi - lo)).astype(np.float32, order="C")


def edge_schedule(
    graph: sparse.coo_matrix, n_epochs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Each vertex's edges in CSR order (``indptr, indices``) and the epochs per sample of each edge as
    umap-learn samples it with the vertex as its head (``head``) and as its tail (``tail``: the edge
    ``j -> i``; ``None`` when the graph is symmetric, where it equals ``head``); ``-1`` where that
    direction is not in the graph."""
    n = graph.shape[0]
    wmax = graph.data.max()
    csr = sparse.csr_matrix(graph)
    csr.sort_indices()
    tr = sparse.csr_matrix(csr.T)
    tr.sort_indices()
    pattern, w_head, w_tail = csr, csr.data, tr.data
    same_pattern = np.array_equal(csr.indptr, tr.indptr) and np.array_equal(csr.indices, tr.indices)
    if not same_pattern:  # the union of both directions; an absent one has weight 0 (never sampled)
        pattern = sparse.csr_matrix((csr + tr).astype(bool))
        pattern.sort_indices()
        rows = np.repeat(np.arange(n), np.diff(pattern.indptr))
        w_head = np.asarray(csr[rows, pattern.indices]).ravel().astype(graph.data.dtype)
        w_tail = np.asarray(csr[pattern.indices, rows]).ravel().astype(graph.data.dtype)
    head = epochs_per_sample(w_head, n_epochs, wmax)
    tail = None if same_pattern and np.array_equal(w_head, w_tail) else epochs_per_sample(w_tail, n_epochs, wmax)
    index = np.int32 if n < 2**31 else np.int64
    return pattern.indptr.astype(np.int64), pattern.indices.astype(index), head, tail


def umap_parallel(
    adata: AnnData,
    *,
    neighbors_key: str,
    min_dist: float,
    random_state: int,
    key_added: str,
    maxiter: int | None = None,
    init_pos: np.ndarray | str = "spectral",
) -> int:
    """``sc.tl.umap(adata, ...)`` with these arguments, the layout optimised by :func:`optimize`: writes
    ``.obsm[key_added]`` and ``.uns[key_added]["params"]`` as scanpy does (``a``, ``b``, and
    ``random_state`` when not 0). Returns the number of numba threads the epochs ran on."""
    import numba
    from scanpy.tools._utils import _choose_representation  # what sc.tl.umap gives umap-learn

    nb = adata.uns[neighbors_key]
    params = nb.get("params", {})
    graph = adata.obsp[nb["connectivities_key"]]
    data = None
    if isinstance(init_pos, str):  # the spectral start: the representation places disconnected components
        data = _choose_representation(adata, use_rep=params.get("use_rep"), n_pcs=params.get("n_pcs"), silent=True)
    else:
        init_pos = np.asarray(init_pos, dtype=np.float32)
    coords, a, b = layout(
        graph,
        init_pos,
        min_dist=min_dist,
        random_state=random_state,
        n_epochs=maxiter,
        data=data,
        metric=params.get("metric", "euclidean"),
        metric_kwds=params.get("metric_kwds", {}),
    )
    adata.uns[key_added] = {"params": {"a": a, "b": b}}
    if random_state != 0:
        adata.uns[key_added]["params"]["random_state"] = random_state
    adata.obsm[key_added] = coords
    return numba.get_num_threads()


def layout(
    graph: sparse.spmatrix,
    init: np.ndarray | str,
    *,
    min_dist: float,
    random_state: int,
    n_epochs: int | None = None,
    data: np.ndarray | None = None,
    metric: str = "euclidean",
    metric_kwds: dict | None = None,
) -> tuple[np.ndarray, float, float]:
    """The UMAP layout of ``graph`` (cells x 2, float32) from ``init`` (``"spectral"`` or coordinates)
    and its ``a, b``: ``simplicial_set_embedding``'s preparation, then :func:`optimize`."""
    n_epochs = default_epochs(graph.shape[0]) if n_epochs is None else n_epochs
    a, b = find_ab_params(SPREAD, min_dist)
    rs = np.random.RandomState(random_state)
    pruned = prune(graph, n_epochs)
    emb = start(pruned, init, rs, data=data, metric=metric, metric_kwds=metric_kwds)
    return optimize(emb, pruned, n_epochs=n_epochs, a=a, b=b, seed=random_state), a, b


def optimize(
    embedding: np.ndarray,
    graph: sparse.coo_matrix,
    *,
    n_epochs: int,
    a: float,
    b: float,
    seed: int,
) -> np.ndarray:
    """Optimise ``embedding`` (cells x 2, the start) on the pruned ``graph`` for ``n_epochs`` epochs;
    returns the layout (float32, a new array). The same inputs give the same coordinates with any
    number of numba threads."""
    indptr, indices, eps_head, eps_tail = edge_schedule(graph, n_epochs)
    symmetric = eps_tail is None
    if symmetric:  # the edge j -> i is sampled with i -> j: no second schedule
        eps_tail = np.empty(0)
    next_head, next_tail = eps_head.copy(), eps_tail.copy()
    next_neg = eps_head / NEGATIVE_SAMPLE_RATE
    key = _mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    neg_rate = float(NEGATIVE_SAMPLE_RATE)
    current = np.ascontiguousarray(embedding, dtype=np.float32).copy()
    other = np.empty_like(current)
    edges = (indptr, indices, eps_head, eps_tail, next_head, next_tail, next_neg)  # the schedule's state: updated
    sweep = _kernels()
    alpha = INITIAL_ALPHA
    for n in range(n_epochs):
        for part in range(SWEEPS_PER_EPOCH):
            sweep(current, other, edges, part, SWEEPS_PER_EPOCH, symmetric, n, alpha, a, b, GAMMA, neg_rate, key)
            current, other = other, current
        alpha = INITIAL_ALPHA * (1.0 - (float(n) / float(n_epochs)))  # umap-learn's schedule
    return current


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.uint64) -> np.uint64:
    """splitmix64's finaliser (NumPy scalars; the kernels use the same steps)."""
    with np.errstate(over="ignore"):
        z = np.uint64(z)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@functools.cache
def _kernels():
    """The compiled sweep (numba, a dependency of scanpy; compiled once, cached on disk)."""
    import numba

    @numba.njit(cache=True, inline="always")
    def mix(z):  # pragma: no cover - compiled
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    @numba.njit(cache=True, inline="always")
    def clip(v):  # pragma: no cover - compiled
        return 4.0 if v > 4.0 else (-4.0 if v < -4.0 else v)

    @numba.njit(cache=True, parallel=True)
    def sweep(
        Y, out, edges, part, parts, symmetric, n, alpha, a, b, gamma, neg_rate, key
    ):  # pragma: no cover - compiled
        """Slice ``part`` of ``parts`` of epoch ``n``: each vertex's steps on that slice of its edges,
        computed at the coordinates ``Y`` and summed in the order of its edges; its new position
        written to ``out`` (its row only)."""
        indptr, indices, eps_head, eps_tail, next_head, next_tail, next_neg = edges
        nv = Y.shape[0]
        unv = np.uint64(nv)
        ekey = mix(key + _GOLDEN * np.uint64(n + 1))
        for i in numba.prange(nv):
            y0 = np.float64(Y[i, 0])
            y1 = np.float64(Y[i, 1])
            g0 = 0.0
            g1 = 0.0
            r0 = indptr[i]
            deg = indptr[i + 1] - r0
            for p in range(r0 + (deg * part) // parts, r0 + (deg * (part + 1)) // parts):
                head = eps_head[p] > 0 and next_head[p] <= n
                if symmetric:
                    tail = head
                else:
                    tail = eps_tail[p] > 0 and next_tail[p] <= n
                    if tail:
                        next_tail[p] += eps_tail[p]
                if not (head or tail):
                    continue
                j = indices[p]
                d0 = y0 - np.float64(Y[j, 0])
                d1 = y1 - np.float64(Y[j, 1])
                d2 = d0 * d0 + d1 * d1
                if d2 > 0.0:  # attraction: as the head of i -> j, as the tail of j -> i
                    pb = d2**b
                    gc = -2.0 * a * b * (pb / d2) / (a * pb + 1.0)
                    times = (1.0 if head else 0.0) + (1.0 if tail else 0.0)
                    g0 += times * clip(gc * d0) * alpha
                    g1 += times * clip(gc * d1) * alpha
                if not head:
                    continue
                next_head[p] += eps_head[p]
                eps_neg = eps_head[p] / neg_rate
                n_neg = int((n - next_neg[p]) / eps_neg)  # the head's negative samples
                pkey = mix(ekey ^ np.uint64(p))
                for s in range(n_neg):
                    k = np.int64(mix(pkey + _GOLDEN * np.uint64(s + 1)) % unv)
                    if k == i:
                        continue  # umap-learn: the head itself, at distance 0
                    d0 = y0 - np.float64(Y[k, 0])
                    d1 = y1 - np.float64(Y[k, 1])
                    d2 = d0 * d0 + d1 * d1
                    if d2 > 0.0:
                        gc = 2.0 * gamma * b / ((0.001 + d2) * (a * d2**b + 1.0))
                        g0 += clip(gc * d0) * alpha
                        g1 += clip(gc * d1) * alpha
                next_neg[p] += n_neg * eps_neg
            out[i, 0] = y0 + g0
            out[i, 1] = y1 + g1

    return sweep
