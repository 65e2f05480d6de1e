"""Peak memory ``tl.subcluster`` adds, measured against its estimate, one fresh process per size.

    python benchmarks/subcluster_memory.py --cells 20000 30000 60000 --genes 4000

For each size: ``simulate(N, n_genes=G)`` (real upstream chain: counts -> prepare) with its kNN graph
is written to a temporary h5ad; a fresh process reads it, imports the libraries, resets the kernel's
high-water mark (Linux ``/proc/self/clear_refs``) and runs the lab's T/NK subclustering (the true
T/NK cells selected, regress_out of total_counts and pct_counts_mt). Prints one JSON line per size:
cells selected, stored values, HVGs chosen, GB added at the peak, and the estimate
(``scclust.tl._subcluster.memory_estimate``) with the HVGs chosen and with ``hvg.n_top_genes`` unset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TNK = ["CD4 T", "CD8 T", "NK"]


def measure(path: str) -> dict:
    import anndata as ad
    import faiss  # noqa: F401 - libraries loaded before the baseline
    import harmonypy  # noqa: F401
    import igraph  # noqa: F401
    import leidenalg  # noqa: F401
    import numpy as np
    import scanpy  # noqa: F401

    import scclust as scc
    from scclust._memory import high_water_mark, process_rss
    from scclust.pp._prepare import HVG, PCA
    from scclust.tl._subcluster import SubclusterGraph, memory_estimate

    a = ad.read_h5ad(path)
    base = process_rss()
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    t = time.perf_counter()
    sub, _ = scc.tl.subcluster(
        a,
        name="tnk",
        select={"obs_query": f"cell_type in {TNK}"},
        pca={"regress_out": ["total_counts", "pct_counts_mt"]},
        leiden={"resolutions": [0.5], "flavor": "igraph"},
        umap=None,
    )
    seconds = time.perf_counter() - t
    added = high_water_mark() - base
    rows = np.flatnonzero(a.obs["cell_type"].isin(TNK).to_numpy())
    chosen = memory_estimate(a.raw.X, rows, HVG(n_top_genes=sub.n_vars), PCA(), SubclusterGraph())
    assumed = memory_estimate(a.raw.X, rows, HVG(), PCA(), SubclusterGraph())
    return {
        "cells": a.n_obs,
        "selected": int(sub.n_obs),
        "values": int(a.raw.X[rows].nnz),
        "hvgs": int(sub.n_vars),
        "added_gb": round(added / 1e9, 3),
        "estimate_gb": round(chosen.total / 1e9, 3),
        "estimate_hvg_assumed_gb": round(assumed.total / 1e9, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[20_000, 30_000, 60_000])
    ap.add_argument("--genes", type=int, default=4000)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # the fresh process' side
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    import scclust as scc

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.cells:
            path = str(Path(tmp) / f"parent_{n}.h5ad")
            a = scc.datasets.simulate(n, n_genes=args.genes)
            scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
            a.write_h5ad(path)
            del a
            out = subprocess.run(
                [sys.executable, __file__, "--measure", path], capture_output=True, text=True, check=True
            )
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
