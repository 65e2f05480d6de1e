"""Clustered heatmap computation: the seed's example, leaf orders against scipy, the guards, the
bootstrap stability, the three matrix sources, and the config section."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.cluster import hierarchy as sch
from scipy.spatial.distance import pdist

import scclust as scc
from scclust import config as C
from scclust._errors import ConfigError, InputError, MissingFileError, MissingKeyError, ScclustWarning
from scclust.datasets import heatmap_example
from scclust.tl._heatmap import METHODS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    return heatmap_example()


def _planted(row: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(row.index[row["planted"] == g]) for g in row["planted"].cat.categories}


def _groups(res) -> set[frozenset[str]]:
    g = res.row_groups
    return {frozenset(g.index[g == c]) for c in g.cat.categories}


def test_example_reproduces_the_seed_code():
    np.random.seed(4)  # noqa: NPY002 - the seed's code, verbatim (its legacy global stream)
    matrix = np.vstack(
        [
            np.random.normal(1.2, 0.35, (8, 6)),  # noqa: NPY002
            np.random.normal(-0.8, 0.35, (8, 6)),  # noqa: NPY002
            np.random.normal(0.2, 0.35, (8, 6)),  # noqa: NPY002
        ]
    )
    matrix[:, 3:] += np.repeat([0.7, -0.4, 0.2], 8)[:, None]
    df, col, row = heatmap_example()
    np.testing.assert_array_equal(df.to_numpy(), matrix)
    assert list(df.index[:2]) == ["gene_1", "gene_2"] and list(df.columns) == [f"sample_{i}" for i in range(1, 7)]
    assert list(col["sample_group"]) == ["control"] * 3 + ["treated"] * 3
    assert list(row["planted"].value_counts().sort_index()) == [8, 8, 8]


@pytest.mark.parametrize("method", METHODS)
def test_planted_groups_are_the_three_top_row_groups(example, method):
    df, _, row = example
    res = scc.tl.cluster_heatmap(
        df,
        scale="none",
        row_metric="euclidean",
        row_method=method,
        col_metric="euclidean",
        col_method="average",
        row_k=3,
        n_boot=0,
    )
    assert _groups(res) == _planted(row)
    # groups are numbered 1..3 from the top of the drawn order
    first = [res.row_groups.iloc[i] for i in res.row_order]
    assert list(dict.fromkeys(first)) == ["1", "2", "3"]


@pytest.mark.slow
def test_seed_config_runs_and_recovers_planted_groups(tmp_path, example):
    """configs/heatmap_seed.yaml through the workflow (the pbmc68k marker heatmap left out for speed)."""
    data = yaml.safe_load((ROOT / "configs" / "heatmap_seed.yaml").read_text())
    data["heatmap"] = [h for h in data["heatmap"] if h["source"] == "table"]
    data["outdir"] = str(tmp_path)
    cfg = C.parse_config(data)
    _, manifest = scc.workflow.run(cfg)
    _, _, row = example
    groups = pd.read_csv(tmp_path / "tables" / "seed_levels_row_groups.csv", index_col=0)["group"]
    assert {frozenset(groups.index[groups == g]) for g in groups.unique()} == _planted(row)
    stab = pd.read_csv(tmp_path / "tables" / "seed_levels_stability.csv", index_col=0)
    assert (stab["mean_jaccard"] > 0.85).all()
    order = pd.read_csv(tmp_path / "tables" / "seed_recipe_row_order.csv")
    link = pd.read_csv(tmp_path / "tables" / "seed_recipe_row_linkage.csv")
    z = row.index.to_series()  # reference: the seed's own code path
    df = heatmap_example()[0]
    row_z = df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1), axis=0)
    Z = sch.linkage(pdist(row_z.values, metric="correlation"), method="average")
    assert list(order["label"]) == list(z.index[sch.leaves_list(Z)])
    np.testing.assert_allclose(link[["child1", "child2", "distance", "size"]].to_numpy(), Z, rtol=1e-5, atol=1e-6)
    assert {
        "figures/seed_recipe.png",
        "figures/seed_levels.png",
        "tables/seed_levels_col_linkage.csv",
        "tables/seed_levels_matrix.csv",
        "tables/seed_levels_col_order.csv",
    } <= set(manifest["files"])


CASES = [(m, "euclidean") for m in METHODS] + [
    (m, d)
    for m in ("single", "complete", "average", "weighted")
    for d in ("correlation", "cosine", "cityblock", "chebyshev")
]


@pytest.mark.parametrize("optimal", [False, True])
@pytest.mark.parametrize(("method", "metric"), CASES)
def test_leaf_order_equals_scipy(method, metric, optimal):
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(40, 7)) + rng.normal(size=(40, 1)) * 2)
    res = scc.tl.cluster_heatmap(
        X,
        scale="zscore",
        row_metric=metric,
        row_method=method,
        col_metric=metric,
        col_method=method,
        optimal_ordering=optimal,
        row_k=4,
        n_boot=0,
    )
    Xz = (X.to_numpy() - X.to_numpy().mean(1, keepdims=True)) / X.to_numpy().std(1, ddof=1, keepdims=True)
    Zr = sch.linkage(pdist(Xz, metric), method=method, optimal_ordering=optimal)
    Zc = sch.linkage(pdist(Xz.T, metric), method=method, optimal_ordering=optimal)
    np.testing.assert_array_equal(res.row_order, sch.leaves_list(Zr))
    np.testing.assert_array_equal(res.col_order, sch.leaves_list(Zc))
    np.testing.assert_allclose(res.row_linkage, Zr, atol=1e-9)
    cut = sch.fcluster(Zr, 4, criterion="maxclust")
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(cut, res.row_groups.to_numpy()) == 1.0


def test_scalings(example):
    df, _, _ = example
    z = scc.tl.cluster_heatmap(df, scale="zscore", n_boot=0).data
    seed_z = df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1), axis=0)  # the seed's formula
    np.testing.assert_allclose(z.to_numpy(), seed_z.to_numpy())
    s = scc.tl.cluster_heatmap(df, scale="standard", n_boot=0).data
    mm = df.sub(df.min(axis=1), axis=0).div(df.max(axis=1) - df.min(axis=1), axis=0)  # seaborn standard_scale=0
    np.testing.assert_allclose(s.to_numpy(), mm.to_numpy())
    n = scc.tl.cluster_heatmap(df, scale="none", n_boot=0)
    np.testing.assert_array_equal(n.data.to_numpy(), df.to_numpy())
    assert "row z-score" in scc.tl.cluster_heatmap(df, n_boot=0).caption


def test_caption_names_metric_method_scaling(example):
    df, _, _ = example
    res = scc.tl.cluster_heatmap(
        df,
        scale="standard",
        row_metric="cosine",
        row_method="complete",
        col_metric="euclidean",
        col_method="ward",
        optimal_ordering=True,
        row_k=3,
        n_boot=5,
    )
    cap = res.caption
    for word in (
        "min-max",
        "cosine distance, complete linkage",
        "euclidean distance, ward linkage",
        "optimal leaf ordering",
        "cut into 3 groups",
        "5 column bootstraps",
    ):
        assert word in cap, word


def test_zero_variance_rows_dropped_and_reported(example, caplog):
    df, _, _ = example
    bad = pd.concat([df, pd.DataFrame([[1.0] * 6, [0.0] * 6], index=["flat_1", "flat_0"], columns=df.columns)])
    with caplog.at_level("WARNING"):
        res = scc.tl.cluster_heatmap(bad, scale="zscore", row_k=3, n_boot=0)
    assert list(res.dropped["label"]) == ["flat_1", "flat_0"]
    assert set(res.dropped["reason"]) == {"zero variance (z-score undefined)"} and "dropped 2" in caplog.text
    ref = scc.tl.cluster_heatmap(df, scale="zscore", row_k=3, n_boot=0)
    np.testing.assert_array_equal(res.row_order, ref.row_order)
    assert "Dropped: 2 row(s)" in res.caption
    # without scaling, correlation is undefined for the constant row and cosine for the zero row
    res = scc.tl.cluster_heatmap(bad, scale="none", row_metric="correlation", n_boot=0)
    assert list(res.dropped["label"]) == ["flat_1", "flat_0"] and "correlation undefined" in res.dropped["reason"][0]
    res = scc.tl.cluster_heatmap(bad, scale="none", row_metric="cosine", col_metric="euclidean", n_boot=0)
    assert list(res.dropped["label"]) == ["flat_0"]
    res = scc.tl.cluster_heatmap(bad, scale="none", row_metric="euclidean", col_metric="euclidean", n_boot=0)
    assert res.dropped.empty and res.data.shape == (26, 6)


def test_nonfinite_rows(example):
    df, _, _ = example
    bad = df.copy()
    bad.iloc[3, 2] = np.nan
    bad.iloc[5, 0] = np.inf
    with pytest.raises(InputError, match=r"2 row\(s\) have NaN or inf.*'gene_4'.*nonfinite='drop'"):
        scc.tl.cluster_heatmap(bad)
    res = scc.tl.cluster_heatmap(bad, nonfinite="drop", n_boot=0)
    assert list(res.dropped["label"]) == ["gene_4", "gene_6"] and res.data.shape == (22, 6)
    with pytest.raises(InputError, match="fewer than 2 rows"):
        scc.tl.cluster_heatmap(pd.DataFrame([[1.0, np.nan], [np.nan, 2.0], [1.0, 2.0]]), nonfinite="drop")


@pytest.mark.parametrize("method", ["ward", "centroid", "median"])
def test_euclidean_only_methods(example, method):
    with pytest.raises(ConfigError, match=f"row_method '{method}' needs row_metric 'euclidean'.*'correlation'"):
        scc.tl.cluster_heatmap(example[0], row_method=method, row_metric="correlation")
    with pytest.raises(ConfigError, match=f"col_method '{method}' needs col_metric 'euclidean'"):
        scc.tl.cluster_heatmap(example[0], col_method=method, col_metric="cosine")
    with pytest.raises(ConfigError, match=f"heatmap: row_method '{method}' needs"):
        C.parse_config({"input": "x", "heatmap": {"row_method": method, "row_metric": "correlation"}})


def test_bad_arguments(example):
    df = example[0]
    with pytest.raises(ConfigError, match="row_metric.*'euclidean'.*'spearman'"):
        scc.tl.cluster_heatmap(df, row_metric="spearman")
    with pytest.raises(ConfigError, match="scale: Input should be 'zscore', 'standard' or 'none'"):
        scc.tl.cluster_heatmap(df, scale="log")
    with pytest.raises(ConfigError, match="row_k=30 is larger"):
        scc.tl.cluster_heatmap(df, row_k=30)
    with pytest.raises(InputError, match="at least 2 rows and 2 columns"):
        scc.tl.cluster_heatmap(df.iloc[:, :1])


def test_bootstrap_stable_for_planted_groups_not_for_noise(example):
    df, _, _ = example
    kw = {
        "scale": "none",
        "row_metric": "euclidean",
        "col_metric": "euclidean",
        "row_k": 3,
        "n_boot": 200,
        "random_state": 0,
    }
    planted = scc.tl.cluster_heatmap(df, **kw).stability
    rng = np.random.default_rng(0)
    noise = scc.tl.cluster_heatmap(pd.DataFrame(rng.normal(size=df.shape)), **kw).stability
    # Hennig (2007): mean Jaccard > 0.85 highly stable; <= 0.75 not a stable cluster
    assert (planted["mean_jaccard"] > 0.85).all() and (planted["recovered"] > 0.9).all()
    assert (noise["mean_jaccard"] < 0.75).all()
    assert (planted["n_boot"] == 200).all() and list(planted["n_rows"]) == [8, 8, 8]
    # the seed's own recipe (row z-score, correlation) finds groups that are not stable either
    seed = scc.tl.cluster_heatmap(df, scale="zscore", row_k=3, n_boot=200).stability
    assert (seed["mean_jaccard"] < 0.75).all()
    again = scc.tl.cluster_heatmap(df, **kw).stability
    pd.testing.assert_frame_equal(again, planted)


def test_bootstrap_jaccard_by_hand():
    """One replicate recomputed independently: same column draw, scipy, Jaccard by sets."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(15, 5)))
    res = scc.tl.cluster_heatmap(
        X, scale="none", row_metric="euclidean", col_metric="euclidean", row_k=3, n_boot=1, random_state=7
    )
    cols = np.random.default_rng(7).integers(0, 5, 5)
    cut = sch.fcluster(sch.linkage(pdist(X.to_numpy()[:, cols]), "average"), 3, "maxclust")
    for g in res.row_groups.cat.categories:
        a = set(np.flatnonzero(res.row_groups.to_numpy() == g))
        best = max(len(a & set(np.flatnonzero(cut == c))) / len(a | set(np.flatnonzero(cut == c))) for c in set(cut))
        assert res.stability.loc[g, "mean_jaccard"] == pytest.approx(best)


