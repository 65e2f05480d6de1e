"""Atlas-scale benchmark: each clustering stage's time and peak memory, scclust vs the lab's way.

    python benchmarks/bench_scale.py --cells 100000 1000000 [--lab-max 100000] [--workdir DIR]

Input: ``scclust.datasets.simulate_integrated(n)`` (tutorial-shaped: 50-dim ``X_pca_harmony``,
type -> state hierarchy, ``X_umap_harmony``, QC columns, 12 marker genes), written once per size
to ``--workdir``.

Each side runs in its own cold Python process (imports and reading the file included):

* scclust: ``pp.neighbors`` (k = 20 on 30 dims, ``backend="auto"``: exact up to 50,000 cells, ivf
  above), ``tl.leiden`` at 0.4 / 0.6 / 1.0 / 1.4 (igraph, ``n_jobs=-1``), ``tl.kmeans`` at 5 / 10 /
  15 (the lab's ``n_init="auto"``, seed 0), ``tl.hclust`` Ward cut at 5 / 10 / 15 (``backend="auto"``:
  the micro-cluster path when the exact tree is estimated to take over 2 minutes).
* the lab (up to ``--lab-max`` cells): ``sc.pp.neighbors(n_neighbors=20, n_pcs=30,
  use_rep="X_pca_harmony")`` (pynndescent, numba compilation included), ``sc.tl.leiden`` at the 4
  resolutions (scanpy's default flavor, leidenalg), ``KMeans(n_clusters=k, random_state=0)`` at
  5 / 10 / 15. ``AgglomerativeClustering(linkage="ward")`` is skipped with its memory printed (its
  n x n distance matrix).

Printed per stage: seconds and the process's peak RSS so far (``ru_maxrss``), then the process
wall time from spawn to exit and, where both sides ran, the ratio. With ``--agreement`` (sizes up
to ``--lab-max``) a third process measures the kNN backends (exact, ivf, hnsw: time and recall)
and the ARI of Leiden 0.4 / 0.6 on the ivf graph vs the exact graph.
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

RES = [0.4, 0.6, 1.0, 1.4]
KS = [5, 10, 15]

COMMON = r"""
import json, resource, sys, time
T0 = time.perf_counter()
steps = []
def mark(name, t):
    steps.append({"stage": name, "seconds": round(time.perf_counter() - t, 2),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)})
    print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
"""

OURS = (
    COMMON
    + r"""
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
import anndata as ad
import scclust as scc
mark("import", T0)
path = sys.argv[1]
t = time.perf_counter(); adata = ad.read_h5ad(path); mark("read", t)
t = time.perf_counter()
scc.pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
mark("neighbors", t)
t = time.perf_counter(); scc.tl.leiden(adata, resolutions=RES, n_jobs=-1); mark("leiden x4", t)
t = time.perf_counter(); scc.tl.kmeans(adata, use_rep="X_pca_harmony", n_clusters=KS, n_init="auto"); mark("kmeans x3", t)
t = time.perf_counter(); scc.tl.hclust(adata, use_rep="X_pca_harmony", n_clusters=KS); mark("hclust ward x3", t)
info = {"knn": {k: v for k, v in adata.uns["neighbors"]["knn"].items()}, "hclust_backend": adata.uns["hclust"]["backend"],
        "n_clusters": {k: int(adata.obs[k].nunique()) for k in adata.obs if k.startswith(("leiden_", "kmeans", "hclust_"))}}
print(json.dumps({"steps": steps, "info": info}))
""".replace("RES", repr(RES)).replace("KS", repr(KS))
)

LAB = (
    COMMON
    + r"""
import warnings; warnings.simplefilter("ignore")
import anndata as ad
import pandas as pd
import scanpy as sc
from sklearn.cluster import KMeans
mark("import", T0)
path = sys.argv[1]
t = time.perf_counter(); adata = ad.read_h5ad(path); mark("read", t)
t = time.perf_counter(); sc.pp.neighbors(adata, n_pcs=30, n_neighbors=20, use_rep="X_pca_harmony"); mark("neighbors", t)
t = time.perf_counter()
for r in RES:
    sc.tl.leiden(adata, key_added=f"leiden_{r}", resolution=r)
mark("leiden x4", t)
X = adata.obsm["X_pca_harmony"]
t = time.perf_counter()
for k in KS:
    adata.obs[f"kmeans{k}"] = pd.Categorical(KMeans(n_clusters=k, random_state=0).fit(X).labels_.astype(str))
mark("kmeans x3", t)
n = adata.n_obs
steps.append({"stage": "hclust ward x3", "skipped": f"AgglomerativeClustering(linkage='ward') needs the n x n distance matrix: {n * (n - 1) / 2 * 8 / 1e9:.0f} GB at {n} cells"})
print(json.dumps({"steps": steps, "info": {}}))
""".replace("RES", repr(RES)).replace("KS", repr(KS))
)

AGREE = r"""
import json, sys, time
import anndata as ad
import numpy as np
import scclust as scc
from sklearn.metrics import adjusted_rand_score
adata = ad.read_h5ad(sys.argv[1])
out = {"knn": {}}
for backend in ("exact", "ivf", "hnsw"):
    t = time.perf_counter()
    scc.pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20, backend=backend, key_added=backend)
    out["knn"][backend] = {"seconds": round(time.perf_counter() - t, 1), "recall": adata.uns[backend]["knn"]["recall"]}
    print(json.dumps({backend: out["knn"][backend]}), file=sys.stderr, flush=True)
