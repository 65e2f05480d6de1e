"""Built-in data: a simulated tutorial-shaped dataset and scanpy's embedded PBMC set (no download), and
real public datasets obtained by :func:`fetch` (a registry of checksums and sources, cached)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._errors import ConfigError, InputError, MissingFileError, choices

if TYPE_CHECKING:
    from ._input import InputSpec

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN",
    "CELL_STATES",
    "LAB_MARKERS",
    "REMOTE",
    "RemoteDataset",
    "counts_store",
    "data_dir",
    "fetch",
    "heatmap_example",
    "load_builtin",
    "pbmc68k",
    "plant_rare",
    "simulate",
    "simulate_counts",
    "simulate_counts_store",
    "simulate_integrated",
]

#: The 12 marker genes of the NBIS lab's dot plot.
LAB_MARKERS = ["CD3E", "CD4", "CD8A", "GNLY", "NKG7", "MS4A1", "FCGR3A", "CD14", "LYZ", "CST3", "MS4A7", "FCGR1A"]

SAMPLES = ["covid_1", "covid_15", "covid_16", "covid_17", "ctrl_5", "ctrl_13", "ctrl_14", "ctrl_19"]

# cell type: (base fraction, {marker: log-fold over the background})
CELL_TYPES: dict[str, tuple[float, dict[str, float]]] = {
    "CD4 T": (0.30, {"CD3E": 3, "CD3D": 3, "CD4": 2.5, "IL7R": 3, "CCR7": 2.5, "LTB": 2.5, "MAL": 2}),
    "CD8 T": (0.14, {"CD3E": 3, "CD3D": 3, "CD8A": 3, "CD8B": 3, "GZMK": 2.5, "NKG7": 1.5, "CCL5": 2.5}),
    "NK": (0.12, {"GNLY": 4, "NKG7": 3.5, "KLRD1": 3, "GZMB": 3, "PRF1": 3, "FCGR3A": 1.5}),
    "B": (0.12, {"MS4A1": 3.5, "CD79A": 3.5, "CD79B": 3, "CD19": 2, "BANK1": 2}),
    "CD14 Mono": (0.18, {"CD14": 3, "LYZ": 4, "CST3": 3, "S100A8": 4, "S100A9": 4, "FCGR1A": 2, "FCN1": 3}),
    "FCGR3A Mono": (0.07, {"FCGR3A": 3.5, "MS4A7": 3, "LYZ": 3, "CST3": 3, "LST1": 3, "IFITM3": 2}),
    "DC": (0.04, {"FCER1A": 3.5, "CST3": 3, "CLEC10A": 3, "HLA-DQA1": 3, "CD1C": 3}),
    "Platelet": (0.03, {"PPBP": 5, "PF4": 5, "GNG11": 4, "TUBB1": 4}),
}
# cell type -> states: (name, share of the type's cells, kind, log-fold of the state's program).
# "discrete": the state's own gene program; "continuous": cells spread along a gradient (position
# t ~ U(0, 1) scales a program; truth is the half of the gradient, t < 0.5 or not), a continuum a
# clustering cuts anywhere. Used by ``simulate_counts(states=True)``.
CELL_STATES: dict[str, list[tuple[str, float, str, float]]] = {
    "CD4 T": [
        ("CD4 T naive", 0.4, "discrete", 1.3),
        ("CD4 T central memory", 0.25, "discrete", 1.4),
        ("CD4 T effector memory", 0.2, "discrete", 1.5),
        ("CD4 T reg", 0.15, "discrete", 1.65),
    ],
    "CD8 T": [("CD8 T naive", 0.5, "continuous", 12.0), ("CD8 T effector", 0.5, "continuous", 12.0)],
    "NK": [("NK CD56dim", 0.5, "continuous", 12.0), ("NK CD56bright", 0.5, "continuous", 12.0)],
    "B": [
        ("B naive", 0.55, "discrete", 1.35),
        ("B memory", 0.3, "discrete", 1.35),
        ("B plasma", 0.15, "discrete", 1.75),
    ],
    "CD14 Mono": [
        ("CD14 Mono classical", 0.45, "discrete", 1.3),
        ("CD14 Mono inflammatory", 0.35, "discrete", 1.5),
        ("CD14 Mono IFN", 0.2, "discrete", 1.6),
    ],
    "FCGR3A Mono": [("FCGR3A Mono C1Q-", 0.6, "discrete", 1.45), ("FCGR3A Mono C1Q+", 0.4, "discrete", 1.45)],
    "DC": [("cDC2", 0.7, "discrete", 1.65), ("pDC", 0.3, "discrete", 1.9)],
    "Platelet": [("Platelet", 0.6, "discrete", 1.3), ("Platelet activated", 0.4, "discrete", 1.3)],
}
_MT = [
    "MT-ND1",
    "MT-ND2",
    "MT-CO1",
    "MT-CO2",
    "MT-ATP8",
    "MT-ATP6",
    "MT-CO3",
    "MT-ND3",
    "MT-ND4L",
    "MT-ND4",
    "MT-ND5",
    "MT-ND6",
    "MT-CYB",
]
_RIBO = [f"RPL{i}" for i in range(3, 33)] + [f"RPS{i}" for i in range(2, 30)]
_HB = ["HBA1", "HBA2", "HBB", "HBD"]
_ISG = ["ISG15", "IFI6", "IFI44L", "MX1", "IFIT1", "IFIT3", "OAS1", "RSAD2"]


def _gene_universe(n_genes: int, rng: np.random.Generator) -> tuple[list[str], dict[str, int], list[str], np.ndarray]:
    """The simulators' genes (markers, mito, ribo, haemoglobin, interferon, then generic ``GENE00000``...)
    and their background log-abundance: ``(genes, index of each gene, the named genes, base)``."""
    markers = sorted({g for _, m in CELL_TYPES.values() for g in m})
    named = markers + _MT + _RIBO + _HB + _ISG
    if n_genes < len(named) + 200:
        raise ConfigError(f"n_genes must be >= {len(named) + 200}; got {n_genes}")
    genes = named + [f"GENE{i:05d}" for i in range(n_genes - len(named))]
    gidx = {g: i for i, g in enumerate(genes)}
    base = rng.normal(-1.0, 1.2, len(genes))
    base[[gidx[g] for g in markers]] = -3.0
    base[[gidx[g] for g in _MT]] = rng.normal(2.5, 0.3, len(_MT))
    base[[gidx[g] for g in _RIBO]] = rng.normal(3.0, 0.4, len(_RIBO))
    base[[gidx[g] for g in _HB]] = -4.0
    base[[gidx[g] for g in _ISG]] = -1.0
    return genes, gidx, named, base


def simulate_counts(
    n_cells: int = 3000,
    *,
    n_samples: int = 8,
    n_genes: int = 2000,
    batch_strength: float = 0.8,
    type_strength: float = 0.6,
    states: bool = True,
    seed: int = 0,
) -> AnnData:
    """Simulated raw UMI counts of PBMC-like cells (the input of :func:`~scclust.pp.prepare`).

    Eight cell types (CD4 T, CD8 T, NK, B, CD14 and FCGR3A monocytes, DC, platelets) with marker
    genes that include the lab's 12; mitochondrial, ribosomal and haemoglobin genes; ``n_samples``
    samples in two conditions (``type``: Covid / Ctrl, interferon genes up in Covid) with per-sample
    multiplicative batch shifts on a fifth of the genes and per-sample composition. Counts are
    negative-binomial (Gamma-Poisson). The truth is in ``.obs["cell_type"]``.

    ``states=True`` adds a type -> state hierarchy (:data:`CELL_STATES`: 2-3 states per type, two
    types with a continuous gradient instead of discrete states), each state with its own program of
    generic genes, drawn from a second random stream so that everything else (cells, types,
    samples, library sizes) is the same as with ``states=False``; the state is in
    ``.obs["cell_state"]`` (categories in :data:`CELL_STATES` order) and, for the gradients, the
    position in ``.obs["state_position"]``. Leiden (igraph, 20 neighbours on 30 Harmony dims, 7,332
    cells) then finds 8 / 9 / 11 / 15 / 15 / 18 clusters at resolution 0.2 / 0.4 / 0.6 / 1.0 / 1.4 /
    2.0 (``states=False``: 8 / 8 / 8 / 9 / 10 / 11), a rising number as on real PBMC data (the lab's
    9 / 12 / 16 / 21 at 0.4 / 0.6 / 1.0 / 1.4). On by default; ``states=False`` gives the flat
    simulation (types only), which tests of type recovery use.

    Parameters
    ----------
    n_samples
        Samples (2-64), with a batch effect each.
    n_genes
        Genes.
    batch_strength
        Size of the per-sample batch effect.
    type_strength
        Size of the cell types' expression differences.
    states
        Types have states (a type -> state hierarchy); ``False``: types only.
    seed
        Seed.
    """
    if n_cells < 100:
        raise ConfigError(f"n_cells must be >= 100; got {n_cells}")
    if not 2 <= n_samples <= 64:
        raise ConfigError(f"n_samples must be in [2, 64]; got {n_samples}")
    rng = np.random.default_rng(seed)
    genes, gidx, named, base = _gene_universe(n_genes, rng)
    G = len(genes)

    types = list(CELL_TYPES)
    T = len(types)
    profiles = np.tile(base, (T, 1))
    generic = np.arange(len(named), G)
    for t, name in enumerate(types):
        for g, lfc in CELL_TYPES[name][1].items():
            profiles[t, gidx[g]] = base[gidx[g]] + type_strength * (lfc + 3.0)
        up = rng.choice(generic, 30, replace=False)
        profiles[t, up] += type_strength * rng.uniform(0.8, 2.0, up.size)
        down = rng.choice(generic, 15, replace=False)
        profiles[t, down] -= type_strength * rng.uniform(0.5, 1.5, down.size)
    # two states per type (e.g. naive / activated) on a few genes: substructure for high resolutions
    state_genes = [rng.choice(generic, 12, replace=False) for _ in types]
    lib_type = {"CD14 Mono": 1.4, "FCGR3A Mono": 1.3, "DC": 1.2, "B": 1.0, "Platelet": 0.5}

    samples = (
        SAMPLES[:n_samples]
        if n_samples <= len(SAMPLES)
        else [f"{'covid' if i % 2 == 0 else 'ctrl'}_{i}" for i in range(n_samples)]
    )
    cond = np.array(["Covid" if s.startswith("covid") else "Ctrl" for s in samples])
    sample_of_cell = np.sort(rng.integers(0, n_samples, n_cells))
    base_frac = np.array([CELL_TYPES[t][0] for t in types])
    type_of_cell = np.empty(n_cells, int)
    for s in range(n_samples):
        cells = np.flatnonzero(sample_of_cell == s)
        frac = rng.dirichlet(base_frac * 200)
        type_of_cell[cells] = rng.choice(T, cells.size, p=frac)

    batch_lfc = np.zeros((n_samples, G))
    for s in range(n_samples):
        affected = rng.choice(G, G // 5, replace=False)
        batch_lfc[s, affected] = rng.normal(0, batch_strength, affected.size)
    isg = [gidx[g] for g in _ISG]

    logmu = profiles[type_of_cell] + batch_lfc[sample_of_cell]
    state = rng.random(n_cells) < 0.4
    for t in range(T):
        cells = np.flatnonzero((type_of_cell == t) & state)
        logmu[np.ix_(cells, state_genes[t])] += 1.2
    logmu[np.ix_(cond[sample_of_cell] == "Covid", isg)] += 2.0
    if states:
        state_of_cell, position = _add_states(logmu, type_of_cell, types, generic, seed)
    p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    lib = np.exp(rng.normal(np.log(2500), 0.35, n_cells))
    lib *= np.array([lib_type.get(types[t], 0.9) for t in type_of_cell])
    lib *= np.exp(rng.normal(0, 0.15, n_samples))[sample_of_cell]
    theta = 8.0
    lam = p * lib[:, None] * rng.gamma(theta, 1 / theta, size=p.shape)
    counts = rng.poisson(lam).astype(np.float32)

    obs = pd.DataFrame(
        {
            "sample": pd.Categorical([samples[s] for s in sample_of_cell], categories=samples),
            "type": pd.Categorical(cond[sample_of_cell], categories=["Covid", "Ctrl"]),
            "cell_type": pd.Categorical([types[t] for t in type_of_cell], categories=types),
        },
        index=[f"cell{i:06d}-{samples[s]}" for i, s in enumerate(sample_of_cell)],
    )
    obs["batch"] = obs["sample"]
    if states:
        names = [st[0] for t in types for st in CELL_STATES[t]]
        obs["cell_state"] = pd.Categorical(np.asarray(names)[state_of_cell], categories=names)
        obs["state_position"] = position
    var = pd.DataFrame(index=pd.Index(genes, name=None))
    return AnnData(sparse.csr_matrix(counts), obs=obs, var=var)


def _add_states(
    logmu: np.ndarray, type_of_cell: np.ndarray, types: list[str], generic: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Add each cell's state program to ``logmu`` (in place); return the state index (into the
    flattened :data:`CELL_STATES`) and the gradient position (NaN for discrete states)."""
    rng = np.random.default_rng([seed, 17])  # its own stream: the rest of the simulation is unchanged
    n = type_of_cell.size
    state_of_cell = np.empty(n, dtype=np.int64)
    position = np.full(n, np.nan)
    offset = 0
    for t, name in enumerate(types):
        spec = CELL_STATES[name]
        cells = np.flatnonzero(type_of_cell == t)
        share = np.array([st[1] for st in spec])
        if spec[0][2] == "continuous":
            program = rng.choice(generic, 30, replace=False)
            sign = rng.choice([-1.0, 1.0], program.size, p=[0.3, 0.7])
            pos = rng.random(cells.size)
            lfc = spec[0][3]
            # cells spread along the gradient: the program's two ends (low / high genes) cross over
            half = program.size // 2
            logmu[np.ix_(cells, program[:half])] += lfc * (pos[:, None] - 0.5) * sign[:half]
            logmu[np.ix_(cells, program[half:])] -= lfc * (pos[:, None] - 0.5) * sign[half:]
            position[cells] = pos
            state_of_cell[cells] = offset + (pos >= 0.5)
        else:
            which = rng.choice(len(spec), cells.size, p=share / share.sum())
            for j, (_, _, _, lfc) in enumerate(spec):
                program = rng.choice(generic, 15, replace=False)
                members = cells[which == j]
                logmu[np.ix_(members, program)] += lfc * rng.uniform(0.7, 1.3, program.size)
            state_of_cell[cells] = offset + which
        offset += len(spec)
    return state_of_cell, position


