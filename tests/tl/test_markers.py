"""scclust.tl.markers / tl.annotate: equal to scanpy's rank_genes_groups, planted markers found, the
counts-store path equal to the in-memory one, PBMC annotation on real data, one-line errors."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

from scclust import pp, read_marker_sets, tl
from scclust._errors import ConfigError, InputError, MissingKeyError, ScclustWarning
from scclust.datasets import CELL_TYPES

PBMC_SETS = Path(__file__).resolve().parents[2] / "configs" / "markers_pbmc.yaml"
#: muscat's Kang cell types -> the names of configs/markers_pbmc.yaml
KANG_TYPES = {
    "CD4 T cells": "CD4 T",
    "CD8 T cells": "CD8 T",
    "NK cells": "NK",
    "B cells": "B",
    "CD14+ Monocytes": "CD14 Mono",
    "FCGR3A+ Monocytes": "FCGR3A Mono",
    "Dendritic cells": "DC",
    "Megakaryocytes": "Platelet",
}


def compare_with_scanpy(adata, groupby, *, method="wilcoxon", reference="rest", **kw) -> pd.DataFrame:
    """Our table merged with scanpy's (one row per gene and cluster), both through sc.get."""
    tl.markers(adata, groupby=groupby, method=method, reference=reference, key_added="ours", **kw)
    sc.tl.rank_genes_groups(
        adata, groupby, method=method, reference=reference, tie_correct=True, pts=True, key_added="scanpy", **kw
    )
    ours = sc.get.rank_genes_groups_df(adata, None, key="ours")
    theirs = sc.get.rank_genes_groups_df(adata, None, key="scanpy")
    merged = ours.merge(theirs, on=["group", "names"], suffixes=("", "_sc"))
    assert len(merged) == len(ours) == len(theirs)
    return merged


def assert_equal_stats(m: pd.DataFrame, rtol: float = 1e-6) -> None:
    for col in ("scores", "pvals_adj", "logfoldchanges", "pvals"):
        np.testing.assert_allclose(m[col].astype(float), m[f"{col}_sc"].astype(float), rtol=rtol, atol=0, err_msg=col)
    np.testing.assert_allclose(m["pct_nz_group"], m["pct_nz_group_sc"], rtol=1e-12)


# ------------------------------------------------------------------------------------------ scanpy parity
def test_wilcoxon_equals_scanpy_pbmc68k(pbmc):
    adata = pbmc.copy()
    m = compare_with_scanpy(adata, "bulk_labels")
    assert_equal_stats(m)
    np.testing.assert_allclose(m["pct_nz_reference"], m["pct_nz_reference_sc"], rtol=1e-12)


@pytest.mark.parametrize("method", ["t-test", "t-test_overestim_var"])
def test_t_tests_equal_scanpy(pbmc, method):
    assert_equal_stats(compare_with_scanpy(pbmc.copy(), "bulk_labels", method=method))


@pytest.mark.parametrize("method", ["wilcoxon", "t-test"])
def test_reference_cluster_equals_scanpy(pbmc, method):
    adata = pbmc.copy()
    m = compare_with_scanpy(adata, "bulk_labels", method=method, reference="CD14+ Monocyte")
    assert_equal_stats(m)
    assert "CD14+ Monocyte" not in set(m["group"])


def test_wilcoxon_equals_scanpy_3000_simulated_cells(sim):
    """Every gene and cluster: scores, BH-adjusted p-values and log fold changes to 1e-6."""
    adata = sim.copy()
    m = compare_with_scanpy(adata, "cell_state")
    assert m["group"].nunique() == adata.obs["cell_state"].nunique()
    assert len(m) == adata.raw.n_vars * adata.obs["cell_state"].nunique()
    assert_equal_stats(m)


