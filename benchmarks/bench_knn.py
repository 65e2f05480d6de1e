"""kNN backend benchmark: cold-process time and recall of each nearest-neighbour library.

    python benchmarks/bench_knn.py --cells 7332 100000 --k 20 --dims 30

For each size, each backend runs in its own fresh Python process (so numba's JIT compilation of
pynndescent is paid, as on a user's first call) on the first ``--dims`` columns of
``X_pca_harmony`` from the inputs that ``bench_clustering.py`` makes (7,332 simulated cells, and
larger sizes by resampling them with noise). Reported: ``import`` (seconds to import the library),
``knn`` (index build + all-cells query, k neighbours including the cell itself), the wall time
of the whole process, and recall = the fraction of the exact k neighbours (sklearn brute force)
that the backend returns.

Backends: ``sklearn`` (``NearestNeighbors(algorithm="brute")``, what scanpy uses below 8,192
cells), ``faiss_flat`` (``IndexFlatL2``, exact), ``faiss_hnsw`` (``IndexHNSWFlat``, M=32),
``hnswlib`` (M=16, ef_construction=100, one-thread build, ef=max(2k, 100): the settings of
:mod:`scclust.pp._knn`), ``pynndescent`` (``NNDescent`` with scanpy's n_trees / n_iters) and
``scclust`` (``scclust.pp._knn.knn`` with ``backend="auto"``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, sys, time
import numpy as np
backend, path, out, k, dims, threads = sys.argv[1:7]
k, dims, threads = int(k), int(dims), int(threads)
import anndata as ad
X = np.ascontiguousarray(ad.read_h5ad(path).obsm["X_pca_harmony"][:, :dims], dtype=np.float32)
n = X.shape[0]
t0 = time.perf_counter()
if backend == "sklearn":
    from sklearn.neighbors import NearestNeighbors
    t_imp = time.perf_counter() - t0
    idx = NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=threads).fit(X).kneighbors(X)[1]
elif backend == "faiss_flat":
    import faiss
    faiss.omp_set_num_threads(threads)
    t_imp = time.perf_counter() - t0
    index = faiss.IndexFlatL2(X.shape[1]); index.add(X)
    idx = index.search(X, k)[1]
elif backend == "faiss_hnsw":
    import faiss
    faiss.omp_set_num_threads(threads)
    t_imp = time.perf_counter() - t0
    index = faiss.IndexHNSWFlat(X.shape[1], 32); index.hnsw.efConstruction = 200
    index.add(X); index.hnsw.efSearch = max(2 * k, 100)
    idx = index.search(X, k)[1]
elif backend == "hnswlib":
    import hnswlib
    t_imp = time.perf_counter() - t0
    index = hnswlib.Index(space="l2", dim=X.shape[1])
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=0)
    index.set_num_threads(1); index.add_items(X, np.arange(n))
    index.set_ef(max(2 * k, 100))
    idx = index.knn_query(X, k=k, num_threads=threads)[0]
elif backend == "pynndescent":
    from pynndescent import NNDescent
    t_imp = time.perf_counter() - t0
    nnd = NNDescent(X, n_neighbors=k, n_trees=min(64, 5 + round(n ** 0.5 / 20)), n_iters=max(5, round(np.log2(n))),
                    random_state=0, n_jobs=threads)
    idx = nnd.neighbor_graph[0]
elif backend == "scclust":
    from scclust.pp._knn import knn
    t_imp = time.perf_counter() - t0
    idx, _, used = knn(X, k)
    backend = used
t_knn = time.perf_counter() - t0 - t_imp
np.save(out, np.asarray(idx, dtype=np.int64))
print(json.dumps({"import": t_imp, "knn": t_knn}))
"""

BACKENDS = ["sklearn", "faiss_flat", "faiss_hnsw", "hnswlib", "pynndescent", "scclust"]


def recall(idx, ref) -> float:
    """Mean fraction of each cell's exact neighbours found (order ignored)."""
    import numpy as np

    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(idx, ref, strict=True))
    return hits / ref.size


def run(backend: str, path: Path, out: Path, k: int, dims: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, backend, str(path), str(out), str(k), str(dims), str(threads)],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[7332, 100_000])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--dims", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    import numpy as np
    from bench_clustering import make_input

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.threads} thread(s); k={args.k}, dims={args.dims}"
    )
    for n in args.cells:
        path = make_input(n, args.workdir)
        print(f"\n=== {n:,} cells ===")
        ref = None
        for b in ["sklearn", *[b for b in args.backends if b != "sklearn"]]:
            out = args.workdir / f"knn_{b}_{n}.npy"
            res = run(b, path, out, args.k, args.dims, args.threads)
            idx = np.load(out)
            if ref is None:
                ref = idx
            print(
                f"  {b:<12} knn {res['knn']:7.2f} s  (import {res['import']:5.2f} s, process wall {res['wall']:6.2f} s)"
                f"  recall {recall(idx, ref):.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
