"""hclust's micro-cluster path against the exact Ward tree (the numbers in tl/_hclust.py).

    python benchmarks/bench_hclust_micro.py --cells 100000 [--micro 500 1000 2000 4000]

The exact tree is fastcluster's memory-saving ``linkage_vector`` (about 8 min at 100,000 x 50 on
2 idle cores; 37 min measured on a loaded machine), cached in ``--workdir``. Input:
``simulate_integrated(n)``, all 50 dims of ``X_pca_harmony``. Prints the ARI at k = 5 / 10 / 15
for each number of micro-clusters and seed, and the time of the micro path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--micro", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_scale")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    import fastcluster
    from scipy.cluster import hierarchy as sch
    from sklearn.metrics import adjusted_rand_score as ari

    import scclust as scc
    from scclust.datasets import simulate_integrated

    a = simulate_integrated(args.cells)
    cache = args.workdir / f"ward_exact_{args.cells}.npy"
    if cache.exists():
        Z = np.load(cache)
    else:
        t = time.perf_counter()
        Z = fastcluster.linkage_vector(a.obsm["X_pca_harmony"].astype(np.float64), method="ward")
        print(f"exact Ward (vector path): {time.perf_counter() - t:.0f} s", flush=True)
        np.save(cache, Z)
    exact = {k: sch.fcluster(Z, k, "maxclust") for k in (5, 10, 15)}
    for m in args.micro:
        for seed in (0, 1):
            t = time.perf_counter()
            b = scc.tl.hclust(
                a,
                use_rep="X_pca_harmony",
                n_clusters=[5, 10, 15],
                backend="micro",
                n_micro_clusters=m,
                random_state=seed,
                copy=True,
            )
            scores = [round(ari(exact[k], b.obs[f"hclust_{k}"]), 3) for k in (5, 10, 15)]
            print(
                f"micro-clusters {m}, seed {seed}: {time.perf_counter() - t:.1f} s, ARI vs exact at k=5/10/15 {scores}",
                flush=True,
            )


if __name__ == "__main__":
    main()