def simulate(
    n_cells: int = 3000,
    *,
    n_samples: int = 8,
    n_genes: int = 2000,
    batch_strength: float = 0.8,
    states: bool = True,
    seed: int = 0,
) -> AnnData:
    """A tutorial-shaped *integrated* AnnData from simulated counts through the real upstream chain.

    :func:`simulate_counts` -> :func:`scclust.pp.prepare` (QC metrics, normalize_total, log1p,
    ``.raw``, HVGs, scale, PCA, Harmony on ``sample``, UMAP). Same ``.obs`` / ``.obsm`` / ``.raw``
    names as the NBIS lab's input: ``sample``, ``type``, ``batch``, QC metrics; ``X_pca``,
    ``X_pca_harmony``, ``X_umap_harmony``. The true cell type is ``.obs["cell_type"]`` and its state
    ``.obs["cell_state"]`` (the type -> state hierarchy of :func:`simulate_counts`; ``states=False``:
    types only).

    Parameters
    ----------
    n_samples
        Samples (2-64), the batches Harmony integrates.
    n_genes
        Genes.
    batch_strength
        Size of the per-sample batch effect.
    states
        Types have states (a type -> state hierarchy); ``False``: types only.
    seed
        Seed.
    """
    from .pp import prepare

    counts = simulate_counts(
        n_cells, n_samples=n_samples, n_genes=n_genes, batch_strength=batch_strength, states=states, seed=seed
    )
    adata = prepare(counts, batch_key="sample", random_state=seed)
    adata.uns["scclust_dataset"] = {
        "name": "simulate",
        "params": {
            "n_cells": n_cells,
            "n_samples": n_samples,
            "n_genes": n_genes,
            "batch_strength": batch_strength,
            "states": states,
            "seed": seed,
        },
    }
    return adata


