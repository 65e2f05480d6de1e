"""Whole NBIS clustering lab: `scclust run configs/tutorial.yaml` vs the lab's scanpy code, cold processes.

    python benchmarks/bench_tutorial.py [--cells 7332] [--genes 2000] [--repeat 3] [--workdir /tmp/bench_tutorial]
                                        [--no-igraph] [--before-src /path/to/unmodified/src]

Both sides read the same simulated, integrated .h5ad in a fresh process (imports and numba
compilation included) and write their figures and clustered h5ad; the runs of the two sides are
interleaved. Prints wall times, the ratio, and where the seconds went: the lab script's own marks,
and scclust's per-stage seconds from its manifest.json with the gaps between its log lines
(startup to the first line, pre-flight, checkpoints between stages, outputs, exit), then both
side by side by task.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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

LAB = textwrap.dedent("""
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
""")


def run_logged(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, list[tuple[float, str]]]:
    """One cold run: wall seconds, CPU seconds (user + system of the process and the workers it
    waited for: less sensitive to other load than the wall time) and its stderr lines, each with
    the seconds since the start."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **{k: str(v) for k, v in (env or {}).items() if not k.startswith("_")}}
    )
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stderr]
    rc = proc.wait()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n" + "\n".join(text for _, text in lines[-30:]))
    return wall, cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, lines


def lab_steps(wall: float, out: Path) -> dict[str, float]:
    """The lab script's own marks, plus the interpreter's start and exit around them."""
    steps = dict(json.loads((out / "steps.json").read_text()))
    return {"interpreter start + exit": wall - sum(steps.values()), **steps}


_STAGE = re.compile(r"^scclust: \[(\d+)/(\d+)\] (\S+) (\.\.\.|done in)")


def scclust_steps(wall: float, lines: list[tuple[float, str]], manifest: dict) -> dict[str, float]:
    """Where a scclust run's seconds went: the manifest's per-stage seconds, and the gaps between its
    log lines (startup before the first line; pre-flight; checkpoints and background waits between
    stages; outputs; the exit after the last line)."""
    rec = {r["stage"]: r["seconds"] for r in manifest["stages"]}
    first = next(t for t, text in lines if text.startswith("scclust: reading"))
    t_input = next(t for t, text in lines if text.startswith("scclust: input:"))
    starts = {m[3]: t for t, text in lines if (m := _STAGE.match(text)) and m[4] == "..."}
    ends = {m[3]: t for t, text in lines if (m := _STAGE.match(text)) and m[4] == "done in"}
    t_done = next(t for t, text in lines if text.startswith("scclust: done in"))
    labels = list(starts)
    steps = {
        "startup: interpreter, imports, config (to the first log line)": first,
        "read (incl. input fingerprint)": rec["read"],
        "read: rest until 'input:' line": t_input - first - rec["read"],
        "pre-flight, checkpoint keys": starts[labels[0]] - t_input,
    }
    between = 0.0
    for i, label in enumerate(labels):
        steps[label] = rec[label]
        if i + 1 < len(labels):
            between += starts[labels[i + 1]] - ends[label]
    steps["between stages: checkpoints, background waits"] = between
    out_total = t_done - ends[labels[-1]]
    writes = {k: v for k, v in rec.items() if k.startswith("write_")}
    steps.update(writes)
    steps["outputs: rest (background join, label table, manifest)"] = out_total - sum(writes.values())
    steps["log-line overhead (stage seconds vs log gaps)"] = sum(ends[lb] - starts[lb] - rec[lb] for lb in labels)
    steps["exit: worker stop, interpreter exit"] = wall - t_done
    for r in manifest["stages"]:
        if "background" in r["stage"]:
            steps[f"[overlapped, not in wall] {r['stage']}"] = -r["seconds"]  # shown, excluded from the sum
    return steps


#: coarse tasks for the side-by-side table: (task, lab steps starting with, scclust steps starting with)
TASKS = [
    ("startup + exit (interpreter, imports)", ("interpreter", "imports"), ("startup", "exit")),
    ("read (+ fingerprint, pre-flight)", ("read",), ("read", "pre-flight")),
    ("neighbors", ("neighbors",), ("neighbors",)),
    ("leiden x4", ("leiden",), ("leiden",)),
    ("kmeans x3 (lab: + figure)", ("kmeans",), ("kmeans",)),
    ("hclust x3", ("hclust",), ("hclust",)),
    (
        "figures, tables, h5ad, report",
        ("figures",),
        ("compare", "relationships", "embedding", "composition", "qc", "write_", "outputs", "log-line"),
    ),
    ("subcluster T/NK (+ its figures)", ("subcluster",), ("subcluster",)),
    ("checkpoints, background waits", (), ("between",)),
]


def median_table(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for r in runs for k in r))
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


def print_steps(title: str, runs: list[dict[str, float]]) -> None:
    med = median_table(runs)
    print(f"  {title} (s; median of {len(runs)}, then each run):")
    for k, v in med.items():
        print(f"    {k[:64]:<64} {abs(v):7.2f}   " + " ".join(f"{abs(r.get(k, 0.0)):6.2f}" for r in runs))


