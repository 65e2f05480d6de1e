"""tl.proportions against pd.crosstab; one-sample flags on planted and simulated clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scclust import tl
from scclust._errors import ConfigError, MissingKeyError


@pytest.fixture(scope="module")
def clustered(sim):
    a = sim.copy()
    tl.leiden(a, resolutions=[0.4, 0.6, 1.0, 1.4, 2.0])
    return a


@pytest.mark.parametrize("normalize", ["index", "columns", "all"])
def test_counts_equal_crosstab_and_fractions_sum_to_one(clustered, normalize):
    a = clustered.copy()
    obs_before = a.obs.copy()
    long = tl.proportions(a, groupby="leiden_1.0", by="sample", normalize=normalize)
    counts = long.pivot(index="leiden_1.0", columns="sample", values="count")
    ref = pd.crosstab(a.obs["leiden_1.0"], a.obs["sample"])
    pd.testing.assert_frame_equal(counts, ref, check_names=False, check_dtype=False, check_categorical=False)
    frac = long.pivot(index="leiden_1.0", columns="sample", values="fraction")
    ref_frac = pd.crosstab(a.obs["leiden_1.0"], a.obs["sample"], normalize=normalize)
    np.testing.assert_allclose(frac.to_numpy(), ref_frac.to_numpy(), rtol=1e-12)
    axis = {"index": 1, "columns": 0}.get(normalize)
    sums = frac.sum(axis=axis) if axis is not None else np.array([frac.to_numpy().sum()])
    np.testing.assert_allclose(np.asarray(sums), 1.0, rtol=1e-12)
    assert long["count"].sum() == a.n_obs
    pd.testing.assert_frame_equal(a.obs, obs_before)  # pure


def test_proportions_errors(clustered):
    with pytest.raises(MissingKeyError, match="by 'donor' not in .obs"):
        tl.proportions(clustered, groupby="leiden_1.0", by="donor")
    with pytest.raises(ConfigError, match="normalize 'rows'"):
        tl.proportions(clustered, groupby="leiden_1.0", by="sample", normalize="rows")


def test_no_flag_on_simulated_clusterings(clustered):
    for key in ["cell_type", "leiden_0.4", "leiden_0.6", "leiden_1.0", "leiden_1.4", "leiden_2.0"]:
        diag = tl.composition_diagnostics(clustered, groupby=key)
        assert not diag["flag_one_sample"].any(), (key, diag[diag["flag_one_sample"]])
        assert (diag["entropy"] > 0.8).all()  # integrated samples are well mixed
        assert diag["n_cells"].sum() == clustered.n_obs


def test_planted_one_sample_cluster_is_the_only_flag(clustered):
    a = clustered.copy()
    labels = a.obs["leiden_1.0"].astype(str)
    # the B cells of one sample become their own cluster
    planted = (a.obs["cell_type"] == "B").to_numpy() & (a.obs["sample"] == "ctrl_13").to_numpy()
    assert planted.sum() > 20
    labels[planted] = "planted"
    a.obs["planted"] = pd.Categorical(labels)
    diag = tl.composition_diagnostics(a, groupby="planted")
    assert diag.loc["planted", "top_share"] == 1.0
    assert diag.loc["planted", "top_sample"] == "ctrl_13"
    assert diag.loc["planted", "entropy"] == 0.0
    assert diag.index[diag["flag_one_sample"]].tolist() == ["planted"]


def _obs_adata(cluster, sample):
    return AnnData(
        obs=pd.DataFrame(
            {"c": pd.Categorical(cluster), "sample": pd.Categorical(sample)},
            index=[f"c{i}" for i in range(len(cluster))],
        )
    )


def test_a_sample_that_dominates_the_data_is_not_flagged_for_its_size():
    rng = np.random.default_rng(0)
    n = 4000
    sample = rng.choice(["big", "s2", "s3"], n, p=[0.7, 0.15, 0.15])
    cluster = rng.choice(["a", "b", "c"], n)
    diag = tl.composition_diagnostics(_obs_adata(cluster, sample), groupby="c")
    assert (diag["top_sample"] == "big").all() and (diag["top_share"] > 0.5).all()
    assert not diag["flag_one_sample"].any()
    # ... but a cluster made only of it is
    idx = np.flatnonzero(sample == "big")[:300]
    cluster = cluster.astype(object)
    cluster[idx] = "only_big"
    diag = tl.composition_diagnostics(_obs_adata(cluster, sample), groupby="c")
    assert diag.index[diag["flag_one_sample"]].tolist() == ["only_big"]


def test_a_tiny_cluster_is_not_flagged_by_chance():
    sample = ["s1", "s2", "s3", "s4"] * 250
    cluster = ["a"] * 997 + ["tiny"] * 3
    sample = [*sample[:997], "s1", "s1", "s2"]
    diag = tl.composition_diagnostics(_obs_adata(cluster, sample), groupby="c")
    assert diag.loc["tiny", "top_share"] > 0.5
    assert not diag["flag_one_sample"].any()


def test_diagnostics_errors(clustered):
    with pytest.raises(ConfigError, match="max_share"):
        tl.composition_diagnostics(clustered, groupby="leiden_1.0", max_share=1.5)
    one = _obs_adata(["a", "b"] * 5, ["s"] * 10)
    with pytest.raises(ValueError, match="at least 2"):
        tl.composition_diagnostics(one, groupby="c")
