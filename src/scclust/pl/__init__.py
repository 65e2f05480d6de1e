"""Figures. Every function returns a :class:`matplotlib.figure.Figure` and never modifies the AnnData."""

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

__all__ = ["clustered_heatmap", "clustree", "compare", "dendrogram", "dotplot", "embedding", "graph_block", "highly_variable_genes", "markers", "pca_variance", "proportions", "qc_violin", "stability", "stability_embedding", "stability_runs", "subcluster_markers", "subcluster_overview"]