def pbmc68k() -> AnnData:
    """The 700-cell PBMC set embedded in scanpy (``sc.datasets.pbmc68k_reduced``), made tutorial-shaped.

    Adapted: ``.obsm["X_pca_harmony"]`` is a copy of the shipped ``X_pca`` (one donor, nothing to
    integrate) and ``X_umap_harmony`` of ``X_umap``; ``sample`` is a pseudo-sample split of the cells
    into 4 groups and ``type`` a pseudo-condition (the set has no samples); QC names are mapped to
    the lab's (``n_genes`` -> ``n_genes_by_counts``, ``n_counts`` -> ``total_counts``,
    ``percent_mito`` -> ``pct_counts_mt`` in percent); ``.raw`` is kept (765 log-normalized genes,
    including the lab's markers present in the set); ``bulk_labels`` is the known cell type.
    """
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    adata.obsm["X_pca_harmony"] = adata.obsm["X_pca"].copy()
    adata.obsm["X_umap_harmony"] = adata.obsm["X_umap"].copy()
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 4, adata.n_obs)
    adata.obs["sample"] = pd.Categorical([f"pbmc_{s + 1}" for s in sample])
    adata.obs["type"] = pd.Categorical(["A" if s < 2 else "B" for s in sample])
    adata.obs["n_genes_by_counts"] = adata.obs["n_genes"].astype(float)
    adata.obs["total_counts"] = adata.obs["n_counts"].astype(float)
    adata.obs["pct_counts_mt"] = adata.obs["percent_mito"].astype(float) * 100
    adata.obs["cell_type"] = adata.obs["bulk_labels"]
    for key in ("neighbors", "louvain", "rank_genes_groups"):
        adata.uns.pop(key, None)
    for key in ("connectivities", "distances"):
        adata.obsp.pop(key, None)
    adata.uns["scclust_dataset"] = {"name": "pbmc68k", "params": {}}
    return adata


#: Built-in inputs accepted as ``builtin:NAME`` by the workflow and the CLI;
#: ``counts`` is raw UMI counts (the input of the ``prepare`` stage); ``integrated`` the scale simulator
BUILTIN = {
    "simulate": simulate,
    "pbmc68k": pbmc68k,
    "counts": simulate_counts,
    "integrated": lambda **kw: simulate_integrated(**kw),
    "counts_store": lambda **kw: counts_store(**kw),
}


def _flag(value: str) -> bool:
    return bool(int(value))


_SIMULATE = {"n_cells": int, "n_samples": int, "n_genes": int, "batch_strength": float, "states": _flag, "seed": int}
#: Parameters accepted after ``?`` by each built-in dataset, with their types.
_BUILTIN_PARAMS: dict[str, dict] = {
    "simulate": _SIMULATE,
    "counts": _SIMULATE,
    "integrated": {"n_cells": int, "n_dims": int, "n_samples": int, "n_states": int, "seed": int},
    "pbmc68k": {},
    "counts_store": {"n_cells": int, "n_genes": int, "mean_counts": float, "seed": int},
}


def load_builtin(spec: str | InputSpec) -> AnnData:
    """Load a built-in dataset: ``builtin:simulate``, ``builtin:simulate?n_cells=7332&seed=1``,
    ``builtin:counts`` (raw counts, same parameters), ``builtin:integrated?n_cells=1000000``,
    ``builtin:pbmc68k`` (the ``builtin:`` prefix may be left out)."""
    from ._input import BUILTIN_PREFIX, parse_input

    if isinstance(spec, str) and not spec.startswith(BUILTIN_PREFIX):
        spec = BUILTIN_PREFIX + spec
    spec = parse_input(spec)
    name = spec.name
    if name not in BUILTIN:
        raise ConfigError(f"unknown built-in dataset {name!r}; available: {', '.join(map(repr, BUILTIN))}")
    kwargs: dict[str, int | float] = {}
    valid = _BUILTIN_PARAMS[name]
    if spec.params and not valid:
        raise ConfigError(f"built-in dataset {name!r} takes no parameters; got {spec.text!r}")
    for key, value in spec.params.items():
        if key not in valid:
            raise ConfigError(f"unknown parameter {key!r} for builtin:{name}; valid: {', '.join(map(repr, valid))}")
        try:
            kwargs[key] = valid[key](value)
        except ValueError:
            raise ConfigError(f"builtin:{name} parameter {key}={value!r} is not a number") from None
    return BUILTIN[name](**kwargs)


