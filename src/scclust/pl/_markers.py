"""Dot plot of the top marker genes of each cluster (:func:`scclust.tl.markers`' results)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anndata import AnnData

from .._errors import InputError
from .._params import validated
from .._types import PositiveInt
from ..tl._markers import _result, markers_key, top_markers

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@validated
def markers(
    adata: AnnData,
    *,
    groupby: str,
    key: str | None = None,
    n_genes: PositiveInt = 3,
    passing: bool = True,
    use_raw: bool | None = None,
    dendrogram: bool | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Dot plot (:func:`scclust.pl.dotplot`) of the ``n_genes`` best markers of each cluster.

    Genes are taken from the markers stored by :func:`scclust.tl.markers` (highest score first,
    among those passing its filters when ``passing``; a cluster with none contributes no gene), in
    the order of the clusters: the leaf order of the stored dendrogram when one is drawn, else the
    category order. Nothing is computed: missing markers are an error naming the call to run.

    Parameters
    ----------
    adata
        Annotated data matrix with ``.uns[key]``.
    groupby
        The clustering.
    key
        ``.uns`` key of the markers; default ``markers_{groupby}``.
    n_genes
        Markers per cluster.
    passing
        Only markers that pass the filters of :func:`scclust.tl.markers`.
    use_raw
        Expression from ``.raw`` (``None``: where the markers were computed, ``.raw`` or ``.X``).
    dendrogram
        Order the clusters by the stored dendrogram (:func:`scclust.tl.dendrogram`) and draw it;
        ``None``: when one is stored for ``groupby``.
    ax
        Draw into this axes' grid cell (as :func:`scclust.pl.dotplot`); its figure is returned.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` of :func:`scclust.pl.dotplot`, or ``None`` with ``show=True``.
    """
    from ._dendrogram import dotplot

    key = key or markers_key(groupby)
    res = _result(adata, key)
    if res["params"].get("groupby") != groupby:
        raise InputError(f".uns[{key!r}] holds the markers of {res['params'].get('groupby')!r}, not {groupby!r}")
    dend_key = f"dendrogram_{groupby}"
    if dendrogram is None:
        dendrogram = dend_key in adata.uns
    clusters = list(res["names"].dtype.names)
    if dendrogram and dend_key in adata.uns:
        order = [str(c) for c in adata.uns[dend_key]["categories_ordered"]]
        clusters = [c for c in order if c in clusters] + [c for c in clusters if c not in order]
    top = top_markers(adata, key=key, n_genes=n_genes, passing=passing, clusters=clusters)
    genes = list(dict.fromkeys(g for c in clusters for g in top[c]))
    if use_raw is None and res["params"].get("source") in (".raw", ".X"):
        use_raw = res["params"]["source"] == ".raw"  # the expression the markers were found in
    if not genes:
        raise InputError(f"no cluster of {groupby!r} has a marker passing the filters; draw with passing=False")
    return dotplot(adata, groupby=groupby, genes=genes, use_raw=use_raw, dendrogram=bool(dendrogram), ax=ax, show=show)
