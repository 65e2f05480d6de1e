"""Stability stage benchmark: time and peak memory of ``tl.stability`` at 7,332 / 100,000 / 1,000,000 cells.

    python benchmarks/bench_stability.py --cells 7332 100000
    python benchmarks/bench_stability.py --cells 1000000 --resolutions 0.4 1.0 --n-seeds 4 --n-subsamples 1

Each size runs in a fresh Python process: read the input, build the graph (not timed as the
stage), Leiden at ``--resolutions`` (igraph, the default flavor; not timed as the stage), then the
stage ``tl.stability(n_seeds, n_subsamples at 80 %, n_jobs=-1)`` timed on its own. Memory during
the stage: the resident set size of the process and of its Leiden worker, sampled every 0.2 s
from ``/proc`` (``ru_maxrss`` cannot be used: it includes the input handling before the stage, and
a worker's counts the parent's pages it shares between fork and exec). CPU seconds of both are
printed too: the machine may be shared, so wall time alone can mislead.

Inputs (cached in ``--workdir``):

* 7,332 cells: ``simulate(7332, seed=0, states=True)`` (the full chain), its ``X_pca_harmony``;
  graph ``pp.neighbors(n_neighbors=20, n_pcs=30)``.
* 100,000 cells: that embedding resampled with noise (each new cell copies a random simulated cell
  and adds Gaussian noise with its cell state's per-dimension standard deviation; it keeps type
  and state); graph ``pp.neighbors`` as above. (With half the standard deviation, as
  ``bench_clustering.py`` uses for types, the ~14 copies of each source cell sit closer to each
  other than to the rest of their state and the graph breaks into hundreds of cliques: Leiden gave
  380 clusters at resolution 0.1.)
* 1,000,000 cells: the 100,000-cell graph repeated ten times as a block-diagonal matrix (ten
  disjoint copies: same edges per cell, 10x the edges in all), so that no 1M-cell kNN search is
  needed; the labels are Leiden on one copy repeated (a 1M-cell Leiden for the labels alone took
  764 s on the loaded machine). Leiden's work and the stage's memory scale with edges and cells, which this keeps; the
  clusters are not those of a real 1M-cell dataset (modularity on ten copies acts like a lower
  resolution on each).

Measured on 2026-12-02 (2 cores, 24 GB). Quiet machine (nothing else running) for 7,332 and
100,000 cells; the 1,000,000 row was measured while the machine was shared (load 6-9):

=========  ===================================  =========  ==========================  ==================
cells      runs                                 stage wall CPU (process + worker)     stage memory peak
=========  ===================================  =========  ==========================  ==================
7,332      10 resolutions x 20 seeds              8.0 s    6.1 + 7.7 s                 353 MB (186 + worker)
100,000    10 resolutions x 20 seeds            331.8 s    329 + 313 s                 970 MB (522 + worker)
1,000,000  1 resolution x 2 seeds (shared)      230 s      83 + 85 s                   4,268 MB (1,866 + worker)
=========  ===================================  =========  ==========================  ==================

Leiden on the resampled 100,000 cells costs ~4.7 CPU-s per run (igraph, ``n_iterations=2``) and
on 1,000,000 cells ~80 CPU-s; the stage's own work beyond the runs (contingency tables) is
seconds. The 1M label matrices of a 10 x 25-run stage would add 1 GB (int32, O(cells x runs)).
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

STAGE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import anndata as ad
import numpy as np
from scipy import sparse
import scclust as scc
path, res, n_seeds, n_subsamples, copies = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
adata = ad.read_h5ad(path)
t = time.perf_counter()
if copies > 1:  # block-diagonal copies of the stored graph; labels: Leiden on one copy, repeated
    from scclust.tl._labels import store_labels
    scc.tl.leiden(adata, resolutions=res)
    base = adata
    g = sparse.block_diag([base.obsp["connectivities"]] * copies, format="csr")
    obs = base.obs[["cell_type", "cell_state"]].iloc[np.tile(np.arange(base.n_obs), copies)].reset_index(drop=True)
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs)
    adata.obsp["connectivities"] = g
    adata.uns["neighbors"] = {"connectivities_key": "connectivities", "distances_key": "connectivities", "params": {}}
    info = {}
    for key, v in base.uns["leiden"]["clusterings"].items():
        codes = base.obs[key].cat.codes.to_numpy().astype(np.int64)
        k = int(codes.max()) + 1
        n_cl = store_labels(adata, key, np.concatenate([codes + i * k for i in range(copies)]))
        info[key] = {**v, "n_clusters": n_cl}
    adata.uns["leiden"] = {"params": dict(base.uns["leiden"]["params"]), "clusterings": info}
    del g, base
else:
    scc.tl.leiden(adata, resolutions=res)
t_leiden = time.perf_counter() - t

import os, threading
def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0
def _children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out
peak = {"total": 0.0, "self": 0.0}
stop = threading.Event()
def _poll():
    me = os.getpid()
    while not stop.is_set():
        own = _rss_mb(me)
        total = own + sum(_rss_mb(c) for c in _children(me))
        peak["total"] = max(peak["total"], total)
        peak["self"] = max(peak["self"], own)
        time.sleep(0.2)
before_mb = _rss_mb(os.getpid())
poller = threading.Thread(target=_poll, daemon=True)
poller.start()
cpu0 = time.process_time()
t = time.perf_counter()
r = scc.tl.stability(adata, n_seeds=n_seeds, n_subsamples=n_subsamples, n_jobs=-1)
stage = time.perf_counter() - t
stop.set()
poller.join()
self_ru = resource.getrusage(resource.RUSAGE_SELF)
child_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
s = r.summary
out = {
    "n_cells": adata.n_obs, "edges": int(adata.obsp["connectivities"].nnz), "leiden_s": t_leiden, "stage_s": stage,
    "stage_cpu_self_s": time.process_time() - cpu0, "cpu_children_s": child_ru.ru_utime + child_ru.ru_stime,
    "rss_before_stage_mb": before_mb, "stage_peak_self_mb": peak["self"], "stage_peak_total_mb": peak["total"],
    "n_runs": int(s["n_runs"].iloc[0]), "keys": len(s),
    "summary": {k: {"n_clusters": int(v["n_clusters"]), "ari_seeds": round(float(v["ari_seeds"]), 4),
                    "ari_subsample": round(float(v["ari_subsample"]), 4) if v["ari_subsample"] == v["ari_subsample"] else None,
                    "cluster_stability_min": round(float(v["cluster_stability_min"]), 3), "stable": bool(v["stable"])}
                for k, v in s.iterrows()},
    "recommended": list(r.recommendation["key"]),
}
if "cell_type" in adata.obs and copies == 1:
    from sklearn.metrics import adjusted_rand_score
    for k in s.index:
        out["summary"][k]["ari_type"] = round(adjusted_rand_score(adata.obs["cell_type"], adata.obs[k]), 3)
        out["summary"][k]["ari_state"] = round(adjusted_rand_score(adata.obs["cell_state"], adata.obs[k]), 3)
print(json.dumps(out))
"""