def heatmap_example(seed: int = 4) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The clustered-heatmap seed's example: 24 genes x 6 samples in three planted gene groups.

    Reproduces the seed's numpy code exactly (``np.random.seed(seed)``; rows 1-8 ~ N(1.2, 0.35),
    9-16 ~ N(-0.8, 0.35), 17-24 ~ N(0.2, 0.35); samples 4-6 shifted by +0.7, -0.4, +0.2 per group).

    Returns
    -------
    ``(matrix, col_annotations, row_annotations)``: the genes x samples table, ``sample_group``
    (control for samples 1-3, treated for 4-6) per sample, and the ``planted`` group (A, B, C) per gene.
    """
    state = np.random.RandomState(seed)  # the legacy global-seed stream the seed uses
    matrix = np.vstack(
        [
            state.normal(1.2, 0.35, (8, 6)),
            state.normal(-0.8, 0.35, (8, 6)),
            state.normal(0.2, 0.35, (8, 6)),
        ]
    )
    matrix[:, 3:] += np.repeat([0.7, -0.4, 0.2], 8)[:, None]
    genes = [f"gene_{i + 1}" for i in range(24)]
    samples = [f"sample_{i + 1}" for i in range(6)]
    df = pd.DataFrame(matrix, index=genes, columns=samples)
    col = pd.DataFrame({"sample_group": pd.Categorical(["control"] * 3 + ["treated"] * 3)}, index=samples)
    row = pd.DataFrame({"planted": pd.Categorical(np.repeat(["A", "B", "C"], 8))}, index=genes)
    return df, col, row


#: Cells generated per block by :func:`simulate_integrated` (each block has its own seeded stream, so
#: the output does not depend on how much is generated at once).
_BLOCK = 65_536
TYPE_SD, STATE_SD = 3.0, 1.2


def simulate_integrated(
    n_cells: int = 100_000,
    *,
    n_dims: int = 50,
    n_samples: int = 8,
    n_states: int = 3,
    seed: int = 0,
    path: str | None = None,
) -> AnnData | None:
    """A tutorial-shaped, already *integrated* AnnData of any size, in seconds (for atlas-scale benchmarks).

    No counts, normalisation or Harmony are run (that is :func:`simulate`, minutes at 100,000 cells);
    the result has the shape the clustering stages read:

    - ``.obsm["X_pca_harmony"]`` (``n_cells x n_dims``, float32): a type -> state hierarchy. Each of
      the 8 PBMC-like types of :func:`simulate_counts` (same base fractions, per-sample composition
      from a Dirichlet) has a centre, each type ``n_states`` sub-centres around it (closer than the
      types are to each other), and each cell Gaussian noise; variances decay along the dimensions
      as in a PCA. ``.obsm["X_pca"]`` is the same plus a per-sample shift (the "uncorrected" PCA).
    - ``.obsm["X_umap_harmony"]`` (float32): UMAP-like 2-D coordinates, one island per type (types
      that are close in the embedding are placed close), states as lobes of the island.
    - ``.obs``: ``sample`` (the lab's 8 sample names), ``type`` (Covid / Ctrl), ``batch``, QC columns
      ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``, ``pct_counts_ribo``,
      ``pct_counts_hb`` (type-dependent log-normal), the truth ``cell_type`` and ``cell_state``
      (``"CD4 T/1"``, ...).
    - ``.X`` and ``.raw``: the lab's 12 marker genes (:data:`LAB_MARKERS`), sparse float32
      log-normalised-like expression (detected with a type-dependent probability), so marker dot
      plots and gene panels work.

    Cells are generated in blocks of 65,536, each from its own seeded stream, so the same ``seed``
    gives the same data, returned or written. Returned, memory is the result (about 0.45 GB at
    1,000,000 cells and 50 dims) plus one block being generated. Written (``path``), each block is
    appended to the file as it is generated and memory does not depend on ``n_cells``: measured at
    50 dims, 1,000,000 cells in 4 to 5 s with a peak of 0.27 GB resident (0.13 GB of it the imports),
    3,000,000 cells in 13 s and 10,000,000 in 39 s with the same peak (about 530 MB of file per
    million cells), where building it in memory first took 0.84 GB at 1,000,000 cells.

    Parameters
    ----------
    n_cells
        Number of cells (>= 100).
    n_dims
        Dimensions of the embeddings (>= 10).
    n_samples
        Samples (2 to 8, the lab's names), half Covid and half Ctrl.
    n_states
        Sub-populations per cell type (>= 1).
    seed
        Seed.
    path
        Write the result to this ``.h5ad`` file, block by block, and return ``None`` instead of the
        AnnData. The file is written beside ``path`` under a temporary name and renamed when complete;
        read back with :func:`anndata.read_h5ad` it equals the returned AnnData.

    Returns
    -------
    The AnnData (or ``None`` when ``path`` is given).
    """
    if n_cells < 100:
        raise ConfigError(f"n_cells must be >= 100; got {n_cells}")
    if n_dims < 10:
        raise ConfigError(f"n_dims must be >= 10; got {n_dims}")
    if not 2 <= n_samples <= len(SAMPLES):
        raise ConfigError(f"n_samples must be in [2, {len(SAMPLES)}]; got {n_samples}")
    if n_states < 1:
        raise ConfigError(f"n_states must be >= 1; got {n_states}")
    import time

    t0 = time.perf_counter()
    p = _integrated_params(n_cells, n_dims, n_samples, n_states, seed)
    uns = {
        "name": "integrated",
        "params": {"n_cells": n_cells, "n_dims": n_dims, "n_samples": n_samples, "n_states": n_states, "seed": seed},
    }
    if path is not None:
        _write_integrated(p, uns, path)
        logger.info(
            "simulated %d integrated cells x %d dims to %s in %.1f s", n_cells, n_dims, path, time.perf_counter() - t0
        )
        return None
    d = {"X_pca_harmony": n_dims, "X_pca": n_dims, "X_umap_harmony": 2}
    obsm = {key: np.empty((n_cells, dk), np.float32) for key, dk in d.items()}
    cat = {
        "sample": np.empty(n_cells, np.int64),
        "type": np.empty(n_cells, np.int16),
        "state": np.empty(n_cells, np.int16),
        "qc": np.empty((n_cells, 5), np.float32),
    }
    names, x_rows, x_cols, x_vals = [], [], [], []
    for b, start in enumerate(range(0, n_cells, _BLOCK)):
        k = _integrated_block(p, b, start)
        stop = start + len(k["names"])
        for key, value in (*obsm.items(), *cat.items()):
            value[start:stop] = k[key]
        names.append(k["names"])
        x_rows.append(k["x_rows"] + start)
        x_cols.append(k["x_cols"])
        x_vals.append(k["x_vals"])
        del k
    X = sparse.csr_matrix(
        (np.concatenate(x_vals), (np.concatenate(x_rows), np.concatenate(x_cols))), shape=(n_cells, len(LAB_MARKERS))
    )
    del x_rows, x_cols, x_vals
    cat["names"] = np.concatenate(names)
    del names
    adata = AnnData(X, obs=_integrated_obs(p, cat), var=pd.DataFrame(index=pd.Index(LAB_MARKERS)))
    adata.raw = adata
    for key, value in obsm.items():
        adata.obsm[key] = value
    adata.uns["scclust_dataset"] = uns
    logger.info("simulated %d integrated cells x %d dims in %.1f s", n_cells, n_dims, time.perf_counter() - t0)
    return adata


def _integrated_params(n_cells: int, n_dims: int, n_samples: int, n_states: int, seed: int) -> dict:
    """Everything :func:`simulate_integrated` draws before its blocks (no array of ``n_cells``)."""
    rng = np.random.default_rng([seed, 0])
    types = list(CELL_TYPES)
    T, S = len(types), n_states
    samples = [s for s in SAMPLES if s.startswith("covid")][: (n_samples + 1) // 2]
    samples += [s for s in SAMPLES if s.startswith("ctrl")][: n_samples // 2]
    samples = [s for s in SAMPLES if s in samples]
    # PCA-like variance decay along the dimensions
    # (the signal sits in the leading dimensions, the trailing ones are mostly noise, as in a PCA)
    dim = np.arange(n_dims)
    scale = 1.0 / np.sqrt(1 + dim / 3)
    type_centre = rng.normal(0, TYPE_SD, (T, n_dims)) * np.exp(-dim / 8)
    state_centre = type_centre[:, None, :] + rng.normal(0, STATE_SD, (T, S, n_dims)) * np.exp(-dim / 5)
    noise_sd = rng.uniform(0.8, 1.2, T)
    sample_shift = rng.normal(0, 1.5, (n_samples, n_dims)) * scale
    # 2-D islands: types on a circle in an order that follows the embedding (nearest-neighbour tour)
    order = [0]
    while len(order) < T:
        last = type_centre[order[-1]]
        rest = [t for t in range(T) if t not in order]
        order.append(min(rest, key=lambda t: float(((type_centre[t] - last) ** 2).sum())))
    angle = np.empty(T)
    angle[order] = 2 * np.pi * np.arange(T) / T
    island = np.column_stack([np.cos(angle), np.sin(angle)]) * 9.0
    lobe = island[:, None, :] + rng.normal(0, 1.3, (T, S, 2))
    state_frac = rng.dirichlet(np.full(S, 4.0), T)  # states' shares within each type
    base_frac = np.array([CELL_TYPES[t][0] for t in types])
    comp = rng.dirichlet(base_frac * 200, n_samples)  # per-sample composition
    # cells per sample (the cells are sorted by sample like simulate_counts): the draws of
    # rng.integers(0, n_samples, n_cells), counted in even-sized pieces (the same stream as one call)
    per_sample = np.zeros(n_samples, np.int64)
    for start in range(0, n_cells, 1 << 20):
        per_sample += np.bincount(rng.integers(0, n_samples, min(1 << 20, n_cells - start)), minlength=n_samples)
    # QC: type-dependent library size
    lib_type = np.array(
        [{"CD14 Mono": 1.4, "FCGR3A Mono": 1.3, "DC": 1.2, "B": 1.0, "Platelet": 0.5}.get(t, 0.9) for t in types]
    )
    gidx = {g: i for i, g in enumerate(LAB_MARKERS)}
    p_detect = np.full((T, len(LAB_MARKERS)), 0.03)
    level = np.full((T, len(LAB_MARKERS)), 0.8)
    for t, name in enumerate(types):
        for g, lfc in CELL_TYPES[name][1].items():
            if g in gidx:
                p_detect[t, gidx[g]] = min(0.95, 0.25 + 0.17 * lfc)
                level[t, gidx[g]] = 0.6 + 0.5 * lfc
    return {
        "n_cells": n_cells, "n_dims": n_dims, "seed": seed, "types": types, "S": S, "samples": samples,
        "scale": scale, "state_centre": state_centre, "noise_sd": noise_sd, "sample_shift": sample_shift,
        "lobe": lobe, "state_frac": state_frac, "comp": comp, "sample_end": np.cumsum(per_sample),
        "lib_type": lib_type, "p_detect": p_detect, "level": level,
    }  # fmt: skip


def _integrated_block(p: dict, b: int, start: int) -> dict:
    """Block ``b`` of :func:`simulate_integrated` (cells ``start`` to ``start + _BLOCK``), from its own stream."""
    stop = min(start + _BLOCK, p["n_cells"])
    m = stop - start
    T, S = len(p["types"]), p["S"]
    r = np.random.default_rng([p["seed"], 1, b])
    s_of = np.searchsorted(p["sample_end"], np.arange(start, stop), side="right")
    u = r.random(m)
    cum = np.cumsum(p["comp"][s_of], axis=1)
    t_of = np.minimum((u[:, None] > cum).sum(axis=1), T - 1)
    cum_s = np.cumsum(p["state_frac"][t_of], axis=1)
    st_of = np.minimum((r.random(m)[:, None] > cum_s).sum(axis=1), S - 1)
    emb = p["state_centre"][t_of, st_of] + r.standard_normal((m, p["n_dims"])) * (
        p["noise_sd"][t_of, None] * p["scale"]
    )
    out = {
        "start": start,
        "sample": s_of,
        "type": t_of.astype(np.int16),
        "state": st_of.astype(np.int16),
        "X_pca_harmony": emb.astype(np.float32),
        "X_pca": (emb + p["sample_shift"][s_of]).astype(np.float32),
    }
    del emb
    out["X_umap_harmony"] = (p["lobe"][t_of, st_of] + r.standard_normal((m, 2)) * 0.55).astype(np.float32)
    qc = np.empty((m, 5), np.float32)
    lib = np.exp(r.normal(np.log(2500), 0.35, m)) * p["lib_type"][t_of]
    qc[:, 0] = np.round(lib * 0.38 * np.exp(r.normal(0, 0.08, m)))  # n_genes_by_counts
    qc[:, 1] = np.round(lib)  # total_counts
    qc[:, 2] = np.exp(r.normal(np.log(4.0), 0.45, m))  # pct_counts_mt
    qc[:, 3] = np.clip(r.normal(30, 6, m), 1, 80)  # pct_counts_ribo
    qc[:, 4] = np.exp(r.normal(np.log(0.05), 1.0, m))  # pct_counts_hb
    out["qc"] = qc
    hit = r.random((m, len(LAB_MARKERS))) < p["p_detect"][t_of]
    rows, cols = np.nonzero(hit)
    vals = p["level"][t_of[rows], cols] + r.normal(0, 0.35, rows.size)
    out["x_rows"], out["x_cols"] = rows.astype(np.int32), cols.astype(np.int32)
    out["x_vals"] = np.maximum(vals, 0.05).astype(np.float32)
    width = len(str(p["n_cells"] - 1))
    out["names"] = np.char.add(
        np.char.add("cell", np.char.zfill(np.arange(start, stop).astype(str), width)),
        np.char.add("-", np.asarray(p["samples"])[s_of]),
    )
    return out


def _integrated_obs(p: dict, k: dict) -> pd.DataFrame:
    """``.obs`` of :func:`simulate_integrated` for the cells of ``k`` (a block, or all blocks joined)."""
    samples, types, S = p["samples"], p["types"], p["S"]
    cond = np.array(["Covid" if s.startswith("covid") else "Ctrl" for s in samples])
    state_names = [f"{t}/{s + 1}" for t in types for s in range(S)]
    qc = k["qc"]
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical.from_codes(k["sample"], categories=samples),
            "type": pd.Categorical.from_codes(
                np.searchsorted(["Covid", "Ctrl"], cond[k["sample"]]), categories=["Covid", "Ctrl"]
            ),
            "n_genes_by_counts": qc[:, 0].astype(np.int32),
            "total_counts": qc[:, 1],
            "pct_counts_mt": qc[:, 2],
            "pct_counts_ribo": qc[:, 3],
            "pct_counts_hb": qc[:, 4],
            "cell_type": pd.Categorical.from_codes(k["type"], categories=types),
            "cell_state": pd.Categorical.from_codes(
                k["type"].astype(np.int64) * S + k["state"], categories=state_names
            ),
        },
        index=pd.Index(k["names"], dtype=object),
    )
    obs.insert(2, "batch", obs["sample"])
    return obs


def _write_integrated(p: dict, uns: dict, path: str | Path) -> None:
    """Write :func:`simulate_integrated` to ``path`` block by block (memory of one block, not of the result).

    anndata writes the file's layout from a zero-cell AnnData with the same columns, categories, var
    and uns; then each per-cell dataset (obs columns, categorical codes, the obs index, obsm arrays)
    is re-created at its full length with the same dtype and attributes, and filled block by block,
    and ``X`` / ``raw/X`` (resizable CSR) grow with :meth:`anndata.abc.CSRDataset.append`.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    from ._io import atomic_path

    n, G = p["n_cells"], len(LAB_MARKERS)
    empty = {
        "sample": np.zeros(0, np.int64),
        "type": np.zeros(0, np.int16),
        "state": np.zeros(0, np.int16),
        "qc": np.zeros((0, 5), np.float32),
        "names": np.zeros(0, str),
    }
    # 32-bit row pointers as in memory; 64-bit only if the values could pass 2**31 (over 178 million cells)
    indptr = np.int64 if n * G > np.iinfo(np.int32).max else np.int32
    skeleton = AnnData(
        sparse.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, indptr)), shape=(0, G)),
        obs=_integrated_obs(p, empty),
        var=pd.DataFrame(index=pd.Index(LAB_MARKERS)),
    )
    skeleton.raw = skeleton
    obsm = {"X_pca_harmony": p["n_dims"], "X_pca": p["n_dims"], "X_umap_harmony": 2}
    for key, d in obsm.items():
        skeleton.obsm[key] = np.zeros((0, d), np.float32)
    skeleton.uns["scclust_dataset"] = uns
    with atomic_path(path) as tmp:
        skeleton.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as f:
            obs = f["obs"]
            index = obs.attrs["_index"]
            columns = {}  # obs column -> its per-cell dataset (categorical codes or values)
            for name in [index, *obs.attrs["column-order"]]:
                node = obs[name]
                key = "codes" if isinstance(node, h5py.Group) else None
                columns[name] = _regrow(node if key else obs, key or name, (n,))
            grown = {key: _regrow(f["obsm"], key, (n, d)) for key, d in obsm.items()}
            matrices = []
            for key in ("X", "raw/X"):
                # anndata's own resizable CSR layout, in chunks of 65,536 values (not h5py's guess for an
                # empty dataset, one value per chunk for indptr)
                del f[key]
                write_elem(f, key, skeleton.X, dataset_kwargs={"chunks": (1 << 16,)})
                # the indptr is not read back at each append (that would make writing quadratic in n)
                matrices.append(sparse_dataset(f[key], should_cache_indptr=False))
            for b, start in enumerate(range(0, n, _BLOCK)):
                k = _integrated_block(p, b, start)
                stop = start + len(k["names"])
                block_obs = _integrated_obs(p, k)
                for name, ds in columns.items():
                    if name == index:
                        ds[start:stop] = block_obs.index.to_numpy(dtype=object)
                    else:
                        col = block_obs[name]
                        ds[start:stop] = col.cat.codes.to_numpy() if isinstance(col.dtype, pd.CategoricalDtype) else col
                for key, ds in grown.items():
                    ds[start:stop] = k[key]
                block_X = sparse.csr_matrix((k["x_vals"], (k["x_rows"], k["x_cols"])), shape=(stop - start, G))
                for matrix in matrices:
                    matrix.append(block_X)
                del k, block_obs, block_X


