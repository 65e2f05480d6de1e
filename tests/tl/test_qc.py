"""tl.qc_summary: medians, key aliases, and the QC flag on planted and simulated clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scclust import tl
from scclust._errors import ConfigError, MissingKeyError
from scclust.tl._qc import resolve_qc_keys


@pytest.fixture(scope="module")
def clustered(sim):
    a = sim.copy()
    tl.leiden(a, resolutions=[0.4, 1.0, 2.0])
    return a


def test_medians_equal_pandas(clustered):
    s = tl.qc_summary(clustered, groupby="leiden_1.0")
    ref = clustered.obs.groupby("leiden_1.0", observed=True)[
        ["n_genes_by_counts", "total_counts", "pct_counts_mt"]
    ].median()
    np.testing.assert_allclose(s[ref.columns].to_numpy(), ref.to_numpy(), rtol=1e-6)
    assert s["n_cells"].tolist() == clustered.obs["leiden_1.0"].value_counts(sort=False).tolist()
    assert s.attrs["bounds"]["pct_counts_mt"]["lower"] is None  # mito: upper side only
    b = s.attrs["bounds"]["n_genes_by_counts"]  # genes: both sides (empty droplets below, multiplets above)
    assert b["lower"] < np.median(clustered.obs["n_genes_by_counts"]) < b["upper"]


def test_no_flag_on_simulated_clusterings(clustered):
    # includes platelets and monocytes, whose libraries are genuinely 2x smaller / larger
    for key in ["cell_type", "leiden_0.4", "leiden_1.0", "leiden_2.0"]:
        s = tl.qc_summary(clustered, groupby=key)
        assert not s["flag_qc"].any(), (key, s[s["flag_qc"]])


def test_planted_low_gene_cluster_is_the_only_flag(clustered):
    a = clustered.copy()
    rng = np.random.default_rng(1)
    cells = rng.choice(np.flatnonzero(a.obs["cell_type"] == "CD4 T"), 120, replace=False)
    # damaged cells / empty droplets: a fifth to a third of the usual genes and counts
    shrink = rng.uniform(0.2, 0.33, cells.size)
    for key in ("n_genes_by_counts", "total_counts"):
        a.obs[key] = a.obs[key].astype(float)
    a.obs.iloc[cells, a.obs.columns.get_loc("n_genes_by_counts")] *= shrink
    a.obs.iloc[cells, a.obs.columns.get_loc("total_counts")] *= shrink
    labels = a.obs["leiden_1.0"].astype(str).to_numpy()
    labels[cells] = "low"
    a.obs["planted"] = pd.Categorical(labels)
    s = tl.qc_summary(a, groupby="planted")
    assert s.index[s["flag_qc"]].tolist() == ["low"]
    assert s.loc["low", "flag_n_genes_by_counts"] and not s.loc["low", "flag_pct_counts_mt"]
    assert s.loc["low", "frac_outside_n_genes_by_counts"] > 0.5


def test_planted_high_mito_cluster_is_flagged(clustered):
    a = clustered.copy()
    cells = np.flatnonzero(a.obs["cell_type"] == "B")[:80]
    a.obs["pct_counts_mt"] = a.obs["pct_counts_mt"].astype(float)
    a.obs.iloc[cells, a.obs.columns.get_loc("pct_counts_mt")] = 25.0
    labels = a.obs["leiden_1.0"].astype(str).to_numpy()
    labels[cells] = "mito"
    a.obs["planted"] = pd.Categorical(labels)
    s = tl.qc_summary(a, groupby="planted")
    assert s.index[s["flag_qc"]].tolist() == ["mito"]
    assert s.loc["mito", "flag_pct_counts_mt"]


def test_planted_doublet_cluster_is_flagged_on_the_upper_side(clustered):
    """8 doublet-like cells: the genes and counts of two cells (B + NK), labelled as their own cluster."""
    a = clustered.copy()
    rng = np.random.default_rng(2)
    b = rng.choice(np.flatnonzero(a.obs["cell_type"] == "B"), 8, replace=False)
    nk = rng.choice(np.flatnonzero(a.obs["cell_type"] == "NK"), 8, replace=False)
    for key in ("n_genes_by_counts", "total_counts"):
        a.obs[key] = a.obs[key].astype(float)
        v = a.obs[key].to_numpy().copy()
        v[b] = v[b] + v[nk] * (0.9 if key == "n_genes_by_counts" else 1.0)  # genes overlap a little
        a.obs[key] = v
    labels = a.obs["leiden_1.0"].astype(str).to_numpy()
    labels[b] = "doublets"
    a.obs["planted"] = pd.Categorical(labels)
    s = tl.qc_summary(a, groupby="planted")
    assert s.index[s["flag_qc"]].tolist() == ["doublets"]
    assert s.loc["doublets", "flag_doublet_like"]
    assert s.attrs["bounds"]["total_counts"]["upper"] is not None  # counts: both sides now


def test_aliases(pbmc):
    a = pbmc.copy()
    a.obs = a.obs.drop(columns=["n_genes_by_counts", "total_counts", "pct_counts_mt"])
    assert resolve_qc_keys(a) == {
        "n_genes_by_counts": "n_genes",
        "total_counts": "n_counts",
        "pct_counts_mt": "percent_mito",
    }
    s = tl.qc_summary(a, groupby="bulk_labels")
    assert {"n_genes", "n_counts", "percent_mito", "flag_qc"} <= set(s.columns)
    # and the other way: an alias asked for, the canonical column present
    assert resolve_qc_keys(pbmc, ["nFeature_RNA"]) == {"nFeature_RNA": "n_genes_by_counts"}


def test_errors(clustered):
    with pytest.raises(
        MissingKeyError, match=r"QC key\(s\) 'doublet_score' not found.*numeric .obs columns: .*'total_counts'"
    ):
        tl.qc_summary(clustered, groupby="leiden_1.0", keys=["doublet_score"])
    a = clustered.copy()
    a.obs = a.obs[["sample", "leiden_1.0"]]
    with pytest.raises(MissingKeyError, match="'n_genes_by_counts', 'total_counts', 'pct_counts_mt' not found"):
        tl.qc_summary(a, groupby="leiden_1.0")
    with pytest.raises(ConfigError, match="n_mads"):
        tl.qc_summary(clustered, groupby="leiden_1.0", n_mads=0)


def _qc_obs(seed: int = 0):
    """QC metrics of 900 cells in 7 clusters: 5 is a small cell type (platelet-like: a quarter of the
    genes and counts), 4 a large one (3x the genes), 6 has 30 % mitochondrial reads (dying cells)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    labels = np.repeat(["0", "1", "2", "3", "4", "5", "6"], [200, 200, 200, 150, 100, 25, 25])
    genes = rng.lognormal(np.log(1000), 0.25, labels.size)
    counts = genes * 2.5 * rng.lognormal(0, 0.1, labels.size)
    mt = rng.normal(3, 1, labels.size).clip(0)
    genes[labels == "5"] /= 4
    counts[labels == "5"] /= 4
    genes[labels == "4"] *= 3
    mt[labels == "6"] = 30
    obs = pd.DataFrame(
        {"leiden": pd.Categorical(labels), "n_genes_by_counts": genes, "total_counts": counts, "pct_counts_mt": mt},
        index=[f"c{i}" for i in range(labels.size)],
    )
    return ad.AnnData(obs=obs)