# ------------------------------------------------------------------------------------------ matrix
def test_cluster_means_with_markers(pbmc):
    import scanpy as sc

    adata = pbmc.copy()
    before_uns, before_obs = set(adata.uns), adata.obs.copy()
    inp = scc.tl.heatmap_matrix(adata, source="cluster_means", groupby="cell_type", n_top_genes=3, annotations=["type"])
    assert set(adata.uns) == before_uns
    pd.testing.assert_frame_equal(adata.obs, before_obs)
    ref = pbmc.copy()  # independent reference: scanpy on the user's object
    sc.tl.rank_genes_groups(ref, "cell_type", method="t-test", use_raw=True)
    names = ref.uns["rank_genes_groups"]["names"]
    expected = list(dict.fromkeys(g for c in ref.obs["cell_type"].cat.categories for g in list(names[c])[:3]))
    assert list(inp.data.index) == expected
    raw = pd.DataFrame(
        adata.raw.X.toarray() if hasattr(adata.raw.X, "toarray") else adata.raw.X,
        index=adata.obs_names,
        columns=adata.raw.var_names,
    )
    means = raw[expected].groupby(adata.obs["cell_type"], observed=True).mean().T
    np.testing.assert_allclose(inp.data.to_numpy(), means.to_numpy(), rtol=1e-5)
    assert list(inp.col_annotations["cell_type"]) == list(means.columns)
    mode = adata.obs.groupby("cell_type", observed=True)["type"].agg(lambda s: s.mode().iloc[0])
    assert list(inp.col_annotations["type"]) == list(mode)
    assert inp.row_annotations["marker_of"].iloc[0] == ref.obs["cell_type"].cat.categories[0]
    # an existing ranking for the same groupby is reused
    reused = scc.tl.heatmap_matrix(ref, groupby="cell_type", n_top_genes=3)
    assert list(reused.data.index) == expected