def _regrow(group, key: str, shape: tuple[int, ...]):
    """Re-create the (empty) dataset ``group[key]`` with ``shape``, keeping its dtype and attributes."""
    old = group[key]
    dtype, attrs = old.dtype, dict(old.attrs)
    del group[key]
    ds = group.create_dataset(key, shape=shape, dtype=dtype)
    ds.attrs.update(attrs)
    return ds


def plant_rare(
    adata: AnnData, n_cells: int, *, distance: float = 8.0, seed: int = 0, rep: str = "X_pca_harmony"
) -> AnnData:
    """Plant a rare population in a :func:`simulate_integrated` (or :func:`simulate`) AnnData, in place.

    ``n_cells`` random cells move to a new population ``distance`` away from the centre of one cell
    type, each keeping its own noise around its state, along a direction whose weights decay with
    the dimension as the embedding's variances do. ``.obs["rare"]`` (bool) marks them: the ground
    truth for "is a population of 0.05 % of the cells found" (sketching, projection, clustering at
    scale). The same ``seed`` moves the same cells the same way.

    Parameters
    ----------
    adata
        A simulated AnnData with ``.obs["cell_type"]``, ``.obs["cell_state"]`` and ``.obsm[rep]``.
    n_cells
        Cells to move (1 to the number of cells).
    distance
        Distance of the new population's centre from its cell type's centre (> 0; the types of
        :func:`simulate_integrated` are about 8 apart).
    seed
        Seed of the choice of cells and of the direction.
    rep
        The embedding moved.

    Returns
    -------
    ``adata``, with ``.obsm[rep]`` changed for the planted cells and ``.obs["rare"]``.
    """
    for col in ("cell_type", "cell_state"):
        if col not in adata.obs:
            raise InputError(f"plant_rare needs the simulated truth .obs[{col!r}] (from simulate_integrated)")
    if rep not in adata.obsm:
        raise InputError(f"plant_rare: no .obsm[{rep!r}]; embeddings: {choices(adata.obsm)}")
    if not 1 <= int(n_cells) <= adata.n_obs:
        raise ConfigError(f"plant_rare: n_cells must be between 1 and {adata.n_obs} (the cells); got {n_cells}")
    if not distance > 0:
        raise ConfigError(f"plant_rare: distance must be > 0; got {distance}")
    rng = np.random.default_rng([seed, 7])
    X = adata.obsm[rep]
    rare = np.sort(rng.choice(adata.n_obs, int(n_cells), replace=False))
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


