"""2-D layouts of a large kNN graph side by side: what scclust uses and the alternatives.

    pip install openTSNE            # the t-SNE alternative (not a scclust dependency)
    python benchmarks/bench_layout.py --cells 200000 --epochs 100

On ``simulate_integrated(N)`` (known cell types) scclust builds its kNN graph (k = 20 on 30 Harmony
dimensions); each layout starts from the first two Harmony dimensions (scclust's start above
200,000 cells) and runs in this one process, numba warmed up first:

- ``umap_learn`` : ``pp.umap(method="umap-learn")`` = ``sc.tl.umap`` (umap-learn, seeded: its
  epochs run on one thread), scclust's layout up to 200,000 cells;
- ``scclust_parallel`` : ``pp.umap(method="parallel")``, scclust's layout above 200,000 cells:
  the same optimisation with each epoch computed from the previous one on every core (numba
  threads), run twice to show that it is reproducible;
- ``umap_parallel`` : umap-learn's ``simplicial_set_embedding(parallel=True)`` on the same graph and
  parameters, unseeded (its epochs on every core; umap-learn documents it as not reproducible, run
  twice here to show by how much);
- ``opentsne`` : openTSNE's FFT-accelerated t-SNE (250 exaggerated + 500 iterations, every core) on
  the same graph's connectivities as affinities.

Quality on 10,000 sampled cells (all cells below 10,000): the share of each cell's graph neighbours among its 20 nearest
cells in 2-D (``knn_kept``) and the silhouette of the true cell types in 2-D. Prints one JSON line
per layout and the time ratio to ``umap_learn``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def quality(Y: np.ndarray, graph, types: np.ndarray, sample: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=21).fit(Y)
    _, idx = nn.kneighbors(Y[sample])
    kept = []
    for row, cell in zip(idx, sample, strict=True):
        nbrs = graph.indices[graph.indptr[cell] : graph.indptr[cell + 1]]
        kept.append(np.isin(nbrs, row[1:]).mean())
    return {
        "knn_kept": round(float(np.mean(kept)), 4),
        "silhouette_types": round(float(silhouette_score(Y[sample], types[sample])), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=100, help="umap-learn epochs (scclust's atlas configs: 100)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["scclust_parallel", "umap_parallel", "opentsne"])
    ap.add_argument("--seed", type=int, default=0, help="the layouts' random_state")
    args = ap.parse_args()

    import umap.umap_ as uu
    from scipy import sparse

    from scclust import pp
    from scclust.datasets import simulate_integrated

    a = simulate_integrated(n_cells=args.cells)
    t = time.perf_counter()
    pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    print(
        json.dumps({"n_cells": a.n_obs, "knn_seconds": round(time.perf_counter() - t, 1), "cores": os.cpu_count()}),
        flush=True,
    )
    w = simulate_integrated(n_cells=2000)
    pp.neighbors(w, use_rep="X_pca_harmony", n_neighbors=20)
    pp.umap(w, n_epochs=5, init="pca", method="umap-learn")  # numba warm-up (the seeded path)
    pp.umap(w, n_epochs=5, init="pca", method="parallel")  # and scclust's parallel optimiser
    X = np.asarray(a.obsm["X_pca_harmony"][:, :30], dtype=np.float32)
    start = np.ascontiguousarray(X[:, :2])
    graph = sparse.csr_matrix(a.obsp["distances"])
    types = a.obs["cell_type"].to_numpy()
    sample = np.random.default_rng(0).choice(a.n_obs, min(a.n_obs, 10_000), replace=False)
    rows = []

    def report(name: str, seconds: float, Y: np.ndarray, **extra) -> None:
        row = {"layout": name, "seconds": round(seconds, 1), **quality(Y, graph, types, sample), **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    t = time.perf_counter()
    pp.umap(a, n_epochs=args.epochs, init="pca", random_state=args.seed, method="umap-learn")
    report("umap_learn", time.perf_counter() - t, a.obsm["X_umap"], epochs=args.epochs, threads=1, reproducible=True)

    if "scclust_parallel" not in args.skip:
        t = time.perf_counter()
        pp.umap(a, n_epochs=args.epochs, init="pca", random_state=args.seed, method="parallel", key_added="X_par")
        sec = time.perf_counter() - t
        Y1 = a.obsm["X_par"]
        pp.umap(a, n_epochs=args.epochs, init="pca", random_state=args.seed, method="parallel", key_added="X_par")
        report(
            "scclust_parallel",
            sec,
            Y1,
            epochs=args.epochs,
            threads=a.uns["X_par"]["threads"],
            reproducible=bool(np.array_equal(Y1, a.obsm["X_par"])),
        )

    if "umap_parallel" not in args.skip:
        a_, b_ = uu.find_ab_params(1.0, 0.5)
        coo = a.obsp["connectivities"].tocoo()

        def parallel(seed_stream, data=X, graph_=coo, init=start, n_epochs=args.epochs):
            Y, _ = uu.simplicial_set_embedding(
                data=data,
                graph=graph_,
                n_components=2,
                initial_alpha=1.0,
                a=a_,
                b=b_,
                gamma=1.0,
                negative_sample_rate=5,
                n_epochs=n_epochs,
                init=init,
                random_state=seed_stream,
                metric="euclidean",
                metric_kwds={},
                densmap=False,
                densmap_kwds={},
                output_dens=False,
                parallel=True,
            )
            return Y

        Xw = np.asarray(w.obsm["X_pca_harmony"][:, :30], dtype=np.float32)  # compiles the parallel kernels
        parallel(np.random.RandomState(1), Xw, w.obsp["connectivities"].tocoo(), np.ascontiguousarray(Xw[:, :2]), 5)
        t = time.perf_counter()
        Y1 = parallel(np.random.RandomState(args.seed))
        sec = time.perf_counter() - t
        Y2 = parallel(np.random.RandomState(args.seed))
        report(
            "umap_parallel",
            sec,
            Y1,
            epochs=args.epochs,
            threads=os.cpu_count(),
            reproducible=bool(np.array_equal(Y1, Y2)),
            max_abs_diff_rerun=round(float(np.abs(Y1 - Y2).max()), 3),
        )

    if "opentsne" not in args.skip:
        from openTSNE import TSNEEmbedding, affinity, initialization

        t = time.perf_counter()
        P = a.obsp["connectivities"].tocsr().astype(np.float64)
        aff = affinity.PrecomputedAffinities(P / P.sum())
        emb = TSNEEmbedding(
            initialization.rescale(start.astype(np.float64)),
            aff,
            n_jobs=os.cpu_count(),
            random_state=args.seed,
            negative_gradient_method="fft",
        )
        emb = emb.optimize(250, exaggeration=12, momentum=0.5)
        emb = emb.optimize(500, momentum=0.8)
        report("opentsne", time.perf_counter() - t, np.asarray(emb), iterations=750, threads=os.cpu_count())

    base = rows[0]["seconds"]
    for row in rows[1:]:
        print(
            f"{row['layout']}: {base / row['seconds']:.2f}x the speed of umap-learn seeded, knn_kept "
            f"{row['knn_kept']} vs {rows[0]['knn_kept']}, silhouette {row['silhouette_types']} vs "
            f"{rows[0]['silhouette_types']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
