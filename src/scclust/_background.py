"""The run's one background executor: a spare process that starts warming up at once.

A run owns one :class:`Background` (:func:`scclust.workflow.run` opens it); stages reach it
through their run context only, so no public function takes a worker. A stage that starts work
there gets a :class:`Job` (a future) back and hands it to the runner for the keys it declares
it makes; the runner waits for those keys before a later stage that reads them.

Why this executor and not Dask's or :mod:`concurrent.futures`' process pool (measured cold on the
2-core machine, ``benchmarks/bench_background.py``; numbers on the benchmarks page): the work that
pays to move off the main process at lab scale is one job, the UMAP layout, whose cost on a cold
start is umap-learn's numba compilation (~10 s). What matters is how soon a fresh process has
compiled it and how little the start costs the main process. A :class:`~scclust._worker.Worker`
is a fresh interpreter that imports only scclust and the function it is sent (no re-import of the
user's ``__main__``, which breaks ``spawn``-based pools for unguarded scripts), starts in a
fraction of a second and exits with its parent. A Dask ``LocalCluster`` starts a scheduler and a
nanny besides the worker (seconds, and memory) for the same one job; the out-of-core steps keep
using Dask, where its scheduling and memory management are what the work needs.

Jobs name their function by import path (``"scclust.pp._umap:umap_job"``), so this module imports
nothing above its floor. A job whose worker died or failed runs in this process instead, with
the same result.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from ._worker import Worker, WorkerError, available_cpus

logger = logging.getLogger(__name__)

__all__ = ["Background", "Job", "background", "call"]


def call(target: str, *args: Any) -> Any:
    """Run ``"package.module:function"`` in this process."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)(*args)


class Job:
    """A job submitted to the background process: a future with a fallback to this process."""

    def __init__(self, target: str, args: tuple, future: Future | None) -> None:
        self.target, self.args, self.future = target, args, future
        self.started = time.perf_counter()
        self.seconds: float | None = None  # from submission to the end
        if future is not None:
            future.add_done_callback(lambda _: setattr(self, "seconds", time.perf_counter() - self.started))

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def result(self) -> Any:
        """Wait for the result; a worker that died or failed: the job runs here instead."""
        if self.future is not None:
            try:
                return self.future.result()
            except Exception as err:
                logger.warning("background job unavailable (%s); computing it in this process", err)
        value = call(self.target, *self.args)
        self.seconds = time.perf_counter() - self.started
        return value


class Background:
    """One spare worker process; jobs run there in submission order.

    ``warm_up``: a job started at once (``"scclust.pp._umap:_warm_up"`` compiles umap-learn).
    """

    def __init__(self, warm_up: str | None = None) -> None:
        self.worker = Worker()
        self.warming = warm_up is not None
        if warm_up is not None:
            self.worker.submit(warm_up)
        self.lock = threading.Lock()  # one call at a time, whichever thread asks
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scclust-background")
        self.last: Future | None = None

    def submit(self, target: str, *args: Any) -> Job:
        """Start ``target(*args)`` in the worker; returns at once."""
        self.last = self.pool.submit(self._run, target, args)
        return Job(target, args, self.last)

    def busy(self) -> bool:
        """True while a submitted job is queued or running."""
        return self.last is not None and not self.last.done()

    def ready(self) -> bool:
        """True when a job submitted now starts at once: none queued or running, the warm-up over."""
        if self.busy():
            return False
        if not self.warming:
            return True
        try:  # the warm-up's reply is waiting on the pipe (or the worker died: the job then runs here)
            return bool(select.select([self.worker.proc.stdout], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _run(self, target: str, args: tuple) -> Any:
        with self.lock:
            if self.warming:
                self.warming = False
                self.worker.raise_priority()  # the warm-up now holds up this job: no longer the lowest priority
                try:
                    self.worker.result()  # the end of the warm-up
                except WorkerError as err:
                    if self.worker.proc.poll() is not None:
                        raise
                    logger.debug("warm-up failed in the worker: %s", err)  # the job compiles on its own
            return self.worker.call(target, *args)

    def close(self) -> None:
        """Stop the worker (at once: an idle one has nothing left to do, a busy one means the run ended early)."""
        idle = self.lock.acquire(blocking=False)
        self.worker.close(kill=not (idle and not self.warming))
        if idle:
            self.lock.release()
        self.pool.shutdown(wait=False, cancel_futures=True)


class InProcess:
    """The executor when no spare process is wanted (one core, or switched off): jobs run when awaited."""

    def submit(self, target: str, *args: Any) -> Job:
        return Job(target, args, None)

    def busy(self) -> bool:
        return False

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


@contextmanager
def background(enabled: bool = True, *, warm_up: str | None = None) -> Iterator[Background | InProcess]:
    """The run's executor: a :class:`Background` process when ``enabled`` and a second core exists,
    else :class:`InProcess`. Closed on leaving the block."""
    executor: Background | InProcess = InProcess()
    if enabled and available_cpus() > 1:
        try:
            executor = Background(warm_up)
        except Exception as err:
            logger.info("background process not started (%s: %s)", type(err).__name__, err)
    try:
        yield executor
    finally:
        executor.close()
