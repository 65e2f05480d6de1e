"""tl.subcluster: marker-rule selection, re-processing from .raw, parity with a plain scanpy run."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import scclust as scc
from scclust._errors import ConfigError, InputError, MissingKeyError, ResourceError, ScclustWarning
from scclust._memory import memory_limit, process_rss
from scclust.pp._prepare import HVG, PCA
from scclust.tl._subcluster import NOT_IN_SUBSET, SubclusterGraph, memory_estimate

TNK = ["CD4 T", "CD8 T", "NK"]
#: the lab's T/NK subclustering (configs/tutorial.yaml)
MARKERS = {"markers": {"T": ["CD3E"], "NK": ["GNLY", "NKG7"]}}
LAB = {
    "groupby": "leiden_0.4",
    "select": MARKERS,
    "pca": {"regress_out": ["total_counts", "pct_counts_mt"]},
    "leiden": {"key_added": "tcells"},
}


def _lab(**kw):
    """The lab's arguments with some replaced (``select`` given alone replaces the rule)."""
    return {**LAB, **kw}


def _clustered(adata):
    a = adata.copy()
    scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    scc.tl.leiden(a, resolutions=[0.4], flavor="leidenalg", n_iterations=-1)
    return a


@pytest.fixture(scope="module")
def big(sim7332):
    parent = _clustered(sim7332)
    sub, rep = scc.tl.subcluster(parent, name="tnk", **LAB)
    return parent, sub, rep


@pytest.fixture(scope="module")
def small(sim):
    return _clustered(sim)


def test_marker_rule_precision_recall(big):
    parent, sub, rep = big
    truth = parent.obs["cell_type"].isin(TNK).to_numpy()
    chosen = parent.obs_names.isin(sub.obs_names)
    precision, recall = truth[chosen].mean(), chosen[truth].mean()
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # the table explains the choice: selected clusters are exactly those marked, with their scores
    table = rep.selection
    assert sorted(table.index[table["selected"]]) == sorted(rep.selected)
    assert {"score_T", "score_NK", "scaled_T", "scaled_NK", "mean_CD3E", "frac_GNLY"} <= set(table.columns)
    assert (table.loc[table["selected"], ["scaled_T", "scaled_NK"]].max(axis=1) >= 0.5).all()
    assert table.loc[rep.selected, "n_cells"].sum() == sub.n_obs


def test_subclusters_separate_cd4_cd8_nk(big):
    _, sub, rep = big
    key = "tcells_0.6"
    assert rep.keys == [key] and key in sub.obs
    truth = sub.obs["cell_type"].astype(str)
    keep = truth.isin(TNK).to_numpy()
    # the simulation's T / NK types have states (4 CD4 T states, CD8 T and NK gradients), so the
    # subclusters split types: each subcluster must lie within one type (purity) and together they
    # must follow the states more closely than the types
    ct = pd.crosstab(sub.obs[key][keep], truth[keep])
    purity = ct.max(axis=1).sum() / ct.to_numpy().sum()
    assert purity >= 0.9, ct
    state = sub.obs["cell_state"].astype(str)[keep]
    assert adjusted_rand_score(state, sub.obs[key][keep]) > adjusted_rand_score(truth[keep], sub.obs[key][keep])


def test_outputs_raw_hvg_tables(big):
    parent, sub, rep = big
    assert sub.raw.n_vars == parent.raw.n_vars and sub.n_vars == int(sub.raw.var["highly_variable"].sum())
    for key in ("X_pca", "X_pca_harmony", "X_umap"):
        assert sub.obsm[key].shape[0] == sub.n_obs
    ov = rep.hvg_overlap.set_index("set")["n_genes"]
    genes = rep.hvg_genes
    assert ov["parent"] == genes["parent"].sum() == int(parent.var["highly_variable"].sum())
    assert ov["subset"] == genes["subset"].sum() == sub.n_vars
    assert ov["both"] == len(set(parent.var_names) & set(sub.var_names))
    cps = rep.cells_per_sample
    assert cps["n_subset"].sum() == sub.n_obs and cps["n_parent"].sum() == parent.n_obs
    ct = rep.contingency["tcells_0.6"]
    assert ct.to_numpy().sum() == sub.n_obs
    assert set(rep.tables()) >= {"selection", "hvg_overlap", "hvg_genes", "cells_per_sample", "contingency_tcells_0.6"}
    # the sim has non-constant total_counts and pct_counts_mt: both regressed
    assert rep.regressed == ["total_counts", "pct_counts_mt"]