def test_dense_float64_and_layer_inputs(pbmc):
    """A dense float64 layer whose values are not float32 (ranked by their distinct values) gives the
    numbers of the same expression as sparse float32 in ``.raw`` (equal to scanpy's, above)."""
    adata = pbmc.copy()
    adata.layers["ln"] = adata.raw.X.toarray().astype(np.float64) * (1 + 1e-12)  # same order and ties
    tl.markers(adata, groupby="bulk_labels", layer="ln", use_raw=False, key_added="dense")
    tl.markers(adata, groupby="bulk_labels", key_added="sparse")
    a, b = tl.marker_table(adata, key="dense"), tl.marker_table(adata, key="sparse")
    pd.testing.assert_frame_equal(a.drop(columns="logfoldchange"), b.drop(columns="logfoldchange"))
    np.testing.assert_allclose(a["logfoldchange"], b["logfoldchange"], rtol=1e-6)
    assert adata.uns["dense"]["params"]["source"] == ".layers['ln']"


def test_auroc_and_fractions(pbmc):
    from sklearn.metrics import roc_auc_score

    adata = pbmc.copy()
    tl.markers(adata, groupby="bulk_labels")
    table = tl.marker_table(adata, key="markers_bulk_labels")
    X = adata.raw.X.toarray()
    for cluster, gene in [("CD14+ Monocyte", "LYZ"), ("CD19+ B", "CD79A")]:
        row = table[(table["cluster"] == cluster) & (table["gene"] == gene)].iloc[0]
        inside = (adata.obs["bulk_labels"] == cluster).to_numpy()
        x = X[:, adata.raw.var_names.get_loc(gene)]
        assert row["auroc"] == pytest.approx(roc_auc_score(inside, x), rel=1e-6)
        assert row["pct_in"] == pytest.approx((x[inside] > 0).mean())
        assert row["pct_out"] == pytest.approx((x[~inside] > 0).mean())
    assert table["passes"].dtype == bool and table.groupby("cluster", observed=True)["rank"].min().eq(1).all()
    assert list(table.columns) == [
        "cluster",
        "rank",
        "gene",
        "score",
        "logfoldchange",
        "pval",
        "pval_adj",
        "auroc",
        "pct_in",
        "pct_out",
        "passes",
    ]


def test_scanpy_readers_and_h5ad_round_trip(pbmc, tmp_path):
    adata = pbmc.copy()
    tl.markers(adata, groupby="bulk_labels")
    df = sc.get.rank_genes_groups_df(adata, group=None, key="markers_bulk_labels")
    assert {"pct_nz_group", "pct_nz_reference"} <= set(df.columns) and len(df) == 10 * adata.raw.n_vars
    axes = sc.pl.rank_genes_groups_dotplot(adata, key="markers_bulk_labels", n_genes=2, show=False)
    assert "mainplot_ax" in axes
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    pd.testing.assert_frame_equal(
        tl.marker_table(back, key="markers_bulk_labels"), tl.marker_table(adata, key="markers_bulk_labels")
    )


# ------------------------------------------------------------------------------------------ truth
def test_planted_markers_are_found(sim):
    """Each true type's best-matching Leiden cluster has >= 3 of its planted markers in its top 10."""
    adata = sim.copy()
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    tl.leiden(adata, resolutions=[0.6])
    tl.markers(adata, groupby="leiden_0.6")
    top = tl.top_markers(adata, key="markers_leiden_0.6", n_genes=10, passing=False)
    tab = pd.crosstab(adata.obs["cell_type"], adata.obs["leiden_0.6"])
    found = {}
    for cell_type, (_, planted) in CELL_TYPES.items():
        best = tab.loc[cell_type].idxmax()
        found[cell_type] = len(set(planted) & set(top[str(best)]))
    assert all(n >= 3 for n in found.values()), found


# ------------------------------------------------------------------------------------------ out of core
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from scclust.datasets import simulate_counts_store

    path = tmp_path_factory.mktemp("store") / "counts.h5ad"
    return simulate_counts_store(1500, path, n_genes=600, chunk_cells=500, seed=3)


