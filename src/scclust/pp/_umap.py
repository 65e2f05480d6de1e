"""UMAP of an existing graph (``sc.tl.umap``), and the pieces a background process needs.

umap-learn's first use in a process is slow: pynndescent 0.6 compiles its distance functions with
numba when imported and umap compiles its layout optimiser on the first call, and neither is cached
on disk (about 13 s on a 2-core machine, against ~1 s for the layout itself at 3,000 cells). A run
therefore computes its layouts in the run's background process (:mod:`scclust._background`), which
imports umap-learn and compiles it (:func:`_warm_up`) while the main process reads the input,
builds graphs and clusters; it receives a minimal AnnData (:func:`graph_only`: the graph and the
representation) and runs :func:`umap_job` on it. Same function, same inputs, same seed: the
coordinates equal the in-process call (``tests/pp/test_umap.py``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import Field

from .._errors import MissingKeyError
from .._params import validated
from .._types import PositiveInt

logger = logging.getLogger(__name__)

#: ``init="auto"`` starts the layout from scanpy's spectral embedding up to this many cells and
#: from the first two dimensions of the graph's representation above (the spectral start's
#: eigensolver does not finish in reasonable time at 1,000,000 cells; see the benchmarks page).
SPECTRAL_MAX_CELLS = 200_000


@validated
def umap(
    adata: AnnData,
    *,
    neighbors_key: str = "neighbors",
    key_added: str = "X_umap",
    min_dist: Annotated[float, Field(ge=0)] = 0.5,
    random_state: int = 0,
    n_epochs: PositiveInt | None = None,
    init: Literal["auto", "spectral", "pca"] = "auto",
) -> None:
    """``sc.tl.umap`` on an existing graph, stored under ``.obsm[key_added]``.

    Parameters
    ----------
    adata
        Annotated data matrix with a graph (:func:`scclust.pp.neighbors` or scanpy's).
    neighbors_key
        Name of the graph in ``.uns``.
    key_added
        ``.obsm`` key of the layout (scanpy's ``X_umap`` by default).
    min_dist
        Minimum distance between embedded points (umap-learn's ``min_dist``).
    random_state
        Seed; the layout is computed single-threaded, so the same seed gives the same coordinates.
    n_epochs
        Layout epochs (``sc.tl.umap``'s ``maxiter``); ``None``: umap-learn's default (500 up to
        10,000 cells, 200 above). The layout's time is proportional to it.
    init
        Start of the layout: ``spectral`` (scanpy's default, the lab's layout), ``pca`` (the first
        two dimensions of the representation the graph was built on) or ``auto``: spectral up to
        :data:`SPECTRAL_MAX_CELLS` cells, pca above.

    Returns
    -------
    ``None``, having written ``.obsm[key_added]`` and ``.uns[key_added]`` (scanpy's parameters and
    ``init``, the start used).
    """
    obsm, uns, caught = umap_job(
        graph_only(adata, neighbors_key),
        umap_kwargs(
            adata,
            neighbors_key=neighbors_key,
            key_added=key_added,
            min_dist=min_dist,
            random_state=random_state,
            n_epochs=n_epochs,
            init=init,
        ),
    )
    write_umap(adata, obsm, uns, caught)


def umap_kwargs(
    adata: AnnData,
    *,
    neighbors_key: str,
    key_added: str,
    min_dist: float,
    random_state: int,
    n_epochs: int | None,
    init: str,
) -> dict[str, Any]:
    """``sc.tl.umap``'s arguments for :func:`umap`'s options (``init`` resolved, its start array made)."""
    if neighbors_key not in adata.uns or "connectivities_key" not in adata.uns[neighbors_key]:
        raise MissingKeyError(f"graph {neighbors_key!r} not found in .uns; run the neighbors stage first")
    kwargs: dict[str, Any] = {
        "neighbors_key": neighbors_key,
        "min_dist": min_dist,
        "random_state": random_state,
        "key_added": key_added,
    }
    if n_epochs is not None:
        kwargs["maxiter"] = n_epochs
    if init == "auto":
        init = "spectral" if adata.n_obs <= SPECTRAL_MAX_CELLS else "pca"
    if init == "pca":
        rep = adata.uns[neighbors_key].get("params", {}).get("use_rep") or "X_pca"
        if rep not in adata.obsm:
            raise MissingKeyError(
                f"init 'pca' needs the graph's representation {rep!r} in .obsm; available: "
                f"{', '.join(map(repr, adata.obsm)) or 'none'}"
            )
        kwargs["init_pos"] = np.ascontiguousarray(np.asarray(adata.obsm[rep])[:, :2], dtype=np.float32)
        logger.info(
            "UMAP of %d cells: layout started from the first two dimensions of %s (init 'pca'; 'auto' "
            "takes it above %d cells), not the spectral embedding",
            adata.n_obs,
            rep,
            SPECTRAL_MAX_CELLS,
        )
    kwargs["_init"] = init
    return kwargs


def write_umap(adata: AnnData, obsm: dict, uns: dict, caught: list) -> None:
    """Write a layout computed by :func:`umap_job` (here or in another process) into ``adata``."""
    from .._errors import warn

    for message, category in caught:
        warn(message, category)
    adata.obsm.update(dict(obsm.items()))
    adata.uns.update({k: v for k, v in uns.items() if k != "_init"})
    key = next(iter(obsm))
    adata.uns.setdefault(key, {})["init"] = uns["_init"]


def graph_only(adata: AnnData, neighbors_key: str) -> AnnData:
    """What ``sc.tl.umap`` reads: the graph, its parameters and the representation it was built on."""
    nb = adata.uns[neighbors_key]
    rep = nb.get("params", {}).get("use_rep")
    keep = [k for k in adata.obsm if k == rep or (rep is None and k == "X_pca")]
    with_x = rep == "X" or (rep is None and "X_pca" not in adata.obsm)  # as scanpy's _choose_representation
    return AnnData(
        X=adata.X if with_x else None,
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names) if with_x else None,
        obsm={k: adata.obsm[k] for k in keep},
        obsp={nb[k]: adata.obsp[nb[k]] for k in ("connectivities_key", "distances_key") if nb.get(k) in adata.obsp},
        uns={neighbors_key: nb},
    )


def umap_job(mini: AnnData, kwargs: dict[str, Any]) -> tuple[dict, dict, list]:
    """``sc.tl.umap`` on a :func:`graph_only` AnnData: ``(obsm, new uns entries, warnings caught)``."""
    import scanpy as sc

    kwargs = dict(kwargs)
    init = kwargs.pop("_init", "spectral")

    before = set(mini.uns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc.tl.umap(mini, **kwargs)
    key = kwargs["key_added"]
    new_uns = {k: mini.uns[k] for k in set(mini.uns) - before}
    new_uns["_init"] = init
    return {key: mini.obsm[key]}, new_uns, [(str(w.message), w.category) for w in caught]


def _warm_up() -> None:
    """Import umap-learn and compile its layout optimiser on a 60-cell graph (11 s of CPU), in a
    thread of the lowest priority: on Linux, where priority is per thread, it takes only CPU time
    that the run's own work (e.g. Leiden on every core) leaves idle; the layout itself then runs at
    normal priority in this process' main thread. The run raises the warm-up back to normal priority
    as soon as a layout waits for it (:meth:`scclust._worker.Worker.raise_priority`), so it is lowered
    only where that is allowed (:func:`scclust._worker.priority_restorable`): a layout never waits
    on a starved compilation."""
    import threading

    from .._worker import priority_restorable

    failed: list[BaseException] = []
    lower = sys.platform == "linux" and priority_restorable()

    def compile_() -> None:
        try:
            if lower:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            _compile_umap()
        except BaseException as err:  # re-raised in the caller
            failed.append(err)

    t = threading.Thread(target=compile_, name="scclust-umap-warm-up")
    t.start()
    t.join()
    if failed:
        raise failed[0]


def _compile_umap() -> None:
    from ._neighbors import neighbors

    rng = np.random.default_rng(0)
    tiny = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(60)]))
    tiny.obsm["X_pca"] = np.vstack([rng.normal(c, 1, (20, 5)) for c in (0, 6, 12)]).astype(np.float32)
    neighbors(tiny, use_rep="X_pca", n_neighbors=10)
    umap_job(tiny, {"neighbors_key": "neighbors", "min_dist": 0.5, "random_state": 0, "key_added": "X_umap"})
