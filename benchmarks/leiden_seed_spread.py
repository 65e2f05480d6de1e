"""How much does the lab's Leiden depend on its seed? leidenalg (the lab's) at seed 0 vs other seeds and vs igraph.

    python benchmarks/leiden_seed_spread.py [--cells 7332] [--kang ../shared/data/kang_pbmc_stim_2000.h5ad]

The tutorial's graph (k = 20 on 30 dims of X_pca_harmony) on the simulated data, and on the Kang PBMCs
through `pp.prepare` when the file is there. For each resolution of the lab it prints the ARI of
leidenalg (to convergence, as `sc.tl.leiden`) at seeds 1-3 and of igraph's Leiden at seeds 0-1 against
leidenalg at seed 0 (the lab's labels), and the time per resolution of each flavour. Where leidenalg's
own seeds disagree, only the lab's exact algorithm and seed can reproduce its labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
from sklearn.metrics import adjusted_rand_score

from scclust import datasets, pp, tl

RESOLUTIONS = (0.4, 0.6, 1.0, 1.4)


def spread(adata: ad.AnnData, name: str) -> None:
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    print(f"{name}: {adata.n_obs} cells")
    for r in RESOLUTIONS:
        labels, seconds = {}, {}
        for flavor, seeds in (("leidenalg", (0, 1, 2, 3)), ("igraph", (0, 1))):
            for s in seeds:
                t0 = time.perf_counter()
                tl.leiden(
                    adata,
                    resolutions=[r],
                    flavor=flavor,
                    n_iterations=-1 if flavor == "leidenalg" else 2,
                    random_state=s,
                    key_added="x",
                )
                seconds.setdefault(flavor, []).append(time.perf_counter() - t0)
                labels[(flavor, s)] = adata.obs[f"x_{float(r)!r}"].copy()
        ref = labels[("leidenalg", 0)]
        aris = "  ".join(
            f"{f} seed {s}: {adjusted_rand_score(ref, v):.3f}"
            for (f, s), v in labels.items()
            if (f, s) != ("leidenalg", 0)
        )
        times = ", ".join(f"{f} {sum(v) / len(v):.2f} s" for f, v in seconds.items())
        print(f"  res {r}: {ref.nunique()} clusters; ARI vs leidenalg seed 0: {aris}  ({times})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=7332)
    ap.add_argument(
        "--kang", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "kang_pbmc_stim_2000.h5ad")
    )
    args = ap.parse_args()
    spread(datasets.simulate(args.cells), "simulated")
    if Path(args.kang).exists():
        spread(pp.prepare(ad.read_h5ad(args.kang), batch_key="condition"), "Kang PBMCs (pp.prepare)")
    else:
        print(f"Kang data not found at {args.kang}; skipped")


if __name__ == "__main__":
    main()
