"""Figures. Every function returns a :class:`matplotlib.figure.Figure` (``None`` with ``show=True``,
as scanpy's) and never modifies the AnnData. Functions that can draw one panel take ``ax=`` and
return its figure; ``basis`` takes scanpy's short names (``"umap"`` for ``X_umap``)."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: public function -> its module; modules load on first use, so reading a config (whose heatmap
#: section is generated from :func:`clustered_heatmap`'s signature) does not import matplotlib
_FUNCTIONS = {
    "clustered_heatmap": "_heatmap", "clustree": "_compare", "compare": "_compare", "dendrogram": "_dendrogram",
    "dotplot": "_dendrogram", "embedding": "_embedding", "graph_block": "_graph", "highly_variable_genes": "_prepare",
    "markers": "_markers",
    "pca_variance": "_prepare", "proportions": "_composition", "qc_violin": "_qc", "stability": "_stability",
    "stability_embedding": "_stability", "stability_runs": "_stability", "subcluster_markers": "_subcluster",
    "subcluster_overview": "_subcluster",
}

__all__ = sorted(_FUNCTIONS)

if TYPE_CHECKING:
    from ._compare import clustree, compare
    from ._composition import proportions
    from ._dendrogram import dendrogram, dotplot
    from ._embedding import embedding
    from ._graph import graph_block
    from ._heatmap import clustered_heatmap
    from ._markers import markers
    from ._prepare import highly_variable_genes, pca_variance
    from ._qc import qc_violin
    from ._stability import stability, stability_embedding, stability_runs
    from ._subcluster import subcluster_markers, subcluster_overview


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'scclust.pl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
