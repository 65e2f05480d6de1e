"""``leiden``: Leiden / Louvain at several resolutions (:func:`scclust.tl.leiden`)."""

from __future__ import annotations

from .. import tl
from .._keys import leiden_keys
from .._params import params_model
from ._base import Makes, Ref, Stage
from ._clustering import clustering_run

#: ``resolution`` (scanpy's name for a single resolution) is the notebook's; a config lists ``resolutions``
LeidenParams = params_model(tl.leiden, name="LeidenParams", exclude=("resolution",))


def memory(p, sizes):
    """Peak: ``50 MB + b x E`` in this process (``E`` edges: the graph's stored entries, half of
    them with ``edges: once``; ``b`` = 200 B while python-igraph builds the graph from Python pairs,
    110 B from 40,000,000 edges, where igraph reads an edge-list file and the Leiden run itself is the
    peak: :func:`scclust.tl._leiden.bytes_per_edge`), plus ``300 MB + b x E`` per further worker
    process (with ``n_jobs: auto`` the workers that :func:`~scclust.tl._leiden.auto_processes` would
    start, only when they fit in half of the memory available). ``E`` is at most ``2 n (k - 1)``.
    Measured with the kernel's high-water mark (the build holds the GIL, so a sampling thread misses
    it) at 15,700,000 edges: +194 B per edge from the pairs, +108 B from the file."""
    from .._memory import Estimate, cells
    from .._worker import available_cpus
    from ..tl._leiden import (
        EDGES_BOTH_MAX_CELLS,
        WORKER_BASE_BYTES,
        auto_flavor,
        auto_processes,
        bytes_per_edge,
    )

    n = sizes.n_obs
    entries = sizes.graph_entries(p.neighbors_key)
    flavor, n_iter = (p.flavor, p.n_iterations) if p.flavor != "auto" else auto_flavor(n, p.n_iterations)[:2]
    once = flavor != "leidenalg" and (p.edges == "once" or (p.edges == "auto" and n > EDGES_BOTH_MAX_CELLS))
    edges = entries // 2 if once else entries
    n_res = len(set(p.resolutions))
    if p.n_jobs == "auto":
        n_proc = auto_processes(edges, n_res, flavor, n_iter)[0]
    else:
        n_proc = min(n_res, available_cpus() if p.n_jobs == -1 else p.n_jobs)
    b = bytes_per_edge(edges, flavor)
    per_graph = b * float(edges)
    parts = [
        ("igraph / leidenalg", 50e6),
        (f"graph of {cells(n)} cells, {cells(edges)} edges x {b} B", per_graph),
    ]
    if n_proc > 1:
        parts.append(
            (
                f"{n_proc - 1} worker process(es), 300 MB + the graph each",
                (n_proc - 1) * (WORKER_BASE_BYTES + per_graph),
            )
        )
    return Estimate(
        parts=tuple(parts),
        options=("n_jobs: 1 (one resolution after the other, no worker copies), " if n_proc > 1 else "")
        + "fewer neighbours (neighbors.n_neighbors), or cluster a sketch (add the sketch stage)",
    )


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
    memory=memory,
    description="Leiden / Louvain at several resolutions",
    obsm_reads="declared",
)
