"""What a new user and a hostile input hit: every user-caused condition exits 2 with
one line, shipped configs fit the built-in inputs, single-sample data runs, finished work is
never lost (resume from checkpoint)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import scclust as scc
from scclust._errors import ConfigError, InputError, MissingKeyError, OutputError, UserError
from scclust.cli import main
from scclust.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("scclust: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------- shipped configs
def _builtin_inputs(config: Path) -> list[str]:
    cfg = yaml.safe_load(config.read_text())
    if "input" not in cfg:
        return []  # not a run config (a marker-set file)
    stages = cfg.get("stages", [])
    if "prepare" in stages or stages[0] == "subcluster":
        return []  # the Kang config names Kang's columns (tested below); subcluster_tnk runs on a clustered result

    return ["builtin:pbmc68k", "builtin:simulate?n_cells=600"]


@pytest.mark.parametrize(
    ("config", "source"),
    [
        pytest.param(
            c, s, marks=[pytest.mark.slow] if s.startswith("builtin:simulate") else []
        )  # builds the whole chain
        for c in CONFIGS
        for s in _builtin_inputs(c)
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v.split("?")[0],
)
def test_shipped_configs_fit_every_builtin_input(config, source, capsys):
    """``validate --input`` runs the same pre-flight check as ``run`` (keys, genes, clashes)."""
    assert main(["validate", str(config), "--input", source]) == 0, capsys.readouterr().err
    assert "fits" in capsys.readouterr().out


@pytest.mark.shared
def test_kang_config_fits_the_kang_data(kang_path, capsys):
    assert main(["validate", str(ROOT / "configs" / "prepare_kang.yaml"), "--input", str(kang_path)]) == 0, (
        capsys.readouterr().err
    )


@pytest.mark.shared
def test_kang_config_reads_its_registered_input(kang_path, monkeypatch, capsys):
    """prepare_kang.yaml names a registered dataset (data:NAME), found through SCCLUST_DATA and verified."""
    config = ROOT / "configs" / "prepare_kang.yaml"
    spec = yaml.safe_load(config.read_text())["input"]
    assert spec == "data:kang_pbmc_stim_2000"
    monkeypatch.setenv("SCCLUST_DATA", str(kang_path.parent))
    assert main(["validate", str(config), "--input", spec]) == 0, capsys.readouterr().err
    assert "fits data:kang_pbmc_stim_2000" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_on_pbmc68k_with_missing_genes(tmp_path, capsys):
    """The README's Snakemake case: pbmc68k lacks CD14 / MS4A7 / FCGR1A; they are left out with one
    warning by every stage that takes genes, the run completes."""
    code = main(
        [
            "run",
            str(ROOT / "configs" / "demo.yaml"),
            "--input",
            "builtin:pbmc68k",
            "--outdir",
            str(tmp_path / "o"),
            "--set",
            "stages=[neighbors, leiden, relationships, embedding]",
            "--set",
            "neighbors.use_rep=X_pca",
            "--set",
            "relationships.use_rep=X_pca",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "genes not in the data, left out: relationships.genes: CD14, MS4A7, FCGR1A; embedding.genes:" in err
    means = pd.read_csv(tmp_path / "o" / "tables" / "cluster_means_leiden_0.6.csv", index_col=0)
    assert "CD14" not in means.columns and "CD3E" in means.columns
    assert (tmp_path / "o" / "figures" / "umap_harmony_genes.png").is_file()


def test_all_genes_missing_is_an_error_before_any_stage(tmp_path, pbmc):
    cfg = parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(tmp_path / "o"),
            "stages": ["neighbors", "embedding"],
            "embedding": {"basis": "X_umap", "genes": ["NOPE1", "NOPE2"]},
        }
    )
    with pytest.raises(MissingKeyError, match=r"embedding.genes: none of the genes 'NOPE1', 'NOPE2' is in the data"):
        scc.workflow.preflight(pbmc, cfg)


def _raw_counts_of_one_sample():
    """Raw UMI counts as a 10x file gives them: no .obs columns, no embeddings."""
    import anndata as ad

    from scclust.datasets import simulate_counts

    counts = simulate_counts(300, seed=0)
    return ad.AnnData(counts.X, obs=counts.obs[[]], var=counts.var[[]])


def test_raw_counts_with_the_demo_config_say_add_prepare_first(tmp_path, capsys):
    """The fix leads the message; then what adding prepare leaves, each short; 'X' is not presented
    as an .obsm key."""
    raw = _raw_counts_of_one_sample()
    cfg = scc.load_config(ROOT / "configs" / "demo.yaml", input="raw.h5ad")
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(raw, cfg)
    msg = str(e.value)
    assert msg.startswith(
        "the input has no embeddings in .obsm: raw counts need the 'prepare' stage first "
        "(add prepare to stages); then: "
    ), msg
    # prepare's batch_key left at its default and absent: one batch, Harmony skipped (not a problem)
    assert "batch_key" not in msg
    assert "compare.reference 'cell_type' not in .obs" in msg and "composition.by 'sample', 'type' not in .obs" in msg
    assert "use_rep" not in msg and "'X'" not in msg  # prepare makes X_pca_harmony: nothing to say about it
    assert "... (14 more)" in msg and len(msg) < 700
    path = tmp_path / "raw.h5ad"
    raw.write_h5ad(path)
    assert main(["validate", str(ROOT / "configs" / "demo.yaml"), "--input", str(path)]) == 2
    assert _one_line(capsys.readouterr().err) == f"scclust: error: {msg}"


def test_missing_embedding_lists_x_as_the_expression_matrix(pbmc):
    cfg = parse_config({"input": "x", "stages": ["neighbors", "leiden"], "neighbors": {"use_rep": "X_harmony"}})
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(pbmc, cfg)
    msg = str(e.value)
    assert (
        "neighbors.use_rep 'X_harmony' not in .obsm: did you mean 'X_pca_harmony'? (in the input: 'X_pca', "
        "'X_umap', 'X_pca_harmony', 'X_umap_harmony'; or X, the expression matrix)"
    ) in msg
    assert "'X')" not in msg and "'X'," not in msg


def test_problems_come_most_actionable_first_and_fields_naming_one_key_are_grouped(pbmc):
    bare = pbmc.copy()
    del bare.obsm["X_pca_harmony"], bare.obsm["X_umap_harmony"]
    cfg = parse_config(
        {
            "input": "x",
            "stages": ["neighbors", "leiden", "kmeans", "composition", "embedding"],
            "neighbors": {"use_rep": "X_pca_harmony"},
            "kmeans": {"use_rep": "X_pca_harmony"},
            "composition": {"by": ["donor"]},
            "embedding": {"basis": "X_UMAP"},
        }
    )
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(bare, cfg)
    msg = str(e.value)
    near = msg.index("embedding.basis 'X_UMAP' not in .obsm: did you mean 'X_umap'?")
    grouped = msg.index("neighbors.use_rep, kmeans.use_rep 'X_pca_harmony' not in .obsm")
    absent = msg.index("composition.by 'donor' not in .obs (in the input: 'bulk_labels', ")
    assert near < min(grouped, absent), msg  # a rename first, in a config written in the other order
    assert msg.count("X_pca_harmony' not in") == 1
    assert "... (6 more)" in msg  # pbmc68k's 14 .obs columns, cut at 8


def test_genes_in_the_wrong_case_get_the_data_s_names(pbmc, caplog):
    cfg = parse_config(
        {
            "input": "x",
            "stages": ["neighbors", "embedding"],
            "embedding": {"basis": "X_umap", "genes": ["Cd3e", "cd8a"]},
        }
    )
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(pbmc, cfg)
    msg = str(e.value)
    assert (
        "embedding.genes: none of the genes 'Cd3e', 'cd8a' is in the data; gene names differ from the data's in "
        "case only (Cd3e vs CD3E); did you mean 'CD3E' for 'Cd3e', 'CD8A' for 'cd8a'?"
    ) in msg
    assert pbmc.raw.var_names[0] not in msg  # not the first genes of the file
    # some absent, as mouse symbols: left out with a warning that names the data's symbols first
    cfg = parse_config(
        {
            "input": "x",
            "stages": ["neighbors", "embedding"],
            "embedding": {"basis": "X_umap", "genes": ["CD3E", "Cd4", "Cd8a", "Nkg7"]},
        }
    )
    with caplog.at_level("WARNING", logger="scclust"):
        checked = scc.workflow.preflight(pbmc, cfg)
    assert checked.missing_genes == {"Cd4", "Cd8a", "Nkg7"}
    assert (
        "genes not in the data: gene names look like mouse symbols (Cd4) while the data's are human (CD4); "
        "did you mean 'CD4' for 'Cd4', 'CD8A' for 'Cd8a', 'NKG7' for 'Nkg7'?; left out: embedding.genes: Cd4, Cd8a, "
        "Nkg7"
    ) in caplog.text


# ---------------------------------------------------------------------------------- clashes and keys
@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"neighbors": [{"use_rep": "X_pca"}, {"use_rep": "X_umap"}]},
            "neighbors[0] and neighbors[1] both make graph key 'neighbors'",
        ),
        (
            {"leiden": [{"resolutions": [0.5, 1]}, {"resolutions": [1.0]}]},
            "leiden[0] and leiden[1] both make obs key 'leiden_1.0'",
        ),
        (
            {"kmeans": {"key_added": "c_", "n_clusters": [5]}, "hclust": {"key_added": "c", "n_clusters": [5]}},
            None,
        ),  # c_5 vs c_5: hclust's name is f"{key}_{k}"
    ],
    ids=["neighbors", "leiden", "kmeans-hclust"],
)
def test_two_entries_making_one_key_is_an_error(pbmc, sections, expected):
    stages = ["neighbors", "leiden", *(s for s in ("kmeans", "hclust") if s in sections)]
    cfg = parse_config({"input": "x", "stages": stages, **sections})
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(pbmc, cfg)
    msg = str(e.value)
    assert "\n" not in msg and "set a distinct key_added" in msg
    assert (expected or "kmeans and hclust both make obs key 'c_5'") in msg


def test_missing_key_lists_input_and_planned_keys_apart(pbmc):
    cfg = parse_config({"input": "x", "stages": ["neighbors", "leiden", "qc"], "qc": {"groupby": "leiden_9"}})
    with pytest.raises(MissingKeyError) as e:
        scc.workflow.preflight(pbmc, cfg)
    msg = str(e.value)
    assert "qc.groupby 'leiden_9' not in .obs: did you mean 'leiden_1.0'? (in the input: " in msg
    assert "; made by this run: 'leiden_1.0')" in msg


def test_validate_with_input_checks_keys(tmp_path, capsys):
    path = _write(tmp_path, {"input": "builtin:pbmc68k", "stages": ["neighbors"], "neighbors": {"use_rep": "X_scvi"}})
    assert main(["validate", str(path), "--config-only"]) == 0  # the config alone is valid
    capsys.readouterr()
    assert main(["validate", str(path), "--input", "builtin:pbmc68k"]) == 2
    assert "neighbors.use_rep 'X_scvi' not in .obsm" in _one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------- dirty data
def test_nan_in_batch_column_is_an_error(pbmc):
    bad = pbmc.copy()
    bad.obs["sample"] = bad.obs["sample"].astype(object)
    bad.obs.iloc[[3, 7], bad.obs.columns.get_loc("sample")] = np.nan
    cfg = parse_config(
        {
            "input": "x",
            "stages": ["neighbors", "leiden", "subcluster"],
            "subcluster": {"t": {"groupby": "leiden_0.4", "select": {"markers": {"T": ["CD3E"]}}}},
        }
    )
    with pytest.raises(MissingKeyError, match=r"subcluster.t.batch_key 'sample' has no value for 2 cell\(s\)"):
        scc.workflow.preflight(bad, cfg)


def test_duplicate_cell_names_error_and_gene_names_made_unique(pbmc, caplog):
    dup = pbmc.copy()
    dup.obs_names = [*dup.obs_names[:-1], dup.obs_names[0]]
    with pytest.raises(InputError, match=r"1 duplicate cell name\(s\)"):
        scc.workflow.check_names(dup)
    genes = pbmc.copy()
    genes.var_names = [*genes.var_names[:-1], genes.var_names[0]]
    out = scc.workflow.check_names(genes)
    assert out.var_names.is_unique and "duplicate gene name" in caplog.text


@pytest.mark.parametrize("kind", ["identical", "few-distinct"])
def test_degenerate_embedding_is_caught_up_front(pbmc, kind):
    bad = pbmc.copy()
    X = np.asarray(bad.obsm["X_pca"], dtype=np.float32).copy()
    X[:] = X[0] if kind == "identical" else X[np.arange(X.shape[0]) % 10]
    bad.obsm["X_pca"] = X
    cfg = parse_config({"input": "x", "stages": ["neighbors", "leiden"]})
    with pytest.raises(InputError, match="same coordinates" if kind == "identical" else "only 10 distinct points"):
        scc.workflow.preflight(bad, cfg)


# ---------------------------------------------------------------------------------- CLI text and outdir
def test_bad_set_value_and_non_utf8_config_exit_2(tmp_path, capsys):
    path = _write(tmp_path, {"input": "builtin:pbmc68k", "stages": ["neighbors"]})
    assert main(["validate", str(path), "--set", "leiden.resolutions=[0.4,"]) == 2
    assert "not valid YAML" in _one_line(capsys.readouterr().err)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("input: builtin:pbmc68k\n# r\xe9sum\xe9\n".encode("latin-1"))
    assert main(["validate", str(latin)]) == 2
    assert "not a UTF-8 text file" in _one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_schema_into_a_closed_pipe_is_not_a_bug():
    proc = subprocess.run(
        f"{sys.executable} -m scclust schema | head -c 10", shell=True, capture_output=True, text=True
    )
    assert proc.stdout == '{\n  "$defs' and "bug" not in proc.stderr and "Traceback" not in proc.stderr


def test_outdir_that_is_a_file_or_read_only_exits_2(tmp_path, capsys):
    path = _write(tmp_path, {"input": "builtin:pbmc68k", "stages": ["neighbors"], "neighbors": {"use_rep": "X_pca"}})
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(path), "--outdir", str(tmp_path / "afile"), "-q"]) == 2
    assert "is a file, not a directory" in _one_line(capsys.readouterr().err)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["run", str(path), "--outdir", str(ro), "-q"]) == 2
        assert "not writable" in _one_line(capsys.readouterr().err)


def test_full_disk_is_a_user_error(tmp_path, monkeypatch):
    from scclust import _io

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space)
    with (
        pytest.raises(OutputError, match="the disk is full; free space or choose another outdir"),
        _io.atomic_path(tmp_path / "t.csv") as tmp,
    ):
        pd.DataFrame({"a": [1]}).to_csv(tmp)
    assert not list(tmp_path.iterdir())  # no temporary file left


def test_stale_temporary_files_are_removed(tmp_path, capsys):
    out = tmp_path / "o"
    (out / "tables").mkdir(parents=True)
    stale = out / "tables" / ".ari.csv.a1b2c3d4.tmp.csv"
    stale.write_text("half")
    keep = out / "tables" / ".hidden_user_file"
    keep.write_text("mine")
    path = _write(
        tmp_path,
        {
            "input": "builtin:pbmc68k",
            "outdir": str(out),
            "stages": ["neighbors"],
            "neighbors": {"use_rep": "X_pca"},
            "write_h5ad": False,
        },
    )
    assert main(["run", str(path), "-q"]) == 0, capsys.readouterr().err
    assert not stale.exists() and keep.exists()


# ---------------------------------------------------------------------------------- notebook calls
@pytest.mark.slow
def test_scalars_where_lists_are_expected(pbmc):
    ad = pbmc.copy()
    scc.pp.neighbors(ad, use_rep="X_pca", n_neighbors=10)
    scc.tl.leiden(ad, resolutions=0.8)
    scc.tl.leiden(ad, resolution=0.5)  # scanpy's call: scanpy's column name
    assert {"leiden_0.8", "leiden"} <= set(ad.obs.columns) and "leiden_0.5" not in ad.obs
    scc.tl.kmeans(ad, use_rep="X_pca", n_clusters=4)
    assert "kmeans4" in ad.obs
    fig = scc.pl.embedding(ad, basis="X_umap", color="leiden_0.8")
    assert len([a for a in fig.axes if a.get_title()]) == 1
    with pytest.raises(ConfigError, match=r"leiden\(\): resolutions"):
        scc.tl.leiden(ad, resolutions="high")
    with pytest.raises(ConfigError, match="either resolution"):
        scc.tl.leiden(ad, resolution=0.5, resolutions=[0.4])


# ---------------------------------------------------------------------------------- single sample
@pytest.mark.slow
@pytest.mark.shared
def test_single_sample_raw_counts_run_prepare_to_report(tmp_path, kang_path, capsys):
    """One Kang condition (a real single-sample raw-count set): prepare (QC filters, Harmony skipped)
    -> the tutorial's stages -> report, with no editing of the data."""
    import anndata as ad

    kang = ad.read_h5ad(kang_path)
    ctrl = kang[kang.obs["condition"] == "ctrl"].copy()
    ctrl.obs["sample"] = "ctrl1"
    ctrl.obs["type"] = "Ctrl"
    path = tmp_path / "ctrl.h5ad"
    ctrl.write_h5ad(path)
    code = main(
        [
            "run",
            str(ROOT / "configs" / "tutorial.yaml"),
            "--input",
            str(path),
            "--outdir",
            str(tmp_path / "o"),
            "--set",
            "stages=[prepare, neighbors, leiden, kmeans, hclust, compare, relationships, embedding, "
            "composition, qc, subcluster, report]",
            "--set",
            "prepare.qc.min_genes=200",
            "--set",
            "prepare.qc.min_cells=3",
            "--set",
            "leiden.flavor=igraph",
            "--set",
            "leiden.n_iterations=2",
            "--set",
            "subcluster.tnk.leiden.flavor=igraph",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Harmony skipped" in err and "one-sample diagnostics skipped" in err
    out = tmp_path / "o"
    assert (out / "report.html").is_file() and (out / "clustered.h5ad").is_file()
    filtered = pd.read_csv(out / "tables" / "prepare_qc_filtered.csv")
    assert filtered["n_cells"].sum() == ctrl.n_obs
    n_genes = np.asarray((ctrl.X > 0).sum(axis=1)).ravel()
    assert filtered["removed_min_genes"].sum() == int(
        (n_genes < 200).sum()
    )  # the filter's own rule, counted independently
    assert (out / "figures" / "prepare_pca_variance.png").is_file()


# ---------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_after_a_late_failure_gives_identical_outputs(tmp_path, capsys):
    base = {
        "input": "builtin:pbmc68k",
        "stages": ["neighbors", "leiden", "kmeans", "hclust", "compare", "qc", "report"],
        "neighbors": {"use_rep": "X_pca", "n_neighbors": 15},
        "leiden": {"resolutions": [0.4, 0.8, 1.2]},
        "kmeans": {"use_rep": "X_pca", "n_clusters": [4, 8]},
        "hclust": {"use_rep": "X_pca", "n_clusters": [4, 8]},
        "qc": {"groupby": ["leiden_0.8"], "keys": ["n_genes_by_counts"]},
    }
    clean = _write(tmp_path, {**base, "outdir": str(tmp_path / "clean"), "resume": False}, "clean.yaml")
    assert main(["run", str(clean), "-q"]) == 0
    # a bad late parameter (a QC column that is not there) fails in the last stages ...
    broken = _write(
        tmp_path,
        {**base, "outdir": str(tmp_path / "r"), "qc": {"groupby": ["leiden_0.8"], "keys": ["nope"]}},
        "broken.yaml",
    )
    assert main(["run", str(broken), "-q"]) == 2
    assert (tmp_path / "r" / ".scclust_checkpoint" / "state.json").is_file()
    # ... fixed and rerun: the clustering is reused, outputs equal the clean run's
    fixed = _write(tmp_path, {**base, "outdir": str(tmp_path / "r")}, "fixed.yaml")
    capsys.readouterr()
    assert main(["run", str(fixed)]) == 0
    err = capsys.readouterr().err
    assert "reusing neighbors, leiden" in err and "from checkpoint" in err
    assert not (tmp_path / "r" / ".scclust_checkpoint").exists()
    for table in sorted((tmp_path / "clean" / "tables").glob("*.csv")):
        assert (tmp_path / "r" / "tables" / table.name).read_bytes() == table.read_bytes(), table.name
    # a changed upstream parameter invalidates the checkpoint: everything is recomputed
    assert main(["run", str(broken), "-q"]) == 2
    changed = _write(
        tmp_path,
        {**base, "outdir": str(tmp_path / "r"), "neighbors": {"use_rep": "X_pca", "n_neighbors": 10}},
        "changed.yaml",
    )
    capsys.readouterr()
    assert main(["run", str(changed)]) == 0
    assert "from checkpoint" not in capsys.readouterr().err
    labels = pd.read_csv(tmp_path / "r" / "tables" / "cluster_labels.csv", index_col=0)
    assert labels.shape[0] == 700


def test_interrupt_message_points_to_resume(tmp_path, capsys, monkeypatch):
    from scclust import workflow

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "run", interrupted)
    path = _write(tmp_path, {"input": "builtin:pbmc68k", "stages": ["neighbors"]})
    assert main(["run", str(path), "-q"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_user_errors_are_user_errors():
    assert issubclass(OutputError, UserError) and issubclass(OutputError, OSError)


# ---------------------------------------------------------------------------- first contact II
def _one_sample_counts(path):
    """Raw counts of one sample with no sample column (as a 10x run of one library)."""
    from scclust.datasets import simulate_counts

    a = simulate_counts(2400, n_samples=2, seed=3)
    a = a[a.obs["sample"] == a.obs["sample"].cat.categories[0]].copy()
    for col in ("sample", "batch", "type"):
        del a.obs[col]
    a.write_h5ad(path)
    return a


@pytest.mark.slow
def test_one_sample_raw_counts_init_then_run_to_the_report(tmp_path, capsys):
    """Own data, first contact: `scclust init --counts --input` writes a config that fits; it runs
    (prepare without Harmony, the tutorial's stages, the T/NK subclustering) to the report, and
    scanpy's own plotting finds the UMAP under its name."""
    import anndata as ad
    import matplotlib
    import scanpy as sc

    matplotlib.use("agg")
    data = tmp_path / "one.h5ad"
    _one_sample_counts(data)
    cfg = tmp_path / "my.yaml"
    assert main(["init", "--counts", "--input", str(data), "-o", str(cfg)]) == 0
    text = cfg.read_text()
    assert "batch_key: null" in text and "# " in text  # no batch column found; every key commented
    assert main(["validate", str(cfg)]) == 0
    assert main(["run", str(cfg), "--outdir", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "Harmony skipped" in err
    out = tmp_path / "out"
    assert (out / "report.html").is_file() and (out / "subclusters" / "tnk.h5ad").is_file()
    adata = ad.read_h5ad(out / "clustered.h5ad")
    assert "X_umap" in adata.obsm and adata.uns["prepare"]["harmony"] in (False, 0)
    sc.pl.umap(adata, color="leiden_0.6", show=False)  # scanpy's name: found


@pytest.mark.slow
def test_default_batch_key_absent_runs_without_harmony_explicit_one_is_an_error(tmp_path):
    """prepare.batch_key left at its default and absent: one batch (logged); named and absent: an
    error that names batch_key: null."""
    from scclust.config import parse_config

    raw = _one_sample_counts(tmp_path / "one.h5ad")
    base = {"input": "x.h5ad", "stages": ["prepare", "neighbors", "leiden"], "neighbors": {"use_rep": "X_pca_harmony"}}
    scc.workflow.preflight(raw, parse_config({**base, "prepare": {}}))
    with pytest.raises(MissingKeyError, match=r"prepare.batch_key 'sample' not in .obs.*prepare.batch_key=null"):
        scc.workflow.preflight(raw, parse_config({**base, "prepare": {"batch_key": "sample"}}))


@pytest.mark.slow
def test_prepare_without_batches_stores_scanpys_umap_key(tmp_path):
    raw = _one_sample_counts(tmp_path / "one.h5ad")
    out = scc.pp.prepare(raw, batch_key=None, pca={"n_comps": 20}, graph={"n_pcs": 20})
    assert "X_umap" in out.obsm and out.uns["prepare"]["harmony"] is False
    np.testing.assert_array_equal(out.obsm["X_umap"], out.obsm["X_umap_harmony"])  # configs for integrated data
    assert out.uns["neighbors"]["params"]["use_rep"] == "X_pca"


def test_config_error_path_is_the_path_the_user_wrote():
    from scclust.config import parse_config

    with pytest.raises(ConfigError) as e:
        parse_config({"input": "x", "leiden": {"resolutions": "zero point six"}})
    assert str(e.value).startswith("leiden.resolutions: ") and "leiden.0" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^leiden\.1\.resolutions\.1: "):
        parse_config({"input": "x", "leiden": [{}, {"resolutions": [0.2, "x"]}]})


def test_every_config_key_has_a_description():
    from scclust.config import json_schema

    schema = json_schema()
    defs = schema.get("$defs", {})
    missing, seen = [], 0

    def walk(node, path):
        nonlocal seen
        node = defs[node["$ref"].split("/")[-1]] if "$ref" in node else node
        for key, prop in node.get("properties", {}).items():
            seen += 1
            if not prop.get("description"):
                missing.append(f"{path}{key}")
            for sub in (prop, *prop.get("anyOf", []), prop.get("items", {}), prop.get("additionalProperties") or {}):
                if isinstance(sub, dict) and "$ref" in sub:
                    walk(sub, f"{path}{key}.")

    walk(schema, "")
    assert seen > 200 and not missing, missing


@pytest.mark.slow
def test_subcluster_without_a_sample_column_draws_its_figures(tmp_path, pbmc):
    parent = pbmc.copy()
    del parent.obs["sample"]
    sub, _ = scc.tl.subcluster(
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
    fig = scc.pl.subcluster_overview(sub, parent=parent)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4  # no sample panels


@pytest.mark.slow
def test_neighbors_stage_reuses_prepares_graph_or_says_it_replaces_it(tmp_path, caplog):
    """One graph is not built twice: the neighbors stage with prepare's options on the same data
    reuses its graph (the labels of building it again); with other options it says that it replaces it."""
    import logging

    from scclust import run

    data = tmp_path / "one.h5ad"
    _one_sample_counts(data)
    base = {
        "input": str(data),
        "stages": ["prepare", "neighbors", "leiden"],
        "prepare": {"pca": {"n_comps": 20}, "graph": {"n_neighbors": 15, "n_pcs": 20}, "umap": None},
        "leiden": {"resolutions": [0.8]},
    }
    with caplog.at_level(logging.INFO, logger="scclust"):
        same, _ = run(
            parse_config(
                {
                    **base,
                    "outdir": str(tmp_path / "a"),
                    "neighbors": {"use_rep": "X_pca", "n_pcs": 20, "n_neighbors": 15},
                }
            )
        )
    assert "reusing the graph 'neighbors'" in caplog.text
    rebuilt = same.copy()
    scc.pp.neighbors(rebuilt, use_rep="X_pca", n_pcs=20, n_neighbors=15)
    assert (rebuilt.obsp["connectivities"] != same.obsp["connectivities"]).nnz == 0
    scc.tl.leiden(rebuilt, resolutions=[0.8])
    assert (rebuilt.obs["leiden_0.8"] == same.obs["leiden_0.8"]).all()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scclust"):
        other, _ = run(
            parse_config(
                {
                    **base,
                    "outdir": str(tmp_path / "b"),
                    "neighbors": {"use_rep": "X_pca", "n_pcs": 20, "n_neighbors": 10},
                }
            )
        )
    assert "is replaced by one with this stage's options" in caplog.text and "n_neighbors=15" in caplog.text
    assert "reusing" not in caplog.text
    assert other.uns["neighbors"]["params"]["n_neighbors"] == 10
