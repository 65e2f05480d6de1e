"""Shared fixtures: small session-scoped datasets built with the package's own simulator.

Each test must take a ``.copy()`` before modifying a fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")
os.environ.setdefault("MPLBACKEND", "agg")

#: ../shared beside the checkout (real data; tests that need it skip with a reason when absent)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KANG = SHARED / "data" / "kang_pbmc_stim_2000.h5ad"


@pytest.fixture(scope="session")
def sim():
    """3,000 simulated cells, integrated (X_pca_harmony, X_umap_harmony, .raw), truth in obs['cell_type']
    and obs['cell_state'] (the type -> state hierarchy)."""
    from scclust.datasets import simulate

    return simulate(3000, seed=0)


@pytest.fixture(scope="session")
def sim_flat():
    """3,000 simulated cells without the type -> state hierarchy (types only): for tests of how well a
    method recovers a flat truth (k-means / Ward at k = 8 types, batch removal between types)."""
    from scclust.datasets import simulate

    return simulate(3000, seed=0, states=False)


@pytest.fixture(scope="session")
def sim7332():
    """The lab's size: 7,332 simulated cells."""
    from scclust.datasets import simulate

    return simulate(7332, seed=0)


@pytest.fixture(scope="session")
def pbmc():
    from scclust.datasets import pbmc68k

    return pbmc68k()


@pytest.fixture(scope="session")
def kang_path():
    if not KANG.is_file():
        pytest.skip(f"real data not available: {KANG} (../shared/data beside the checkout)")
    return KANG


@pytest.fixture(scope="session")
def plant_rare():
    """``plant_rare(adata, n_rare, distance=8.0, seed=0)``: a planted population in a simulated
    integrated AnnData (ground truth for the sketch tests)."""
    return _plant_rare


def _plant_rare(adata, n_rare: int, *, distance: float = 8.0, seed: int = 0, rep: str = "X_pca_harmony"):
    """Move ``n_rare`` random cells to a new population ``distance`` away from the centre of one
    cell type (each keeps its own noise around its state): ``.obs["rare"]`` marks them."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    X = adata.obsm[rep]
    rare = np.sort(rng.choice(adata.n_obs, n_rare, replace=False))
    state = adata.obs["cell_state"].cat.codes.to_numpy()
    typ = adata.obs["cell_type"].cat.codes.to_numpy()
    dim = np.arange(X.shape[1])
    step = rng.normal(size=X.shape[1]) * np.exp(-dim / 8)
    target = X[typ == typ[rare[0]]].mean(0) + step * distance / np.linalg.norm(step)
    for s in np.unique(state[rare]):
        moved = rare[state[rare] == s]
        X[moved] += target - X[state == s].mean(0)
    adata.obs["rare"] = np.isin(np.arange(adata.n_obs), rare)
    return adata


#: fixtures that run the whole simulation chain (Harmony, UMAP) or read the real data: their tests
#: belong to the full suite, not to the fast lane (`pytest -m "not slow"`)
SLOW_FIXTURES = {"sim", "sim7332", "kang_path"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