def test_cluster_means_by_two_keys_and_given_genes(pbmc):
    adata = pbmc.copy()
    with pytest.warns(ScclustWarning, match="NOTAGENE"):
        inp = scc.tl.heatmap_matrix(adata, groupby=["cell_type", "type"], genes=["CD3E", "LYZ", "NOTAGENE", "MS4A1"])
    n_combos = adata.obs.groupby(["cell_type", "type"], observed=True).ngroups
    assert inp.data.shape == (3, n_combos) and inp.row_annotations is None
    assert list(inp.col_annotations.columns) == ["cell_type", "type"]
    col = inp.data.columns[0]
    ct, ty = col.split(" | ")
    mask = (adata.obs["cell_type"] == ct) & (adata.obs["type"] == ty)
    x = adata.raw[mask.to_numpy(), "CD3E"].X
    assert inp.data.loc["CD3E", col] == pytest.approx(float(np.asarray(x.mean())))


def test_cells_stratified_subsample(pbmc):
    adata = pbmc.copy()
    inp = scc.tl.heatmap_matrix(
        adata,
        source="cells",
        groupby="cell_type",
        genes=["CD3E", "LYZ", "MS4A1"],
        max_cells=300,
        annotations=["sample"],
    )
    n = inp.data.shape[1]
    assert abs(n - 300) <= 8 and inp.data.index.tolist() == ["CD3E", "LYZ", "MS4A1"]
    shown = inp.col_annotations["cell_type"].value_counts()
    full = adata.obs["cell_type"].value_counts()
    for ct in full.index:  # proportional, at least one cell per group
        assert max(1, round(300 * full[ct] / adata.n_obs)) == shown[ct]
    assert list(inp.col_annotations.columns) == ["cell_type", "sample"]
    cell = inp.data.columns[5]
    x = adata.raw[cell, "LYZ"].X
    assert inp.data.loc["LYZ", cell] == pytest.approx(
        float(x.toarray().ravel()[0] if hasattr(x, "toarray") else x.ravel()[0])
    )
    again = scc.tl.heatmap_matrix(adata, source="cells", groupby="cell_type", genes=["CD3E", "LYZ"], max_cells=300)
    assert list(again.data.columns) == list(inp.data.columns)


