"""The Dask cluster the out-of-core path computes on (:func:`dask_client`).

By default a ``distributed.LocalCluster`` sized to the machine: one single-threaded worker process
per core, each with a memory limit so that all workers together stay within ``memory_fraction`` of
the machine's RAM (the nanny restarts a worker that passes it; the machine does not swap). Given an
``address`` (``tcp://host:8786``) it connects to an existing scheduler instead, e.g. one started by
``dask-jobqueue`` on SLURM or by the Dask Kubernetes operator. Errors are one line
(:class:`~scclust._errors.ConfigError` for an unreachable scheduler, :class:`ComputeError` when
workers die).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from ._errors import ConfigError, UserError

logger = logging.getLogger(__name__)

__all__ = [
    "ComputeError",
    "cluster_client",
    "compute",
    "compute_rows",
    "dask_client",
    "map_blocks",
    "persist",
    "worker_memory_limit",
]

#: Variables distributed's nanny writes into *this* process's ``os.environ`` before it spawns a
#: worker (``distributed.nanny.pre-spawn-environ``: ``OMP_NUM_THREADS=1`` and friends, meant for
#: the workers). Left there, every thread pool initialised afterwards in the run's own process
#: (faiss's OpenMP for the kNN graph, BLAS, numba) gets one thread: measured at 1M cells, the kNN
#: search after the Dask steps ran on 1 of 2 cores. They are restored after the cluster starts,
#: after each computation (a restarted worker writes them again) and on exit.
_saved_environ: dict[str, str | None] = {}
#: scheduler addresses of the local clusters :func:`dask_client` started (see :func:`cluster_client`)
_own_local: set[str] = set()


def _restore_environ() -> None:
    for key, value in _saved_environ.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class ComputeError(UserError, RuntimeError):
    """The Dask cluster could not finish a computation (workers killed repeatedly, lost scheduler)."""


def worker_memory_limit(n_workers: int, memory_fraction: float = 0.7) -> int:
    """Bytes per worker: ``memory_fraction`` of the machine's RAM shared by ``n_workers``.

    0.7, not 0.8: the main process holds the embedding, the graph and the HVG matrix next to the
    workers (about 0.5 GB per million cells during the Dask steps)."""
    import psutil

    return int(psutil.virtual_memory().total * memory_fraction / max(n_workers, 1))


@contextlib.contextmanager
def dask_client(
    *,
    address: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | int | None = None,
    timeout: float = 20.0,
) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``address``, else to a new ``LocalCluster``.

    The dashboard link is logged. On exit the client (and a cluster started here) is closed.
    """
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {address!r} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'no answer'}); check dask.address / "
                "--dask-address or leave it empty for a local cluster"
            ) from None
        n = len(client.scheduler_info().get("workers", {}))
        logger.info("Dask: connected to %s (%d workers); dashboard %s", address, n, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    n = n_workers or os.cpu_count() or 1
    limit = memory_limit if memory_limit is not None else worker_memory_limit(n)
    _saved_environ.clear()
    _saved_environ.update(
        {k: os.environ.get(k) for k in dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}}
    )
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        memory_limit=limit,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    _restore_environ()
    _own_local.add(cluster.scheduler_address)
    try:
        mem = cluster.scheduler_info["workers"]
        per = next(iter(mem.values()))["memory_limit"] / 2**30 if mem else float("nan")
        logger.info(
            "Dask: local cluster, %d workers x 1 thread, %.1f GB each; dashboard %s", n, per, client.dashboard_link
        )
        yield client
    finally:
        _own_local.discard(cluster.scheduler_address)
        client.close()
        cluster.close()
        _restore_environ()
        _saved_environ.clear()


