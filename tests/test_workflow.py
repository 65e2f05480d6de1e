"""End-to-end runs: outputs, manifest, reproducibility, input never modified, atomic outputs."""

from __future__ import annotations

import hashlib
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scclust import run
from scclust._errors import UserError
from scclust.config import parse_config


def _cfg(tmp_path, name, **extra):
    data = {
        "input": "builtin:pbmc68k",
        "outdir": str(tmp_path / name),
        "stages": ["neighbors", "leiden", "embedding"],
        "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30, "n_neighbors": 15},
        "leiden": {"resolutions": [0.5, 1.0]},
        "embedding": {"basis": "X_umap_harmony", "genes": ["CD3E", "CST3"]},
    }
    data.update(extra)
    return parse_config(data)


@pytest.mark.slow
def test_outputs_and_manifest(tmp_path):
    adata, manifest = run(_cfg(tmp_path, "a"))
    out = tmp_path / "a"
    back = ad.read_h5ad(out / "clustered.h5ad")
    for key in ("leiden_0.5", "leiden_1.0"):
        assert isinstance(back.obs[key].dtype, pd.CategoricalDtype)
        assert (back.obs[key] == adata.obs[key]).all()
    assert "connectivities" in back.obsp
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert on_disk == manifest["files"]
    assert any(f.startswith("figures/") and f.endswith(".png") for f in on_disk)
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["leiden"][0]["resolutions"] == [0.5, 1.0]
    assert {"scanpy", "anndata", "leidenalg", "igraph", "scclust"} <= set(m["versions"])
    assert len(m["input"]["sha256"]) == 64
    stages = [s["stage"] for s in m["stages"]]
    assert stages[:4] == ["read", "neighbors", "leiden", "embedding"]
    assert all(s["seconds"] >= 0 for s in m["stages"])
    assert all(s["peak_rss_mb"] > 0 for s in m["stages"] if "peak_rss_mb" in s)
    assert json.loads(back.uns["scclust"]["config_json"]) == m["config"]
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_same_config_same_labels_and_tables(tmp_path):
    run(_cfg(tmp_path, "r1"))
    run(_cfg(tmp_path, "r2"))
    for table in ("cluster_labels.csv", "leiden_summary.csv"):
        assert (tmp_path / "r1" / "tables" / table).read_bytes() == (tmp_path / "r2" / "tables" / table).read_bytes()
    for fig in (tmp_path / "r1" / "figures").iterdir():
        assert fig.read_bytes() == (tmp_path / "r2" / "figures" / fig.name).read_bytes(), fig.name


