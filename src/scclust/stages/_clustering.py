"""What the clustering stages (leiden, kmeans, hclust) share: one run function for all three."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def clustering_run(func: Callable[[], Callable[..., Any]]) -> Callable[..., None]:
    """A stage that runs a clustering function, records its label keys and writes its summary table
    (``.uns[key_added]["clusterings"]``: clusters per key, plus modularity / inertia / cut).

    ``func`` returns the tool (imported on first use, so loading a config stays light).
    """

    def run(adata, p, ctx) -> None:
        import pandas as pd

        from ..pl._style import tree_colors

        func()(adata, **p.model_dump())
        info = adata.uns[p.key_added]["clusterings"]
        for key, colours in tree_colors(adata, list(info)).items():  # one colour per cluster in every figure
            adata.uns[f"{key}_colors"] = colours
        ctx.add_clusterings(p.key_added, list(info))
        ctx.save_table(pd.DataFrame.from_dict(info, orient="index").rename_axis("key"), f"{p.key_added}_summary")

    return run
