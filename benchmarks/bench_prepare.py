"""Out-of-core prepare at atlas scale: per-step time and peak memory (the run and its Dask workers).

    python benchmarks/bench_prepare.py --cells 200000 1000000 [--workdir DIR] [--scanpy-max 200000]
                                       [--workflow] [--no-umap]

Input: ``scclust.datasets.simulate_counts_store(n, 20,000 genes)`` (~970 detected genes per cell,
~1e9 non-zeros at 1M cells) written once per size to ``--workdir`` (the simulation is timed too).

Each side runs in its own cold Python process while this script samples, every 0.25 s from /proc,
the resident memory of that process and all its descendants (the Dask workers) and reports the
peak of the sum:

* scclust: ``pp.read_counts_lazy`` -> ``pp.prepare(backend="dask")`` on a ``LocalCluster`` of one
  single-threaded worker per core (the run's defaults), QC lab filters (min_genes 200,
  max_pct_mt 20, min_cells 3), Harmony on ``sample``, kNN k=20 on 30 dims, UMAP; per-step seconds
  from ``.uns["prepare"]["seconds"]``;
* scanpy (up to ``--scanpy-max`` cells): the plain in-memory chain ``read_h5ad`` ->
  ``calculate_qc_metrics`` -> ``filter_cells`` / ``filter_genes`` -> ``normalize_total`` -> ``log1p``
  -> ``highly_variable_genes`` -> ``scale(max_value=10)`` -> ``pca(50)`` -> harmonypy ->
  ``sc.pp.neighbors`` -> ``sc.tl.umap``;
* ``--workflow``: the whole CLI run (``configs/atlas_ooc.yaml``: prepare out of core, Leiden, the
  T/NK subclustering from the counts store) with its wall time and peak memory.

The results are printed as JSON lines and appended to ``--workdir/bench_prepare.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

OURS = r"""
import json, logging, sys, time
def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    from scclust import pp
    from scclust._dask import dask_client
    t0 = time.perf_counter()
    with dask_client() as client:
        t_cluster = time.perf_counter() - t0
        adata = pp.read_counts_lazy(sys.argv[1])
        out = pp.prepare(adata, backend="dask", batch_key="sample", qc={"min_genes": 200, "max_pct_mt": 20.0, "min_cells": 3},
                         umap={} if sys.argv[2] == "1" else None)
    steps = {"cluster_start": round(t_cluster, 2), **out.uns["prepare"]["seconds"]}
    print("RESULT " + json.dumps({"steps": steps, "n_obs": out.n_obs, "n_hvg": out.n_vars}), flush=True)
if __name__ == "__main__":
    main()
"""

SCANPY = r"""
import json, sys, time
import anndata as ad, numpy as np, scanpy as sc
steps = {}
def step(name, t):
    steps[name] = round(time.perf_counter() - t, 2)
    print(name, steps[name], file=sys.stderr, flush=True)
t = time.perf_counter(); a = ad.read_h5ad(sys.argv[1]); step("read", t)
t = time.perf_counter()
a.var["mt"] = a.var_names.str.startswith("MT-")
sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
a = a[(a.obs["n_genes_by_counts"] >= 200) & (a.obs["pct_counts_mt"] <= 20)].copy()
sc.pp.filter_genes(a, min_cells=3); step("qc_filter", t)
t = time.perf_counter()
sc.pp.normalize_total(a, target_sum=1e4); sc.pp.log1p(a); a.raw = a
sc.pp.highly_variable_genes(a, min_mean=0.0125, max_mean=3, min_disp=0.5); step("normalize_hvg", t)
t = time.perf_counter()
a = a[:, a.var["highly_variable"]].copy(); sc.pp.scale(a, max_value=10); sc.pp.pca(a, n_comps=50); step("scale_pca", t)
t = time.perf_counter()
import harmonypy
ho = harmonypy.run_harmony(a.obsm["X_pca"], a.obs, ["sample"], max_iter_harmony=10, verbose=False)
Z = np.asarray(ho.Z_corr); a.obsm["X_pca_harmony"] = Z if Z.shape[0] == a.n_obs else Z.T; step("harmony", t)
t = time.perf_counter(); sc.pp.neighbors(a, n_neighbors=20, n_pcs=30, use_rep="X_pca_harmony"); step("neighbors", t)
if sys.argv[2] == "1":
    t = time.perf_counter(); sc.tl.umap(a); step("umap", t)
