"""The markers and annotate stages in a run: tables, figures, the no-marker flag, the report section."""

from __future__ import annotations

import pandas as pd
import pytest

from scclust import run
from scclust._errors import ConfigError
from scclust.config import parse_config

SETS = {
    "T": ["CD3D", "CD3E", "IL32"],
    "B": ["MS4A1", "CD79A", "CD79B"],
    "NK": ["GNLY", "NKG7"],
    "Mono": ["LYZ", "S100A8", "FCN1"],
    "DC": ["FCER1A", "CLEC10A"],
}


def _cfg(tmp_path, **extra):
    data = {
        "input": "builtin:pbmc68k",
        "outdir": str(tmp_path / "out"),
        "resume": False,
        "stages": ["neighbors", "leiden", "relationships", "markers", "annotate", "report"],
        "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30, "n_neighbors": 15},
        "leiden": {"resolutions": [0.5, 1.0]},
        "relationships": {"use_rep": "X_pca_harmony", "genes": ["CD3E", "LYZ"]},
        "markers": {"n_genes": 10},
        "annotate": {"sets": SETS},
    }
    data.update(extra)
    return parse_config(data)


@pytest.mark.slow
def test_markers_and_annotate_stages(tmp_path):
    adata, manifest = run(_cfg(tmp_path))
    out = tmp_path / "out"
    for key in ("leiden_0.5", "leiden_1.0"):  # the Leiden keys of the run
        table = pd.read_csv(out / "tables" / f"markers_{key}.csv")
        assert table.groupby("cluster")["rank"].max().eq(10).all()
        assert {"score", "logfoldchange", "pval_adj", "auroc", "pct_in", "pct_out", "passes"} <= set(table.columns)
        summary = pd.read_csv(out / "tables" / f"markers_{key}_summary.csv", index_col=0)
        assert summary["flag_no_marker"].dtype == bool
        assert (summary["n_markers"] == 0).eq(summary["flag_no_marker"]).all()
        for fig in ("markers_dotplot", "markers_heatmap", "markers_umap", "annotation_umap"):
            assert f"figures/{fig}_{key}.png" in manifest["files"]
        assert f"tables/annotation_{key}_scores.csv" in manifest["files"]
        assert set(adata.obs[f"{key}_annotation"].cat.categories) <= set(SETS) | {"unassigned"}
    html = (out / "report.html").read_text()
    assert "What defines each cluster" in html and "Cell types from marker sets" in html
    b_cluster = adata.obs.loc[adata.obs["bulk_labels"] == "CD19+ B", "leiden_0.5"].value_counts().idxmax()
    assert set(adata.obs.loc[adata.obs["leiden_0.5"] == b_cluster, "leiden_0.5_annotation"]) == {"B"}


@pytest.mark.slow
def test_groupby_given_and_flag_in_report(tmp_path):
    cfg = _cfg(tmp_path, stages=["markers", "report"], markers={"groupby": ["bulk_labels"], "min_fold_change": 50})
    run(cfg)
    out = tmp_path / "out"
    summary = pd.read_csv(out / "tables" / "markers_bulk_labels_summary.csv", index_col=0)
    assert summary["flag_no_marker"].all()  # no gene passes a 2^50 fold change
    html = (out / "report.html").read_text()
    assert "likely an over-split" in html


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'markers.n_gene': did you mean 'n_genes'"):
        _cfg(tmp_path, markers={"n_gene": 5})
    with pytest.raises(ConfigError, match="method"):
        _cfg(tmp_path, markers={"method": "logreg"})
    with pytest.raises(ConfigError, match="min_margin"):
        _cfg(tmp_path, annotate={"sets": SETS, "min_margin": 2})