def test_transfer_to_parent(big):
    parent, sub, _ = big
    p = parent.copy()
    keys = scc.tl.transfer_subclusters(p, subset=sub)
    assert keys == ["tcells_0.6"]
    col = p.obs["tcells_0.6"].astype(str)
    inside = p.obs_names.isin(sub.obs_names)
    assert (col[~inside] == NOT_IN_SUBSET).all()
    expected = "tnk:" + sub.obs["tcells_0.6"].astype(str)
    assert (col.loc[sub.obs_names] == expected).all()
    assert p.uns["subcluster"]["tnk"]["n_cells"] == sub.n_obs
    # a second transfer of the same name is allowed, another name may not overwrite it
    scc.tl.transfer_subclusters(p, subset=sub)
    with pytest.raises(ConfigError, match="would overwrite"):
        scc.tl.transfer_subclusters(p, subset=sub, name="other")
    with pytest.raises(ConfigError, match="would overwrite"):
        scc.tl.transfer_subclusters(p, subset=sub.copy(), keys=["leiden_0.4"])


def test_parity_with_plain_scanpy_harmonypy(small):
    """The lab's steps with scanpy + harmonypy on the same cells give the same labels (ARI = 1)."""
    import harmonypy
    import scanpy as sc

    sub, _ = scc.tl.subcluster(small, **_lab(select={"clusters": _tnk_ids(small)}))
    t = small[small.obs_names.isin(sub.obs_names)].raw.to_adata()
    sc.pp.highly_variable_genes(t, min_mean=0.0125, max_mean=3, min_disp=0.5)
    assert (t.var["highly_variable"].to_numpy() == sub.raw.var["highly_variable"].to_numpy()).all()
    t.raw = t
    t = t[:, t.var["highly_variable"]].copy()
    sc.pp.regress_out(t, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(t, max_value=10)
    sc.tl.pca(t, svd_solver="arpack")
    ho = harmonypy.run_harmony(t.obsm["X_pca"], t.obs, "sample", random_state=0, verbose=False)
    Z = np.asarray(ho.Z_corr)
    t.obsm["X_pca_harmony"] = Z if Z.shape == t.obsm["X_pca"].shape else Z.T
    sc.pp.neighbors(t, n_neighbors=10, n_pcs=30, use_rep="X_pca_harmony")
    with warnings.catch_warnings():  # scanpy's notice about its future default flavor
        warnings.simplefilter("ignore", FutureWarning)
        sc.tl.leiden(t, resolution=0.6, key_added="tcells_0.6", flavor="leidenalg", n_iterations=-1)
    assert (t.obs_names == sub.obs_names).all()
    assert adjusted_rand_score(t.obs["tcells_0.6"], sub.obs["tcells_0.6"]) == 1.0


def _tnk_ids(adata):
    """Parent clusters whose majority true type is T or NK (an independent reference for the rule)."""
    ct = pd.crosstab(adata.obs["leiden_0.4"], adata.obs["cell_type"])
    return [str(c) for c in ct.index if ct.loc[c].idxmax() in TNK]


def test_marker_rule_equals_truth_majority_clusters(small):
    _, rep = scc.tl.subcluster(small, **LAB)
    assert sorted(rep.selected) == sorted(_tnk_ids(small))


def test_obs_selection_and_options(small):
    sub, rep = scc.tl.subcluster(
        small,
        name="nk",
        select={"obs_query": "cell_type == 'NK'"},
        batch_key=None,
        leiden={"resolutions": [0.3, 0.8], "flavor": "igraph", "n_iterations": 2},
    )
    assert (sub.obs["cell_type"] == "NK").all() and sub.n_obs == int((small.obs["cell_type"] == "NK").sum())
    assert rep.keys == ["nk_0.3", "nk_0.8"] and rep.regressed == [] and "X_pca_harmony" not in sub.obsm
    assert rep.selection["n_selected"].sum() == sub.n_obs


def test_constant_covariate_dropped(small):
    a = small.copy()
    a.obs["pct_counts_mt"] = 0.0
    _, rep = scc.tl.subcluster(a, **_lab(select={"clusters": _tnk_ids(a)}))
    assert rep.regressed == ["total_counts"]


def test_guards(small):
    a = small.copy()
    with pytest.raises(InputError, match="too few cells"):
        scc.tl.subcluster(a, select={"obs_query": "total_counts < 0"})
    with pytest.raises(ConfigError, match="not in 'leiden_0.4'"):
        scc.tl.subcluster(a, **_lab(select={"clusters": ["99"]}))
    with pytest.raises(ConfigError, match="obs_query"):
        scc.tl.subcluster(a, select={"obs_query": "no_such_column > 1"})
    with pytest.raises(MissingKeyError, match="groupby 'leiden_9'"):
        scc.tl.subcluster(a, **_lab(groupby="leiden_9"))
    with pytest.raises(MissingKeyError, match="none of"):
        scc.tl.subcluster(a, **_lab(select={"markers": {"T": ["NOTAGENE"]}}))
    # warning issued, then the later error
    with pytest.warns(ScclustWarning, match="NOTAGENE"), pytest.raises(InputError, match="too few cells"):
        scc.tl.subcluster(a, **_lab(select={"markers": {"T": ["CD3E", "NOTAGENE"]}}, min_cells=10**6))
    with pytest.raises(MissingKeyError, match="regress_out key 'nope'"):
        scc.tl.subcluster(a, **_lab(pca={"regress_out": ["nope"]}))
    with pytest.raises(ConfigError, match="seurat_v3"):
        scc.tl.subcluster(a, **_lab(hvg={"flavor": "seurat_v3", "n_top_genes": 100}))
    with pytest.raises(ConfigError, match="exactly one of markers, clusters or obs_query"):
        scc.tl.subcluster(a, **_lab(select={"markers": {"T": ["CD3E"]}, "clusters": ["1"]}))
    with pytest.raises(ConfigError, match="needs groupby"):
        scc.tl.subcluster(a, select=MARKERS)
    # a batch with too few selected cells: clear error, or dropped on request
    nk = a.obs["cell_type"] == "NK"
    few = a.obs_names[nk & (a.obs["sample"] == "covid_1")][5:]
    b = a[~a.obs_names.isin(few)].copy()
    with pytest.raises(InputError, match="covid_1"):
        scc.tl.subcluster(b, select={"obs_query": "cell_type == 'NK'"})
    sub, rep = scc.tl.subcluster(b, select={"obs_query": "cell_type == 'NK'"}, small_batches="drop")
    assert rep.dropped_batches == {"covid_1": 5} and "covid_1" not in set(sub.obs["sample"].astype(str))
    c = a.copy()
    c.raw = None
    with pytest.raises(InputError, match=r"\.raw"):
        scc.tl.subcluster(c, **LAB)


def test_memory_estimate_counts_the_selected_rows_in_any_format():
    from scipy import sparse

    X = sparse.random(500, 300, density=0.1, format="csr", random_state=0)
    rows = np.arange(0, 500, 3)
    for m in (X, X.tocsc(), X.tocoo(), X.toarray()):
        est = memory_estimate(m, rows, HVG(), PCA(), SubclusterGraph())
        expected = rows.size * 300 if isinstance(m, np.ndarray) else X[rows].nnz
        assert est.parts[0][1] == 30 * expected, type(m)


def test_a_subset_that_cannot_fit_is_refused_before_it_is_copied(small):
    a = small.copy()
    rows = np.flatnonzero(a.obs["cell_type"].isin(TNK).to_numpy())
    est = memory_estimate(a.raw.X, rows, HVG(), PCA(), SubclusterGraph())
    # the expression term counts the selected rows' stored values
    assert est.parts[0][1] == 30 * a.raw.X[rows].nnz
    columns = list(a.obs.columns)
    with memory_limit(int(process_rss() + est.total / 2)), pytest.raises(ResourceError) as err:
        scc.tl.subcluster(a, select={"obs_query": "cell_type in ['CD4 T', 'CD8 T', 'NK']"})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"subcluster 'subset' ({rows.size:,} cells) would not fit in memory: about ")
    assert "expression" in msg and "scaled HVG matrix" in msg and "free (memory_limit" in msg
    assert "options: a narrower selection" in msg and "raise memory_limit" in msg
    assert list(a.obs.columns) == columns  # nothing written into the parent