@pytest.mark.slow
def test_store_path_equals_in_memory(store):
    """From the counts store (Dask, ``.raw`` incomplete) the numbers are those of the same
    log-normalized matrix in memory; every kept gene, not just those in ``.raw``."""
    from scclust.pp._lazy import _lognorm_block, read_counts_lazy

    lazy = read_counts_lazy(store, chunk_cells=400)
    kept = np.ones(lazy.n_vars, bool)
    kept[::7] = False  # genes the QC filter removed
    cells = lazy.obs_names[::2]  # cells the QC filter kept
    obs = lazy.obs.loc[cells, ["cell_type"]].copy()
    on_store = ad.AnnData(
        X=sparse.csr_matrix((len(cells), 10), dtype=np.float32),
        obs=obs,
        var=pd.DataFrame(index=lazy.var_names[kept][:10]),
    )
    on_store.raw = on_store.copy()  # an incomplete .raw
    on_store.uns["counts_store"] = {
        **lazy.uns["counts_store"],
        "genes_kept": kept,
        "target_sum": 1e4,
        "raw_complete": False,
    }
    tl.markers(on_store, groupby="cell_type")
    tl.markers(on_store, groupby="cell_type", reference="B", key_added="vs_b")
    counts = ad.read_h5ad(store)[cells.to_numpy(), kept]
    mem = ad.AnnData(X=_lognorm_block(sparse.csr_matrix(counts.X), 1e4), obs=obs, var=counts.var)
    tl.markers(mem, groupby="cell_type")
    tl.markers(mem, groupby="cell_type", reference="B", key_added="vs_b")
    for key in ("markers_cell_type", "vs_b"):
        a, b = tl.marker_table(on_store, key=key), tl.marker_table(mem, key=key)
        assert len(a) == int(kept.sum()) * a["cluster"].nunique()
        pd.testing.assert_frame_equal(a, b)
    assert on_store.uns["markers_cell_type"]["params"]["source"].startswith("the counts store")
    genes = [g for g in ("CD3E", "LYZ", "MS4A1", "GNLY") if g in mem.var_names][:2]
    expr = tl.marker_expression(on_store, key="markers_cell_type", genes=genes)
    np.testing.assert_allclose(expr.X.toarray(), mem[:, genes].X.toarray(), rtol=1e-6)


# ------------------------------------------------------------------------------------------ annotation
def test_annotate_simulated_types(sim):
    adata = sim.copy()
    tl.markers(adata, groupby="cell_state")
    with pytest.warns(ScclustWarning, match="KLRF1"):  # markers the simulation does not have: left out
        tl.annotate(adata, groupby="cell_state", sets=read_marker_sets(PBMC_SETS))
    res = adata.uns["cell_state_annotation"]
    assert list(res["scores"].columns) == list(read_marker_sets(PBMC_SETS))
    truth = adata.obs["cell_type"].astype(str)
    agree = (adata.obs["cell_state_annotation"].astype(str) == truth).mean()
    assert agree >= 0.9, res["assignment"]


def test_annotate_margin_and_warnings(pbmc):
    adata = pbmc.copy()
    tl.markers(adata, groupby="bulk_labels")
    sets = {"B": ["MS4A1", "CD79A", "NOT_A_GENE"], "Mono": ["LYZ", "CST3", "S100A8"], "NK": ["GNLY", "NKG7"]}
    with pytest.warns(ScclustWarning, match="NOT_A_GENE"):
        tl.annotate(adata, groupby="bulk_labels", sets=sets)
    a = adata.uns["bulk_labels_annotation"]["assignment"]
    assert a.loc["CD19+ B", "label"] == "B" and a.loc["CD14+ Monocyte", "label"] == "Mono"
    assert adata.obs["bulk_labels_annotation"].cat.categories[-1] == "unassigned"
    tl.annotate(adata, groupby="bulk_labels", sets=sets | {"B": ["MS4A1"]}, min_margin=1.0)
    assert (adata.obs["bulk_labels_annotation"] == "unassigned").all()


