"""The sketch path against the full path: time, peak memory, agreement, a planted rare population.

    python benchmarks/bench_sketch.py --cells 1000000 [--fraction 0.05] [--methods hybrid uniform geometric leverage]
    python benchmarks/bench_sketch.py --cells 20000 --rare 0.005        # CI size
    python benchmarks/bench_sketch.py --cells 1000000 --dask-only       # the kNN search through a LocalCluster

Input: ``scclust.datasets.simulate_integrated(n)`` with a planted population of ``--rare`` of the
cells (default 0.05 %): random cells moved, each with its own noise, to a new centre 8 units from
the centre of one cell type (the types are ~9 apart, a cell's noise ~2.7 around its state), written
once per size to ``--workdir``.

Each path runs in its own cold Python process (import and read included), with the atlas stages
on 30 of the 50 dimensions:

* full: ``pp.neighbors`` (k = 20, ``backend="auto"``, ``min_recall`` from ``--min-recall``), ``tl.leiden`` at 0.4 / 0.6 / 1.0 / 1.4
  (``n_jobs=-1``) and again with seed 1 (the full path's agreement with itself: the bar the sketch
  path is held to), ``tl.kmeans`` at 5 / 10 / 15;
* sketch (one process per ``--methods`` entry): ``pp.sketch`` (``--fraction`` of the cells), the same
  stages on the sketch, ``tl.project_labels`` of every clustering to all cells (k = 15, weighted vote).

With ``--dask`` (or ``--dask-only``), a further process builds the full path's graph twice, in this
process and through a 2-worker ``distributed.LocalCluster`` (1 thread each) reached by its address
(as ``dask.address`` does), and prints both times and whether the neighbour ids are identical.

Printed: each step's seconds and the process's peak RSS so far (``ru_maxrss``), the process wall
time, and per resolution the ARI of the sketch path's labels with the full path's next to the
full path's seed-to-seed ARI; for the planted population, in each path, the cluster holding most
of its cells: the share of that cluster it makes up (purity) and the share of it in that cluster.
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

from bench_scale import COMMON as _SCALE_COMMON  # the same step marks and peak memory as bench_scale

RES = [0.4, 0.6, 1.0, 1.4]
KS = [5, 10, 15]

COMMON = (
    _SCALE_COMMON
    + r"""
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
import anndata as ad
import numpy as np
import scclust as scc
mark("import", T0)
path, out = sys.argv[1], sys.argv[2]
t = time.perf_counter(); adata = ad.read_h5ad(path); mark("read", t)
"""
)

FULL = (
    COMMON
    + r"""
min_recall = float(sys.argv[3])
t = time.perf_counter()
scc.pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20, min_recall=min_recall); mark("neighbors", t)
t = time.perf_counter(); scc.tl.leiden(adata, resolutions=RES, n_jobs=-1); mark("leiden x4", t)
t = time.perf_counter(); scc.tl.kmeans(adata, use_rep="X_pca_harmony", n_clusters=KS, n_init="auto"); mark("kmeans x3", t)
t = time.perf_counter()
scc.tl.leiden(adata, resolutions=RES, n_jobs=-1, random_state=1, key_added="seed1"); mark("(leiden x4, seed 1)", t)
keys = [k for k in adata.obs if k.startswith(("leiden_", "seed1_", "kmeans"))]
np.savez_compressed(out, **{k: adata.obs[k].cat.codes.to_numpy() for k in keys})
print(json.dumps({"steps": steps, "info": {"knn": adata.uns["neighbors"]["knn"]}}))
""".replace("RES", repr(RES)).replace("KS", repr(KS))
)

SKETCH = (
    COMMON
    + r"""