@pytest.mark.shared
def test_kang_selects_t_and_nk(kang_path):
    import anndata as ad

    kang = ad.read_h5ad(kang_path)
    a = scc.pp.prepare(kang, batch_key="condition")
    scc.pp.neighbors(a, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
    scc.tl.leiden(a, resolutions=[0.4], flavor="leidenalg", n_iterations=-1)
    assert (a.obs["pct_counts_mt"] == 0).all()  # no MT- genes in this subset
    sub, rep = scc.tl.subcluster(a, **_lab(batch_key="condition"))
    assert rep.regressed == ["total_counts"]
    known = sub.obs["celltype_from_muscat"].dropna().astype(str)
    assert len(known) > 100
    frac = known.isin(["CD4 T cells", "CD8 T cells", "NK cells"]).mean()
    assert frac >= 0.9, frac


def test_subcluster_on_small_real_data_end_to_end(pbmc):
    """The fast lane's subclustering: select one cell type of the embedded PBMC set by a query,
    re-process it (HVG, scale, PCA, graph, Leiden, UMAP), map the labels back and draw both figures."""
    parent = pbmc.copy()
    sub, rep = scc.tl.subcluster(
        parent,
        name="dc",
        select={"obs_query": "bulk_labels == 'Dendritic'"},
        groupby="louvain",
        batch_key=None,
        min_cells=20,
        graph={"n_pcs": 20},
        pca={"n_comps": 30},
        leiden={"flavor": "igraph", "n_iterations": 2, "resolutions": 0.5},
    )
    n_dc = int((parent.obs["bulk_labels"] == "Dendritic").sum())
    assert sub.n_obs == n_dc and rep.keys == ["dc_0.5"] and "X_umap" in sub.obsm
    assert set(sub.var_names) <= set(parent.raw.var_names)
    keys = scc.tl.transfer_subclusters(parent, subset=sub, name="dc")
    assert keys == ["dc_0.5"]
    back = parent.obs["dc_0.5"]
    assert (back[sub.obs_names].astype(str) == "dc:" + sub.obs["dc_0.5"].astype(str)).all()
    assert (back.astype(str) == "not in subset").sum() == parent.n_obs - n_dc
    fig = scc.pl.subcluster_overview(sub, parent=parent, parent_key="louvain", sample_key="sample")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert "dc UMAP: dc_0.5" in titles and "parent UMAP: louvain" in titles
    genes = [g for g in ("CST3", "LYZ") if g in sub.raw.var_names]
    assert [ax.get_title() for ax in scc.pl.subcluster_markers(sub, genes=genes).axes if ax.get_title()] == genes
