"""What the clustering stages (leiden, kmeans, hclust) share: one run function for all three."""

from __future__ import annotations

from collections.abc import Callable


def clustering_run(tool: str) -> Callable[..., None]:
    """A stage that runs the clustering function ``scclust.tl.<tool>``, records its label keys and
    writes its summary table (``.uns[key_added]["clusterings"]``: clusters per key, plus modularity /
    inertia / cut). The tool itself writes the colours of its clusterings (``.uns[f"{key}_colors"]``,
    following the clustering tree of the series). The tool is imported on first use, so loading a
    config stays light.
    """

    def run(adata, p, ctx) -> None:
        import pandas as pd

        from .. import tl

        getattr(tl, tool)(
            adata, **p.model_dump()
        )  # also writes .uns[f"{key}_colors"] (one colour per cluster everywhere)
        info = adata.uns[p.key_added]["clusterings"]
        ctx.add_clusterings(p.key_added, list(info))
        ctx.save_table(pd.DataFrame.from_dict(info, orient="index").rename_axis("key"), f"{p.key_added}_summary")

    return run
