"""Shared fixtures: small session-scoped datasets built with the package's own simulator.

Each test must take a ``.copy()`` before modifying a fixture. A simulated dataset is built once per
test session, also when pytest-xdist runs the files in several processes (:func:`_built_once`).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")
os.environ.setdefault("MPLBACKEND", "agg")

def _built_once(factory, name: str, make):
    """``make()``, built by the first process of this session that asks and read by the others: under
    pytest-xdist every worker would otherwise build its own copy of the same simulation (tens of
    seconds each). The pickle lives in the session's base temporary directory, shared by its workers
    and new for every session."""
    import fcntl
    import pickle

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make()
    root = factory.getbasetemp().parent  # this session's directory, above the workers' own
    path = root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the one building it
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(make(), protocol=pickle.HIGHEST_PROTOCOL))
            tmp.rename(path)
    return pickle.loads(path.read_bytes())


#: ../shared beside the checkout (real data; tests that need it skip with a reason when absent)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KANG = SHARED / "data" / "kang_pbmc_stim_2000.h5ad"


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    """3,000 simulated cells, integrated (X_pca_harmony, X_umap_harmony, .raw), truth in obs['cell_type']
    and obs['cell_state'] (the type -> state hierarchy)."""
    from scclust.datasets import simulate

    return _built_once(tmp_path_factory, "sim", lambda: simulate(3000, seed=0))


@pytest.fixture(scope="session")
def sim_flat(tmp_path_factory):
    """3,000 simulated cells without the type -> state hierarchy (types only): for tests of how well a
    method recovers a flat truth (k-means / Ward at k = 8 types, batch removal between types)."""
    from scclust.datasets import simulate

    return _built_once(tmp_path_factory, "sim_flat", lambda: simulate(3000, seed=0, states=False))


@pytest.fixture(scope="session")
def sim7332(tmp_path_factory):
    """The lab's size: 7,332 simulated cells."""
    from scclust.datasets import simulate

    return _built_once(tmp_path_factory, "sim7332", lambda: simulate(7332, seed=0))


@pytest.fixture(scope="session")
def pbmc():
    from scclust.datasets import pbmc68k

    return pbmc68k()


@pytest.fixture(scope="session")
def kang_path():
    if not KANG.is_file():
        pytest.skip(f"real data not available: {KANG} (../shared/data beside the checkout)")
    return KANG


#: fixtures that run the whole simulation chain (Harmony, UMAP) or read the real data: their tests
#: belong to the full suite, not to the fast lane (`pytest -m "not slow"`)
SLOW_FIXTURES = {"sim", "sim7332", "kang_path"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
