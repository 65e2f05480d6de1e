"""Stability stage benchmark: time, peak memory and agreement of ``tl.stability``, two designs side by side.

    python benchmarks/bench_stability.py --cells 100000 1000000
    python benchmarks/bench_stability.py --cells 100000 --designs new --max-cells-per-run 20000 10000
    python benchmarks/bench_stability.py --cells 100000 --old-src /path/to/checkout/src   # "old" design
    python benchmarks/bench_stability.py --cells 100000 --designs new --reuse-old          # against the saved old run
    python benchmarks/bench_stability.py --cells 5000 1000000 --input noise --designs new --resolutions 0.1 0.5 1 2
    python benchmarks/bench_stability.py --cells 1000000 --designs new --min-recall 0.98 --figures stability_figures
    python benchmarks/bench_stability.py --cells 1000000 --designs   # the input only (then the stage via the CLI)

Input per size (cached in ``--workdir``; its preparation is printed, not part of the stage):
``scclust.datasets.simulate_integrated(n)`` (the ``builtin:integrated`` input of
``configs/atlas.yaml``: 50-dim ``X_pca_harmony``, type -> state hierarchy), ``pp.neighbors``
(k = 20 on 30 dims, backend auto), ``tl.leiden`` at 10 resolutions 0.1-2.0 (igraph, both cores),
``tl.kmeans`` at k = 5 / 10 / 15 (``n_init="auto"``) and ``tl.hclust`` Ward cut at 5 / 10 / 15
(backend auto: the micro-cluster path above ~60,000 cells). ``--input noise``: 10-dimensional isotropic
Gaussian noise instead (no structure), Leiden only. ``--input transfer``: the stage's cost above
``max_cells_per_run`` without the hours a full-size graph and ten full-size Leiden runs take on a
shared machine: the hierarchy, its Leiden labels made on a 100,000-cell subsample (its own kNN
graph) and given to every cell by its nearest subsample cell, k-means and Ward on all cells, and an
empty full-size graph with the subsample graph's parameters (the stage rebuilds a graph on each
subsample above the cap and never clusters the full graph, so its cost is the same; the agreement
numbers are not those of a real 1M-cell Leiden run).

Each design runs the stage in a fresh Python process, ``tl.stability(adata)`` with the stage's
defaults (``n_seeds=20``, five 80 % subsamples, ``n_jobs=-1``) on every key:

* ``new``: this checkout's ``tl.stability`` (``--max-cells-per-run`` values besides the default);
* ``old``: the previous design from ``--old-src`` (a ``src`` directory of a checkout before it; default
  ``git archive`` of the commit given by ``--old-rev`` into the workdir): every seed run clusters all
  cells, 20 of them per key. It skips the hierarchical keys: on the micro-cluster backend it builds
  the n x n distance matrix of each 80 % subsample (25 GB at 100,000 cells).

Memory: the resident set size of the stage process plus its worker processes, sampled every 0.2 s
from ``/proc`` during the stage only. CPU seconds of the process and of its children are printed, and
the load average before each stage (the machine may be shared). Then, per key, ARI between runs
(``ari_seeds``, ``ari_subsample``), the least stable cluster and the call of each design, and
whether the acceptance holds: ``ari_seeds`` within 0.05 of the old design's, the same strict call
(``score >= min_ari`` and every cluster >= ``min_cluster_stability``) for every key whose score is
not within 0.02 of ``min_ari``, the same recommended set. At sizes with ``cell_type`` the ARI of
each recommended key with the true cell types is printed.
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

RESOLUTIONS = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 2.0]
KS = [5, 10, 15]

PREPARE = r"""
import json, sys, time
import scclust as scc
n, path, res, ks, kind = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
knn = json.loads(sys.argv[6])  # pp.neighbors options (min_recall)
out = {}
t = time.perf_counter()
if kind == "noise":  # structureless: isotropic Gaussian noise in 10 dimensions
    import anndata as ad, numpy as np, pandas as pd
    X = np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
    a = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)), obsm={"X_pca_harmony": X})
else:
    a = scc.datasets.simulate_integrated(n, seed=0)
