"""Which kNN recall is enough? Leiden on the ivf graph at several recall targets vs the exact graph.

    python benchmarks/knn_recall_leiden.py [--cells 200000] [--recalls 0.995 0.985 0.98] [--workdir bench]

Simulates raw counts (`datasets.simulate_counts_store`, written once into ``--workdir``), runs the
out-of-core `prepare` (QC lab filters, HVG, scale + PCA, Harmony; no UMAP) and keeps the Harmony
embedding. Then builds the tutorial's graph (k = 20 on 30 dims) exactly (faiss `flat`) and with
`ivf` at each recall target, runs igraph's Leiden at 0.4 / 0.6 / 1.0, and prints per graph the kNN
time, its measured recall and probes, and per resolution the ARI against the exact graph's labels,
next to Leiden on the exact graph with another seed (the floor: the labels' own seed noise) and
each labelling's ARI with the simulated cell types.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score as ari

from scclust import pp, tl
from scclust._dask import dask_client
from scclust.datasets import simulate_counts_store

RESOLUTIONS = (0.4, 0.6, 1.0)


def embedding(n: int, workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    emb = workdir / f"harmony_{n}.npz"
    if not emb.exists():
        store = workdir / f"counts_{n}.h5ad"
        if not store.exists():
            t0 = time.perf_counter()
            simulate_counts_store(n, store)
            print(f"simulated {n} cells in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        with dask_client():
            out = pp.prepare(
                pp.read_counts_lazy(store),
                backend="dask",
                batch_key="sample",
                qc={"min_genes": 200, "max_pct_mt": 20, "min_cells": 3},
                umap=None,
                graph={"backend": "ivf", "min_recall": 0.5},
            )
        print(f"prepare out of core {time.perf_counter() - t0:.1f} s", flush=True)
        np.savez(emb, X=out.obsm["X_pca_harmony"], type=out.obs["cell_type"].astype(str).to_numpy())
    d = np.load(emb, allow_pickle=True)
    return d["X"], d["type"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--recalls", type=float, nargs="+", default=[0.995, 0.985, 0.98])
    ap.add_argument("--workdir", type=Path, default=Path("bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    X, types = embedding(args.cells, args.workdir)
    graphs = [("flat", {"backend": "flat"})] + [(f"ivf {r}", {"backend": "ivf", "min_recall": r}) for r in args.recalls]
    labels = {}
    for name, kw in graphs:
        a = AnnData(obsm={"X_pca_harmony": X}, shape=(len(X), 0))
        t0 = time.perf_counter()
        pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20, **kw)
        seconds = time.perf_counter() - t0
        info = a.uns["neighbors"].get("knn", {})
        print(
            f"{name}: kNN {seconds:.1f} s, recall {info.get('recall')}, nprobe {info.get('nprobe')} of "
            f"{info.get('nlist')}",
            flush=True,
        )
        for seed in (0, 1) if name == "flat" else (0,):
            tl.leiden(
                a, resolutions=list(RESOLUTIONS), flavor="igraph", n_iterations=2, random_state=seed, key_added="l"
            )
            for r in RESOLUTIONS:
                labels[(name, seed, r)] = a.obs[f"l_{r}"].to_numpy()
    for r in RESOLUTIONS:
        ref = labels[("flat", 0, r)]
        row = [f"exact graph, Leiden seed 1: {ari(ref, labels[('flat', 1, r)]):.3f}"]
        row += [f"{name}: {ari(ref, labels[(name, 0, r)]):.3f}" for name, _ in graphs[1:]]
        vs = ", ".join(f"{name} {ari(types, labels[(name, 0, r)]):.3f}" for name, _ in graphs)
        print(f"Leiden {r}: ARI vs the exact graph's labels: {'; '.join(row)} (vs cell types: {vs})")


if __name__ == "__main__":
    main()