def test_annotate_errors(pbmc, tmp_path):
    adata = pbmc.copy()
    tl.markers(adata, groupby="bulk_labels")
    with pytest.raises(MissingKeyError, match="'Ghost': none of their genes"):
        tl.annotate(adata, groupby="bulk_labels", sets={"B": ["MS4A1"], "Ghost": ["NOPE1", "NOPE2"]})
    with pytest.raises(MissingKeyError, match="run scclust.tl.markers"):
        tl.annotate(adata, groupby="louvain", sets={"B": ["MS4A1"]})
    with pytest.raises(FileNotFoundError, match="marker set file not found"):
        read_marker_sets(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("- CD3E\n- CD4\n")
    with pytest.raises(ConfigError, match="expected a mapping of cell types"):
        read_marker_sets(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="sets"):  # a tool takes no file path
        tl.annotate(adata, groupby="bulk_labels", sets="configs/markers_pbmc.yaml")


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_one_line(pbmc):
    adata = pbmc.copy()
    adata.obs["depth"] = np.arange(adata.n_obs)  # integers, one per cell: not a clustering
    cases = [
        (InputError, "not a clustering", {"groupby": "depth"}),
        (InputError, "numeric column", {"groupby": "n_counts"}),
        (MissingKeyError, "not in .obs", {"groupby": "leiden_9"}),
        (ConfigError, "reference 'nope' is not a cluster", {"groupby": "bulk_labels", "reference": "nope"}),
        (ConfigError, "use_raw or layer", {"groupby": "bulk_labels", "layer": "x", "use_raw": True}),
        (ConfigError, "method", {"groupby": "bulk_labels", "method": "logreg"}),
    ]
    for err, match, kw in cases:
        with pytest.raises(err, match=match) as info:
            tl.markers(adata, **kw)
        assert "\n" not in str(info.value)
    one = adata.copy()
    one.obs["bulk_labels"] = one.obs["bulk_labels"].cat.add_categories("lonely")
    one.obs.iloc[0, one.obs.columns.get_loc("bulk_labels")] = "lonely"
    with pytest.raises(InputError, match="'lonely' hold a single cell"):
        tl.markers(one, groupby="bulk_labels")


def test_counts_and_scaled_data_refused(pbmc):
    from scclust.datasets import simulate_counts

    counts = simulate_counts(300, n_samples=2, seed=1)
    with pytest.raises(InputError, match="log-normalized expression; .X holds integer counts"):
        tl.markers(counts, groupby="cell_type")
    with pytest.raises(InputError, match="negative values"):
        tl.markers(pbmc.copy(), groupby="bulk_labels", use_raw=False)  # .X is scaled


# ------------------------------------------------------------------------------------------ Kang PBMCs
@pytest.fixture(scope="module")
def kang(kang_path):
    raw = ad.read_h5ad(kang_path)
    adata = pp.prepare(
        raw, batch_key="condition", pca={"n_comps": 50}, graph={"n_neighbors": 20, "n_pcs": 30}, umap=None
    )
    pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    tl.leiden(adata, resolutions=[0.6, 1.4])  # CD8 T and NK cells share a cluster up to 1.0
    return adata


@pytest.mark.shared
def test_kang_wilcoxon_equals_scanpy(kang):
    assert_equal_stats(compare_with_scanpy(kang.copy(), "leiden_0.6"))


@pytest.mark.shared
def test_kang_annotation_agrees_with_known_types(kang):
    adata = kang.copy()
    tl.markers(adata, groupby="leiden_1.4")
    with pytest.warns(ScclustWarning, match="CD1C"):  # not in this 9,015-gene subset: left out
        tl.annotate(adata, groupby="leiden_1.4", sets=read_marker_sets(PBMC_SETS))
    known = adata.obs["celltype_from_muscat"].dropna().astype(str).map(KANG_TYPES)
    ours = adata.obs.loc[known.index, "leiden_1.4_annotation"].astype(str)
    agree = float((ours == known).mean())
    assert agree >= 0.9, (agree, adata.uns["leiden_1.4_annotation"]["assignment"])
