"""The run's background executor, cold: scclust's worker vs a Dask LocalCluster vs a ProcessPoolExecutor.

    python benchmarks/bench_background.py [--cells 7332] [--repeat 3] [--workdir /tmp/bench_background]

A run keeps one spare process that imports umap-learn and compiles it (``pp._umap._warm_up``) while
the main process works, then computes UMAP layouts there. Three ways to have that process, each
measured in a fresh interpreter (nothing imported or compiled beforehand), runs interleaved:

- ``worker``: ``pp._umap.UmapWorker`` = ``scclust._worker.Worker`` (a fresh interpreter speaking
  pickle over stdin / stdout), what scclust uses;
- ``dask``: ``distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True)`` and
  ``client.submit(_warm_up)``;
- ``pool``: ``concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn)``.

Per executor: ``import`` (what this process imports to have it), ``start`` (until the executor is
usable: the cluster up, the pool object made), ``warm_up_done`` (from the start until the warm-up job's
result is back), the worker process's RSS after the warm-up (and the RSS this process gained), and a
UMAP job of the tutorial's size (``--cells``: scclust's k = 20 graph on 30 Harmony dims, sent as
``pp._umap._graph_only`` makes it): the round trip, the layout's own seconds in the worker, and the
difference (pickling the AnnData with its graph, transfer, the embedding back), plus the pickled
job's size. The main process does nothing else meanwhile (in a run it works beside the executor).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("worker", "dask", "pool")


def timed_umap_job(mini, kwargs):
    """``pp._umap._umap_job`` and its own seconds (measured in the executor's process)."""
    from scclust.pp._umap import _umap_job

    t0 = time.perf_counter()
    out = _umap_job(mini, kwargs)
    return out, time.perf_counter() - t0


def warm_up_pid() -> int:
    from scclust.pp._umap import _warm_up

    _warm_up()
    return os.getpid()


def _rss(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _job(path: Path):
    with open(path, "rb") as fh:
        mini = pickle.load(fh)
    kwargs = {"neighbors_key": "neighbors", "min_dist": 0.5, "random_state": 0, "key_added": "X_umap"}
    return mini, kwargs


def measure(variant: str, job_path: Path) -> dict[str, float]:
    """One cold measurement of ``variant`` (in this fresh process)."""
    mini, kwargs = _job(job_path)
    rss0 = _rss(os.getpid())
    out: dict[str, float] = {
        "job_pickle_mb": len(pickle.dumps((mini, kwargs), protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
    }
    t0 = time.perf_counter()
    if variant == "worker":
        from scclust.pp._umap import UmapWorker

        out["import"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        w = UmapWorker()  # starts the process and submits the warm-up
        out["start"] = time.perf_counter() - t0
        w.worker.result()
        w.ready = True
        out["warm_up_done"] = time.perf_counter() - t0
        out["worker_rss_mb"] = _rss(w.worker.proc.pid)
        t1 = time.perf_counter()
        (_, inside) = w.worker.call("bench_background:timed_umap_job", mini, kwargs)  # sys.path[0] is this directory
        out["job_round_trip"] = time.perf_counter() - t1
        out["main_rss_gain_mb"] = _rss(os.getpid()) - rss0
        w.stop()
    elif variant == "dask":
        from distributed import Client, LocalCluster

        out["import"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        out["start"] = time.perf_counter() - t0
        pid = client.submit(warm_up_pid, pure=False).result()
        out["warm_up_done"] = time.perf_counter() - t0
        out["worker_rss_mb"] = _rss(pid)
        t1 = time.perf_counter()
        (_, inside) = client.submit(timed_umap_job, mini, kwargs, pure=False).result()
        out["job_round_trip"] = time.perf_counter() - t1
        out["main_rss_gain_mb"] = _rss(os.getpid()) - rss0
        client.close()
        cluster.close()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        out["import"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        out["start"] = time.perf_counter() - t0
        pid = pool.submit(warm_up_pid).result()
        out["warm_up_done"] = time.perf_counter() - t0
        out["worker_rss_mb"] = _rss(pid)
        t1 = time.perf_counter()
        (_, inside) = pool.submit(timed_umap_job, mini, kwargs).result()
        out["job_round_trip"] = time.perf_counter() - t1
        out["main_rss_gain_mb"] = _rss(os.getpid()) - rss0
        pool.shutdown()
    out["job_in_worker"] = inside
    out["job_overhead"] = out["job_round_trip"] - inside
    return out


def make_job(cells: int, work: Path) -> Path:
    """The tutorial's UMAP job at ``cells`` cells, pickled once (graph built here, untimed)."""
    path = work / f"umap_job_{cells}.pkl"
    if not path.exists():
        from scclust import pp
        from scclust.datasets import simulate_integrated
        from scclust.pp._umap import _graph_only

        adata = simulate_integrated(cells)
        pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
        with open(path, "wb") as fh:
            pickle.dump(_graph_only(adata, "neighbors"), fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=7332)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/bench_background")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one measurement, in this process
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, Path(args.job))))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    job = make_job(args.cells, work)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeat):
        for v in VARIANTS:  # interleaved: load on a shared machine hits every variant alike
            res = subprocess.run(
                [sys.executable, __file__, "--variant", v, "--job", str(job)],
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode != 0:
                sys.exit(f"{v} failed:\n{res.stderr[-3000:]}")
            results[v].append(json.loads(res.stdout.strip().splitlines()[-1]))
    rows = [
        "import",
        "start",
        "warm_up_done",
        "worker_rss_mb",
        "main_rss_gain_mb",
        "job_round_trip",
        "job_in_worker",
        "job_overhead",
        "job_pickle_mb",
    ]
    print(f"background executor, cold; UMAP job of {args.cells} cells; median of {args.repeat} (each run in brackets)")
    print(f"  {'':18}" + "".join(f"{v:>28}" for v in VARIANTS))
    for r in rows:
        cells = []
        for v in VARIANTS:
            vals = [x.get(r, 0.0) for x in results[v]]
            cells.append(f"{statistics.median(vals):8.2f} [{' '.join(f'{x:.2f}' for x in vals)}]")
        print(f"  {r:18}" + "".join(f"{c:>28}" for c in cells))
    print(
        "  (seconds, except *_mb: MiB; warm_up_done counts from the start of the executor; dask's scheduler and nanny "
        "run in this process: in main_rss_gain_mb)"
    )


if __name__ == "__main__":
    main()