for g in ("exact", "ivf"):
    scc.tl.leiden(adata, resolutions=[0.4, 0.6], neighbors_key=g, key_added=f"l{g}", n_jobs=2)
out["leiden_ari_ivf_vs_exact"] = {r: round(adjusted_rand_score(adata.obs[f"lexact_{r}"], adata.obs[f"livf_{r}"]), 4) for r in ("0.4", "0.6")}
# the noise floor: the exact graph, Leiden with another seed
scc.tl.leiden(adata, resolutions=[0.4, 0.6], neighbors_key="exact", key_added="lseed1", random_state=1, n_jobs=2)
out["leiden_ari_seed1_vs_seed0_exact_graph"] = {r: round(adjusted_rand_score(adata.obs[f"lexact_{r}"], adata.obs[f"lseed1_{r}"]), 4) for r in ("0.4", "0.6")}
print(json.dumps(out))
"""


def run(code: str, path: Path, log: Path, timeout: float | None = None) -> dict:
    """Run ``code`` in a cold process; its wall time from spawn to exit and its last stdout line.
    Past ``timeout`` seconds the process is stopped and the steps it finished are returned with
    ``timed_out`` set (the wall time is then a lower bound)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, str(path)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            steps = []
            for line in log.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "stage" in rec:
                    steps.append(rec)
            done = sum(st["seconds"] for st in steps if st["stage"] not in ("import", "read"))
            steps.append({"stage": "(next step)", "skipped": f"not finished after {timeout - done:.0f} s (timeout)"})
            return {"wall": round(time.perf_counter() - t0, 1), "steps": steps, "info": {}, "timed_out": True}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed (status {proc.returncode}); see {log}")
    return {"wall": round(wall, 1), **json.loads(proc.stdout.strip().splitlines()[-1])}


def make_input(n: int, workdir: Path) -> Path:
    path = workdir / f"integrated_{n}.h5ad"
    if not path.exists():
        from scclust.datasets import simulate_integrated

        t = time.perf_counter()
        simulate_integrated(n, path=str(path))
        print(f"input: simulate_integrated({n}) written in {time.perf_counter() - t:.1f} s -> {path}", flush=True)
    return path


def show(name: str, res: dict) -> None:
    print(f"  {name}: process wall {res['wall']:.1f} s")
    for s in res["steps"]:
        if "skipped" in s:
            print(f"    {s['stage']:<16} skipped: {s['skipped']}")
        else:
            print(f"    {s['stage']:<16} {s['seconds']:8.1f} s   peak RSS so far {s['peak_rss_gb']:5.2f} GB")
    if res.get("info"):
        print(f"    {json.dumps(res['info'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--lab-max", type=int, default=100_000, help="run the lab's way up to this size")
    ap.add_argument(
        "--lab-timeout",
        type=float,
        default=1800,
        help="stop the lab's way after this many seconds (ratio then a lower bound)",
    )
    ap.add_argument(
        "--agreement", action="store_true", help="kNN backends and Leiden ivf-vs-exact ARI (sizes <= --lab-max)"
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_scale")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}")
    for n in args.cells:
        path = make_input(n, args.workdir)
        print(f"\n=== {n:,} cells ===", flush=True)
        ours = run(OURS, path, args.workdir / f"ours_{n}.log")
        show("scclust", ours)
        if n <= args.lab_max:
            lab = run(LAB, path, args.workdir / f"lab_{n}.log", timeout=args.lab_timeout)
            show("lab (scanpy / scikit-learn)", lab)
            comparable = ("neighbors", "leiden x4", "kmeans x3")
            t_ours = sum(s["seconds"] for s in ours["steps"] if s["stage"] in comparable)
            t_ours_all = ours["wall"]
            if lab.get("timed_out"):
                t_lab = lab["wall"] - sum(s.get("seconds", 0) for s in lab["steps"] if s["stage"] in ("import", "read"))
                print(
                    f"  ratio lab / scclust: the lab's way did not finish in {args.lab_timeout:.0f} s: neighbors + leiden x4 + "
                    f"kmeans x3 >= {t_lab:.1f} / {t_ours:.1f} s = >= {t_lab / t_ours:.1f}x; process wall >= "
                    f"{lab['wall']:.1f} / {t_ours_all:.1f} s = >= {lab['wall'] / t_ours_all:.1f}x"
                )
            else:
                t_lab = sum(s["seconds"] for s in lab["steps"] if s["stage"] in comparable)
                print(
                    f"  ratio lab / scclust: neighbors + leiden x4 + kmeans x3 {t_lab:.1f} / {t_ours:.1f} s = {t_lab / t_ours:.1f}x; "
                    f"process wall (scclust also ran hclust x3) {lab['wall']:.1f} / {t_ours_all:.1f} s = {lab['wall'] / t_ours_all:.1f}x"
                )
            if args.agreement:
                agree = run(AGREE, path, args.workdir / f"agree_{n}.log")
                print(f"  kNN backends (k=20, 30 dims): {json.dumps(agree['knn'])}")
                print(
                    f"  Leiden ARI, ivf graph vs exact graph: {json.dumps(agree['leiden_ari_ivf_vs_exact'])}; "
                    f"exact graph, seed 1 vs seed 0: {json.dumps(agree['leiden_ari_seed1_vs_seed0_exact_graph'])}"
                )
        print(
            f"  load average now {os.getloadavg()[0]:.1f} (2 cores shared with other jobs: read times as upper bounds)",
            flush=True,
        )


if __name__ == "__main__":
    main()
