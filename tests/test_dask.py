"""scclust._dask and the out-of-core run through the CLI: a real LocalCluster, a real killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

#: heavy (Dask clusters, 4,000-60,000-cell runs, whole runs): the full suite, not the fast lane
pytestmark = pytest.mark.slow


def test_unreachable_scheduler_is_one_line_error():
    from scclust._dask import dask_client
    from scclust._errors import ConfigError

    t0 = time.perf_counter()
    with (
        pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"),
        dask_client(address="tcp://127.0.0.1:9", timeout=2),
    ):
        pass
    assert time.perf_counter() - t0 < 30


def test_local_cluster_sized_and_connectable():
    """The default cluster: one single-threaded worker per requested process, memory limits set;
    a second client connects to it by address (what dask.address does with a remote scheduler)."""
    import os

    import dask.array as da

    from scclust._dask import compute, dask_client, worker_memory_limit

    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask_client(n_workers=2) as c:
        workers = c.scheduler_info()["workers"].values()
        assert len(workers) == 2
        assert all(w["nthreads"] == 1 for w in workers)
        assert all(w["memory_limit"] == worker_memory_limit(2) for w in workers)
        with dask_client(address=c.scheduler.address) as c2:
            assert c2.submit(sum, [1, 2]).result() == 3
        # the workers run BLAS / OpenMP single-threaded; the run's own process keeps its environment
        # (distributed writes OMP_NUM_THREADS=1 into it before spawning a worker: faiss then used 1 core)
        assert set(c.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}
        c.restart()  # respawned workers write the variables again
        assert compute(da.ones(10, chunks=5).sum(), what="a sum") == (10,)
        assert {k: os.environ.get(k) for k in before} == before
    assert {k: os.environ.get(k) for k in before} == before


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from scclust.datasets import simulate_counts_store

    return simulate_counts_store(6000, tmp_path_factory.mktemp("s") / "counts.h5ad", n_genes=2000, chunk_cells=1000)


def _config(tmp_path, store, stages="[prepare, leiden]"):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"input: {store}\noutdir: {tmp_path / 'out'}\nstages: {stages}\nbackground_umap: false\n"
        "prepare: {batch_key: sample, qc: {min_genes: 200}, umap: null, backend: dask, chunk_cells: 500}\n"
        "leiden: {resolutions: [0.6]}\ndask: {n_workers: 2, memory_limit: 2GB}\n"
    )
    return cfg


@pytest.mark.slow
def test_cli_out_of_core_run_records_backend(tmp_path, small_store):
    cmd = [sys.executable, "-m", "scclust", "run", str(_config(tmp_path, small_store))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "lazily" in res.stderr and "dashboard http" in res.stderr
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    prep = next(r for r in man["stages"] if r["stage"] == "prepare")
    assert prep["backend"] == "dask" and prep["backend_reason"].startswith("set in the config")
    assert prep["counts_store"]["path"] == str(small_store.resolve())
    assert man["config"]["dask"]["n_workers"] == 2
    import anndata as ad

    out = ad.read_h5ad(tmp_path / "out" / "clustered.h5ad")
    assert "leiden_0.6" in out.obs and "counts" not in out.layers
    assert out.uns["counts_store"]["format"] == "h5ad"
    # -q: silent (no progress, no dashboard line, nothing from distributed); one chunk is enough here
    quiet = [*cmd, "-q", "--no-resume", "--outdir", str(tmp_path / "q"), "--set", "prepare.chunk_cells=6000"]
    res = subprocess.run(quiet, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]


def _workers(pid):
    import psutil

    procs = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                procs.append(p)
        except psutil.NoSuchProcess:
            pass
    return procs


@pytest.mark.slow
def test_killed_worker_recovers_or_exits_cleanly(tmp_path):
    """SIGKILL one Dask worker while prepare computes: the run finishes (the nanny restarts the worker,
    Dask reruns its tasks) or exits 2 with one line; never hangs (timeout), never a partial output."""
    from scclust.datasets import simulate_counts_store

    store = simulate_counts_store(10_000, tmp_path / "big.h5ad", n_genes=2000, chunk_cells=1000)
    cfg = _config(tmp_path, store)
    proc = subprocess.Popen([sys.executable, "-m", "scclust", "run", str(cfg)], stderr=subprocess.PIPE, text=True)
    lines, killed = [], []

    def read():
        lines.extend(proc.stderr)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not killed:
        if any("Dask: QC metrics" in line for line in lines):
            time.sleep(0.5)
            workers = _workers(proc.pid)
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
        time.sleep(0.1)
    try:
        rc = proc.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run hung after a worker was killed:\n" + "".join(lines[-20:]))
    t.join(5)
    print(f"killed worker {killed}; exit status {rc}; last line: {lines[-1].strip() if lines else ''}")
    assert killed, "no worker process found to kill:\n" + "".join(lines[-20:])
    out = tmp_path / "out" / "clustered.h5ad"
    if rc == 0:
        assert out.is_file()
    else:
        assert rc == 2, "".join(lines[-20:])
        assert lines[-1].startswith("scclust: error: ") and not out.exists()


def _die(x):
    os._exit(1)  # the worker process dies: the nanny restarts it and the scheduler retries the task


def test_task_that_kills_workers_is_one_line_error():
    """A task that kills every worker it runs on (as an out-of-memory kill would) ends in
    ComputeError naming the step, after Dask's retries, not in a hang."""
    import dask
    import dask.array as da
    import distributed  # noqa: F401 - loads its config defaults before dask.config.set overrides one of them

    from scclust._dask import ComputeError, compute, dask_client

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), dask_client(n_workers=1, memory_limit="1GB"):
        import numpy as np

        x = da.ones(10, chunks=5).map_blocks(_die, dtype=float, meta=np.empty(0))  # meta: never called here
        t0 = time.perf_counter()
        with pytest.raises(ComputeError, match=r"^test step: Dask workers died repeatedly"):
            compute(x.sum(), what="test step")
        assert time.perf_counter() - t0 < 120