out["simulate_s"] = time.perf_counter() - t
if kind == "transfer":  # the stage's cost above max_cells_per_run without a full-size graph and Leiden
    import numpy as np
    from scipy import sparse
    from scclust.tl._labels import store_labels
    sub = a[np.sort(np.random.default_rng(0).choice(n, 100_000, replace=False))].copy()
    t = time.perf_counter(); scc.pp.neighbors(sub, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20, **knn)
    scc.tl.leiden(sub, resolutions=res, n_jobs=-1); out["leiden_100k_s"] = time.perf_counter() - t
    import faiss
    index = faiss.IndexFlatL2(30); index.add(np.ascontiguousarray(sub.obsm["X_pca_harmony"][:, :30], dtype=np.float32))
    t = time.perf_counter(); near = index.search(np.ascontiguousarray(a.obsm["X_pca_harmony"][:, :30], dtype=np.float32), 1)[1].ravel(); out["transfer_s"] = time.perf_counter() - t
    info = {}
    for key, v in sub.uns["leiden"]["clusterings"].items():
        info[key] = {**v, "n_clusters": store_labels(a, key, sub.obs[key].cat.codes.to_numpy()[near])}
    a.uns["leiden"] = {"params": dict(sub.uns["leiden"]["params"]), "clusterings": info}
    a.obsp["connectivities"] = sparse.csr_matrix((n, n), dtype=np.float32)  # never clustered above the cap
    a.obsp["distances"] = sparse.csr_matrix((n, n), dtype=np.float32)
    a.uns["neighbors"] = {**sub.uns["neighbors"], "connectivities_key": "connectivities", "distances_key": "distances"}
    del sub
else:
    t = time.perf_counter(); scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30 if kind != "noise" else None, n_neighbors=20, **knn); out["neighbors_s"] = time.perf_counter() - t
    t = time.perf_counter(); scc.tl.leiden(a, resolutions=res, n_jobs=-1); out["leiden_s"] = time.perf_counter() - t
if kind == "noise":
    a.write_h5ad(path)
    print(json.dumps(out))
    sys.exit(0)
t = time.perf_counter(); scc.tl.kmeans(a, n_clusters=ks, use_rep="X_pca_harmony", n_init="auto"); out["kmeans_s"] = time.perf_counter() - t
t = time.perf_counter(); scc.tl.hclust(a, use_rep="X_pca_harmony", n_clusters=ks); out["hclust_s"] = time.perf_counter() - t
out["hclust_backend"] = a.uns["hclust"]["backend"]
a.write_h5ad(path)
print(json.dumps(out))
"""

STAGE = r"""
import json, os, resource, sys, threading, time
import anndata as ad
import numpy as np
import scclust as scc
path, design, kw, figdir = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
adata = ad.read_h5ad(path)
keys = [k for g in ("leiden", "kmeans", "hclust") if g in adata.uns for k in adata.uns[g]["clusterings"]]
if design == "old":
    keys = [k for k in keys if not k.startswith("hclust")]

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
before = _rss_mb(os.getpid())
threading.Thread(target=_poll, daemon=True).start()
cpu0 = time.process_time()
t = time.perf_counter()
r = scc.tl.stability(adata, keys=keys, n_jobs=-1, **kw)
stage = time.perf_counter() - t
stop.set()
child = resource.getrusage(resource.RUSAGE_CHILDREN)
s = r.summary
def f(v, nd=4):
    return None if v != v else round(float(v), nd)
out = {
    "n_cells": adata.n_obs, "stage_s": stage, "cpu_self_s": time.process_time() - cpu0,
    "cpu_children_s": child.ru_utime + child.ru_stime, "rss_before_mb": before,
    "peak_self_mb": peak["self"], "peak_total_mb": peak["total"], "runs": int(s["n_runs"].sum()),
    "summary": {k: {"n_clusters": int(v["n_clusters"]), "n_seed_runs": int(v["n_seed_runs"]),
                    "ari_seeds": f(v["ari_seeds"]), "ari_subsample": f(v["ari_subsample"]), "score": f(v["score"]),
                    "cluster_stability_min": f(v["cluster_stability_min"], 3), "stable": bool(v["stable"]),
                    "call": str(v.get("call", "stable" if v["stable"] else "unstable")),
                    "reason": str(v.get("reason", ""))}
                for k, v in s.iterrows()},
    "recommended": list(r.recommendation["key"]),
    "default": dict(getattr(r, "default", {}) or {}),
}
if figdir:  # the stage's figures at this size (not part of the stage's time)
    import matplotlib; matplotlib.use("agg")
    t = time.perf_counter()
    os.makedirs(figdir, exist_ok=True)
    for group in dict.fromkeys(s["group"]):
        scc.pl.stability(r, group=group).savefig(f"{figdir}/stability_{group}.png", dpi=150, bbox_inches="tight")
        gkeys = list(s[s["group"] == group].sort_values("param").index)
        if len(gkeys) >= 2:
            scc.pl.clustree(adata, keys=gkeys, stability=r).savefig(f"{figdir}/clustree_{group}.png", dpi=150, bbox_inches="tight")
    basis = next((k for k in adata.obsm if "umap" in k.lower()), None)
    for key in list((r.default or {}).values())[:2]:
        if basis is not None:
            scc.pl.stability_embedding(adata, key=key, basis=basis).savefig(f"{figdir}/umap_{key}.png", dpi=150, bbox_inches="tight")
    out["figures_s"] = time.perf_counter() - t