def make_input(n_cells: int, workdir: Path) -> Path:
    """h5ad with X_pca_harmony, cell_type, cell_state and the kNN graph (cached)."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    import scclust as scc

    path = workdir / f"stab_input_{n_cells}_v2.h5ad"
    if path.exists():
        return path
    base_path = workdir / "stab_base_7332.h5ad"
    if not base_path.exists():
        sim = scc.datasets.simulate(7332, seed=0, states=True)
        base = ad.AnnData(
            obs=sim.obs[["cell_type", "cell_state"]].copy(), obsm={"X_pca_harmony": sim.obsm["X_pca_harmony"]}
        )
        base.write_h5ad(base_path)
    base = ad.read_h5ad(base_path)
    if n_cells == 7332:
        a = base
    else:
        X = np.asarray(base.obsm["X_pca_harmony"], dtype=np.float64)
        states = base.obs["cell_state"].to_numpy()
        rng = np.random.default_rng(1)
        src = rng.integers(0, base.n_obs, n_cells)
        sd = pd.DataFrame(X).groupby(states).std().fillna(0).reindex(states).to_numpy()
        Xn = X[src] + rng.normal(size=(n_cells, X.shape[1])) * sd[src]
        obs = base.obs.iloc[src].reset_index(drop=True)
        obs.index = [f"c{i}" for i in range(n_cells)]
        a = ad.AnnData(obs=obs, obsm={"X_pca_harmony": Xn.astype(np.float32)})
    t = time.perf_counter()
    scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    print(f"  graph of {n_cells:,} cells: {time.perf_counter() - t:.1f} s (not part of the stage)", flush=True)
    a.write_h5ad(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[7332])
    ap.add_argument("--resolutions", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 2.0])
    ap.add_argument("--n-seeds", type=int, default=20)
    ap.add_argument("--n-subsamples", type=int, default=0, help="subsample runs at 80 %% (the stage's default is 5)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; workdir {args.workdir}"
    )
    for n in args.cells:
        copies = 10 if n == 1_000_000 else 1
        path = make_input(100_000 if copies > 1 else n, args.workdir)
        print(
            f"\n=== {n:,} cells: {len(args.resolutions)} resolutions x ({args.n_seeds} seeds + {args.n_subsamples} subsamples) ===",
            flush=True,
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                STAGE,
                str(path),
                json.dumps(args.resolutions),
                str(args.n_seeds),
                str(args.n_subsamples),
                str(copies),
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"  process {time.perf_counter() - t0:.1f} s; Leiden (labels) {r['leiden_s']:.1f} s; "
            f"STAGE {r['stage_s']:.1f} s wall ({r['n_runs']} runs x {r['keys']} keys; CPU: this process "
            f"{r['stage_cpu_self_s']:.1f} s, worker {r['cpu_children_s']:.1f} s); "
            f"RSS before the stage {r['rss_before_stage_mb']:.0f} MB; during the stage peak {r['stage_peak_self_mb']:.0f} MB "
            f"in this process, {r['stage_peak_total_mb']:.0f} MB with its worker (sampled every 0.2 s) "
            f"(graph: {r['edges']:,} stored entries)"
        )
        for k, v in r["summary"].items():
            print(f"    {k:<12} {json.dumps(v)}")
        print(f"  recommended: {r['recommended']}", flush=True)


if __name__ == "__main__":
    main()