class _HeldBlocks(SchedulerPlugin):
    """A scheduler plugin: how many blocks of one Dask array were in the cluster's memory at once."""

    name = "held-blocks"

    def __init__(self, array_name: str) -> None:
        self.array_name, self.now, self.peak = array_name, set(), 0

    def transition(self, key, start, finish, *args, **kwargs):
        if isinstance(key, tuple) and key[0] == self.array_name:
            if finish == "memory":
                self.now.add(key)
            elif start == "memory":
                self.now.discard(key)
            self.peak = max(self.peak, len(self.now))


def _slow_lognorm(block):
    time.sleep(0.05)  # some work per block, as reading and normalizing a chunk of a store
    out = block.copy()
    out.data = np.log1p(out.data)
    return out


def test_compute_rows_streams_blocks_and_frees_them():
    """compute_rows = the in-process result (sparse and dense, blocks in order), fetched block by
    block: the cluster never holds most of the result at once, and nothing is left on it after."""
    import dask.array as da
    from scipy import sparse

    from scclust._dask import compute_rows, dask_client

    X = sparse.random(4000, 300, density=0.05, format="csr", dtype=np.float32, random_state=0)
    lazy = da.from_array(
        X, chunks=(100, -1), asarray=False, fancy=False, meta=sparse.csr_matrix((0, 0), dtype=np.float32)
    )
    lognorm = lazy.map_blocks(_slow_lognorm, dtype=np.float32)
    sums = lognorm.map_blocks(lambda b: np.asarray(b.sum(axis=1)), dtype=np.float64, chunks=(lognorm.chunks[0], (1,)))
    plugin = _HeldBlocks(lognorm.name)
    with dask_client(n_workers=2, memory_limit="1GB") as c:
        c.register_plugin(plugin)
        Xl, s = compute_rows(lognorm, sums, what="a test")
        peak = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins["held-blocks"].peak)
        for _ in range(50):  # releases reach the workers asynchronously
            left = c.run(lambda dask_worker: len(dask_worker.data))
            if not any(left.values()):
                break
            time.sleep(0.1)
    expected = X.copy()
    expected.data = np.log1p(expected.data)
    assert sparse.isspmatrix_csr(Xl) and (Xl != expected).nnz == 0
    np.testing.assert_allclose(s.ravel(), np.asarray(expected.sum(axis=1)).ravel(), rtol=1e-6)
    assert 1 <= peak <= lognorm.numblocks[0] // 4, peak  # 40 blocks; dask.compute would hold all 40 to concatenate them
    assert set(left.values()) == {0}
    with pytest.raises(ValueError, match="row chunks differ"):
        compute_rows(lognorm, da.zeros((4000, 2), chunks=(200, 2)), what="mismatched")