if "cell_type" in adata.obs:
    from sklearn.metrics import adjusted_rand_score
    for k in s.index:
        out["summary"][k]["ari_type"] = round(adjusted_rand_score(adata.obs["cell_type"], adata.obs[k]), 3)
print(json.dumps(out))
"""


def _run(code: str, args: list[str], src: Path) -> dict:
    """``code`` in a fresh Python process importing scclust from ``src``; the JSON of its last output line."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(n: int, workdir: Path, kind: str, resolutions: list[float], src: Path, knn: dict) -> Path:
    path = workdir / (f"stab_{kind}_{n}" + "".join(f"_{k}{v}" for k, v in knn.items()) + ".h5ad")
    if path.exists():
        return path
    t0 = time.perf_counter()
    r = _run(PREPARE, [str(n), str(path), json.dumps(resolutions), json.dumps(KS), kind, json.dumps(knn)], src)
    print(f"  input of {n:,} cells in {time.perf_counter() - t0:.0f} s (not the stage): {json.dumps(r)}", flush=True)
    return path


def stage(path: Path, design: str, kw: dict, src: Path, figdir: str = "") -> dict:
    print(f"  [{design} {kw or ''}] load {os.getloadavg()[0]:.2f} before the stage", flush=True)
    r = _run(STAGE, [str(path), design, json.dumps(kw), figdir], src)
    show(f"{design} {kw or ''}", r)
    print(
        f"  [{design} {kw or ''}] STAGE {r['stage_s']:.1f} s wall, {r['runs']} runs; CPU {r['cpu_self_s']:.0f} s here + "
        f"{r['cpu_children_s']:.0f} s workers; peak {r['peak_total_mb']:.0f} MB with workers ({r['peak_self_mb']:.0f} MB "
        f"this process; {r['rss_before_mb']:.0f} MB before the stage)"
        + (f"; figures drawn in {r['figures_s']:.1f} s" if "figures_s" in r else ""),
        flush=True,
    )
    return r


def show(label: str, r: dict) -> None:
    print(f"\n  {label}: {r['stage_s']:.1f} s, peak {r['peak_total_mb']:.0f} MB")
    for k, v in r["summary"].items():
        print(f"    {k:<12} {json.dumps({c: v[c] for c in v if c != 'reason'})}")
        print(f"    {'':<12} {v['reason']}")
    print(f"    recommended {r['recommended']}; default {r['default']}")
    types = {k: r["summary"][k].get("ari_type") for k in r["recommended"]}
    if any(v is not None for v in types.values()):
        print(f"    ARI of the recommended keys with the true cell types: {types}", flush=True)


def strict(v: dict) -> bool:
    return v["score"] is not None and v["score"] >= 0.9 and (v["cluster_stability_min"] or 0) >= 0.75