def _client() -> Any:
    """The active ``distributed`` client, or ``None`` (then Dask's local scheduler runs the graph)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def _reporting(what: str) -> Iterator[None]:
    """Cluster failures as one-line :class:`ComputeError`; the thread variables restored after."""
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:
        KilledWorker = ()
    try:
        yield
    except KilledWorker as err:
        raise ComputeError(
            f"{what}: Dask workers died repeatedly running one task ({err.args[0] if err.args else ''}); "
            "most often out of memory: give workers more memory (dask.memory_limit) or use smaller "
            "chunks (prepare.chunk_cells)"
        ) from None
    except (OSError, TimeoutError) as err:
        raise ComputeError(f"{what}: lost the Dask scheduler ({type(err).__name__}: {err})") from None
    finally:
        _restore_environ()


def compute(*arrays: Any, what: str) -> Any:
    """``dask.compute`` with a progress bar on stderr (INFO logging only) and one-line errors.

    A worker that dies is restarted by its nanny and its tasks rerun elsewhere; only when the same
    task has killed ``distributed.scheduler.allowed-failures`` workers does this raise
    :class:`ComputeError` naming the step. For results as large as the data (a matrix of cells),
    :func:`compute_rows`.
    """
    import dask

    client = _client()
    with _reporting(what):
        if client is None:
            return dask.compute(*arrays)
        from distributed import progress

        with warnings.catch_warnings():  # an in-memory input wrapped in chunks travels with the graph: expected
            warnings.filterwarnings("ignore", message="Sending large graph")
            futures = client.compute(list(arrays))
        if logging.getLogger("scclust").isEnabledFor(logging.INFO):
            logger.info("Dask: %s", what)
            if sys.stderr.isatty():  # a live bar on a terminal; a log file gets the line above only
                with contextlib.redirect_stdout(sys.stderr):  # the text bar writes to stdout
                    progress(*futures, notebook=False)
        return tuple(client.gather(futures))


def compute_rows(*arrays: Any, what: str) -> tuple[Any, ...]:
    """Row-chunked Dask arrays with the same row chunks (dense or SciPy sparse blocks), computed in one
    pass over their shared inputs and joined in this process.

    Unlike :func:`compute`, which concatenates each whole result on one worker before sending it
    here, every row block is fetched as soon as it is done and then released on the cluster: the
    workers hold a few blocks at a time, not the whole result (measured: the 1M run of
    ``benchmarks/atlas_ooc_subsets.yaml`` peaked at 13.79 GB instead of 15.72 GB, in the last pass
    of its 434,668-cell subset). Sparse blocks are stacked into one
    CSR matrix, dense ones into one array. A counter on stderr shows the blocks done (terminal, INFO).
    """
    import dask
    import numpy as np
    from scipy import sparse

    rows = {a.chunks[0] for a in arrays}
    if len(rows) != 1:
        raise ValueError("compute_rows: the arrays' row chunks differ")
    delayed = [d for a in arrays for d in (a if a.numblocks[1] == 1 else a.rechunk({1: -1})).to_delayed().ravel()]
    n = len(delayed) // len(arrays)
    blocks: list[Any] = [None] * len(delayed)
    client = _client()
    with _reporting(what):
        if client is None:
            blocks = list(dask.compute(*delayed))
        else:
            from distributed import as_completed

            logger.info("Dask: %s", what)
            live = logging.getLogger("scclust").isEnabledFor(logging.INFO) and sys.stderr.isatty()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sending large graph")
                futures = client.compute(delayed)  # one graph: shared inputs computed once
            where = {f.key: i for i, f in enumerate(futures)}
            done = as_completed(futures, with_results=True)
            del futures  # as_completed drops each future once done: its block is then freed on the worker
            for k, (future, value) in enumerate(done, 1):
                blocks[where[future.key]] = value
                del future, value
                if live:
                    sys.stderr.write(f"\r  {k:,} of {len(delayed):,} blocks")  # a live counter, as Dask's bar
                    sys.stderr.flush()
            if live:
                sys.stderr.write("\n")
    out = []
    for j in range(len(arrays)):
        part = blocks[j * n : (j + 1) * n]
        out.append(sparse.vstack(part, format="csr") if sparse.issparse(part[0]) else np.concatenate(part))
        blocks[j * n : (j + 1) * n] = [None] * n
        del part
    return tuple(out)


def persist(array: Any, *, nbytes: float, what: str) -> Any:
    """``array`` computed once into the distributed workers' memory (later passes read it from
    there, not from the store), when a client is active and ``nbytes`` (the caller's estimate) is
    at most half the workers' total memory limit; else ``array`` unchanged (each pass then reads
    the store again). Logged either way."""
    client = _client()
    if client is None:
        return array
    from distributed import wait

    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    if not limits or 0 in limits or nbytes > 0.5 * sum(limits):
        logger.info(
            "Dask: %s not kept in the workers' memory (%.1f GB; workers %s); each pass reads the store",
            what,
            nbytes / 2**30,
            "unlimited" if 0 in limits else f"{sum(limits) / 2**30:.1f} GB",
        )
        return array
    logger.info("Dask: %s into the workers' memory (%.1f GB)", what, nbytes / 2**30)
    kept = client.persist(array)
    try:
        wait(kept)  # a failed task raises in the next compute(), with its one-line message
    finally:
        _restore_environ()
    return kept


def cluster_client() -> Any:
    """The active ``distributed`` client when its workers should answer in-memory searches (kNN
    query blocks, label projection), else ``None``.

    That is any client (a run's ``dask.address``, a ``distributed.Client`` opened in a session)
    except one of the local clusters :func:`dask_client` starts for the out-of-core steps: its
    workers share this machine's cores with this process, so shipping them an index would only
    copy it (faiss already searches on every core here)."""
    client = _client()
    if client is None or client.scheduler is None or client.scheduler.address in _own_local:
        return None
    return client


def map_blocks(
    func: Any, shared: Any, block_args: Any, n_blocks: int, *, what: str, window: int | None = None
) -> list[Any]:
    """``[func(shared, *block_args(i)) for i in range(n_blocks)]`` computed on the workers of the
    active client (:func:`cluster_client`), results in block order.

    ``shared`` (an index, the data searched) is sent to every worker once (``scatter(broadcast=True)``)
    and released after; block ``i``'s arguments (its query rows) are made only when its task is
    submitted and travel with it. At most ``window`` tasks (default: twice the workers' threads)
    are in flight, so neither the workers nor this process hold more than a few blocks besides the
    results. Tasks are independent: a worker that dies has its blocks rerun elsewhere (Dask's
    retries), with the same answers. Failures are one line (:class:`ComputeError`).
    """
    from distributed import as_completed

    client = _client()
    if client is None:
        raise RuntimeError("map_blocks needs an active distributed client")
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
    window = window or 2 * threads
    out: list[Any] = [None] * n_blocks
    logger.info("Dask: %s (%d blocks on %d worker threads)", what, n_blocks, threads)
    with _reporting(what), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph")
        warnings.filterwarnings("ignore", message="Large object of size")
        shared_f = client.scatter(shared, broadcast=True, hash=False)
        try:
            pending = as_completed(with_results=True)
            where: dict[str, int] = {}
            nxt = 0

            def submit() -> None:
                nonlocal nxt
                fut = client.submit(func, shared_f, *block_args(nxt), pure=False)
                where[fut.key] = nxt
                pending.add(fut)
                nxt += 1

            while nxt < min(window, n_blocks):
                submit()
            for fut, value in pending:
                out[where.pop(fut.key)] = value
                del fut, value
                if nxt < n_blocks:
                    submit()
        finally:
            client.cancel([shared_f])
    return out
