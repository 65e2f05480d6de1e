"""Leiden on one large kNN graph: scanpy's igraph call vs scclust's, one resolution, one process.

    python benchmarks/bench_leiden.py --cells 100000 1000000

For each size: ``scclust.datasets.simulate_integrated(n)``, the graph by ``scclust.pp.neighbors``
(k = 20, 30 dims of ``X_pca_harmony``; not timed), then on that same graph, one after the other in
this process:

* ``scanpy``: ``sc.tl.leiden(resolution=1.0, flavor="igraph", n_iterations=2, directed=False)``;
* ``scclust cell order``: ``scclust.tl.leiden(resolutions=[1.0], n_jobs=1)`` with the vertices in the
  cells' own order (:func:`scclust.tl._leiden.locality_order` replaced by the identity);
* ``scclust``: the same call as it runs (reverse Cuthill-McKee order).

Each line: seconds (graph conversion included, as a user sees it), the ratio to scanpy, clusters,
modularity and ARI with the true types. ``--repeat`` runs the scclust variants again to show the
spread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import scclust as scc
from scclust.tl import _leiden


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000])
    ap.add_argument("--resolution", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    r = args.resolution
    for n in args.cells:
        adata = scc.datasets.simulate_integrated(n)
        t = time.perf_counter()
        scc.pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
        print(f"{n:,} cells: graph {time.perf_counter() - t:.1f} s, {adata.obsp['connectivities'].nnz:,} entries")
        truth = adata.obs["cell_type"]

        t = time.perf_counter()
        sc.tl.leiden(adata, resolution=r, flavor="igraph", n_iterations=2, directed=False, key_added="scanpy")
        base = time.perf_counter() - t
        g = _leiden._to_igraph(_leiden._edges(adata.obsp["connectivities"], directed=False, once=False), directed=False)
        q = g[0].modularity(adata.obs["scanpy"].cat.codes.tolist(), weights=g[1], resolution=r)
        del g
        ari = adjusted_rand_score(truth, adata.obs["scanpy"])
        print(
            f"  scanpy              {base:7.1f} s  1.00x  {adata.obs['scanpy'].nunique():3d} clusters  Q {q:.4f}  ARI {ari:.3f}"
        )

        real = _leiden.locality_order
        for _ in range(args.repeat):
            for name, order in (("scclust cell order", lambda A: np.arange(A.shape[0])), ("scclust", real)):
                _leiden.locality_order = order
                try:
                    t = time.perf_counter()
                    scc.tl.leiden(adata, resolutions=[r], n_jobs=1, key_added="scc")
                    secs = time.perf_counter() - t
                finally:
                    _leiden.locality_order = real
                key = f"scc_{r}"
                info = adata.uns["scc"]["clusterings"][key]
                ari = adjusted_rand_score(truth, adata.obs[key])
                print(
                    f"  {name:<19} {secs:7.1f} s  {base / secs:.2f}x  {info['n_clusters']:3d} clusters  "
                    f"Q {info['modularity']:.4f}  ARI {ari:.3f}"
                )


if __name__ == "__main__":
    main()
