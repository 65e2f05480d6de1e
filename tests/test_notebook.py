"""examples/walkthrough.py (a jupytext percent script) converted to a notebook and executed in a
real Jupyter kernel, as a notebook user would run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

WALKTHROUGH = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.py"


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


@pytest.mark.slow
def test_walkthrough_executes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(WALKTHROUGH)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(_text(o) for c in code for o in c.outputs)
    counts = dict(re.findall(r"^(leiden_[0-9.]+): (\d+) Leiden clusters$", text, flags=re.MULTILINE))
    assert set(counts) == {"leiden_0.4", "leiden_0.6", "leiden_1.0", "leiden_1.4"}
    assert all(int(n) >= 2 for n in counts.values())
    assert re.search(r"^\d+ T/NK cells, \d+ subclusters$", text, flags=re.MULTILINE)
    # the figures are displayed as images in the notebook
    n_png = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert n_png >= 8
