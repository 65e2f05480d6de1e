"""Leiden (and Louvain) community detection at several resolutions in one call."""

from __future__ import annotations

import logging
import random
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._colors import write_colors
from .._errors import ConfigError, MissingKeyError, choices
from .._keys import leiden_keys
from .._params import validated
from .._types import NJobs, Resolutions
from .._worker import available_cpus
from ._labels import store_labels

logger = logging.getLogger(__name__)


@validated
def leiden(
    adata: AnnData,
    *,
    resolutions: Resolutions = (1.0,),
    neighbors_key: str = "neighbors",
    key_added: str = "leiden",
    flavor: Literal["auto", "igraph", "leidenalg", "louvain"] = "igraph",
    n_iterations: int = 2,
    use_weights: bool = True,
    random_state: int = 0,
    n_jobs: Literal["auto"] | NJobs = "auto",
    edges: Literal["auto", "both", "once"] = "auto",
    copy: bool = False,
    resolution: float | None = None,
) -> AnnData | None:
    """Leiden clustering of a neighbour graph at several resolutions, or at one as :func:`scanpy.tl.leiden`.

    The graph is converted to igraph once per process (its edges as one list of pairs, freed once
    igraph holds them: 8.8 s and ~120 transient bytes per edge at 15.7 million edges) and reused for
    every resolution; the time of each resolution is logged. ``flavor="igraph"`` is
    igraph's C implementation (fast; equals ``sc.tl.leiden(flavor="igraph", directed=False)``),
    ``"leidenalg"`` is the leidenalg package (the lab's default; equals ``sc.tl.leiden()``;
    ``n_iterations=-1`` runs to convergence as scanpy does), ``"louvain"`` is igraph's multilevel
    Louvain (``n_iterations`` ignored).

    Parameters
    ----------
    adata
        Annotated data matrix with a graph from :func:`scclust.pp.neighbors` (or scanpy's).
    resolutions
        One clustering per resolution (each > 0).
    neighbors_key
        Name of the graph in ``.uns``.
    key_added
        With ``resolutions``: the prefix of the label columns, ``f"{key_added}_{resolution}"`` (e.g.
        ``leiden_0.4``). With ``resolution`` (scanpy's call): the name of the one label column, as
        ``sc.tl.leiden`` (``"leiden"`` by default).
    flavor
        Implementation, see above. ``"auto"``: ``"leidenalg"`` (scanpy's default, so the lab's
        labels) up to :data:`AUTO_LEIDENALG_MAX_CELLS` cells (50,000, where the kNN graph is
        scanpy's exact one too), ``"igraph"`` above (~20x faster per edge; leidenalg to convergence
        at 500,000 cells takes minutes per resolution), with at most 2 iterations there when
        ``n_iterations`` is negative. The choice and its reason are logged; ``.uns[key_added]["params"]``
        records the flavor and iterations run, and ``auto`` the reason.
    n_iterations
        Leiden iterations; negative runs until the partition no longer improves.
    use_weights
        Use edge weights (connectivities) or treat the graph as unweighted.
    random_state
        Seed.
    n_jobs
        Processes running resolutions side by side (-1: one per core; at most one per resolution).
        Each resolution uses the same seed in any process, so the labels do not depend on ``n_jobs``.
        Each worker receives the graph's edges once as three flat arrays (12 bytes per edge:
        190 MB for a 1,000,000-cell k = 20 graph) and builds its own igraph graph (34 bytes per
        edge, ~200 while it is built); nothing dense is copied. From 40,000,000 edges (above ~2.5
        million cells at k = 20) the edges are written once to a temporary text file that igraph
        reads in C, here and in every worker (~110 bytes per edge at the peak instead of ~200;
        the same graph, so the same labels). ``"auto"``: one process per core when the
        resolutions a worker would take are estimated to run longer than starting it (about 3 s
        for a fresh interpreter; the estimate is the graph's edges times a per-flavor rate
        measured on simulated kNN graphs) and the workers' memory (about 300 MB plus 200 bytes per
        edge each, or 110 from the file) fits in half of the memory this process may
        still use (in a run: within its ``memory_limit``); otherwise one after the other. The
        choice and its reason are logged and recorded as ``n_processes`` in ``.uns[key_added]``.
    edges
        How the undirected igraph graph is built: ``"both"`` is scanpy's (one edge per stored
        entry, so each pair of neighbours twice), needed for labels identical to
        ``sc.tl.leiden(flavor="igraph", directed=False)``; ``"once"`` keeps each pair once (the
        upper triangle of a symmetric graph): half of igraph's building time and memory (at
        1,000,000 cells and k = 20: 15.7 instead of 31.4 million edges), the same modularity for
        every partition (doubling every weight cancels in it), but Leiden's floating-point sums,
        hence occasionally its moves, differ (ARI 0.99 with scanpy's on 3,000 cells). With
        ``"once"`` igraph also gets the vertices numbered so that neighbours are close in memory
        (:func:`locality_order`; 1.4x faster at 1,000,000 cells), which changes the labels as
        another seed would; they are mapped back to the cells.
        ``"auto"``: ``"both"`` up to 50,000 cells (where the kNN graph itself is scanpy's),
        ``"once"`` above. leidenalg always gets scanpy's directed graph.
    copy
        Return a modified copy.
    resolution
        scanpy's call: one clustering at this resolution, written where ``sc.tl.leiden`` writes it
        (``.obs[key_added]``, not ``f"{key_added}_{resolution}"``). Give ``resolution`` or
        ``resolutions``, not both.

    Returns
    -------
    ``None`` (or the copy), having written (labels are categorical ``"0"``, ``"1"``, ... numbered by
    decreasing cluster size, natsorted categories; an existing column of the same name is
    overwritten, as scanpy does, and named in an INFO log line):

    - with ``resolutions``: ``.obs[f"{key_added}_{r}"]`` for each resolution ``r``, and
      ``.uns[f"{key_added}_{r}_colors"]`` (one hex colour per category; colours follow the
      clustering tree across the resolutions, as in a run's figures);
    - with ``resolution``: ``.obs[key_added]`` and ``.uns[f"{key_added}_colors"]`` (the colours
      scclust's figures use, so ``sc.pl.umap(adata, color=key_added)`` draws the same);
    - ``.uns[key_added]``: ``params`` (with ``resolution``: scanpy's ``resolution``,
      ``random_state``, ``n_iterations``, plus this function's other arguments) and
      ``clusterings``, per label column ``n_clusters``, ``resolution`` and ``modularity``.
    """
    single = resolution is not None
    if single:
        if list(resolutions) != [1.0]:
            raise ConfigError("give either resolution (one value, scanpy's name) or resolutions, not both")
        if not resolution > 0:
            raise ConfigError(f"resolution must be > 0; got {resolution}")
        resolutions = [resolution]
    res = [float(r) for r in dict.fromkeys(resolutions)]
    adata = adata.copy() if copy else adata
    adjacency = get_graph(adata, neighbors_key)
    auto = None
    if flavor == "auto":
        flavor, n_iterations, auto = auto_flavor(adjacency.shape[0], n_iterations)
        logger.info("leiden: flavor %s, n_iterations %d (flavor auto: %s)", flavor, n_iterations, auto)
    edges_used = edges if edges != "auto" else ("both" if adjacency.shape[0] <= EDGES_BOTH_MAX_CELLS else "once")
    order = None
    if edges_used == "once" and flavor != "leidenalg":
        order = locality_order(adjacency)  # the same graph, its vertices renumbered: faster, other labels
        adjacency = permuted(adjacency, order)
    graph = _edges(adjacency, directed=flavor == "leidenalg", once=edges_used == "once")
    n_edges = graph[1].size
    if n_jobs == "auto":
        n_proc, why = auto_processes(n_edges, len(res), flavor, n_iterations)
        logger.info("leiden: %d process%s (n_jobs auto: %s)", n_proc, "" if n_proc == 1 else "es", why)
    else:
        n_proc = min(len(res), available_cpus() if n_jobs == -1 else n_jobs)
    # scanpy's graph: scanpy's random numbers (identical labels); otherwise igraph draws from Python's
    # C generator (the labels differ from scanpy's anyway; 1.4x faster)
    options = {
        "flavor": flavor,
        "n_iterations": n_iterations,
        "use_weights": use_weights,
        "random_state": random_state,
        "fast_rng": edges_used == "once",
    }
    del adjacency
    with tempfile.TemporaryDirectory(prefix="scclust-leiden-") as tmp:
        if uses_edge_file(n_edges, flavor):
            graph = spill(graph, tmp)  # the arrays go: igraph reads the file, here and in the workers
            logger.info("leiden: %s edges handed to igraph as an edge-list file (%s)", f"{n_edges:,}", tmp)
        if n_proc > 1:
            results = _partitions_in_workers(graph, res, options, n_proc)
        else:
            results = _partitions(graph, res, options)
        del graph
    summary = {}
    keys = [key_added] if single else leiden_keys(key_added, res)
    for r, key, (membership, modularity, seconds) in zip(res, keys, results, strict=True):
        if order is not None:  # vertex i of igraph's graph is cell order[i]: scatter back
            membership = _scattered(membership, order)
        n_clusters = store_labels(adata, key, membership)
        summary[key] = {"resolution": r, "n_clusters": n_clusters, "modularity": modularity}
        logger.info("%s: %d clusters (modularity %.3f) in %.1f s", key, n_clusters, modularity, seconds)
    params = {
        "resolutions": res,
        "neighbors_key": neighbors_key,
        "flavor": flavor,
        "n_iterations": n_iterations,
        "use_weights": use_weights,
        "random_state": random_state,
        "n_jobs": n_jobs,
        "edges": edges,
    }
    if auto is not None:
        params["auto"] = auto
    if single:  # scanpy's params first: resolution, random_state, n_iterations
        params = {
            "resolution": res[0],
            "random_state": random_state,
            "n_iterations": n_iterations,
            **{k: v for k, v in params.items() if k != "resolutions"},
        }
    adata.uns[key_added] = {
        "params": params,
        "n_processes": n_proc,
        "edges": "directed" if flavor == "leidenalg" else edges_used,
        "clusterings": summary,
    }
    write_colors(adata, keys)
    return adata if copy else None


