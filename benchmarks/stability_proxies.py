"""Cheaper stand-ins for a Leiden rerun on all cells, measured against the real thing.

    python benchmarks/stability_proxies.py --cells 20000

On ``simulate_integrated(cells)`` (kNN k = 20 on 30 dims, igraph Leiden, 2 iterations), at
resolutions 0.2 / 1.0 / 2.0: the ARI between Leiden runs with other seeds on the whole graph (what
a rerun measures), and the ARI with the reported labels (on the shared cells) of runs made on

* ``induced f``: the induced subgraph of a random fraction f of the cells (the graph restricted, not
  rebuilt), with its number of connected pieces;
* ``rebuilt f``: a kNN graph rebuilt on that subsample's rows with the same parameters;
* ``coarse m``: the whole graph aggregated onto m random representative cells (each cell joins the
  representative it is most strongly connected to; modularity of a lifted partition is unchanged),
  lifted back and improved by one simultaneous local move;
* ``warm``: the whole graph, Leiden started from the reported partition (``initial_membership``),
  also on 5,000 cells of Gaussian noise, where every split is arbitrary.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import sparse


def graph(A):
    import igraph as ig

    up = sparse.triu(A, 0).tocoo()
    w = np.where(up.row == up.col, up.data / 2, up.data)  # a loop counts twice in igraph's strength
    g = ig.Graph(n=A.shape[0], edges=np.column_stack([up.row, up.col]), directed=False)
    g.es["weight"] = w
    return g


def leiden(g, r, seed, initial=None):
    from scclust.tl._leiden import _igraph_seed

    with _igraph_seed(seed, fast=True):
        return np.array(
            g.community_leiden(
                objective_function="modularity",
                weights=g.es["weight"],
                resolution=r,
                n_iterations=2,
                initial_membership=None if initial is None else list(initial),
            ).membership
        )


def coarsen(A, m, seed):
    n = A.shape[0]
    reps = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    grp = np.full(n, -1)
    grp[reps] = np.arange(m)
    while (grp < 0).any():
        un = np.flatnonzero(grp < 0)
        sub = A[un].tocoo()
        ok = grp[sub.col] >= 0
        if not ok.any():
            grp[un] = np.arange(grp.max() + 1, grp.max() + 1 + un.size)
            break
        r, c, w = sub.row[ok], sub.col[ok], sub.data[ok]
        order = np.lexsort((-w, r))
        r, c = r[order], c[order]
        first = np.r_[True, r[1:] != r[:-1]]
        grp[un[r[first]]] = grp[c[first]]
    P = sparse.csr_matrix((np.ones(n), (np.arange(n), grp)), shape=(n, grp.max() + 1))
    return grp, (P.T @ A @ P).tocsr()


def sweep(A, lab, r):
    """One simultaneous local move on the cell graph: each cell to the cluster of best modularity gain."""
    k = A.sum(1).A1
    m2 = k.sum()
    K = np.bincount(lab, weights=k)
    W = (A @ sparse.csr_matrix((np.ones(lab.size), (np.arange(lab.size), lab)))).tocoo()
    gain = W.data - r * k[W.row] * K[W.col] / m2
    order = np.lexsort((-gain, W.row))
    rr = W.row[order]
    first = np.r_[True, rr[1:] != rr[:-1]]
    out = lab.copy()
    out[rr[first]] = W.col[order][first]
    return out


def main() -> None:
    import anndata as ad
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score as ari

    import scclust as scc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=20_000)
    n = ap.parse_args().cells
    a = scc.datasets.simulate_integrated(n, seed=0)
    scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    A = sparse.csr_matrix(a.obsp["connectivities"])
    g = graph(A)
    for r in (0.2, 1.0, 2.0):
        t = time.perf_counter()
        runs = [leiden(g, r, s) for s in range(4)]
        per_run = (time.perf_counter() - t) / 4
        lab = runs[0]
        seeds = np.mean([ari(lab, x) for x in runs[1:]])
        out = [f"r={r}: {len(set(lab))} clusters, {per_run:.2f} s per run; other seeds {seeds:.3f}"]
        for f in (0.5, 0.2, 0.1):
            idx = np.sort(np.random.default_rng(1).choice(n, int(f * n), replace=False))
            h = g.induced_subgraph(idx)
            ind = leiden(h, r, 5)
            b = a[idx].copy()
            scc.pp.neighbors(b, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
            reb = leiden(graph(sparse.csr_matrix(b.obsp["connectivities"])), r, 5)
            out.append(
                f"induced {f}: {ari(lab[idx], ind):.3f} ({len(h.connected_components())} pieces); "
                f"rebuilt {f}: {ari(lab[idx], reb):.3f}"
            )
        for m in (n // 2, n // 5, n // 10):
            grp, Ag = coarsen(A, m, 100)
            out.append(f"coarse {m}: {ari(lab, sweep(A, leiden(graph(Ag), r, 7)[grp], r)):.3f}")
        out.append(f"warm: {np.mean([ari(lab, leiden(g, r, 100 + s, initial=lab)) for s in range(3)]):.3f}")
        print("\n    ".join(out), flush=True)
    X = np.random.default_rng(0).normal(size=(5000, 30)).astype(np.float32)
    noise = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(5000).astype(str)), obsm={"X_pca": X})
    scc.pp.neighbors(noise, use_rep="X_pca", n_neighbors=15)
    gn = graph(sparse.csr_matrix(noise.obsp["connectivities"]))
    for r in (0.6, 1.0, 2.0):
        lab = leiden(gn, r, 0)
        cold = np.mean([ari(lab, leiden(gn, r, s)) for s in range(1, 4)])
        warm = np.mean([ari(lab, leiden(gn, r, 100 + s, initial=lab)) for s in range(3)])
        print(f"noise r={r}: {len(set(lab))} clusters; other seeds {cold:.3f}; warm-started {warm:.3f}", flush=True)


if __name__ == "__main__":
    main()
