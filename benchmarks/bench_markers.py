"""Marker genes at scale: scclust.tl.markers against scanpy's Wilcoxon, and scclust alone from a counts store.

    python benchmarks/bench_markers.py --cells 100000 1000000

Data: :func:`scclust.datasets.simulate_counts_store` (20,000 genes, ~970 detected per cell), written
once into ``--cache`` (1M cells: ~6 min). Clusters: the 20 simulated cell states (``cell_state``).

- up to ``--memory-max`` cells: the counts read into memory, normalize_total + log1p (scanpy);
  ``tl.markers(method="wilcoxon")`` and ``sc.tl.rank_genes_groups(method="wilcoxon",
  tie_correct=True, pts=True)`` each in its own process; scanpy is stopped after
  ``--scanpy-timeout`` seconds (then its time is a lower bound). When both finish, their scores,
  BH-adjusted p-values and log fold changes are compared for every gene and cluster;
- above: ``tl.markers`` from the store (``.uns["counts_store"]``, no ``.raw``: every gene read
  from the store and log-normalized there) on a local Dask cluster (one worker per core).

Time is wall time of the call (loading excluded, reported apart); memory is the peak of the summed
RSS of the process and its children (the Dask workers), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def store_path(cache: Path, n: int, n_genes: int) -> Path:
    path = cache / f"counts_{n}x{n_genes}.h5ad"
    if not path.exists():
        from scclust.datasets import simulate_counts_store

        print(f"simulating {n:,} cells into {path} (once)", flush=True)
        t0 = time.perf_counter()
        simulate_counts_store(n, path, n_genes=n_genes, seed=0)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------------------ children
def child(args) -> None:
    import anndata as ad
    import numpy as np
    import scanpy as sc

    path = Path(args.store)
    out: dict = {}
    t0 = time.perf_counter()
    if args.child == "store":
        import h5py
        from anndata.io import read_elem

        from scclust import tl
        from scclust._dask import dask_client
        from scclust.pp._lazy import store_nnz

        with h5py.File(path, "r") as f:
            obs = read_elem(f["obs"])
            var = read_elem(f["var"])
        n_obs, n_vars, nnz = store_nnz(path)
        adata = ad.AnnData(obs=obs[["cell_state"]])
        adata.uns["counts_store"] = {
            "path": str(path.resolve()),
            "format": "h5ad",
            "n_obs": n_obs,
            "n_vars": n_vars,
            "nnz": nnz,
            "genes_kept": np.ones(len(var), bool),
            "target_sum": 1e4,
            "raw_complete": False,
        }
        out["load_seconds"] = time.perf_counter() - t0
        with dask_client() as client:
            out["workers"] = len(client.scheduler_info()["workers"])
            t1 = time.perf_counter()
            tl.markers(adata, groupby="cell_state")
            out["seconds"] = time.perf_counter() - t1
        res = adata.uns["markers_cell_state"]
        out["n_genes"] = len(res["names"])
        out["top3"] = {c: list(res["names"][c][:3]) for c in res["names"].dtype.names[:4]}
    else:
        adata = ad.read_h5ad(path)
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        out["load_seconds"] = time.perf_counter() - t0
        out["nnz"] = int(adata.X.nnz)
        t1 = time.perf_counter()
        if args.child == "scclust":
            from scclust import tl

            tl.markers(adata, groupby="cell_state", key_added="m")
        else:
            sc.tl.rank_genes_groups(adata, "cell_state", method="wilcoxon", tie_correct=True, pts=True, key_added="m")
        out["seconds"] = time.perf_counter() - t1
        df = sc.get.rank_genes_groups_df(adata, None, key="m")
        df[["group", "names", "scores", "pvals_adj", "logfoldchanges"]].to_pickle(args.result)
    out["n_cells"] = int(adata.n_obs)
    print("RESULT " + json.dumps(out), flush=True)


def measured(cmd: list[str], timeout: float | None) -> dict:
    """Run ``cmd``; its RESULT line, wall time, peak summed RSS of its process tree; ``timed_out``."""
    from peak_rss import tree_rss

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak, timed_out = 0, False
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, sum(tree_rss(proc.pid).values()))
        if timeout is not None and time.perf_counter() - t0 > timeout:
            import signal

            for pid in tree_rss(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            timed_out = True
            break
        time.sleep(0.5)
    proc.wait()
    reader.join(timeout=5)
    res = next((json.loads(x[7:]) for x in lines if x.startswith("RESULT ")), {})
    return {
        **res,
        "wall": time.perf_counter() - t0,
        "peak_gb": peak / 2**30,
        "timed_out": timed_out,
        "returncode": proc.returncode,
    }


def compare(ours_path: Path, theirs_path: Path) -> dict:
    import numpy as np
    import pandas as pd

    a, b = pd.read_pickle(ours_path), pd.read_pickle(theirs_path)
    m = a.merge(b, on=["group", "names"], suffixes=("", "_sc"))
    out = {"rows": len(m), "rows_ours": len(a), "rows_scanpy": len(b)}
    for c in ("scores", "pvals_adj", "logfoldchanges"):
        x, y = m[c].to_numpy(float), m[f"{c}_sc"].to_numpy(float)
        out[f"{c}_max_rel"] = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/scclust_bench_markers"))
    ap.add_argument("--memory-max", type=int, default=200_000, help="largest size compared with scanpy in memory")
    ap.add_argument("--scanpy-timeout", type=float, default=1800.0, help="seconds; then scanpy's time is a lower bound")
    ap.add_argument("--no-scanpy", action="store_true")
    ap.add_argument("--child", choices=["scclust", "scanpy", "store"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    rows = []
    for n in args.cells:
        path = store_path(args.cache, n, args.genes)
        if n <= args.memory_max:
            ours = measured(
                [*me, "--child", "scclust", "--store", str(path), "--result", str(args.cache / f"ours_{n}.pkl")], None
            )
            rows.append({"cells": n, "tool": "scclust tl.markers (memory)", **ours})
            print(json.dumps(rows[-1]), flush=True)
            if not args.no_scanpy:
                sc_res = measured(
                    [*me, "--child", "scanpy", "--store", str(path), "--result", str(args.cache / f"scanpy_{n}.pkl")],
                    args.scanpy_timeout,
                )
                rows.append({"cells": n, "tool": "scanpy rank_genes_groups wilcoxon", **sc_res})
                print(json.dumps(rows[-1]), flush=True)
                if sc_res["timed_out"]:
                    lower = args.scanpy_timeout - sc_res.get("load_seconds", 0.0)
                    print(
                        f"scanpy stopped after {args.scanpy_timeout:.0f} s: > {lower:.0f} s for the call; speed-up "
                        f">= {lower / ours['seconds']:.1f}x",
                        flush=True,
                    )
                else:
                    print(
                        f"speed-up {sc_res['seconds'] / ours['seconds']:.1f}x; equality: "
                        f"{json.dumps(compare(args.cache / f'ours_{n}.pkl', args.cache / f'scanpy_{n}.pkl'))}",
                        flush=True,
                    )
        else:
            res = measured([*me, "--child", "store", "--store", str(path)], None)
            rows.append({"cells": n, "tool": "scclust tl.markers (counts store, Dask)", **res})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| cells | tool | call (s) | wall incl. load (s) | peak RSS (GB) |\n|---|---|---|---|---|")
    for r in rows:
        t = f"> {r['wall']:.0f} (stopped)" if r.get("timed_out") else f"{r.get('seconds', float('nan')):.1f}"
        print(f"| {r['cells']:,} | {r['tool']} | {t} | {r['wall']:.1f} | {r['peak_gb']:.2f} |")


if __name__ == "__main__":
    main()