@pytest.mark.slow
def test_input_file_is_never_modified(tmp_path, pbmc):
    path = tmp_path / "input.h5ad"
    pbmc.write_h5ad(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    mtime = path.stat().st_mtime_ns
    _, manifest = run(_cfg(tmp_path, "o", input=str(path)))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before == manifest["input"]["sha256"]
    assert path.stat().st_mtime_ns == mtime


def test_failure_leaves_no_half_written_result(tmp_path):
    cfg = _cfg(tmp_path, "f", embedding={"basis": "X_umap_harmony", "genes": ["NOT_A_GENE"]})
    with pytest.raises(UserError, match="none of the genes 'NOT_A_GENE' is in the data"):
        run(cfg)
    out = tmp_path / "f"
    assert not (out / "clustered.h5ad").exists()
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp*"))


@pytest.mark.slow
def test_prepare_path_on_raw_counts(tmp_path):
    from scclust.datasets import simulate_counts

    counts = simulate_counts(600, n_samples=3, seed=2)
    path = tmp_path / "counts.h5ad"
    counts.write_h5ad(path)
    cfg = parse_config(
        {
            "input": str(path),
            "outdir": str(tmp_path / "p"),
            "stages": ["prepare", "neighbors", "leiden"],
            "prepare": {
                "batch_key": "sample",
                "pca": {"n_comps": 20},
                "graph": {"n_pcs": 20},
                "umap": None,
            },  # fast lane: no UMAP
            "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 20},
        }
    )
    adata, _ = run(cfg)
    assert adata.raw is not None and adata.raw.n_vars == counts.n_vars
    assert {"X_pca", "X_pca_harmony"} <= set(adata.obsm) and "X_umap_harmony" not in adata.obsm
    assert "pct_counts_mt" in adata.obs and "leiden_1.0" in adata.obs
    # and a stage that would need the UMAP that was not computed is caught before any stage
    with pytest.raises(UserError, match="embedding.basis 'X_umap_harmony' not in .obsm"):
        run(
            cfg.model_copy(
                update={
                    "stages": ["prepare", "embedding"],
                    "embedding": [cfg.embedding[0].model_copy(update={"basis": "X_umap_harmony"})],
                }
            )
        )


@pytest.mark.slow
def test_prepare_umap_runs_in_the_background_while_clustering(tmp_path, monkeypatch):
    """prepare leaves its UMAP layout in the background worker; stages that do not read it (leiden,
    kmeans) go on meanwhile, the embedding stage gets it; the coordinates, labels and tables equal
    a run that computes it in place, and the manifest records the background job."""
    from scclust import workflow
    from scclust.datasets import simulate_counts

    counts = simulate_counts(600, n_samples=3, seed=2)
    path = tmp_path / "counts.h5ad"
    counts.write_h5ad(path)
    base = {
        "input": str(path),
        "stages": ["prepare", "leiden", "kmeans", "embedding"],
        "prepare": {"batch_key": "sample", "pca": {"n_comps": 20}, "graph": {"n_pcs": 20}},
        "kmeans": {"use_rep": "X_pca_harmony", "n_clusters": [4]},
        "embedding": {"basis": "X_umap_harmony", "groups": ["leiden_1.0"]},
    }
    inplace, _ = run(parse_config({**base, "outdir": str(tmp_path / "a"), "background_umap": False}))
    monkeypatch.setattr(workflow, "_umap_imported", lambda: False)  # this test process has umap imported already
    ours, manifest = run(parse_config({**base, "outdir": str(tmp_path / "b")}))
    np.testing.assert_array_equal(ours.obsm["X_umap_harmony"], inplace.obsm["X_umap_harmony"])
    assert ours.uns["X_umap_harmony"]["init"] == "spectral"
    for name in ("cluster_labels.csv", "leiden_summary.csv"):
        a, b = tmp_path / "a" / "tables" / name, tmp_path / "b" / "tables" / name
        assert a.exists() and a.read_bytes() == b.read_bytes(), name
    (job,) = [r for r in manifest["stages"] if "background" in r["stage"]]
    assert job["stage"] == "prepare (background X_umap_harmony)" and job["seconds"] > 0
    assert job["waited_in"] in ("leiden", "kmeans", "embedding")  # never inside prepare
    assert "umap" not in next(r for r in manifest["stages"] if r["stage"] == "prepare")["step_seconds"]


def test_prepare_rejects_normalized_input(pbmc):
    from scclust.pp import prepare

    with pytest.raises(UserError, match="expects raw counts"):
        prepare(pbmc.copy(), batch_key="sample")


def test_checkpoint_policy_private_pickle_and_resume(tmp_path, monkeypatch):
    """Short stages are not checkpointed one by one; the hand-over from clustering to output stages
    is, as a pickle only this user can read or write; a rerun after a failure reuses it and gives the
    clean run's labels; a checkpoint someone else could have written is not unpickled."""
    import dataclasses
    import os
    import stat

    from scclust import stages, workflow

    clean, _ = run(_cfg(tmp_path, "clean", resume=False))
    # the cost rule (work >= CHECKPOINT_RATIO x the write) depends on this machine's speed: off here,
    # so that the hand-over rule is what is tested
    monkeypatch.setattr(workflow, "CHECKPOINT_RATIO", 0.0)
    saved = []
    real_save = workflow._save_checkpoint
    monkeypatch.setattr(
        workflow,
        "_save_checkpoint",
        lambda outdir, adata, done, *a: (saved.append(done), real_save(outdir, adata, done, *a)),
    )

    def boom(adata, p, ctx):
        raise RuntimeError("embedding failed")

    real_stage = stages.REGISTRY["embedding"]
    monkeypatch.setitem(stages.REGISTRY, "embedding", dataclasses.replace(real_stage, run=boom))
    with pytest.raises(RuntimeError, match="embedding failed"):
        run(_cfg(tmp_path, "r"))
    assert saved == [2]  # after leiden (the hand-over), not after neighbors
    ck = tmp_path / "r" / ".scclust_checkpoint"
    assert json.loads((ck / "state.json").read_text())["data"] == "state.pkl"
    assert stat.S_IMODE((ck / "state.pkl").stat().st_mode) == 0o600
    assert not (ck / "state.h5ad").exists()

    monkeypatch.setitem(stages.REGISTRY, "embedding", real_stage)
    messages = []
    resumed, _ = run(_cfg(tmp_path, "r"), progress=messages.append)
    assert any("reusing neighbors, leiden from checkpoint" in m for m in messages)
    for key in ("leiden_0.5", "leiden_1.0"):
        assert (resumed.obs[key] == clean.obs[key]).all()
    assert not ck.exists()

    # a checkpoint file others may write is refused (recomputed from the start, same labels)
    monkeypatch.setitem(stages.REGISTRY, "embedding", dataclasses.replace(real_stage, run=boom))
    with pytest.raises(RuntimeError):
        run(_cfg(tmp_path, "r"))
    os.chmod(ck / "state.pkl", 0o666)
    monkeypatch.setitem(stages.REGISTRY, "embedding", real_stage)
    messages.clear()
    again, _ = run(_cfg(tmp_path, "r"), progress=messages.append)
    assert not any("from checkpoint" in m for m in messages)
    assert (again.obs["leiden_1.0"] == clean.obs["leiden_1.0"]).all()


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    from scclust._io import write_text

    umask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_subcluster_key_clash_is_caught_before_reprocessing(tmp_path):
    cfg = _cfg(
        tmp_path,
        "clash",
        stages=["neighbors", "leiden", "subcluster"],
        leiden={"resolutions": [0.6], "key_added": "tcells"},
        subcluster={
            "tnk": {
                "groupby": "tcells_0.6",
                "select": {"markers": {"T": ["CD3E"]}},
                "leiden": {"key_added": "tcells", "resolutions": [0.6]},
            }
        },
    )
    with pytest.raises(
        UserError, match=r"leiden and subcluster.tnk both make obs key 'tcells_0.6'; set a distinct key_added"
    ):
        run(cfg)
    assert not (tmp_path / "clash" / "subclusters").exists()


def test_input_keys_checked_before_any_stage(tmp_path):
    """Keys the input itself must have fail at once, all in one message, before any clustering."""
    cfg = _cfg(
        tmp_path,
        "keys",
        stages=["neighbors", "leiden", "kmeans", "compare", "composition", "embedding", "subcluster"],
        neighbors=[{"use_rep": "X_pca_harmony", "n_pcs": 30}, {"use_rep": "X_scvi", "key_added": "scvi"}],
        kmeans={"use_rep": "X_pca"},
        compare={"reference": "leiden_1.0"},  # made by this run's leiden stage: fine
        composition={"by": ["sample", "donor"]},
        embedding={"basis": "X"},
        subcluster={
            "tnk": {
                "groupby": "leiden_0.4",
                "select": {"clusters": [1]},
                "batch_key": "batch",
                "pca": {"regress_out": ["total_counts"]},
            }
        },
    )
    with pytest.raises(UserError) as err:
        run(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert "neighbors.1.use_rep 'X_scvi' not in .obsm" in msg
    assert (
        "composition.by 'donor' not in .obs" in msg
        and "'sample'" not in msg.split("composition.by")[1].split("not in")[0]
    )
    assert "embedding.basis 'X' not in .obsm" in msg
    assert "subcluster.tnk.groupby 'leiden_0.4' not in .obs" in msg  # leiden makes 0.5 and 1.0 only
    assert "subcluster.tnk.batch_key 'batch' not in .obs" in msg
    for fine in ("kmeans.use_rep", "regress_out", "compare.reference"):
        assert fine not in msg
    assert not list((tmp_path / "keys").rglob("*.*"))  # nothing ran, nothing written


def test_input_key_check_knows_what_stages_make(tmp_path):
    from scclust.datasets import simulate_counts
    from scclust.workflow import preflight as check_input_keys

    raw = simulate_counts(300)
    del raw.obs["type"]
    # prepare makes the QC columns (subcluster's default regress_out) and the embeddings; composition's
    # default 'by' columns are skipped with a warning by the stage, so not an error here
    cfg = parse_config(
        {
            "input": "x.h5ad",
            "stages": ["prepare", "neighbors", "leiden", "composition", "embedding", "subcluster"],
            "neighbors": {"use_rep": "X_pca_harmony"},
            "leiden": {"resolutions": [0.4]},
            "embedding": {"basis": "X_umap_harmony"},
            "subcluster": {
                "tnk": {
                    "groupby": "leiden_0.4",
                    "select": {"markers": {"T": ["CD3E"]}},
                    "pca": {"regress_out": ["total_counts", "pct_counts_mt"]},
                }
            },
        }
    )
    check_input_keys(raw, cfg)
    with pytest.raises(
        UserError,
        match=r"embedding.basis 'X_umap_scvi' not in .obsm: did you mean 'X_umap'\? \(in the input: none; "
        r"made by this run: 'X_pca', 'X_pca_harmony', 'X_umap_harmony', 'X_umap'\)",
    ):
        check_input_keys(
            raw, cfg.model_copy(update={"embedding": [cfg.embedding[0].model_copy(update={"basis": "X_umap_scvi"})]})
        )


@pytest.mark.slow
def test_no_tl_function_computes_the_same_result_twice(tmp_path, monkeypatch):
    """tl computes, pl draws: in a run with every output stage, each tl call (function + arguments)
    happens once; figures draw the result the stage already has."""
    import collections
    import functools
    import importlib

    from scclust import tl

    calls = collections.Counter()
    for name in tl.__all__:
        func = getattr(tl, name)
        if isinstance(func, type) or not callable(func):
            continue

        @functools.wraps(func)  # the heatmap stage reads the signature
        def counted(*args, _f=func, _n=name, **kwargs):
            given = [a for a in args if not isinstance(a, ad.AnnData)]  # the AnnData is the same object throughout
            calls[(_n, repr(given), repr(sorted((k, repr(v)) for k, v in kwargs.items())))] += 1
            return _f(*args, **kwargs)

        monkeypatch.setattr(tl, name, counted)
        monkeypatch.setattr(importlib.import_module(func.__module__), name, counted)  # pl's private imports
    cfg = _cfg(
        tmp_path,
        "once",
        stages=[
            "neighbors",
            "leiden",
            "kmeans",
            "hclust",
            "compare",
            "relationships",
            "embedding",
            "composition",
            "qc",
            "heatmap",
            "report",
        ],
        kmeans={"use_rep": "X_pca", "n_clusters": [4, 6]},
        hclust={"use_rep": "X_pca", "n_clusters": [4, 6]},
        compare={"reference": "bulk_labels"},
        relationships={"groupby": ["leiden_0.5"], "genes": ["CD3E", "CST3"]},
        composition={"groupby": ["leiden_0.5"], "by": ["sample"]},
        qc={"groupby": ["leiden_0.5"]},
        heatmap={"groupby": "leiden_0.5", "genes": ["CD3E", "CST3", "NKG7"], "n_boot": 5},
    )
    run(cfg)
    assert {n for n, *_ in calls} >= {
        "leiden",
        "kmeans",
        "hclust",
        "compare",
        "cluster_tree",
        "dendrogram",
        "composition",
        "qc_summary",
        "heatmap_matrix",
        "cluster_heatmap",
    }
    twice = {k: n for k, n in calls.items() if n > 1}
    assert not twice, twice