# ------------------------------------------------------------------------------------------ at scale
def simulate_counts_store(
    n_cells: int,
    path: str | Path,
    *,
    n_genes: int = 20_000,
    n_samples: int = 8,
    mean_counts: float = 1200.0,
    batch_strength: float = 0.8,
    type_strength: float = 0.6,
    theta: float = 8.0,
    chunk_cells: int = 10_000,
    states: bool = True,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Raw counts of ``n_cells`` PBMC-like cells written in row blocks to ``path`` (``.h5ad`` or ``.zarr``).

    The model of :func:`simulate_counts` (eight cell types with the lab's markers, the type -> state
    hierarchy of :data:`CELL_STATES` (gradients in 10 position bins), ``n_samples`` samples with
    per-sample shifts on a fifth of the genes and per-sample composition, two conditions with
    interferon genes up in Covid, mitochondrial / ribosomal / haemoglobin genes), generated
    sparsely so that time is linear and memory independent of ``n_cells``: genes fall in 100
    modules; each cell draws a Gamma(``theta``) multiplier per module, its number of UMIs
    ``N ~ Poisson(L * sum_k m_k P_k)`` and each UMI's gene by inverse-CDF sampling (module, then
    gene within it). Given the multipliers every gene's count is Poisson(``L p_g m``), so each
    gene is negative-binomial with dispersion ``theta`` (genes of one module are correlated).
    Nothing of size cells x genes is ever dense. ``.obs``: ``sample``, ``type`` (Covid / Ctrl),
    ``batch``, ``cell_type``, ``cell_state``. With the defaults (20,000 genes, 1,200 UMIs per cell)
    a cell has ~970 detected genes (1M cells: ~1e9 non-zeros); 20,000 cells take 11 s and 1.2 GB
    peak, whatever ``n_cells`` (one core). ``states=False``: one profile per type, the flat
    simulation, where Leiden's partition does not depend on its seed (for agreement tests of two
    code paths). Returns ``path``.

    Parameters
    ----------
    n_genes
        Genes.
    n_samples
        Samples, with a batch effect each.
    mean_counts
        Mean counts per cell.
    batch_strength
        Size of the per-sample batch effect.
    type_strength
        Size of the cell types' expression differences.
    theta
        Negative binomial dispersion.
    chunk_cells
        Cells simulated and written per chunk (bounds the memory).
    states
        Types have states; ``False``: types only.
    seed
        Seed.
    overwrite
        Replace an existing file (otherwise an existing file is an error).
    """
    import anndata as ad

    path = Path(path)
    fmt = "zarr" if path.suffix == ".zarr" else "h5ad" if path.suffix == ".h5ad" else None
    if fmt is None:
        raise ConfigError(f"path must end in .h5ad or .zarr; got {str(path)!r}")
    if n_cells < 100:
        raise ConfigError(f"n_cells must be >= 100; got {n_cells}")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; remove it or pass overwrite=True")
    rng = np.random.default_rng(seed)
    genes, gidx, named, base = _gene_universe(n_genes, rng)
    G = len(genes)
    generic = np.arange(len(named), G)
    types = list(CELL_TYPES)
    # every (type, state) as a log-abundance profile; gradients as 10 bins of their position
    profiles, state_names, state_type, state_label = [], [], [], []
    for t, name in enumerate(types):
        prof = base.copy()
        for g, lfc in CELL_TYPES[name][1].items():
            prof[gidx[g]] = base[gidx[g]] + type_strength * (lfc + 3.0)
        up = rng.choice(generic, 30, replace=False)
        prof[up] += type_strength * rng.uniform(0.8, 2.0, up.size)
        down = rng.choice(generic, 15, replace=False)
        prof[down] -= type_strength * rng.uniform(0.5, 1.5, down.size)
        spec = CELL_STATES[name]
        share = np.array([st[1] for st in spec])
        if not states:  # the flat simulation: one profile per type
            profiles.append(prof)
            state_type.append(t)
            state_label.append(name)
            state_names.append(1.0)
        elif spec[0][2] == "continuous":
            program = rng.choice(generic, 30, replace=False)
            sign = rng.choice([-1.0, 1.0], program.size, p=[0.3, 0.7])
            half = program.size // 2
            for b in range(10):
                pos = (b + 0.5) / 10
                p2 = prof.copy()
                p2[program[:half]] += spec[0][3] * (pos - 0.5) * sign[:half]
                p2[program[half:]] -= spec[0][3] * (pos - 0.5) * sign[half:]
                profiles.append(p2)
                state_type.append(t)
                state_label.append(spec[0][0] if pos < 0.5 else spec[1][0])
                state_names.append(0.1)  # weight of a bin within its type
        else:
            for sname, sh, _, lfc in spec:
                program = rng.choice(generic, 15, replace=False)
                p2 = prof.copy()
                p2[program] += lfc * rng.uniform(0.7, 1.3, program.size)
                profiles.append(p2)
                state_type.append(t)
                state_label.append(sname)
                state_names.append(sh / share.sum())
    profiles = np.array(profiles)
    state_type = np.array(state_type)
    state_weight = np.array(state_names)
    S = len(profiles)
    samples = (
        SAMPLES[:n_samples]
        if n_samples <= len(SAMPLES)
        else [f"{'covid' if i % 2 == 0 else 'ctrl'}_{i}" for i in range(n_samples)]
    )
    cond = np.array(["Covid" if s.startswith("covid") else "Ctrl" for s in samples])
    base_frac = np.array([CELL_TYPES[t][0] for t in types])
    type_frac = np.array([rng.dirichlet(base_frac * 200) for _ in samples])  # per sample
    state_p = np.array([type_frac[s][state_type] * state_weight for s in range(n_samples)])  # sample x state
    state_p /= state_p.sum(axis=1, keepdims=True)
    batch_lfc = np.zeros((n_samples, G))
    for s in range(n_samples):
        affected = rng.choice(G, G // 5, replace=False)
        batch_lfc[s, affected] = rng.normal(0, batch_strength, affected.size)
    isg = [gidx[g] for g in _ISG]
    n_mod = 100
    module = rng.integers(0, n_mod, G)
    order = np.argsort(module, kind="stable")  # genes sorted by module: each module a contiguous range
    bounds = np.searchsorted(module[order], np.arange(n_mod + 1))
    lib_type = {"CD14 Mono": 1.4, "FCGR3A Mono": 1.3, "DC": 1.2, "B": 1.0, "Platelet": 0.5}
    lib_state = np.array([lib_type.get(types[t], 0.9) for t in state_type])
    lib_sample = np.exp(rng.normal(0, 0.15, n_samples))
    # per (sample, state): gene probabilities (in module order), their cumulative sums and module masses
    cum = np.empty((n_samples, S, G))
    mass = np.empty((n_samples, S, n_mod))
    for s in range(n_samples):
        logmu = profiles + batch_lfc[s]
        if cond[s] == "Covid":
            logmu[:, isg] += 2.0
        p = np.exp(logmu - logmu.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p = p[:, order]
        cum[s] = np.cumsum(p, axis=1)
        mass[s] = np.add.reduceat(p, bounds[:-1], axis=1)
    obs_parts = []
    var = pd.DataFrame(index=pd.Index(genes))
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    n_blocks = -(-n_cells // chunk_cells)
    store = ad.io  # anndata's public I/O: write_elem + sparse_dataset(...).append
    if fmt == "h5ad":
        import h5py

        f = h5py.File(tmp, "w")
    else:
        import zarr

        f = zarr.open_group(str(tmp), mode="w")
    try:
        for b in range(n_blocks):
            lo, hi = b * chunk_cells, min(n_cells, (b + 1) * chunk_cells)
            X, obs = _store_block(
                hi - lo,
                np.random.default_rng([seed, 1, b]),
                state_p,
                cum,
                mass,
                bounds,
                order,
                lib_state,
                lib_sample,
                mean_counts,
                theta,
                G,
            )
            if b == 0:
                store.write_elem(f, "X", X)  # anndata makes sparse datasets appendable (maxshape None)
            else:
                store.sparse_dataset(f["X"]).append(X)
            obs_parts.append(obs)
            if (b + 1) % 10 == 0 or b + 1 == n_blocks:
                logger.info("simulate_counts_store: %d / %d cells", hi, n_cells)
        obs = pd.concat(obs_parts)
        obs = pd.DataFrame(
            {
                "sample": pd.Categorical(np.asarray(samples)[obs["s"]], categories=samples),
                "type": pd.Categorical(cond[obs["s"]], categories=["Covid", "Ctrl"]),
                "cell_type": pd.Categorical(np.asarray(types)[state_type[obs["k"]]], categories=types),
                "cell_state": pd.Categorical(
                    np.asarray(state_label)[obs["k"]], categories=list(dict.fromkeys(state_label))
                ),
            },
            index=[f"cell{i:07d}-{samples[s]}" for i, s in zip(range(n_cells), obs["s"], strict=True)],
        )
        obs["batch"] = obs["sample"]
        store.write_elem(f, "obs", obs)
        store.write_elem(f, "var", var)
        for key in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
            store.write_elem(f, key, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    finally:
        if fmt == "h5ad":
            f.close()
    if path.exists():
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    return path


def _store_block(n, rng, state_p, cum, mass, bounds, order, lib_state, lib_sample, mean_counts, theta, G):
    """One block of cells: CSR counts and (sample, state) per cell (see :func:`simulate_counts_store`)."""
    n_samples, S, n_mod = mass.shape
    s = rng.integers(0, n_samples, n)
    u = rng.random(n)
    k = np.empty(n, dtype=np.int64)
    for si in range(n_samples):
        idx = np.flatnonzero(s == si)
        k[idx] = np.minimum(np.searchsorted(np.cumsum(state_p[si]), u[idx], side="right"), S - 1)
    lib = np.exp(rng.normal(np.log(mean_counts), 0.35, n)) * lib_state[k] * lib_sample[s]
    m = rng.gamma(theta, 1 / theta, size=(n, n_mod))  # module multipliers: NB dispersion theta per gene
    w = m * mass[s, k]  # cell x module
    n_umi = rng.poisson(lib * w.sum(axis=1))
    cell = np.repeat(np.arange(n, dtype=np.int64), n_umi)
    # module of each UMI: inverse CDF on its cell's module weights (rows offset by the cell index)
    wc = np.cumsum(w, axis=1)
    wc /= wc[:, -1:]
    wc[:, -1] = 1.0
    flat = (wc + np.arange(n)[:, None]).ravel()
    mod = np.searchsorted(flat, cell + rng.random(cell.size), side="right") - cell * n_mod
    np.minimum(mod, n_mod - 1, out=mod)
    # gene within the module: inverse CDF on the (sample, state)'s cumulative gene probabilities
    group = s[cell] * S + k[cell]
    gene = np.empty(cell.size, dtype=np.int64)
    r = rng.random(cell.size)
    by_group = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[by_group], np.arange(n_samples * S + 1))
    for gi in np.flatnonzero(np.diff(starts)):
        idx = by_group[starts[gi] : starts[gi + 1]]
        row = cum[gi // S, gi % S]
        ext = np.concatenate([[0.0], row])
        lo, hi = ext[bounds[mod[idx]]], ext[bounds[mod[idx] + 1]]
        pos = np.searchsorted(row, lo + (hi - lo) * r[idx], side="right")
        gene[idx] = order[np.clip(pos, bounds[mod[idx]], bounds[mod[idx] + 1] - 1)]
    keys, counts = np.unique(cell * G + gene, return_counts=True)
    rows = keys // G
    X = sparse.csr_matrix(
        (
            counts.astype(np.float32),
            (keys % G).astype(np.int32),
            np.searchsorted(rows, np.arange(n + 1)).astype(np.int64),
        ),
        shape=(n, G),
    )
    return X, pd.DataFrame({"s": s, "k": k})


def counts_store(
    n_cells: int = 200_000, *, n_genes: int = 20_000, mean_counts: float = 1200.0, seed: int = 0
) -> AnnData:
    """``builtin:counts_store``: :func:`simulate_counts_store` written once into the cache
    (``$SCCLUST_CACHE``, else ``~/.cache/scclust``) and read lazily (``.X`` a Dask array), so that
    ``prepare`` runs out of core on it.

    Parameters
    ----------
    n_genes
        Genes.
    mean_counts
        Mean counts per cell.
    seed
        Seed.
    """
    import os

    from .pp._lazy import read_counts_lazy

    cache = Path(os.environ.get("SCCLUST_CACHE", Path.home() / ".cache" / "scclust"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"counts_{n_cells}x{n_genes}_m{mean_counts:g}_s{seed}.h5ad"
    if not path.exists():
        logger.info("writing %s (once; %d cells)", path, n_cells)
        simulate_counts_store(n_cells, path, n_genes=n_genes, mean_counts=mean_counts, seed=seed)
    return read_counts_lazy(path)


# ------------------------------------------------------------------------------------------ fetch
@dataclass(frozen=True)
class RemoteDataset:
    """A real dataset :func:`fetch` can provide: the file, its checksum and where it comes from.

    Attributes
    ----------
    filename
        The file's name in the cache.
    sha256
        Checksum of the file; a cached copy is used only when it matches.
    size
        Size in bytes (for messages).
    urls
        Direct downloads of this exact file, tried in order; empty when none is public (the file
        must then be placed in the cache by hand, see ``how``).
    origin
        The public files it is made from, each ``(url, sha256, what it contributes)``.
    description
        What the data is.
    citation
        What to cite.
    how
        How the file is made from ``origin`` (or obtained), for users who must build or place it.
    """

    filename: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    origin: tuple[tuple[str, str, str], ...]
    description: str
    citation: str
    how: str


#: Datasets accepted by :func:`fetch` and as ``data:NAME`` inputs of the workflow.
REMOTE: dict[str, RemoteDataset] = {
    "kang_pbmc_stim_2000": RemoteDataset(
        filename="kang_pbmc_stim_2000.h5ad",
        sha256="c64d3b09913ff96409679aa657b1320fd09dbc47638b8aef32aa97e978bc9848",
        size=3_022_628,
        urls=(),  # no public copy of this prepared file exists: it is placed by hand (``how``)
        origin=(
            (
                "https://raw.githubusercontent.com/immunogenomics/harmony/e04ab3a11c0feb167685d2221899b94387cfc3cc/data/pbmc_stim.RData",
                "d85a18ce8ec9dcb4ac86c8e195ed53ff893c5952a7d6bf70035a17856c9dc0ef",
                "counts, cell and gene names (pbmc.ctrl, pbmc.stim: 9,015 genes x 1,000 cells each)",
            ),
            (
                "https://raw.githubusercontent.com/HelenaLC/muscat/d5acab66a2468bb51368f527b6cd617de8253a67/data/kang_se.rda",
                "f2d6728424b2d40a88ee6c6c2a1f543e9dc798e98990c4f11b5a625470ffe285",
                "donor and cell-type labels of the control cells, joined by barcode",
            ),
        ),
        description="Kang et al. 2018 human PBMCs, 1,000 control + 1,000 interferon-beta stimulated cells, raw UMI "
        "counts (float32), 2,000 x 9,015 genes; .obs condition (ctrl / stim), donor_from_muscat and "
        "celltype_from_muscat (954 control cells; NaN for the others)",
        citation="Kang HM et al. (2018) Nat Biotechnol 36:89-94 (GEO GSE96583); data as shipped by Harmony "
        "(Korsunsky I et al. (2019) Nat Methods 16:1289-1296) and muscat (Crowell HL et al. (2020) "
        "Nat Commun 11:6077)",
        how="the control and stimulated matrices of Harmony's pbmc_stim.RData transposed to cells x genes and "
        "stacked (ctrl first), cell names suffixed _ctrl / _stim, .obs condition from the suffix; muscat's "
        "kang_se.rda colData (ind, cell) joined by barcode to the control cells as donor_from_muscat / "
        "celltype_from_muscat; written with anndata (.X CSR float32)",
    ),
}


def data_dir(cache_dir: str | Path | None = None) -> Path:
    """Where :func:`fetch` keeps files: ``cache_dir``, else ``$SCCLUST_DATA``, else ``~/.cache/scclust``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SCCLUST_DATA")
    return Path(env) if env else Path.home() / ".cache" / "scclust"