def test_clusters_of_distinct_size_are_an_observation_not_a_warning(caplog):
    """Platelets and DCs differ in QC metrics: said at INFO level, with what it means and what to check;
    a high mitochondrial share stays a warning. The table is unchanged."""
    a = _qc_obs()
    with caplog.at_level("INFO", logger="scclust"):
        s = tl.qc_summary(a, groupby="leiden")
    assert s.index[s["flag_qc"]].tolist() == ["4", "5", "6"]
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    warn = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert info == [
        (
            "leiden: clusters 4, 5 differ in QC metrics from the rest (median n_genes_by_counts beyond 3 MADs "
            "of all cells: 5 lower, 4 higher; median total_counts beyond 3 MADs of all cells: 5 lower): small "
            "or large cell types (platelets, DCs) do; a cluster distinct only in QC metrics and without "
            "markers of its own may be low-quality cells or doublets"
        )
    ]
    assert len(warn) == 1 and warn[0].startswith("leiden: cluster 6: median pct_counts_mt above 3 MADs of all cells")
    caplog.clear()
    a.obs["pct_counts_mt"] = 3.0  # no data problem: nothing at WARNING level
    with caplog.at_level("INFO", logger="scclust"):
        tl.qc_summary(a, groupby="leiden")
    assert not [r for r in caplog.records if r.levelno >= 30]
    assert not any("beyond the per-cell" in r.getMessage() for r in caplog.records)
