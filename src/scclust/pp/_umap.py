"""UMAP of an existing graph (``sc.tl.umap``), optionally in a spare process warmed up in advance.

umap-learn's first use in a process is slow: pynndescent 0.6 compiles its distance functions with
numba when imported and umap compiles its layout optimiser on the first call, and neither is cached
on disk (about 13 s on a 2-core machine, against ~1 s for the layout itself at 3,000 cells). A run
that will compute a UMAP therefore starts :func:`background_umap` at its beginning: one worker
process (:mod:`scclust._worker`) imports umap-learn and compiles the layout on a tiny graph while the main process reads the
input, builds graphs and clusters. :func:`umap` then runs ``sc.tl.umap`` there, on a minimal
AnnData (the graph and the representation only), and copies the embedding back. Same function,
same inputs, same seed: the coordinates equal the in-process call (``tests/pp/test_umap.py``).

``umap(..., wait=False)`` returns at once with a :class:`PendingUmap`: the layout runs in the worker
while this process goes on (at 1,000,000 cells the seeded layout is one core for ~13 min, which the
clustering stages can use the other core for); :meth:`PendingUmap.join` writes it into the AnnData.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import ConfigError, MissingKeyError
from .._worker import Worker, WorkerError, available_cpus

logger = logging.getLogger(__name__)

#: ``init="auto"`` starts the layout from scanpy's spectral embedding up to this many cells and
#: from the first two dimensions of the graph's representation above. umap-learn's spectral
#: initialisation (ARPACK ``eigsh`` on the graph Laplacian) took ~7 s at 100,000 cells, ~47 s at
#: 300,000 and had not finished after 13 min at 1,000,000 (out-of-core run, issue 14).
SPECTRAL_MAX_CELLS = 200_000


def umap(
    adata: AnnData,
    *,
    neighbors_key: str = "neighbors",
    key_added: str = "X_umap",
    min_dist: float = 0.5,
    random_state: int = 0,
    n_epochs: int | None = None,
    init: str = "auto",
    worker: UmapWorker | None = None,
    wait: bool = True,
) -> PendingUmap | None:
    """``sc.tl.umap`` on an existing graph, stored under ``.obsm[key_added]``.

    ``n_epochs``: layout epochs (``sc.tl.umap``'s ``maxiter``); None: umap-learn's default (500 up
    to 10,000 cells, 200 above). The layout's time is proportional to it.

    ``init``: ``"spectral"`` (scanpy's default, the lab's layout), ``"pca"`` (the first two
    dimensions of the representation the graph was built on; umap-learn rescales any start to
    [0, 10]) or ``"auto"``: spectral up to :data:`SPECTRAL_MAX_CELLS` cells, pca above (the
    spectral start does not finish in reasonable time at 1,000,000 cells). Recorded in
    ``.uns[key_added]["init"]`` (scanpy keeps its parameters in ``.uns[key_added]``).

    Runs in ``worker`` (from :func:`background_umap`) when given, else here; a failing worker
    falls back to this process, and so does a call that waits while the worker is busy with a
    ``wait=False`` layout (both cores work instead of one waiting). The coordinates are the same
    either way.

    ``wait=False`` (with a ``worker``): returns a :class:`PendingUmap` at once, the layout still
    running in the worker; ``pending.join(adata)`` waits for it and writes ``.obsm[key_added]``
    (into this AnnData or another one with the same cells). Without a worker it is computed here
    and None is returned, as with ``wait=True``.
    """
    if neighbors_key not in adata.uns or "connectivities_key" not in adata.uns[neighbors_key]:
        raise MissingKeyError(f"graph {neighbors_key!r} not found in .uns; run the neighbors stage first")
    if init not in ("auto", "spectral", "pca"):
        raise ConfigError(f"init {init!r} is not one of 'auto', 'spectral', 'pca'")
    kwargs = {"neighbors_key": neighbors_key, "min_dist": min_dist, "random_state": random_state, "key_added": key_added}
    if n_epochs is not None:
        kwargs["maxiter"] = n_epochs
    if init == "auto":
        init = "spectral" if adata.n_obs <= SPECTRAL_MAX_CELLS else "pca"
    if init == "pca":
        rep = adata.uns[neighbors_key].get("params", {}).get("use_rep") or "X_pca"
        if rep not in adata.obsm:
            raise MissingKeyError(f"init 'pca' needs the graph's representation {rep!r} in .obsm; available: "
                                  f"{', '.join(map(repr, adata.obsm)) or 'none'}")
        kwargs["init_pos"] = np.ascontiguousarray(np.asarray(adata.obsm[rep])[:, :2], dtype=np.float32)
        logger.info("UMAP of %d cells: layout started from the first two dimensions of %s (init 'pca'; 'auto' "
                    "takes it above %d cells), not the spectral embedding", adata.n_obs, rep, SPECTRAL_MAX_CELLS)
    if worker is not None and not wait:
        mini = _graph_only(adata, neighbors_key)
        return PendingUmap(key_added, init, mini, kwargs, worker.submit(mini, kwargs))
    if worker is not None and worker.busy():
        # a layout from a wait=False call is running (or queued) there: waiting for it would leave this
        # process idle, so this one is computed here, on the other core; the coordinates are the same
        logger.info("UMAP of %d cells computed in this process: the background worker is busy with another layout",
                    adata.n_obs)
        worker = None
    if worker is not None:
        try:
            obsm, uns, caught = worker.run(_graph_only(adata, neighbors_key), kwargs)
        except Exception as err:  # noqa: BLE001 - a dead or failing worker must not lose the run: compute here
            logger.warning("background UMAP unavailable (%s); computing it in this process", err)
        else:
            for message, category in caught:
                warnings.warn(message, category, stacklevel=2)
            adata.obsm.update(obsm)
            adata.uns.update(uns)
            adata.uns.setdefault(key_added, {})["init"] = init
            return
    import scanpy as sc

    sc.tl.umap(adata, **kwargs)
    adata.uns.setdefault(key_added, {})["init"] = init


class PendingUmap:
    """A UMAP layout running in the background worker (from ``umap(..., wait=False)``)."""

    def __init__(self, key: str, init: str, mini: AnnData, kwargs: dict[str, Any], future: Future) -> None:
        self.key, self.init, self.mini, self.kwargs, self.future = key, init, mini, kwargs, future
        self.started = time.perf_counter()
        self.seconds: float | None = None  # from submission to the end of the layout
        future.add_done_callback(lambda _: setattr(self, "seconds", time.perf_counter() - self.started))

    def done(self) -> bool:
        return self.future.done()

    def join(self, adata: AnnData) -> float:
        """Wait for the layout and write it into ``adata`` (same cells, same order); returns the
        seconds waited. A worker that died or failed: the layout is computed here instead."""
        if adata.n_obs != self.mini.n_obs or not adata.obs_names.equals(self.mini.obs_names):
            raise ValueError(f"the background UMAP {self.key!r} was computed for other cells")
        t0 = time.perf_counter()
        try:
            obsm, uns, caught = self.future.result()
        except Exception as err:  # noqa: BLE001 - a dead or failing worker must not lose the run: compute here
            logger.warning("background UMAP unavailable (%s); computing it in this process", err)
            obsm, uns, caught = _umap_job(self.mini, self.kwargs)
            self.seconds = time.perf_counter() - self.started
        for message, category in caught:
            warnings.warn(message, category, stacklevel=2)
        adata.obsm.update(obsm)
        adata.uns.update(uns)
        adata.uns.setdefault(self.key, {})["init"] = self.init
        self.mini = None  # the graph copy is no longer needed
        return time.perf_counter() - t0


def _graph_only(adata: AnnData, neighbors_key: str) -> AnnData:
    """What ``sc.tl.umap`` reads: the graph, its parameters and the representation it was built on."""
    nb = adata.uns[neighbors_key]
    rep = nb.get("params", {}).get("use_rep")
    keep = [k for k in adata.obsm if k == rep or (rep is None and k == "X_pca")]
    with_x = rep == "X" or (rep is None and "X_pca" not in adata.obsm)  # as scanpy's _choose_representation
    return AnnData(
        X=adata.X if with_x else None,
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names) if with_x else None,
        obsm={k: adata.obsm[k] for k in keep},
        obsp={nb[k]: adata.obsp[nb[k]] for k in ("connectivities_key", "distances_key") if nb.get(k) in adata.obsp},
        uns={neighbors_key: nb},
    )


def _umap_job(mini: AnnData, kwargs: dict[str, Any]) -> tuple[dict, dict, list]:
    import scanpy as sc

    before = set(mini.uns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc.tl.umap(mini, **kwargs)
    key = kwargs["key_added"]
    new_uns = {k: mini.uns[k] for k in set(mini.uns) - before}
    return {key: mini.obsm[key]}, new_uns, [(str(w.message), w.category) for w in caught]


def _warm_up() -> None:
    """Import umap-learn and compile its layout optimiser on a 60-cell graph."""
    from ._neighbors import neighbors

    rng = np.random.default_rng(0)
    tiny = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(60)]))
    tiny.obsm["X_pca"] = np.vstack([rng.normal(c, 1, (20, 5)) for c in (0, 6, 12)]).astype(np.float32)
    neighbors(tiny, use_rep="X_pca", n_neighbors=10)
    _umap_job(tiny, {"neighbors_key": "neighbors", "min_dist": 0.5, "random_state": 0, "key_added": "X_umap"})


class UmapWorker:
    """A :class:`~scclust._worker.Worker` that starts compiling umap-learn at once."""

    def __init__(self) -> None:
        self.worker = Worker()
        self.worker.submit(f"{__name__}:_warm_up")
        self.ready = False
        self.lock = threading.Lock()  # one call at a time, whichever thread asks
        self.pool: ThreadPoolExecutor | None = None  # waits for the jobs submitted without waiting
        self.last: Future | None = None  # the newest of those (jobs run in submission order)

    def run(self, mini: AnnData, kwargs: dict[str, Any]) -> tuple[dict, dict, list]:
        with self.lock:
            return self._run(mini, kwargs)

    def submit(self, mini: AnnData, kwargs: dict[str, Any]) -> Future:
        """:meth:`run` from a thread of this process: returns at once; jobs run in submission order."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scclust-umap")
        self.last = self.pool.submit(self.run, mini, kwargs)
        return self.last

    def busy(self) -> bool:
        """True while a job submitted with :meth:`submit` is queued or running."""
        return self.last is not None and not self.last.done()

    def _run(self, mini: AnnData, kwargs: dict[str, Any]) -> tuple[dict, dict, list]:
        if not self.ready:
            try:
                self.worker.result()  # the end of the warm-up
            except WorkerError as err:
                if self.worker.proc.poll() is not None:
                    raise
                logger.debug("UMAP warm-up failed in the worker: %s", err)  # the job compiles on its own
            self.ready = True
        return self.worker.call(f"{__name__}:_umap_job", mini, kwargs)

    def stop(self) -> None:
        """An idle worker exits when its input closes; one still warming up (the run ended early) or
        busy for another thread is killed."""
        idle = self.lock.acquire(blocking=False)
        self.worker.close(kill=not (self.ready and idle))
        if idle:
            self.lock.release()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _needs_warm_up() -> bool:
    """False when this process has umap-learn already (a notebook, a test session) or runs on one core."""
    return "umap" not in sys.modules and available_cpus() > 1


@contextmanager
def background_umap(enabled: bool = True) -> Iterator[UmapWorker | None]:
    """Start one spare process that warms umap-learn up now; yield it (pass it to :func:`umap`).

    Yields ``None`` (compute in this process) when ``enabled`` is false, when umap-learn is
    already imported here, or on a single core. The worker is stopped on leaving the block.
    """
    if not enabled or not _needs_warm_up():
        yield None
        return
    try:
        worker = UmapWorker()
    except Exception as err:  # noqa: BLE001 - no spare process: everything runs here, as without the block
        logger.info("background UMAP not started (%s: %s)", type(err).__name__, err)
        yield None
        return
    try:
        yield worker
    finally:
        worker.stop()
