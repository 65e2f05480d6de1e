"""Shared figure defaults: colour-blind-safe palettes, sizes, reading values from AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._errors import MissingKeyError, choices

# Okabe & Ito (2008), then Paul Tol's "muted" and "light" schemes: colour-blind safe up to ~25 groups.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
TOL_MUTED = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"]
TOL_LIGHT = ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD"]
PALETTE = OKABE_ITO + TOL_MUTED + TOL_LIGHT
CMAP_CONTINUOUS = "viridis"
CMAP_DIVERGING = "RdBu_r"


def palette(n: int) -> list[str]:
    """``n`` distinct colours: colour-blind-safe up to 26, then a deterministic extension."""
    if n <= len(PALETTE):
        return PALETTE[:n]
    import matplotlib as mpl

    extra = mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n - len(PALETTE)))
    return PALETTE + [mpl.colors.to_hex(c) for c in extra]


def point_size(n_obs: int) -> float:
    """Smaller points for more cells (scanpy's 120,000 / n, scaled to our panel size and capped)."""
    return float(np.clip(40_000 / max(n_obs, 1), 0.3, 20))


def obs_or_gene(adata: AnnData, key: str, *, use_raw: bool | None = None) -> pd.Series:
    """Values of ``key`` from ``.obs`` or a gene (``.raw`` when present and ``use_raw`` is not False)."""
    if key in adata.obs.columns:
        return adata.obs[key]
    raw = adata.raw if (use_raw is None or use_raw) and adata.raw is not None else None
    src_names = raw.var_names if raw is not None else adata.var_names
    if key not in src_names:
        where = ".raw" if raw is not None else ".var_names"
        raise MissingKeyError(f"{key!r} is neither an .obs column nor a gene in {where}; .obs has: {choices(adata.obs.columns)}")
    X = raw.X if raw is not None else adata.X
    col = X[:, src_names.get_loc(key)]
    col = col.toarray().ravel() if sparse.issparse(col) else np.asarray(col).ravel()
    return pd.Series(col, index=adata.obs_names, name=key)


def grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(np.ceil(n / ncols)), ncols


def categories(values: pd.Series) -> Sequence[str]:
    return list(values.cat.categories) if isinstance(values.dtype, pd.CategoricalDtype) else sorted(values.astype(str).unique())