#: Largest graph (cells) for which ``flavor="auto"`` runs leidenalg, scanpy's default.
AUTO_LEIDENALG_MAX_CELLS = 50_000


def auto_flavor(n_cells: int, n_iterations: int) -> tuple[str, int, str]:
    """``(flavor, n_iterations, reason)`` for ``flavor="auto"``."""
    if n_cells <= AUTO_LEIDENALG_MAX_CELLS:
        return "leidenalg", n_iterations, f"{n_cells:,} cells <= {AUTO_LEIDENALG_MAX_CELLS:,}: scanpy's default"
    why = f"{n_cells:,} cells > {AUTO_LEIDENALG_MAX_CELLS:,}: igraph's C implementation"
    if n_iterations < 0:
        return "igraph", 2, why + ", 2 iterations (instead of until convergence)"
    return "igraph", n_iterations, why


#: Seconds per edge and resolution of each flavor (2 iterations; leidenalg to convergence), measured
#: on simulated kNN graphs of 7,332 and 50,000 cells (k = 20) on a 2-core machine: a lower bound
#: (igraph took ~3x as long per edge at 1,000,000 cells, its graph no longer in cache).
SECONDS_PER_EDGE = {"igraph": 1.7e-6, "louvain": 1.7e-6, "leidenalg": 1e-5, "leidenalg_converge": 2e-5}
#: Seconds to start a worker process (a fresh interpreter importing scclust and igraph).
WORKER_START_SECONDS = 3.0
#: Memory of a worker process: the interpreter, and per edge the peak of one process running Leiden
#: (the same in this process), measured with the kernel's high-water mark at 15,700,000 edges:
#: building the graph from python-igraph's Python pairs +194 B per edge (the pairs, the arrays
#: received: 12 B, the graph: 34 B); from the edge-list file (:data:`EDGE_FILE_MIN_EDGES`) the
#: Leiden run itself is the peak, +108 B per edge (the graph, its weights: 8 B, igraph's working
#: copies during the run).
WORKER_BASE_BYTES, PAIRS_BYTES_PER_EDGE, FILE_BYTES_PER_EDGE = 300e6, 200, 110