def test_table_source(tmp_path, example):
    df = example[0].rename(columns=lambda c: ("ctrl_" if int(c.split("_")[1]) <= 3 else "stim_") + c.split("_")[1])
    path = tmp_path / "m.csv"
    df.to_csv(path)
    ann = pd.DataFrame({"batch": ["a", "b"] * 3}, index=df.columns)
    ann.to_csv(tmp_path / "ann.csv")
    # the tool takes tables; the stage reads the files the config names
    inp = scc.tl.heatmap_matrix(
        None, source="table", table=df, table_annotations=ann, column_pattern=r"(?P<condition>ctrl|stim)_(?P<donor>\d+)"
    )
    np.testing.assert_allclose(inp.data.to_numpy(), df.to_numpy())
    assert list(inp.col_annotations.columns) == ["batch", "condition", "donor"]
    assert list(inp.col_annotations["condition"]) == ["ctrl"] * 3 + ["stim"] * 3
    with pytest.raises(InputError, match="does not match column 'ctrl_1'"):
        scc.tl.heatmap_matrix(None, source="table", table=df, column_pattern=r"(?P<x>treated)")
    with pytest.raises(InputError, match="non-numeric column.*'note'"):
        scc.tl.heatmap_matrix(None, source="table", table=df.assign(note="x"))

    from scclust.stages.heatmap import HeatmapParams, _table

    data, col_ann, _ = _table(
        HeatmapParams(source="table", table=str(path), table_annotations=str(tmp_path / "ann.csv"))
    )
    np.testing.assert_allclose(data.to_numpy(), df.to_numpy())
    assert list(col_ann["batch"]) == ["a", "b"] * 3
    data, col_ann, row_ann = _table(HeatmapParams(source="table", table="builtin:heatmap_example"))
    assert data.shape == (24, 6) and list(row_ann.columns) == ["planted"]
    with pytest.raises(MissingFileError, match="nope.csv"):
        _table(HeatmapParams(source="table", table=str(tmp_path / "nope.csv")))