def by_task(steps: dict[str, float], side: int) -> dict[str, float]:
    out = {}
    for task, *prefixes in TASKS:
        out[task] = sum(v for k, v in steps.items() if v > 0 and k.startswith(prefixes[side]) and prefixes[side])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=7332)
    ap.add_argument(
        "--genes",
        type=int,
        default=2000,
        help="genes of the simulated input (.raw); more make a "
        "bigger file (17000: 221 MB, about the size of the lab's own 231 MB file)",
    )
    ap.add_argument("--input", help="an existing .h5ad to use instead of the simulated one")
    ap.add_argument("--workdir", default="/tmp/bench_tutorial")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side; the median is reported")
    ap.add_argument("--no-igraph", action="store_true", help="skip the leiden.flavor=igraph variant")
    ap.add_argument(
        "--before-src",
        metavar="DIR",
        help="also run tutorial.yaml with PYTHONPATH=DIR (e.g. the src/ "
        "of an unmodified checkout), interleaved with the others: before / after under the same load",
    )
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    inp = (
        Path(args.input)
        if args.input
        else work / (f"input_{args.cells}.h5ad" if args.genes == 2000 else f"input_{args.cells}_g{args.genes}.h5ad")
    )
    if not inp.exists():
        code = (
            f"from scclust.datasets import simulate; simulate({args.cells}, n_genes={args.genes}).write_h5ad('{inp}')"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    (work / "lab").mkdir(exist_ok=True)
    (work / "lab.py").write_text(LAB)
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        "tutorial.yaml (leidenalg, the lab's Leiden exactly)": ([], {}),
        "tutorial.yaml --set leiden.flavor=igraph": (["--set", "leiden.flavor=igraph"], {}),
    }
    if args.no_igraph:
        runs.popitem()
    if args.before_src:  # that checkout's own tutorial.yaml (its config layout)
        before_cfg = Path(args.before_src).resolve().parent / "configs" / "tutorial.yaml"
        runs[f"tutorial.yaml, code in {args.before_src}"] = ([], {"PYTHONPATH": args.before_src, "_config": before_cfg})
    lab_walls: list[float] = []
    lab_cpus: list[float] = []
    lab_runs: list[dict[str, float]] = []
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved: load on a shared machine hits both sides alike
        wall, cpu, _lines = run_logged([sys.executable, str(work / "lab.py"), str(inp), str(work / "lab")])
        lab_walls.append(wall)
        lab_cpus.append(cpu)
        lab_runs.append(lab_steps(wall, work / "lab"))
        for i, (name, (extra, env)) in enumerate(runs.items()):
            out = work / f"scclust_{i}"
            wall, cpu, lines = run_logged(
                [
                    sys.executable,
                    "-m",
                    "scclust",
                    "run",
                    str(env.get("_config", ROOT / "configs" / "tutorial.yaml")),
                    "--input",
                    str(inp),
                    "--outdir",
                    str(out),
                    *extra,
                ],
                env,
            )
            walls[name].append(wall)
            cpus[name].append(cpu)
            steps[name].append(scclust_steps(wall, lines, json.loads((out / "manifest.json").read_text())))
    lab = statistics.median(lab_walls)
    lab_obs = ad.read_h5ad(work / "lab" / "clustered.h5ad", backed="r").obs
    print(
        f"{args.cells} cells ({inp}, {inp.stat().st_size / 1e6:.0f} MB), cold processes, median of {args.repeat} "
        f"(interleaved runs); the lab's scanpy code: {lab:.1f} s ({' / '.join(f'{w:.1f}' for w in lab_walls)}), "
        f"CPU {statistics.median(lab_cpus):.1f} s"
    )
    print_steps("lab steps", lab_runs)
    for i, name in enumerate(runs):
        out = work / f"scclust_{i}"
        t = statistics.median(walls[name])
        obs = ad.read_h5ad(out / "clustered.h5ad", backed="r").obs
        aris = ", ".join(
            f"{r} {adjusted_rand_score(lab_obs[f'leiden_{r}'], obs[f'leiden_{r}']):.3f}" for r in RESOLUTIONS
        )
        print(
            f"  scclust {name}: {t:.1f} s ({' / '.join(f'{w:.1f}' for w in walls[name])}), ratio {lab / t:.2f}x "
            f"(per run {' / '.join(f'{a / b:.2f}' for a, b in zip(lab_walls, walls[name]))}); "
            f"CPU {statistics.median(cpus[name]):.1f} s (both processes); Leiden ARI vs the lab: {aris}"
        )
        print_steps(f"scclust steps ({name})", steps[name])
        lab_t = median_table([by_task(r, 0) for r in lab_runs])
        sc_t = median_table([by_task(r, 1) for r in steps[name]])
        print(
            "  side by side by task (s, medians; the lab's steps mix some tasks, e.g. its h5ad write is in its figures):"
        )
        print(f"    {'task':<40} {'lab':>7} {'scclust':>8} {'lab - scclust':>14}")
        for task in lab_t:
            print(f"    {task:<40} {lab_t[task]:7.2f} {sc_t[task]:8.2f} {lab_t[task] - sc_t[task]:14.2f}")
        print(
            f"    {'sum':<40} {sum(lab_t.values()):7.2f} {sum(sc_t.values()):8.2f} "
            f"{sum(lab_t.values()) - sum(sc_t.values()):14.2f}"
        )


if __name__ == "__main__":
    main()