def fetch(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """The path of a registered real dataset (:data:`REMOTE`), verified by its sha256.

    A file already in the cache (:func:`data_dir`: ``cache_dir``, ``$SCCLUST_DATA`` or
    ``~/.cache/scclust``) is checked and used without network. Otherwise it is downloaded from the
    registry's URLs into the cache (atomically: a failed or damaged download leaves nothing behind)
    and checked. A dataset with no public copy of the prepared file must be placed in the cache by
    hand; the error says where, and :attr:`RemoteDataset.how` how it is made from its public origin.

    Parameters
    ----------
    name
        A key of :data:`REMOTE` (``"kang_pbmc_stim_2000"``).
    cache_dir
        The folder to look in and download to (default: see above).

    Returns
    -------
    The path of the verified file; the file is never modified.

    Raises
    ------
    ConfigError
        ``name`` is not registered.
    InputError
        The cached or downloaded file's sha256 differs from the registry's (one line).
    MissingFileError
        Not cached, and not downloadable (no URL, or every download failed: one line naming the URL
        and where to place the file by hand).
    """
    from ._io import sha256_file

    if name not in REMOTE:
        raise ConfigError(
            f"unknown dataset {name!r}; available: {choices(REMOTE)} (or builtin:NAME: {choices(BUILTIN)})"
        )
    entry = REMOTE[name]
    folder = data_dir(cache_dir)
    path = folder / entry.filename
    by_hand = (
        f"place {entry.filename} (sha256 {entry.sha256[:16]}...) in {folder} by hand, or set SCCLUST_DATA to "
        "the folder that holds it"
    )
    if path.is_file():
        got = sha256_file(path)
        if got != entry.sha256:
            raise InputError(
                f"{path}: sha256 {got[:16]}... is not the registry's {entry.sha256[:16]}... (a damaged or "
                f"other file); delete it, then fetch {name!r} again or {by_hand}"
            )
        return path
    if not entry.urls:
        raise MissingFileError(
            f"dataset {name!r} is not in {folder} and has no public download of the prepared file: "
            f"{by_hand} (made from {entry.origin[0][0]}: see scclust.datasets.REMOTE[{name!r}].how)"
        )
    errors = []
    for url in entry.urls:
        try:
            return _download(url, path, entry.sha256)
        except OSError as err:  # urllib's URLError / HTTPError and socket timeouts are OSErrors
            errors.append(f"{url} ({getattr(err, 'reason', None) or err})")
    raise MissingFileError(f"cannot download dataset {name!r} from {'; '.join(errors)}; {by_hand}")


def _download(url: str, path: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` through a temporary file in the same folder; check the sha256."""
    import hashlib
    import tempfile
    import urllib.request

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    h = hashlib.sha256()
    try:
        logger.info("downloading %s to %s", url, path)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != sha256:
            raise InputError(
                f"download from {url}: sha256 {h.hexdigest()[:16]}... is not the registry's "
                f"{sha256[:16]}... (the file at the URL changed); nothing was saved"
            )
        os.replace(tmp, path)
        return path
    finally:
        Path(tmp).unlink(missing_ok=True)