method, fraction, min_recall = sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
t = time.perf_counter()
scc.pp.sketch(adata, fraction=fraction, method=method, use_rep="X_pca_harmony", n_pcs=30)
sk = adata[adata.obs["sketch"].to_numpy()].copy(); mark("sketch", t)
t = time.perf_counter()
scc.pp.neighbors(sk, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20, min_recall=min_recall); mark("neighbors", t)
t = time.perf_counter(); scc.tl.leiden(sk, resolutions=RES, n_jobs=-1); mark("leiden x4", t)
t = time.perf_counter(); scc.tl.kmeans(sk, use_rep="X_pca_harmony", n_clusters=KS, n_init="auto"); mark("kmeans x3", t)
t = time.perf_counter()
table = scc.tl.project_labels(adata, sketch=sk, use_rep="X_pca_harmony", n_pcs=30); mark("projection", t)
keys = [k for k in adata.obs if k.startswith(("leiden_", "kmeans")) and not k.endswith("_confidence")]
np.savez_compressed(out, **{k: adata.obs[k].cat.codes.to_numpy() for k in keys},
                    **{f"{k}_confidence": adata.obs[f"{k}_confidence"].to_numpy() for k in keys})
info = {"rare_in_sketch": int(sk.obs["rare"].sum()), "n_sketch": sk.n_obs, "projected": table.attrs["projected"],
        "knn": sk.uns["neighbors"]["knn"], **({"boxes": adata.uns["sketch"]["boxes"]} if "boxes" in adata.uns["sketch"] else {})}