print("RESULT " + json.dumps({"steps": steps, "n_obs": a.n_obs, "n_hvg": a.n_vars}), flush=True)
"""


UMAP_SCAN = r"""
import json, sys, time
from scclust import pp
from scclust.datasets import simulate_integrated
n = int(sys.argv[1])
a = simulate_integrated(n_cells=n)
t = time.perf_counter(); pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20); knn = time.perf_counter() - t
out = {"n_cells": n, "neighbors_seconds": round(knn, 1), "umap_seconds": {}}
w = simulate_integrated(n_cells=2000); pp.neighbors(w, use_rep="X_pca_harmony", n_neighbors=20); pp.umap(w, n_epochs=5)  # numba warm-up
for ep in [int(e) for e in sys.argv[2].split(",")]:
    t = time.perf_counter(); pp.umap(a, key_added=f"X_umap_{ep}", n_epochs=ep); out["umap_seconds"][ep] = round(time.perf_counter() - t, 1)
    print(ep, out["umap_seconds"][ep], file=sys.stderr, flush=True)
print("RESULT " + json.dumps(out), flush=True)
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * page
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def _run(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` cold; its wall time, the peak RSS of its process tree and its RESULT line."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.25):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        out, _ = proc.communicate()
        stop.set()
        th.join()
    res = {
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "peak_tree_rss_gb": round(peak[0] / 1e9, 2),
        "returncode": proc.returncode,
    }
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res.update(json.loads(line[7:]))
    if proc.returncode:
        res["log_tail"] = log.read_text()[-1500:]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--workdir", default="bench_prepare_data")
    ap.add_argument("--scanpy-max", type=int, default=200_000, help="largest size for the in-memory scanpy chain")
    ap.add_argument("--no-umap", action="store_true", help="skip UMAP on both sides")
    ap.add_argument("--workflow", action="store_true", help="also time the whole CLI run (configs/atlas_ooc.yaml)")
    ap.add_argument(
        "--umap-scan",
        type=int,
        metavar="N",
        help="only: UMAP time per number of epochs on the kNN graph "
        "of N cells (simulate_integrated), to extrapolate to 1M cells",
    )
    ap.add_argument("--epochs", default="25,50,100,200")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.umap_scan:
        res = _run([sys.executable, "-c", UMAP_SCAN, str(args.umap_scan), args.epochs], work / "umap_scan.log")
        print(json.dumps(res), flush=True)
        with open(work / "bench_prepare.jsonl", "a") as fh:
            fh.write(json.dumps({"side": "umap_scan", **res}) + "\n")
        return
    umap = "0" if args.no_umap else "1"
    results = work / "bench_prepare.jsonl"
    for n in args.cells:
        path = work / f"counts_{n}x{args.genes}.h5ad"
        rows = []
        if not path.exists():
            code = (
                "import sys; from scclust.datasets import simulate_counts_store; "
                f"simulate_counts_store({n}, sys.argv[1], n_genes={args.genes})"
            )
            rows.append({"side": "simulate", **_run([sys.executable, "-c", code, str(path)], work / f"sim_{n}.log")})
            rows[-1]["file_gb"] = round(path.stat().st_size / 1e9, 2)
        rows.append(
            {"side": "scclust_ooc", **_run([sys.executable, "-c", OURS, str(path), umap], work / f"ooc_{n}.log")}
        )
        if n <= args.scanpy_max:
            rows.append(
                {
                    "side": "scanpy_memory",
                    **_run([sys.executable, "-c", SCANPY, str(path), umap], work / f"scanpy_{n}.log"),
                }
            )
            a, b = rows[-2], rows[-1]
            if not a["returncode"] and not b["returncode"]:
                rows.append(
                    {
                        "side": "ratio scanpy/ooc",
                        "wall": round(b["wall_seconds"] / a["wall_seconds"], 2),
                        "peak": round(b["peak_tree_rss_gb"] / a["peak_tree_rss_gb"], 2),
                    }
                )
        if args.workflow:
            cfg = Path(__file__).resolve().parents[1] / "configs" / "atlas_ooc.yaml"
            cmd = [
                sys.executable,
                "-m",
                "scclust",
                "run",
                str(cfg),
                "--input",
                str(path),
                "--outdir",
                str(work / f"run_{n}"),
                "--no-resume",
            ]
            rows.append({"side": "workflow", **_run(cmd, work / f"workflow_{n}.log")})
        for r in rows:
            r.update(n_cells=n, n_genes=args.genes)
            print(json.dumps(r), flush=True)
            with open(results, "a") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