# ------------------------------------------------------------------------------------------ kNN on workers
@pytest.fixture(scope="module")
def two_workers():
    """A real 2-worker LocalCluster started here (as a remote scheduler would be: not one of the
    clusters scclust starts for itself), and its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _clustered_points(n, d=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (12, d))
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("backend", ["exact", "flat", "ivf", "hnsw"])
def test_knn_on_cluster_equals_local(two_workers, backend, monkeypatch):
    """Each backend's neighbours answered on the workers in several blocks = the local search's
    (ids identical, distances equal); the workers really answered (blocks recorded)."""
    from scclust._dask import dask_client
    from scclust.pp import _knn

    monkeypatch.setattr(_knn, "SEARCH_BATCH", 4096)  # 3 blocks (faiss's BLAS tiles are 4,096 queries)
    X = _clustered_points(10_000)
    local = _knn.knn(X, 15, backend=backend, random_state=0)
    info = {}
    with dask_client(address=two_workers) as client:
        from scclust._dask import cluster_client

        assert cluster_client() is client
        remote = _knn.knn(X, 15, backend=backend, random_state=0, client=client, info=info)
    assert info["dask"] == {"workers": 2, "blocks": 3, "block_cells": 4096}
    assert remote[2] == local[2] == backend
    np.testing.assert_array_equal(remote[0], local[0])
    np.testing.assert_array_equal(remote[1], local[1])
    if backend in ("exact", "flat"):  # and both equal an independent brute force
        from sklearn.neighbors import NearestNeighbors

        ref = NearestNeighbors(n_neighbors=15).fit(X.astype(np.float64)).kneighbors()[1]
        assert (np.sort(remote[0][:, 1:], axis=1) == np.sort(ref[:, :14], axis=1)).mean() > 0.999


def test_neighbors_graph_through_cluster_equals_local(two_workers):
    """pp.neighbors inside a client connected by address: the same graph as without (ivf), the
    search recorded as done on 2 workers."""
    import anndata as ad

    from scclust import pp
    from scclust._dask import dask_client

    X = _clustered_points(20_000, d=30, seed=1)
    a = ad.AnnData(obsm={"X_emb": X}, obs={"i": np.arange(X.shape[0])})
    b = a.copy()
    pp.neighbors(a, use_rep="X_emb", n_neighbors=15, backend="ivf")
    with dask_client(address=two_workers):
        pp.neighbors(b, use_rep="X_emb", n_neighbors=15, backend="ivf")
    assert a.uns["neighbors"]["knn"]["backend"] == "ivf" and "dask" not in a.uns["neighbors"]["knn"]
    assert b.uns["neighbors"]["knn"]["dask"]["workers"] == 2
    for key in ("distances", "connectivities"):
        diff = a.obsp[key] != b.obsp[key]
        assert diff.nnz == 0, key


def test_sketch_run_through_cluster_equals_local(two_workers, tmp_path, monkeypatch):
    """A run with the sketch stage and dask.address: the kNN search of the sketch and the label
    projection (several blocks) run on the workers (recorded), and every label and confidence equals
    the local run's."""
    from scclust import run
    from scclust.config import parse_config
    from scclust.tl import _project

    monkeypatch.setattr(_project, "PROJECT_BATCH", 2048)  # 4 blocks

    def cfg(name, **extra):
        return parse_config(
            {
                "input": "builtin:integrated?n_cells=8000",
                "outdir": str(tmp_path / name),
                "stages": ["sketch", "neighbors", "leiden", "kmeans"],
                "sketch": {"fraction": 0.2, "use_rep": "X_pca_harmony", "n_pcs": 20},
                "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 20, "n_neighbors": 15},
                "leiden": {"resolutions": [0.5, 1.0]},
                "kmeans": {"use_rep": "X_pca_harmony", "n_clusters": [6]},
                "background_umap": False,
                **extra,
            }
        )

    local, man_l = run(cfg("local"))
    remote, man_r = run(cfg("remote", dask={"address": two_workers}))
    recs = {r["stage"]: r for r in man_r["stages"]}
    assert recs["neighbors"]["knn"]["dask"]["workers"] == 2
    assert recs["sketch projection"]["dask"] == {"workers": 2, "blocks": 4}
    assert "dask" not in {r["stage"]: r for r in man_l["stages"]}["sketch projection"]
    for key in ("leiden_0.5", "leiden_1.0", "kmeans6"):
        assert (remote.obs[key] == local.obs[key]).all(), key
        np.testing.assert_array_equal(remote.obs[f"{key}_confidence"], local.obs[f"{key}_confidence"])