print(json.dumps({"steps": steps, "info": info}))
""".replace("RES", repr(RES)).replace("KS", repr(KS))
)


DASK_KNN = r"""
import json, sys, time
import numpy as np
import anndata as ad
from distributed import LocalCluster
import scclust as scc
from scclust._dask import dask_client
adata = ad.read_h5ad(sys.argv[1])
X = adata.obsm["X_pca_harmony"]
b = ad.AnnData(obsm={"X_pca_harmony": X}); a = b.copy()
t = time.perf_counter(); scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20); t_local = time.perf_counter() - t
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
    t = time.perf_counter()
    with dask_client(address=cluster.scheduler_address):
        scc.pp.neighbors(b, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    t_dask = time.perf_counter() - t
same = all((a.obsp[k] != b.obsp[k]).nnz == 0 for k in ("distances", "connectivities"))
print(json.dumps({"local_s": round(t_local, 1), "dask_s": round(t_dask, 1), "identical": same,
                  "knn_local": a.uns["neighbors"]["knn"], "knn_dask": b.uns["neighbors"]["knn"]}))
"""


def make_input(n: int, rare: float, workdir: Path) -> Path:
    path = workdir / f"planted_{n}_{rare:g}.h5ad"
    if not path.exists():
        from scclust.datasets import plant_rare, simulate_integrated

        t = time.perf_counter()
        plant_rare(simulate_integrated(n), max(1, round(rare * n))).write_h5ad(path)
        print(
            f"input: simulate_integrated({n}) + {rare:g} planted, written in {time.perf_counter() - t:.1f} s -> {path}"
        )
    return path


def run(code: str, args: list[str], log: Path) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed (status {proc.returncode}); see {log}")
    return {"wall": round(time.perf_counter() - t0, 1), **json.loads(proc.stdout.strip().splitlines()[-1])}


def found(codes, rare) -> tuple[float, float]:
    """(purity, recovered) of the cluster holding most of the planted cells."""
    import numpy as np

    c = np.bincount(codes[rare]).argmax()
    inside = codes == c
    return float((inside & rare).sum() / inside.sum()), float((inside & rare).sum() / rare.sum())


def main() -> None:
    import anndata as ad
    import numpy as np
    from sklearn.metrics import adjusted_rand_score as ari

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--rare", type=float, default=0.0005, help="share of the cells in the planted population")
    ap.add_argument("--methods", nargs="+", default=["hybrid"], choices=["hybrid", "geometric", "uniform", "leverage"])
    ap.add_argument(
        "--min-recall",
        type=float,
        default=0.995,
        help="neighbors.min_recall of both paths (the simulator at 1M: ivf levels off near 0.993)",
    )
    ap.add_argument("--dask", action="store_true", help="also the full graph through a 2-worker LocalCluster")
    ap.add_argument("--dask-only", action="store_true", help="only the graph through a 2-worker LocalCluster")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_sketch")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}")
    for n in args.cells:
        path = make_input(n, args.rare, args.workdir)
        rare = ad.read_h5ad(path, backed="r").obs["rare"].to_numpy()
        if args.dask or args.dask_only:
            t0 = time.perf_counter()
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            with open(args.workdir / f"dask_knn_{n}.log", "w") as err:
                proc = subprocess.run(
                    [sys.executable, "-c", DASK_KNN, str(path)],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    env=env,
                    check=True,
                )
            d = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"\n=== {n:,} cells: kNN graph (k = 20, 30 dims) here vs through a 2-worker LocalCluster ===")
            print(
                f"  here {d['local_s']} s ({d['knn_local']['backend']}, recall {d['knn_local']['recall']:.4f}); "
                f"on the workers {d['dask_s']} s ({d['knn_dask'].get('dask')}); graphs identical: {d['identical']}; "
                f"process wall {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            if args.dask_only:
                continue
        print(f"\n=== {n:,} cells, planted population {rare.sum():,} cells ({100 * args.rare:g} %) ===", flush=True)
        full_out = args.workdir / f"full_{n}.npz"
        full = run(FULL, [str(path), str(full_out), str(args.min_recall)], args.workdir / f"full_{n}.log")
        F = np.load(full_out)
        paths = {"full": full}
        labels = {}
        for m in args.methods:
            out = args.workdir / f"sketch_{m}_{n}.npz"
            paths[f"sketch {m}"] = run(
                SKETCH,
                [str(path), str(out), m, str(args.fraction), str(args.min_recall)],
                args.workdir / f"sketch_{m}_{n}.log",
            )
            labels[m] = np.load(out)
        names = list(paths)
        steps = list(dict.fromkeys(s["stage"] for p in paths.values() for s in p["steps"]))
        print(f"  {'step':<22}" + "".join(f"{name:>26}" for name in names))
        for st in steps:
            cells = []
            for name in names:
                rec = next((s for s in paths[name]["steps"] if s["stage"] == st), None)
                cells.append(f"{rec['seconds']:8.1f} s {rec['peak_rss_gb']:5.2f} GB" if rec else "-")
            print(f"  {st:<22}" + "".join(f"{c:>26}" for c in cells))
        print(f"  {'process wall':<22}" + "".join(f"{paths[name]['wall']:>24.1f} s" for name in names))
        clustering = {
            name: sum(s["seconds"] for s in p["steps"] if s["stage"] not in ("import", "read", "(leiden x4, seed 1)"))
            for name, p in paths.items()
        }
        print(f"  {'clustering (no read)':<22}" + "".join(f"{clustering[name]:>24.1f} s" for name in names))
        for m in args.methods:
            info = paths[f"sketch {m}"]["info"]
            print(
                f"  sketch {m}: {info['n_sketch']:,} cells, {info['rare_in_sketch']} of the planted population; "
                f"projection index {info['projected']['index']} (recall {info['projected'].get('recall', 1.0):.3f})"
            )
        print("  ARI with the full path's labels (full path, seed 1 vs seed 0: the bar)")
        for r in RES:
            key = f"leiden_{r}"
            seeds = ari(F[key], F[f"seed1_{r}"])
            row = "".join(f"   {m} {ari(F[key], labels[m][key]):.4f}" for m in args.methods)
            ok = " ".join("ok" if ari(F[key], labels[m][key]) >= seeds else "below" for m in args.methods)
            print(
                f"    {key:<12} seed {seeds:.4f}{row}   ({ok})  clusters full {F[key].max() + 1}, "
                + ", ".join(f"{m} {labels[m][key].max() + 1}" for m in args.methods)
            )
        for k in KS:
            key = f"kmeans{k}"
            print(
                f"    {key:<12}           " + "".join(f"   {m} {ari(F[key], labels[m][key]):.4f}" for m in args.methods)
            )
        print("  planted population: (purity of the cluster holding most of it, share of it in that cluster)")
        for r in RES:
            key = f"leiden_{r}"
            conf = {m: float(labels[m][f"{key}_confidence"][rare].mean()) for m in args.methods}
            print(
                f"    {key:<12} full {found(F[key], rare)}"
                + "".join(
                    f"   {m} {tuple(round(v, 3) for v in found(labels[m][key], rare))} conf {conf[m]:.3f}"
                    for m in args.methods
                )
            )
        print(
            f"  load average now {os.getloadavg()[0]:.1f} (2 cores shared with other jobs: read times as upper bounds)",
            flush=True,
        )


if __name__ == "__main__":
    main()
