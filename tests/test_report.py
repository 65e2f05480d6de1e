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
from scclust.report import write_report


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    cfg = parse_config({
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
    })
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
    assert stems >= {"figures/dendrogram_leiden_1.0", "figures/dotplot_bulk_labels", "figures/composition_leiden_1.0_by_sample",
                     "figures/composition_sample_by_leiden_1.0", "figures/composition_type_by_leiden_1.0",
                     "figures/qc_violin_leiden_0.5"}
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
    assert {"tables/cluster_means_leiden_1.0.csv", "tables/composition_diagnostics_leiden_1.0.csv",
            "tables/qc_leiden_1.0.csv", "tables/cluster_labels.csv"} <= set(tables)
    for f in tables:
        assert f"<summary>table {Path(f).stem} (" in page, f  # tables are collapsed under a summary line
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
    assert "http://" not in page and "https://" not in page  # self-contained


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
    m = {"files": ["tables/qc_leiden_1.0.csv"], "stages": [{"stage": "qc", "outputs": ["tables/qc_leiden_1.0.csv"]}],
         "config": {}, "versions": {}}
    page = write_report(tmp_path, m).read_text()
    assert "<h2>Flags (1)</h2>" in page
    assert f"cluster {row[0]} &mdash; its median n_genes_by_counts differs from the rest (beyond the per-cell QC bound): " \
        "a small or large cell type, or low-quality cells if it has no markers of its own" in page
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
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1400,2000",
               (out / "report.html").resolve().as_uri()]
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
    m = {"files": ["figures/a.svg", "figures/b.pdf"], "stages": [{"stage": "x", "outputs": ["figures/a.svg", "figures/b.pdf"]}]}
    page = write_report(tmp_path, m).read_text()
    assert page.count('src="data:image/svg+xml;base64,') == 1
    assert 'not embeddable; open: <a href="figures/b.pdf">pdf</a>' in page


def test_explicit_missing_by_column_is_an_error(tmp_path):
    from scclust._errors import MissingKeyError

    cfg = parse_config({
        "input": "builtin:pbmc68k", "outdir": str(tmp_path / "o"), "stages": ["neighbors", "leiden", "composition"],
        "neighbors": {"use_rep": "X_pca_harmony", "n_pcs": 30}, "composition": {"by": ["sample", "donor"]},
    })
    with pytest.raises(MissingKeyError, match=r"composition.by 'donor' not in .obs"):
        run(cfg)
    assert not (tmp_path / "o" / "manifest.json").exists()
