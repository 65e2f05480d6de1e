"""What the clustering stages (leiden, kmeans, hclust) share: one run function for all three."""

from __future__ import annotations

from collections.abc import Callable


def clustering_run(tool: str) -> Callable[..., None]:
    """A stage that runs the clustering function ``scclust.tl.<tool>``, records its label keys and
    writes its summary table (``.uns[key_added]["clusterings"]``: clusters per key, plus modularity /
    inertia / cut). The tool is imported on first use, so loading a config stays light.
    """

    def run(adata, p, ctx) -> None:
        import pandas as pd

        from .. import tl
        from ..pl._style import tree_colors

        getattr(tl, tool)(adata, **p.model_dump())
        info = adata.uns[p.key_added]["clusterings"]
        for key, colours in tree_colors(adata, list(info)).items():  # one colour per cluster in every figure
            adata.uns[f"{key}_colors"] = colours
        ctx.add_clusterings(p.key_added, list(info))
        ctx.save_table(pd.DataFrame.from_dict(info, orient="index").rename_axis("key"), f"{p.key_added}_summary")

    return run
