"""UMAP of an existing graph (``sc.tl.umap``, or the parallel optimiser of :mod:`scclust.pp._layout`),
and the pieces a background process needs.

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

#: ``method="auto"`` runs umap-learn (``sc.tl.umap``) up to this many cells and the parallel
#: optimiser (:mod:`scclust.pp._layout`) above: the same boundary as ``init="auto"``'s, so a layout
#: changes character at one size only; below it the layout is scanpy's and costs under a minute
#: (100 epochs at 200,000 cells: 52 s on 2 cores), above it umap-learn's single thread is the
#: critical path of a run (390 s at 1,000,000 cells). See the benchmarks page.
UMAP_LEARN_MAX_CELLS = 200_000


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
    method: Literal["auto", "umap-learn", "parallel"] = "auto",
) -> None:
    """The UMAP layout of an existing graph (``sc.tl.umap``, or the same optimisation on every core),
    stored under ``.obsm[key_added]``.

    Both methods give the same coordinates for the same graph, options and seed, on every rerun.
    ``umap-learn`` is ``sc.tl.umap`` itself: umap-learn's seeded optimisation, on one thread.
    ``parallel`` optimises the same objective with umap-learn's constants, edge schedule and start
    (``a``, ``b``, learning rate, negative sampling, epochs) on every core (numba threads), in
    sweeps where every cell's new position is computed from positions no thread is writing; its
    coordinates are the same with any number of threads, but they are not umap-learn's (how the
    two compare: :mod:`scclust.pp._layout` and the benchmarks page).

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
    method
        Optimiser: ``umap-learn`` (``sc.tl.umap``, seeded, one thread: the lab's layout),
        ``parallel`` (the same objective optimised on every core; the same coordinates with any
        number of threads) or ``auto``: umap-learn up to
        :data:`UMAP_LEARN_MAX_CELLS` cells, parallel above. The choice depends on the number of
        cells only, never on the machine, so a config gives the same layout everywhere.

    Returns
    -------
    ``None``, having written ``.obsm[key_added]`` and ``.uns[key_added]``: scanpy's ``params``
    (``a``, ``b``; ``sc.pl.umap`` reads them), ``init`` (the start used), ``method`` (the optimiser
    used), ``method_reason`` (why) and ``threads`` (the threads its epochs ran on).
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
            method=method,
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
    method: str,
) -> dict[str, Any]:
    """``sc.tl.umap``'s arguments for :func:`umap`'s options (``init`` and ``method`` resolved, the
    start array made); the choices travel as ``_init``, ``_method`` and ``_method_reason``."""
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
    kwargs["_method"], kwargs["_method_reason"] = choose_method(adata.n_obs, method)
    return kwargs


def choose_method(n_cells: int, method: str) -> tuple[str, str]:
    """``(method, reason)`` for :func:`umap`'s ``method``."""
    if method != "auto":
        return method, f"method {method!r} given"
    if n_cells <= UMAP_LEARN_MAX_CELLS:
        return "umap-learn", f"method auto: {n_cells:,} cells <= {UMAP_LEARN_MAX_CELLS:,}, scanpy's own layout"
    return "parallel", f"method auto: {n_cells:,} cells > {UMAP_LEARN_MAX_CELLS:,}, the epochs on every core"


def write_umap(adata: AnnData, obsm: dict, uns: dict, caught: list) -> None:
    """Write a layout computed by :func:`umap_job` (here or in another process) into ``adata``."""
    from .._errors import warn

    for message, category in caught:
        warn(message, category)
    adata.obsm.update(dict(obsm.items()))
    adata.uns.update({k: v for k, v in uns.items() if not k.startswith("_")})
    key = next(iter(obsm))
    adata.uns.setdefault(key, {}).update({k[1:]: v for k, v in uns.items() if k.startswith("_")})
    logger.info(
        "UMAP %s of %d cells: %s optimiser on %d thread%s (%s)",
        key,
        adata.n_obs,
        uns["_method"],
        uns["_threads"],
        "" if uns["_threads"] == 1 else "s",
        uns["_method_reason"],
    )


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
    """``sc.tl.umap`` (or :func:`scclust.pp._layout.umap_parallel`, as ``_method`` says) on a
    :func:`graph_only` AnnData: ``(obsm, new uns entries, warnings caught)``; the entries named
    ``_name`` go into ``.uns[key_added][name]``."""
    kwargs = dict(kwargs)
    meta = {k: kwargs.pop(k) for k in [k for k in kwargs if k.startswith("_")]}
    meta.setdefault("_init", "spectral")
    meta.setdefault("_method", "umap-learn")

    before = set(mini.uns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if meta["_method"] == "parallel":
            from ._layout import umap_parallel

            meta["_threads"] = umap_parallel(mini, **kwargs)
        else:
            import scanpy as sc

            sc.tl.umap(mini, **kwargs)
            meta["_threads"] = 1  # seeded umap-learn runs its epochs on one thread
    key = kwargs["key_added"]
    new_uns = {k: mini.uns[k] for k in set(mini.uns) - before}
    new_uns.update(meta)
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