def compare(old: dict, new: dict, label: str) -> None:
    print(f"\n  per key: old vs {label}")
    print(
        f"    {'key':<12} {'k':>3} {'seeds':>7} {'ari_seeds old/new':>19} {'ari_sub old/new':>17} "
        f"{'minJ old/new':>13}  call old / new"
    )
    ok_ari = ok_call = True
    for key, o in old["summary"].items():
        n = new["summary"].get(key)
        if n is None:
            continue
        d = abs((o["ari_seeds"] or 0) - (n["ari_seeds"] or 0))
        near = o["score"] is not None and abs(o["score"] - 0.9) <= 0.02
        same = strict(o) == strict(n)
        ok_ari &= d <= 0.05
        ok_call &= same or near
        print(
            f"    {key:<12} {o['n_clusters']:>3} {n['n_seed_runs']:>3}/{o['n_seed_runs']:<3} "
            f"{o['ari_seeds']:>9.3f}/{n['ari_seeds']:<9.3f} {o['ari_subsample']:>8.3f}/{n['ari_subsample']:<8.3f} "
            f"{o['cluster_stability_min']:>6.2f}/{n['cluster_stability_min']:<6.2f} {o['call']} / {n['call']}"
            + ("" if same else " (strict calls differ" + (", near the threshold)" if near else ")"))
        )
    rec_old = set(old["recommended"])
    rec_new_strict = {k for k in rec_old | set(new["recommended"]) if k in old["summary"] and strict(new["summary"][k])}
    print(f"    ari_seeds within 0.05 for every key: {ok_ari}; strict calls the same (keys near 0.9 aside): {ok_call}")
    print(f"    recommended, old: {sorted(rec_old)}")
    print(
        f"    recommended, {label} (strict criteria, keys the old design ran): {sorted(rec_new_strict)} "
        f"-> same set: {rec_old == rec_new_strict}"
    )
    print(
        f"    recommended, {label} (with the moving-boundary rule): {sorted(new['recommended'])}; default {new['default']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000])
    ap.add_argument(
        "--input",
        default="hierarchy",
        choices=["hierarchy", "noise", "transfer"],
        help="hierarchy: simulate_integrated (with k-means and Ward); noise: 10-dim Gaussian noise, Leiden only; "
        "transfer: the hierarchy with Leiden labels of a 100,000-cell subsample transferred, no full-size graph",
    )
    ap.add_argument("--resolutions", type=float, nargs="+", default=RESOLUTIONS)
    ap.add_argument("--designs", nargs="*", default=["old", "new"], choices=["old", "new"], help="none: input only")
    ap.add_argument("--old-max-cells", type=int, default=100_000, help="largest size the old design runs at")
    ap.add_argument("--max-cells-per-run", type=int, nargs="*", default=[], help="new design: more values to measure")
    ap.add_argument("--old-src", type=Path, default=None)
    ap.add_argument(
        "--reuse-old",
        action="store_true",
        help="compare with the old design's results saved by an earlier run (same input)",
    )
    ap.add_argument("--old-rev", default="528a8bb", help="git revision of the old design (with --old-src unset)")
    ap.add_argument(
        "--min-recall",
        type=float,
        default=None,
        help="min_recall of the input's kNN graph (recorded with it: the stage's subsample graphs use it too); "
        "default: pp.neighbors' own",
    )
    ap.add_argument("--figures", type=Path, default=None, help="new design: write the stage's figures here")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scclust_bench_stability")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    new_src = Path(__file__).resolve().parents[1] / "src"
    old_src = args.old_src
    if "old" in args.designs and old_src is None:
        old_src = args.workdir / f"old_{args.old_rev}" / "src"
        if not old_src.exists():
            old_src.parent.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "-C", str(new_src.parent), "archive", args.old_rev, "src"], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old_src.parent)], input=archive, check=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; workdir {args.workdir}", flush=True)
    for n in args.cells:
        extra = f", k-means {KS}, Ward {KS}" if args.input == "hierarchy" else " (Gaussian noise)"
        print(f"\n=== {n:,} cells: {len(args.resolutions)} Leiden resolutions{extra} ===", flush=True)
        knn = {} if args.min_recall is None else {"min_recall": args.min_recall}
        path = prepare(n, args.workdir, args.input, args.resolutions, new_src, knn)
        results = {}
        if "new" in args.designs:
            figdir = str(args.figures / f"{args.input}_{n}") if args.figures else ""
            results["new"] = stage(path, "new", {}, new_src, figdir)
            for m in args.max_cells_per_run:
                results[f"new, max_cells_per_run={m}"] = stage(path, "new", {"max_cells_per_run": m}, new_src)
        saved = args.workdir / f"results_{args.input}_{n}.json"
        if "old" in args.designs and n <= args.old_max_cells:
            results["old"] = stage(path, "old", {}, old_src)
        elif args.reuse_old and saved.exists() and "old" in json.loads(saved.read_text()):
            results["old"] = json.loads(saved.read_text())["old"]  # the same input, the same old design
            print(
                f"  [old ] from {saved}: {results['old']['stage_s']:.1f} s, {results['old']['runs']} runs", flush=True
            )
        if "old" in results:
            for label in results:
                if label != "old":
                    compare(results["old"], results[label], label)
        (args.workdir / f"results_{args.input}_{n}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
