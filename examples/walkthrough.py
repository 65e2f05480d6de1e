# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # scclust walkthrough: the clustering lab, one stage at a time
#
# This notebook runs the stages of the NBIS clustering lab interactively on built-in simulated
# data (2,000 integrated PBMC-like cells with the true cell type in `obs["cell_type"]`). The same
# steps run unattended with `scclust run configs/tutorial.yaml`.

# %%
# %matplotlib inline
# ruff: noqa: B018  (a bare expression at the end of a cell is how a notebook displays it)
import logging
import warnings

import scclust
from scclust import pl, pp, tl
from scclust.datasets import simulate

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)

adata = simulate(2000, seed=0)
adata

# %% [markdown]
# ## 1. kNN graph
# The lab builds the graph on the Harmony-integrated PCA: 20 neighbours, first 30 components.

# %%
pp.neighbors(adata, use_rep="X_pca_harmony", n_pcs=30, n_neighbors=20)
adata.uns["neighbors"]["params"]

# %% [markdown]
# ## 2. Leiden at several resolutions
# One key per resolution (`leiden_0.4`, ...). Higher resolution gives more, smaller clusters.

# %%
tl.leiden(adata, resolutions=[0.4, 0.6, 1.0, 1.4], flavor="leidenalg", n_iterations=-1)
for key in ["leiden_0.4", "leiden_0.6", "leiden_1.0", "leiden_1.4"]:
    print(f"{key}: {adata.obs[key].nunique()} Leiden clusters")

# %%
pl.embedding(adata, basis="X_umap_harmony", color=["leiden_0.4", "leiden_0.6", "leiden_1.0", "leiden_1.4"])

# %% [markdown]
# ## 3. k-means and hierarchical clustering
# k-means on all 50 Harmony dimensions (`kmeans5`, ...), and one Ward tree cut at 5, 10 and 15
# clusters (`hclust_5`, ...).

# %%
tl.kmeans(adata, n_clusters=[5, 10, 15], use_rep="X_pca_harmony", n_init="auto", random_state=0)
tl.hclust(adata, use_rep="X_pca_harmony", method="ward", metric="euclidean", n_clusters=[5, 10, 15])
pl.embedding(adata, basis="X_umap_harmony", color=["kmeans10", "hclust_10", "cell_type"], ncols=3)

# %% [markdown]
# ## 4. How similar are the clusterings?
# Adjusted Rand index (ARI) and normalized mutual information between every pair, and against the
# simulated truth.

# %%
keys = [
    "leiden_0.4",
    "leiden_0.6",
    "leiden_1.0",
    "leiden_1.4",
    "kmeans5",
    "kmeans10",
    "kmeans15",
    "hclust_5",
    "hclust_10",
    "hclust_15",
]
res = tl.compare(adata, keys=keys, reference="cell_type")
res["ari"].round(2)

# %%
pl.compare(adata, keys=keys, reference="cell_type")

# %% [markdown]
# ## 5. Cluster relationships
# A dendrogram of the `leiden_0.6` clusters (correlation of their mean PCA coordinates), and a dot
# plot of marker genes ordered by it.

# %%
tl.dendrogram(adata, groupby="leiden_0.6", use_rep="X_pca")
pl.dendrogram(adata, groupby="leiden_0.6")

# %%
markers = ["CD3E", "CD4", "CD8A", "GNLY", "NKG7", "MS4A1", "FCGR3A", "CD14", "LYZ", "CST3", "MS4A7", "FCGR1A"]
pl.dotplot(adata, groupby="leiden_0.6", genes=markers)

# %% [markdown]
# ## 6. Composition: which samples and conditions make up each cluster?

# %%
tl.proportions(adata, groupby="leiden_0.6", by="type").head()

# %%
pl.proportions(adata, groupby="leiden_0.6", by="sample")

# %% [markdown]
# ## 7. QC metrics per cluster
# Median QC values per cluster; clusters far from the others (in MADs) are flagged.

# %%
tl.qc_summary(adata, groupby="leiden_0.6")

# %%
pl.qc_violin(adata, groupby="leiden_0.6")

# %% [markdown]
# ## 8. Subclustering the T and NK cells
# The T/NK clusters of `leiden_0.4` are found from marker scores (CD3E / GNLY / NKG7), re-processed
# with the lab's parameters (new HVGs, regression, scaling, PCA, Harmony, kNN, Leiden 0.6) and the
# labels written back into the parent under the same key (`tcells_0.6`, values `tnk:<cluster>`).

# %%
sub, report = tl.subcluster(
    adata,
    name="tnk",
    groupby="leiden_0.4",
    batch_key="sample",
    small_batches="drop",
    select={"markers": {"T": ["CD3E"], "NK": ["GNLY", "NKG7"]}},
    pca={"regress_out": ["total_counts", "pct_counts_mt"]},
    leiden={"resolutions": [0.6], "key_added": "tcells"},
)
print(f"{sub.n_obs} T/NK cells, {sub.obs['tcells_0.6'].nunique()} subclusters")
report.tables()["hvg_overlap"]

# %%
written = tl.transfer_subclusters(adata, subset=sub, name="tnk")
print("written into the parent:", written)
pl.subcluster_overview(sub, parent=adata, key="tcells_0.6", parent_key="leiden_0.4")

# %% [markdown]
# ## 9. A clustered heatmap of cluster markers
# Mean expression of the top markers per `leiden_0.6` cluster, row z-scores, correlation distance
# and average linkage on both axes.

# %%
inp = tl.heatmap_matrix(adata, source="cluster_means", groupby="leiden_0.6", n_top_genes=3)
hm = tl.cluster_heatmap(inp.data, scale="zscore", row_metric="correlation", row_method="average", row_k=4, n_boot=20)
pl.clustered_heatmap(
    hm, row_annotations=inp.row_annotations, col_annotations=inp.col_annotations, title="leiden_0.6 markers"
)

# %%
print("scclust", scclust.__version__)