def uses_edge_file(n_edges: int, flavor: str) -> bool:
    """Whether igraph reads the graph from an edge-list file (:data:`EDGE_FILE_MIN_EDGES`; leidenalg's
    directed graph always goes as Python pairs)."""
    return n_edges >= EDGE_FILE_MIN_EDGES and flavor != "leidenalg"


def bytes_per_edge(n_edges: int, flavor: str) -> int:
    """Peak memory per edge of a process running Leiden on ``n_edges`` edges with ``flavor``."""
    return FILE_BYTES_PER_EDGE if uses_edge_file(n_edges, flavor) else PAIRS_BYTES_PER_EDGE


def auto_processes(n_edges: int, n_resolutions: int, flavor: str, n_iterations: int) -> tuple[int, str]:
    """Processes for ``n_jobs="auto"``, and the reason: as many as cores and resolutions allow
    when a worker's share of the work outlasts its start and the workers fit in half of the
    memory this process may still allocate (:func:`scclust._memory.free_memory`: the machine's,
    or within a run its ``memory_limit``), else 1."""
    from .._memory import fmt_bytes, free_memory

    cpus = min(available_cpus(), n_resolutions)
    if cpus < 2:
        return 1, "one resolution" if n_resolutions < 2 else "one core"
    rate = SECONDS_PER_EDGE["leidenalg_converge" if flavor == "leidenalg" and n_iterations < 0 else flavor]
    if flavor != "leidenalg" and n_iterations > 2:
        rate *= n_iterations / 2
    if flavor != "leidenalg" and n_iterations < 0:
        rate *= 5
    share = rate * n_edges * (n_resolutions // cpus)  # estimated seconds of one worker's resolutions
    if share < WORKER_START_SECONDS:
        return 1, f"about {share:.1f} s of work per worker, less than starting one"
    need = (cpus - 1) * (WORKER_BASE_BYTES + bytes_per_edge(n_edges, flavor) * n_edges)
    room, what = free_memory()
    if need > room / 2:
        half = f"more than half of {fmt_bytes(room)} free ({what})"
        return 1, f"{cpus - 1} worker(s) would need {fmt_bytes(need)}, {half}"
    return cpus, f"at least ~{share:.0f} s of work per worker, {fmt_bytes(need)} for the workers"


def _partitions_in_workers(adjacency: tuple | EdgeFiles, res: list[float], options: dict, n_proc: int) -> list:
    """:func:`_partitions` for every resolution, shared between this process and ``n_proc - 1`` worker
    processes (highest, slowest resolutions dealt first, round robin; one call per worker, so no pipe
    can fill up). A worker that fails or cannot start: its resolutions are computed here."""
    from .._worker import Worker, WorkerError

    dealt: list[list[int]] = [[] for _ in range(n_proc)]  # slot 0: this process
    for j, i in enumerate(sorted(range(len(res)), key=lambda i: -res[i])):
        dealt[j % n_proc].append(i)
    results: list = [None] * len(res)
    workers: list[tuple[Worker, list[int]]] = []
    ok = False
    try:
        for indices in dealt[1:]:
            try:
                w = Worker()
                workers.append((w, indices))
                w.submit(f"{__name__}:_partitions", adjacency, [res[i] for i in indices], options)
            except (OSError, WorkerError) as err:
                logger.warning("leiden: no worker process (%s); its resolutions run here", err)
                dealt[0] += indices
                if workers and workers[-1][1] is indices:
                    workers.pop()[0].close(kill=True)
        for i, part in zip(dealt[0], _partitions(adjacency, [res[i] for i in dealt[0]], options), strict=True):
            results[i] = part
        for w, indices in workers:
            try:
                parts = w.result()
            except WorkerError as err:
                logger.warning("leiden: a worker process failed (%s); its resolutions run here", err)
                parts = _partitions(adjacency, [res[i] for i in indices], options)
            for i, part in zip(indices, parts, strict=True):
                results[i] = part
        ok = True
    finally:  # an error or Ctrl-C here: no worker outlives the call
        for w, _ in workers:
            w.close(kill=not ok)
    return results


#: Largest graph for which ``edges="auto"`` builds scanpy's graph (each pair of neighbours twice).
EDGES_BOTH_MAX_CELLS = 50_000


def locality_order(adjacency: sparse.csr_matrix) -> np.ndarray:
    """A numbering of the vertices that puts neighbours close together: the reverse Cuthill-McKee
    order (:func:`scipy.sparse.csgraph.reverse_cuthill_mckee`; deterministic, ~1.4 s at 1,000,000
    cells and k = 20). ``order[i]`` is the cell that becomes vertex ``i``.

    Leiden reads each vertex's neighbours' memberships and edges in a random vertex order; with the
    cells' own order (unrelated to the graph in most inputs) nearly every read leaves the cache. In
    this order igraph builds the graph and runs Leiden ~1.4x faster at 1,000,000 cells (65 s -> 44 s
    per resolution, 2 iterations). The graph is the same, but Leiden visits the vertices in another
    order, so the labels differ as they would with another seed."""
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    return reverse_cuthill_mckee(sparse.csr_matrix(adjacency), symmetric_mode=True).astype(np.int64)


def _scattered(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``out[order[i]] = values[i]``: per-vertex values of a :func:`permuted` graph back to the cells."""
    out = np.empty_like(values)
    out[order] = values
    return out


def permuted(adjacency: sparse.csr_matrix, order: np.ndarray) -> sparse.csr_matrix:
    """``adjacency[order][:, order]`` (a new matrix; rows and columns both renumbered), sorted indices."""
    out = sparse.csr_matrix(adjacency)[order]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    out.indices = inverse[out.indices].astype(out.indices.dtype, copy=False)
    out.has_sorted_indices = False
    out.sort_indices()
    return out


def _edges(adjacency: sparse.csr_matrix, *, directed: bool, once: bool) -> tuple:
    """``(n, rows, cols, weights)`` of the igraph graph to build, as flat NumPy arrays (int32, int32,
    float64); ``adjacency`` itself is not changed.

    Every stored non-zero entry, row-major (scanpy's graph), unless ``once`` and the graph is
    undirected and symmetric: then each pair once (``row < col``; a self-loop, counted twice by
    igraph, with half its weight).
    """
    adjacency = sparse.csr_matrix(adjacency)  # shares the arrays of a CSR input
    if not adjacency.has_sorted_indices or (adjacency.data == 0).any():
        adjacency = adjacency.copy()  # sorted and without zeros here, the caller's matrix as it was
        adjacency.eliminate_zeros()
        adjacency.sort_indices()
    n = adjacency.shape[0]
    if once and not directed and (adjacency != adjacency.T).nnz == 0:
        up = sparse.triu(adjacency, k=1, format="csr")
        if (adjacency.diagonal() != 0).any():
            up = up + sparse.diags(adjacency.diagonal() / 2).tocsr()  # a self-loop counts twice in igraph
            up = sparse.csr_matrix(up)
        adjacency = up
        adjacency.sort_indices()
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(adjacency.indptr))
    return n, rows, adjacency.indices.astype(np.int32, copy=False), adjacency.data.astype(np.float64)


#: Edges from which the igraph graph is read from a text edge list (written in blocks by
#: :func:`write_edgelist`, read by igraph's C reader) instead of python-igraph's Python pairs: at
#: 15,700,000 edges (1,000,000 cells, k = 20) the pairs peak at +3.0 GB and take ~9 s, the file +0.8 GB
#: (written in ~5 s, 0.22 GB, read in ~18 s); the labels are identical. At 10,000,000 cells (157
#: million edges) the pairs would need ~30 GB.
EDGE_FILE_MIN_EDGES = 40_000_000


@dataclass(frozen=True)
class EdgeFiles:
    """A graph of :func:`_edges` written to disk for igraph: its ``n`` vertices, the edge list (text,
    one ``row col`` line per edge, in order) and the weights (``.npy``, float64). A worker process
    receives these paths instead of the arrays."""

    n: int
    edgelist: str
    weights: str


def write_edgelist(path, rows: np.ndarray, cols: np.ndarray, *, block: int = 1 << 20) -> None:
    """Write ``rows[i] cols[i]`` lines for igraph's :meth:`~igraph.Graph.Read_Edgelist`: fixed-width
    decimal fields made with array arithmetic, ``block`` edges at a time (memory: ~150 B per edge
    of one block, ~160 MB; ~0.4 s per million edges)."""
    top = int(max(rows.max(initial=0), cols.max(initial=0)))
    width = len(str(top))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # place value of each digit
    with open(path, "wb") as f:
        for start in range(0, rows.size, block):
            r, c = rows[start : start + block], cols[start : start + block]
            line = np.empty((r.size, 2 * width + 2), dtype=np.uint8)
            for offset, values in ((0, r), (width + 1, c)):
                v = values.astype(np.int64)[:, None]
                digits = (v // powers) % 10
                # leading zeros become spaces (igraph skips whitespace); a value 0 keeps its last digit
                lead = (v < powers) & (powers > 1)
                line[:, offset : offset + width] = np.where(lead, 32, 48 + digits)
            line[:, width] = 32
            line[:, -1] = 10
            f.write(line.tobytes())


def spill(graph: tuple, directory) -> EdgeFiles:
    """:class:`EdgeFiles` of ``graph`` (``(n, rows, cols, weights)``) in ``directory``."""
    from pathlib import Path

    n, rows, cols, w = graph
    edgelist, weights = Path(directory) / "edges.txt", Path(directory) / "weights.npy"
    write_edgelist(edgelist, rows, cols)
    np.save(weights, w)
    return EdgeFiles(n=n, edgelist=str(edgelist), weights=str(weights))


def _partitions(graph: tuple | EdgeFiles, res: list[float], options: dict) -> list[tuple[np.ndarray, float, float]]:
    """(membership, modularity, seconds) at each resolution; the igraph graph is built once (in any process).

    Memory: the igraph graph (34 bytes per edge) and, with weights, their float64 array.
    """
    import time

    flavor, use_weights, random_state = options["flavor"], options["use_weights"], options["random_state"]
    t0 = time.perf_counter()
    g, w = _to_igraph(graph, directed=flavor == "leidenalg")
    logger.debug("leiden: igraph graph of %d edges built in %.1f s", g.ecount(), time.perf_counter() - t0)
    weights = w if use_weights else None
    out = []
    for r in res:
        t = time.perf_counter()
        part = _find_partition(g, r, options, random_state, weights=weights, fast_rng=options.get("fast_rng", False))
        if flavor == "leidenalg":
            modularity = float(_undirected_modularity(graph, part.membership, use_weights))
        else:
            modularity = float(g.modularity(part.membership, weights=weights, resolution=r))
        out.append((np.asarray(part.membership), modularity, time.perf_counter() - t))
    return out


def _find_partition(
    g, r: float, options: dict, seed: int, *, weights: np.ndarray | None = None, fast_rng: bool = False
):
    """One partition of igraph graph ``g`` at resolution ``r`` with ``seed`` (``options``: flavor,
    n_iterations, use_weights); shared by :func:`leiden` and the stability runs. ``weights``: the edge
    weights (default the ``weight`` edge attribute). ``fast_rng``: igraph draws from
    :class:`random.Random` (C, ~1.4x faster) instead of scanpy's numpy wrapper (other numbers for the
    same seed, so only where scanpy parity does not matter)."""
    flavor, use_weights = options["flavor"], options["use_weights"]
    if use_weights and weights is None:
        weights = np.asarray(g.es["weight"], dtype=np.float64)
    weights = weights if use_weights else None
    if flavor == "leidenalg":
        import leidenalg

        return leidenalg.find_partition(
            g,
            leidenalg.RBConfigurationVertexPartition,
            weights=weights,
            n_iterations=options["n_iterations"],
            seed=seed,
            resolution_parameter=r,
        )
    with _igraph_seed(seed, fast=fast_rng):
        if flavor == "igraph":
            return g.community_leiden(
                objective_function="modularity", weights=weights, resolution=r, n_iterations=options["n_iterations"]
            )
        return g.community_multilevel(weights=weights, resolution=r)


def get_graph(adata: AnnData, neighbors_key: str) -> sparse.csr_matrix:
    """The connectivities of graph ``neighbors_key``, or an error saying what to run first."""
    if neighbors_key not in adata.uns or "connectivities_key" not in adata.uns[neighbors_key]:
        graphs = [k for k, v in adata.uns.items() if isinstance(v, dict) and "connectivities_key" in v]
        raise MissingKeyError(
            f"graph {neighbors_key!r} not found in .uns; run the neighbors stage first "
            f"(graphs available: {choices(graphs)})"
        )
    key = adata.uns[neighbors_key]["connectivities_key"]
    if key not in adata.obsp:
        raise MissingKeyError(f".obsp[{key!r}] (graph {neighbors_key!r}) is missing; re-run the neighbors stage")
    return sparse.csr_matrix(adata.obsp[key])


def _to_igraph(graph: tuple | EdgeFiles, *, directed: bool):
    """igraph graph and its weights from :func:`_edges` (or its :class:`EdgeFiles`), the edges in
    their order.

    python-igraph's wheels (limited C API) take no array without Python objects: a 2-D int64
    ``memoryview`` is turned into a list of lists by ``tolist()`` first. One list of tuples is the
    fastest input measured: 15,700,000 edges (a 1,000,000-cell k = 20 graph) in 8.8 s instead of
    16.2 s, transient Python objects ~160 bytes per edge (freed once igraph holds the graph; adding
    them in chunks costs ~2.5 s per call, each re-indexing the graph). :class:`EdgeFiles` are read
    by igraph's C reader (no Python object per edge).
    """
    import igraph as ig

    if isinstance(graph, EdgeFiles):
        g = ig.Graph.Read_Edgelist(graph.edgelist, directed=directed)
        if g.vcount() < graph.n:  # the reader stops at the largest vertex with an edge
            g.add_vertices(graph.n - g.vcount())
        return g, np.load(graph.weights)
    n, rows, cols, w = graph
    g = ig.Graph(n=n, edges=_pairs(rows, cols), directed=directed)
    return g, w


def _pairs(rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def _undirected_modularity(graph: tuple, membership, use_weights: bool) -> float:
    import igraph as ig

    n, rows, cols, w = graph
    keep = rows < cols
    g = ig.Graph(n=n, edges=_pairs(rows[keep], cols[keep]))
    return g.modularity(list(membership), weights=w[keep] if use_weights else None)


class _RNG:
    """igraph random generator from a seed (the wrapper scanpy uses, so results match)."""

    def __init__(self, random_state: int) -> None:
        self._rng = np.random.RandomState(random_state)

    def getrandbits(self, k: int) -> int:
        return self._rng.tomaxint() & ((1 << k) - 1)

    def randint(self, a: int, b: int) -> int:
        return self._rng.randint(a, b + 1)

    def __getattr__(self, attr: str):
        return getattr(self._rng, "normal" if attr == "gauss" else attr)


@contextmanager
def _igraph_seed(random_state: int, *, fast: bool = False):
    import igraph

    igraph.set_random_number_generator(random.Random(random_state) if fast else _RNG(random_state))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)
