"""Whole NBIS clustering lab: `scclust run configs/tutorial.yaml` vs the lab's scanpy code, cold processes.

    python benchmarks/bench_tutorial.py [--cells 7332] [--repeat 3] [--workdir /tmp/bench_tutorial]

Both sides read the same simulated, integrated .h5ad in a fresh process (imports and numba
compilation included) and write their figures and clustered h5ad. Prints wall times and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
RESOLUTIONS = (0.4, 0.6, 1.0, 1.4)

LAB = textwrap.dedent('''
    import time; T = [("start", time.perf_counter())]
    def mark(step): T.append((step, time.perf_counter()))
    import sys, warnings, json
    warnings.simplefilter("ignore")
    import matplotlib; matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import numpy as np, pandas as pd, scanpy as sc, harmonypy
    from sklearn.cluster import KMeans, AgglomerativeClustering
    mark("imports")
    inp, out = sys.argv[1], sys.argv[2]
    sc.settings.figdir = out
    adata = sc.read_h5ad(inp)
    mark("read")
    sc.pp.neighbors(adata, n_pcs=30, n_neighbors=20, use_rep="X_pca_harmony")
    mark("neighbors (pynndescent's numba compilation included)")
    for r in (0.4, 0.6, 1.0, 1.4):
        sc.tl.leiden(adata, key_added=f"leiden_{r}", resolution=r)
    mark("leiden x4 (leidenalg)")
    sc.pl.embedding(adata, "X_umap_harmony", color=["leiden_0.4", "leiden_0.6", "leiden_1.0", "leiden_1.4"], show=False, save="_leiden.png")
    genes = ["CD3E", "CD4", "CD8A", "GNLY", "NKG7", "MS4A1", "FCGR3A", "CD14", "LYZ", "CST3", "MS4A7", "FCGR1A"]
    sc.tl.dendrogram(adata, groupby="leiden_0.6")
    sc.pl.dendrogram(adata, groupby="leiden_0.6", show=False, save="_leiden.png")
    sc.pl.dotplot(adata, genes, groupby="leiden_0.6", dendrogram=True, show=False, save="_leiden.png")
    mark("figures: leiden UMAP, dendrogram, dot plot")
    for k in (5, 10, 15):
        adata.obs[f"kmeans{k}"] = KMeans(n_clusters=k, random_state=0).fit(adata.obsm["X_pca_harmony"]).labels_.astype(str)
    sc.pl.embedding(adata, "X_umap_harmony", color=["kmeans5", "kmeans10", "kmeans15"], show=False, save="_kmeans.png")
    mark("kmeans x3 + figure")
    for k in (5, 10, 15):
        adata.obs[f"hclust_{k}"] = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(adata.obsm["X_pca_harmony"]).astype(str)
    mark("hclust: Ward refit x3")
    sc.pl.embedding(adata, "X_umap_harmony", color=["hclust_5", "hclust_10", "hclust_15"], show=False, save="_hclust.png")
    adata.write_h5ad(f"{out}/clustered.h5ad")
    for a, b in (("leiden_0.6", "type"), ("leiden_0.6", "sample"), ("sample", "leiden_0.6")):
        tmp = pd.crosstab(adata.obs[a], adata.obs[b], normalize="index")
        tmp.plot.bar(stacked=True).legend(bbox_to_anchor=(1.4, 1), loc="upper right")
        plt.savefig(f"{out}/bar_{a}_{b}.png"); plt.close("all")
    sc.pl.violin(adata, ["n_genes_by_counts", "total_counts", "pct_counts_mt"], jitter=0.4, groupby="leiden_0.6", rotation=45, show=False, save="_qc.png")
    mark("figures: hclust UMAP, h5ad, bars, violins")
    tcells = adata[adata.obs["leiden_0.4"].isin(["1", "2", "3"])]   # the lab picks ids by eye
    tcells = tcells.raw.to_adata()
    tcells.raw = tcells
    sc.pp.highly_variable_genes(tcells, min_mean=0.0125, max_mean=3, min_disp=0.5)
    tcells = tcells[:, tcells.var.highly_variable].copy()
    sc.pp.regress_out(tcells, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(tcells, max_value=10)
    sc.tl.pca(tcells, svd_solver="arpack")
    ho = harmonypy.run_harmony(tcells.obsm["X_pca"], tcells.obs, "sample")
    Z = np.asarray(ho.Z_corr); tcells.obsm["X_pca_harmony"] = Z if Z.shape[0] == tcells.n_obs else Z.T
    sc.pp.neighbors(tcells, n_neighbors=10, n_pcs=30, use_rep="X_pca_harmony")
    sc.tl.leiden(tcells, key_added="tcells_0.6", resolution=0.6)
    mark("subcluster: HVG ... Leiden")
    sc.tl.umap(tcells)
    mark("subcluster: UMAP (umap-learn, numba compilation included)")
    sc.pl.umap(tcells, color=["sample", "leiden_0.6", "tcells_0.6"], show=False, save="_tcells.png")
    sc.pl.umap(tcells, color=["CD3E", "CD4", "CD8A", "GNLY"], use_raw=True, show=False, save="_tcell_markers.png")
    mark("subcluster: figures")
    json.dump([(b[0], round(b[1] - a[1], 2)) for a, b in zip(T[:-1], T[1:])], open(f"{out}/steps.json", "w"))
''')


def timed(cmd: list[str], repeat: int) -> float:
    """Median wall time of ``repeat`` cold runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=7332)
    ap.add_argument("--workdir", default="/tmp/bench_tutorial")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side; the median is reported")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    inp = work / f"input_{args.cells}.h5ad"
    if not inp.exists():
        subprocess.run([sys.executable, "-c", f"from scclust.datasets import simulate; simulate({args.cells}).write_h5ad('{inp}')"], check=True)
    (work / "lab").mkdir(exist_ok=True)
    (work / "lab.py").write_text(LAB)
    lab = timed([sys.executable, str(work / "lab.py"), str(inp), str(work / "lab")], args.repeat)
    runs = {
        "tutorial.yaml (leidenalg, the lab's Leiden exactly)": [],
        "tutorial.yaml --set leiden.flavor=igraph": ["--set", "leiden.flavor=igraph"],
    }
    lab_obs = ad.read_h5ad(work / "lab" / "clustered.h5ad", backed="r").obs
    print(f"{args.cells} cells, cold processes, median of {args.repeat}; the lab's scanpy code: {lab:.1f} s")
    steps = json.loads((work / "lab" / "steps.json").read_text())
    print("  lab steps: " + ", ".join(f"{name} {sec:.1f}" for name, sec in steps))
    for i, (name, extra) in enumerate(runs.items()):
        out = work / f"scclust_{i}"
        t = timed([sys.executable, "-m", "scclust", "run", str(ROOT / "configs" / "tutorial.yaml"), "--input", str(inp),
                   "--outdir", str(out), "-q", *extra], args.repeat)
        obs = ad.read_h5ad(out / "clustered.h5ad", backed="r").obs
        aris = ", ".join(f"{r} {adjusted_rand_score(lab_obs[f'leiden_{r}'], obs[f'leiden_{r}']):.3f}" for r in RESOLUTIONS)
        print(f"  scclust {name}: {t:.1f} s, ratio {lab / t:.2f}x; Leiden ARI vs the lab: {aris}")
        stages = json.loads((out / "manifest.json").read_text())["stages"]
        print("    stages: " + ", ".join(f"{st['stage']} {st['seconds']:.1f}" for st in stages))

if __name__ == "__main__":
    main()
