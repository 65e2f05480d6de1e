"""The lint gate: ruff with the rule families scverse projects use (pyproject.toml) passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: it is in the test extra (pip install -e '.[test]')")
    res = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks", "examples", "docs"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-3000:]