def test_matrix_errors(pbmc):
    with pytest.raises(ConfigError, match="needs groupby"):
        scc.tl.heatmap_matrix(pbmc)
    with pytest.raises(MissingKeyError, match="'leiden' not in .obs"):
        scc.tl.heatmap_matrix(pbmc, groupby="leiden")
    with pytest.raises(ConfigError, match="source: Input should be 'cluster_means', 'cells' or 'table'"):
        scc.tl.heatmap_matrix(pbmc, source="genes")
    with pytest.raises(ConfigError, match="source='table' only"):
        scc.tl.heatmap_matrix(pbmc, groupby="cell_type", table=pd.DataFrame({"a": [1.0, 2.0]}))


# ------------------------------------------------------------------------------------------ config
def test_config_fields_are_the_functions_keywords():
    """Every HeatmapParams field is a keyword of heatmap_matrix, cluster_heatmap or
    pl.clustered_heatmap, with the same default in each function that takes it."""
    funcs = [scc.tl.heatmap_matrix, scc.tl.cluster_heatmap, scc.pl.clustered_heatmap]
    sigs = [inspect.signature(f).parameters for f in funcs]
    for name, field in C.HeatmapParams.model_fields.items():
        owners = [s[name] for s in sigs if name in s]
        assert owners, name
        for p in owners:
            assert p.kind is p.KEYWORD_ONLY, name
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            assert field.default == default, (name, field.default, default)


def test_config_section():
    cfg = C.parse_config({"input": "x", "stages": ["heatmap"], "heatmap": {"source": "table", "table": "a.csv"}})
    assert cfg.heatmap[0].table == "a.csv" and cfg.stages == ["heatmap"]
    with pytest.raises(ConfigError, match="source 'table' needs table"):
        C.parse_config({"input": "x", "heatmap": {"source": "table"}})
    with pytest.raises(ConfigError, match=r"heatmap\.scale"):
        C.parse_config({"input": "x", "heatmap": {"scale": "log"}})
    with pytest.raises(ConfigError, match="unknown key .heatmap.metric."):
        C.parse_config({"input": "x", "heatmap": {"metric": "euclidean"}})


def test_workflow_stage_uses_the_runs_clustering(tmp_path):
    cfg = C.parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(tmp_path),
            "write_h5ad": False,
            "stages": ["kmeans", "heatmap"],
            "kmeans": {"n_clusters": [4], "use_rep": "X_pca", "n_init": 2},
            "heatmap": [
                {
                    "name": "cells",
                    "source": "cells",
                    "max_cells": 200,
                    "n_top_genes": 3,
                    "row_k": 3,
                    "n_boot": 10,
                    "annotations": ["type"],
                }
            ],
        }
    )
    adata, manifest = scc.workflow.run(cfg)
    matrix = pd.read_csv(tmp_path / "tables" / "cells_matrix.csv", index_col=0)
    assert abs(matrix.shape[1] - 200) <= 4 and matrix.shape[0] <= 12
    assert set(matrix.columns) <= set(adata.obs_names)
    order = pd.read_csv(tmp_path / "tables" / "cells_col_order.csv")
    assert list(order["label"]) == list(matrix.columns)  # the matrix table is written in leaf order
    stab = pd.read_csv(tmp_path / "tables" / "cells_stability.csv")
    assert len(stab) == 3 and stab["n_boot"].between(1, 10).all()
    assert "figures/cells.png" in manifest["files"] and "rank_genes_groups" not in adata.uns
    with pytest.raises(ConfigError, match="set groupby"):
        scc.workflow.run(
            C.parse_config(
                {"input": "builtin:pbmc68k", "outdir": str(tmp_path / "b"), "stages": ["heatmap"], "write_h5ad": False}
            )
        )
