"""scclust.pp.sketch: sizes, seeds, the geometric covering against uniform sampling on a planted
rare population (ground truth), leverage probabilities against the hat matrix."""

from __future__ import annotations

import numpy as np
import pytest

from scclust import pp
from scclust._errors import ConfigError, InputError
from scclust.datasets import plant_rare, simulate_integrated
from scclust.pp._sketch import sketch_indices


@pytest.fixture(scope="module")
def data():
    return plant_rare(simulate_integrated(20_000, seed=2), 40)  # 0.2 %


def test_size_seed_and_record(data):
    a = data.copy()
    pp.sketch(a, fraction=0.05, use_rep="X_pca_harmony", n_pcs=30)
    first = a.obs["sketch"].to_numpy().copy()
    assert a.obs["sketch"].dtype == bool and first.sum() == 1000
    info = a.uns["sketch"]
    assert info["n_cells"] == 1000 and info["n_obs"] == 20_000 and info["params"]["method"] == "hybrid"
    assert abs(info["boxes"] - 200) <= 20  # the covering's cubes: within 10 % of its share of the sketch
    pp.sketch(a, fraction=0.05, method="geometric", use_rep="X_pca_harmony", n_pcs=30, key_added="geo")
    assert abs(a.uns["geo"]["boxes"] - 1000) <= 100
    pp.sketch(a, fraction=0.05, use_rep="X_pca_harmony", n_pcs=30)
    np.testing.assert_array_equal(a.obs["sketch"].to_numpy(), first)  # same seed, same sketch
    pp.sketch(a, n_cells=777, use_rep="X_pca_harmony", n_pcs=30, random_state=1, key_added="sk2")
    assert a.obs["sk2"].sum() == 777 and (a.obs["sk2"].to_numpy() != first).any()
    for method in ("uniform", "leverage", "geometric"):
        idx = sketch_indices(a.obsm["X_pca_harmony"], 500, method=method, random_state=4)
        assert idx.size == np.unique(idx).size == 500 and (np.diff(idx) > 0).all()
        np.testing.assert_array_equal(idx, sketch_indices(a.obsm["X_pca_harmony"], 500, method=method, random_state=4))


def test_geometric_keeps_a_rare_population_uniform_sampling_thins(data):
    """40 planted cells (0.2 %) in a 5 % sketch: uniform sampling keeps ~2 (binomial), the geometric
    covering many more (they lie in cubes of their own), the hybrid (a fifth drawn by the covering)
    several times uniform's, over several seeds."""
    X = data.obsm["X_pca_harmony"][:, :30]
    rare = data.obs["rare"].to_numpy()
    kept = {
        m: [rare[sketch_indices(X, 1000, method=m, random_state=s)].sum() for s in range(4)]
        for m in ("geometric", "hybrid", "uniform")
    }
    assert min(kept["geometric"]) >= 15 and min(kept["hybrid"]) >= 6 and max(kept["uniform"]) <= 5, kept
    assert np.mean(kept["hybrid"]) >= 3 * np.mean(kept["uniform"]), kept
    # and the sketch still spans every simulated state (geometry kept, no region dropped)
    states = data.obs["cell_state"].to_numpy()
    idx = sketch_indices(X, 1000, method="geometric", random_state=0)
    assert set(states[idx]) == set(states)


def test_leverage_draws_in_proportion_to_the_hat_matrix_diagonal():
    """One-cell draws over many seeds: frequencies follow diag(Xc (Xc'Xc)^-1 Xc'), computed here with
    numpy's pseudo-inverse (independent of the Cholesky solve)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3)) * [1, 3, 0.5]
    Xc = X - X.mean(0)
    hat = np.diag(Xc @ np.linalg.pinv(Xc.T @ Xc) @ Xc.T)
    draws = np.array([sketch_indices(X, 1, method="leverage", random_state=s)[0] for s in range(6000)])
    freq = np.bincount(draws, minlength=12) / draws.size
    np.testing.assert_allclose(freq, hat / hat.sum(), atol=0.015)


def test_errors(data):
    with pytest.raises(InputError, match="not smaller than the data"):
        pp.sketch(data.copy(), n_cells=20_000, use_rep="X_pca_harmony")
    with pytest.raises(InputError, match="too small"):
        pp.sketch(data.copy(), n_cells=5, use_rep="X_pca_harmony")
    with pytest.raises(ConfigError, match="method"):
        pp.sketch(data.copy(), method="random", use_rep="X_pca_harmony")
    with pytest.raises(ConfigError, match="fraction"):
        pp.sketch(data.copy(), fraction=1.5, use_rep="X_pca_harmony")
