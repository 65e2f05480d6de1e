"""The HTML report: every file of the run listed, figures embedded, flags shown; renders in Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from scclust import run
from scclust.config import parse_config
from scclust.report import DOCS_URL, write_report

#: heavy (Dask clusters, 4,000-60,000-cell runs, whole runs): the full suite, not the fast lane
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    cfg = parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(out),
            "stages": ["neighbors", "leiden", "relationships", "embedding", "composition", "qc", "report"],
            "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30, "n_neighbors": 15},
            "leiden": {"resolutions": [0.5, 1.0]},
            "relationships": {"groupby": ["leiden_1.0", "bulk_labels"]},
            "embedding": {"basis": "X_umap_harmony", "genes": ["CD3E", "CST3"]},
            "composition": {"groupby": ["leiden_1.0"]},
            "qc": {},  # groupby None: every clustering of the run
            "report": {"title": "Test report", "max_rows": 20},
            "figures": {"formats": ["png", "svg"]},
        }
    )
    _, manifest = run(cfg)
    return out, manifest, (out / "report.html").read_text()


def test_report_lists_every_file_of_the_run(report_run):
    out, manifest, page = report_run
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert on_disk == manifest["files"]
    assert "report.html" in manifest["files"] and "clustered.h5ad" in manifest["files"]
    links = set(re.findall(r'<li><a href="([^"]+)">', page))
    assert links == set(manifest["files"]) | {"manifest.json"}


def test_every_figure_is_embedded_and_every_table_rendered(report_run):
    out, manifest, page = report_run
    stems = {f.rsplit(".", 1)[0] for f in manifest["files"] if f.startswith("figures/")}
    assert stems >= {
        "figures/dendrogram_leiden_1.0",
        "figures/dotplot_bulk_labels",
        "figures/composition_leiden_1.0_by_sample",
        "figures/composition_sample_by_leiden_1.0",
        "figures/composition_type_by_leiden_1.0",
        "figures/qc_violin_leiden_0.5",
    }
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # every figure once in its stage's section (PNG preferred); the overview shows up to 6 of them again first
    overview, _, rest = page.partition('<section id="flags"')
    in_sections = re.findall(r'<img alt="([^"]+)"', rest)
    assert sorted(in_sections) == sorted(Path(s).name for s in stems)
    shown_first = re.findall(r'<img alt="([^"]+)"', overview)
    assert 1 <= len(shown_first) <= 6 and set(shown_first) <= set(in_sections)
    assert any(a.startswith("umap") for a in shown_first)  # the overview opens with the embedding
    for alt, data in images:
        assert base64.b64decode(data) == (out / "figures" / f"{alt}.png").read_bytes()
    tables = [f for f in manifest["files"] if f.endswith(".csv")]
    assert {
        "tables/cluster_means_leiden_1.0.csv",
        "tables/composition_diagnostics_leiden_1.0.csv",
        "tables/qc_leiden_1.0.csv",
        "tables/cluster_labels.csv",
    } <= set(tables)
    # tables are collapsed under a summary line with their title in words, then a link to the CSV
    assert page.count("<summary>table: ") == len(tables)
    for f in tables:
        assert f'<a href="{f}">{f}</a>' in page, f
    # cluster_labels has 700 rows: cut to max_rows with a link to the CSV
    assert 'showing the first 20 of 700 rows; full table: <a href="tables/cluster_labels.csv">' in page


def test_config_versions_timings_and_flags(report_run):
    _, manifest, page = report_run
    assert "<title>Test report</title>" in page
    assert "max_rows: 20" in page and "use_rep: X_pca_harmony" in page  # the resolved config as YAML
    assert f"<td>{manifest['versions']['scanpy']}</td>" in page
    for rec in manifest["stages"]:
        if rec["stage"] != "write_report":
            assert f"<td>{rec['stage']}</td>" in page
    assert 'id="flags"' in page
    # self-contained: nothing is loaded from elsewhere; the only outside links go to the documentation
    assert 'src="http' not in page
    assert all(u.startswith(DOCS_URL) for u in re.findall(r'href="(https?://[^"]+)"', page))


def test_sections_titled_in_words_with_captions_glossaries_and_docs_links(report_run):
    _, manifest, page = report_run
    titles = re.findall(r"<h2>([^<]+)", page)
    assert "Leiden clusterings" in titles and "Clusterings and genes on the embedding" in titles
    assert "Cluster relationships and markers" in titles and "QC metrics per cluster" in titles
    stems = {Path(f).stem for f in manifest["files"]}
    assert not set(titles) & stems and "embedding" not in titles  # no file or stage names as titles
    # every section of a stage links to its entry in the outputs reference
    for stage in ("leiden", "relationships", "embedding", "composition", "qc"):
        assert f'href="{DOCS_URL}reference/outputs.html#out-{stage}"' in page, stage
    # every figure: a title in words, a caption saying how to read it, then its file
    figures = re.findall(r"<figure[^>]*><h3>([^<]+)</h3>.*?<figcaption>(.*?)</figcaption></figure>", page, re.S)
    assert len(figures) == page.count("<figure")
    for title, caption in figures:
        text = caption.split("<code>")[0].strip()
        assert len(text) > 30 and not title.startswith(("umap_", "dotplot_", "qc_violin_")), (title, caption)
    assert "The leiden clusterings on the umap_harmony embedding" in page
    assert "Dot size: fraction of the cluster&#x27;s cells expressing the gene" in page
    # thumbnails enlarge on click; wide figures take a whole row
    assert page.count("this.classList.toggle('full')") == page.count("<img ")
    assert "<figure class=wide><h3>The leiden clusterings" in page
    # every table explains its columns: a glossary naming the columns it has
    glossaries = re.findall(r'<dl class="glossary">(.*?)</dl>', page, re.S)
    assert len(glossaries) == page.count("<summary>table: ")
    qc = page.split("QC medians per cluster of leiden_1.0")[1].split("</dl>")[0]
    assert "<dt>flag_qc</dt><dd>any flag raised</dd>" in qc and "<dt>frac_outside_.+</dt>" in qc
    comp = page.split("Clusters of leiden_1.0 dominated by one sample")[1].split("</dl>")[0]
    assert "<dt>entropy</dt>" in comp and "<dt>p_adj</dt>" in comp


def test_every_output_of_the_shipped_configs_is_described():
    """Every figure and table name a stage writes has an entry in OUTPUTS (titles and captions)."""
    from scclust.report import describe

    names = {
        "figure": [
            ("prepare", "prepare_pca_variance"),
            ("prepare", "prepare_hvg"),
            ("neighbors", "graph_snn"),
            ("compare", "compare"),
            ("compare", "clustree_leiden"),
            ("relationships", "dendrogram_leiden_0.6"),
            ("relationships", "dotplot_leiden_0.6"),
            ("embedding", "umap_harmony_leiden"),
            ("embedding", "umap_genes"),
            ("composition", "composition_leiden_0.6_by_sample"),
            ("qc", "qc_violin_leiden_0.6"),
            ("heatmap", "pbmc_markers"),
            ("subcluster", "subcluster_tnk_tcells_0.6"),
            ("subcluster", "subcluster_tnk_markers"),
            ("stability", "stability_leiden"),
            ("stability", "stability_clustree_leiden"),
            ("stability", "stability_umap_leiden_0.6"),
            ("stability", "stability_runs_leiden_0.6"),
        ],
        "table": [
            ("prepare", "prepare_qc_filtered"),
            ("prepare", "prepare_hvg"),
            ("leiden", "leiden_summary"),
            ("kmeans", "kmeans_summary"),
            ("hclust", "hclust_summary"),
            ("compare", "ari"),
            ("compare", "nmi"),
            ("compare", "compare_summary"),
            ("compare", "contingency_leiden_0.4_vs_leiden_0.6"),
            ("compare", "clustree_leiden"),
            ("relationships", "cluster_means_leiden_0.6"),
            ("composition", "composition_leiden_0.6_by_sample"),
            ("composition", "composition_diagnostics_leiden_0.6"),
            ("qc", "qc_leiden_0.6"),
            ("heatmap", "pbmc_markers_matrix"),
            ("heatmap", "pbmc_markers_row_linkage"),
            ("heatmap", "pbmc_markers_col_order"),
            ("heatmap", "pbmc_markers_row_groups"),
            ("heatmap", "pbmc_markers_stability"),
            ("subcluster", "subcluster_tnk_selection"),
            ("subcluster", "subcluster_tnk_contingency_tcells_0.6"),
            ("stability", "stability_summary"),
            ("stability", "stability_clusters"),
            ("stability", "stability_n_clusters"),
            ("sketch", "sketch_clusters"),
            ("stability", "stability_recommendation"),
            ("write_outputs", "cluster_labels"),
        ],
    }
    for kind, items in names.items():
        for stage, stem in items:
            out, groups = describe(stem, kind, stage)
            assert out is not None and out.stage == stage, (kind, stem, out)
            assert "{" not in out.title.format(**groups) and out.caption, (kind, stem)
    out, _ = describe("stability_n_clusters", "table", "stability")
    assert out.title == "Number of clusters in every rerun"


def test_flags_are_listed_and_rows_highlighted(tmp_path, report_run):
    out, _, _ = report_run
    qc = out / "tables" / "qc_leiden_1.0.csv"
    text = qc.read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    row[header.index("flag_qc")] = "True"
    row[header.index("flag_n_genes_by_counts")] = "True"
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "qc_leiden_1.0.csv").write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    m = {
        "files": ["tables/qc_leiden_1.0.csv"],
        "stages": [{"stage": "qc", "outputs": ["tables/qc_leiden_1.0.csv"]}],
        "config": {},
        "versions": {},
    }
    page = write_report(tmp_path, m).read_text()
    assert "<h2>Flags (1)</h2>" in page
    assert (
        f"cluster {row[0]} &mdash; its median n_genes_by_counts differs from the rest (beyond the per-cell QC bound): "
        "a small or large cell type, or low-quality cells if it has no markers of its own" in page
    )
    assert "fail" not in page.split('id="flags"')[1].split("</section>")[0]  # an observation, not a verdict
    assert page.count('<tr class="flag">') == 1


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.browser
@pytest.mark.slow  # a subprocess: full suite, not the fast lane
def test_renders_in_headless_chromium(report_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    out, _, _ = report_run
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1400,2000",
            (out / "report.html").resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert shot.is_file()
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1400)
    header = img[20, 700]
    np.testing.assert_allclose(header, np.array([0x00, 0x72, 0xB2]) / 255, atol=0.03)  # the blue title bar
    # embedded figures were decoded: many distinct colours below the header (a blank or broken page has few)
    body = (img[300:, :] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(body, axis=0)) > 500


def test_svg_embedded_and_pdf_linked_when_there_is_no_png(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    (tmp_path / "figures").mkdir()
    fig.savefig(tmp_path / "figures" / "a.svg")
    fig.savefig(tmp_path / "figures" / "b.pdf")
    m = {
        "files": ["figures/a.svg", "figures/b.pdf"],
        "stages": [{"stage": "x", "outputs": ["figures/a.svg", "figures/b.pdf"]}],
    }
    page = write_report(tmp_path, m).read_text()
    assert page.count('src="data:image/svg+xml;base64,') == 1
    assert 'not embeddable; open: <a href="figures/b.pdf">pdf</a>' in page


def test_explicit_missing_by_column_is_an_error(tmp_path):
    from scclust._errors import MissingKeyError

    cfg = parse_config(
        {
            "input": "builtin:pbmc68k",
            "outdir": str(tmp_path / "o"),
            "stages": ["neighbors", "leiden", "composition"],
            "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30},
            "composition": {"by": ["sample", "donor"]},
        }
    )
    with pytest.raises(MissingKeyError, match=r"composition.by 'donor' not in .obs"):
        run(cfg)
    assert not (tmp_path / "o" / "manifest.json").exists()
