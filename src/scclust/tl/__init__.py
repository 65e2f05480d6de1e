"""Clustering and analysis tools."""

from ._compare import compare, contingency
from ._composition import composition_diagnostics, proportions
from ._dendrogram import cluster_means, dendrogram
from ._hclust import hclust
from ._heatmap import ClusteredHeatmap, HeatmapInput, cluster_heatmap, heatmap_matrix
from ._kmeans import kmeans
from ._leiden import leiden
from ._mixing import mixing_entropy
from ._qc import qc_summary
from ._subcluster import SubclusterReport, subcluster, transfer_subclusters

__all__ = [
    "cluster_means", "composition_diagnostics", "dendrogram", "proportions", "qc_summary",
    "compare", "contingency", "hclust", "kmeans", "leiden", "mixing_entropy",
    "cluster_heatmap", "heatmap_matrix", "ClusteredHeatmap", "HeatmapInput",
    "subcluster", "transfer_subclusters", "SubclusterReport",
]
