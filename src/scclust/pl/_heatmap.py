"""Clustered heatmaps, the drawing half: heatmap, dendrograms, annotation bars, row groups,
legends, colour bar and caption, laid out on one matplotlib GridSpec."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._errors import InputError, choices, warn
from .._params import validated
from ..tl._heatmap import ClusteredHeatmap
from ._style import ANNOTATION_PALETTE as PALETTE
from ._style import CMAP_CONTINUOUS, CMAP_DIVERGING, finish_figure, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: With ``label_rows="auto"`` (``label_cols="auto"``) labels are drawn up to this many rows (columns).
MAX_ROW_LABELS = 80
MAX_COL_LABELS = 60
_GREY = "#555555"
_BAR = 0.2  # inches per annotation bar


@validated
def clustered_heatmap(
    result: ClusteredHeatmap,
    *,
    row_annotations: pd.DataFrame | None = None,
    col_annotations: pd.DataFrame | None = None,
    annotation_colors: Mapping[str, Mapping[str, str]] | None = None,
    label_rows: bool | Literal["auto"] | Sequence[str] = "auto",
    label_cols: bool | Literal["auto"] = "auto",
    show_row_dendrogram: bool = True,
    show_col_dendrogram: bool = True,
    show_groups: bool = True,
    show_stability: bool = True,
    show_legend: bool = True,
    show_caption: bool = True,
    cmap: str | None = None,
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Draw a :class:`~scclust.tl.ClusteredHeatmap` (from :func:`scclust.tl.cluster_heatmap`).

    Layout, left to right: row dendrogram, row annotation bars (then the row groups, numbered, with
    the tree's branches coloured by group), the heatmap (rows and columns in leaf order), row labels,
    then legends and the colour bar; above the heatmap the column dendrogram and column annotation
    bars; below it the caption (scaling, metrics, methods, cut, stability). Z-scored data (and any
    data with both signs) use a diverging colour map centred at 0 with symmetric limits; other data
    use viridis. Nothing is computed here: dendrograms need the linkages in ``result``.

    Parameters
    ----------
    result
        The clustering to draw.
    row_annotations, col_annotations
        Tables indexed by row / column names; each column becomes a colour bar with a legend
        (categorical: a colour per value; numeric with more than 12 values: a continuous scale).
        Rows/columns of ``result`` absent from a table are drawn grey (NA).
    annotation_colors
        Colours per annotation and value, e.g. ``{"sample_group": {"control": "#888888"}}``;
        other values get the package's colour-blind-safe palette.
    label_rows
        ``"auto"``: all labels up to :data:`MAX_ROW_LABELS` rows, none above; ``True`` / ``False``;
        or a list of row names to label (only those).
    label_cols
        ``"auto"`` (up to :data:`MAX_COL_LABELS` columns), ``True`` or ``False``.
    show_row_dendrogram, show_col_dendrogram
        Draw the trees (ignored for an axis that was not clustered).
    show_groups
        Draw the row groups of ``result`` (a numbered bar and separating lines).
    show_stability
        Give each group's bootstrap mean Jaccard in the group legend.
    show_legend, show_caption
        Draw the legends / colour bar, and the caption.
    cmap
        Colour map; ``None`` chooses as above.
    figsize
        Figure size in inches; ``None`` sizes it from the matrix.
    title
        Figure title.
    show
        ``True``: show the figure (:func:`matplotlib.pyplot.show`) and return ``None``, as scanpy's
        ``show=True``. ``None`` / ``False`` (default): return the figure, show nothing.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (several axes on one grid, so no ``ax=``), or ``None``
    with ``show=True``.
    """
    if not isinstance(result, ClusteredHeatmap):
        raise InputError(
            f"result must be a ClusteredHeatmap from scclust.tl.cluster_heatmap; got {type(result).__name__}"
        )
    mat = result.ordered()
    n_rows, n_cols = mat.shape
    rows, cols = mat.index, mat.columns
    row_tree = show_row_dendrogram and result.row_linkage is not None
    col_tree = show_col_dendrogram and result.col_linkage is not None
    groups = result.row_groups.loc[rows] if (show_groups and result.row_groups is not None) else None

    row_bars = _bars(row_annotations, rows, "row_annotations")
    col_bars = _bars(col_annotations, cols, "col_annotations")
    colors = {k: dict(v) for k, v in (annotation_colors or {}).items()}
    shared: dict[str, str] = {}  # one colour per value across bars (marker_of and cell_type agree)
    row_cols_ = _colorize(row_bars, colors, shared)
    col_cols_ = _colorize(col_bars, colors, shared)

    row_labels = _which_row_labels(label_rows, rows)
    show_col_labels = label_cols is True or (label_cols == "auto" and n_cols <= MAX_COL_LABELS)

    # ---- sizes in inches
    heat_w = float(np.clip(0.4 * n_cols, 2.0, 7.0))
    heat_h = float(np.clip(0.2 * n_rows, 2.5, 8.0))
    if figsize is not None:
        heat_w, heat_h = figsize[0] * 0.55, figsize[1] * 0.6
    lab_w = (0.07 * max(len(str(r)) for r in rows[row_labels]) + 0.15) if row_labels.size else 0.1
    col_lab_h = (0.07 * max(len(str(c)) for c in cols) + 0.15) if show_col_labels else 0.05
    bar_names = [*map(str, row_bars.columns), *(["group"] if groups is not None else [])]
    if bar_names:  # the row bars' names are written below them
        col_lab_h = max(col_lab_h, 0.07 * max(map(len, bar_names)) + 0.15)
    widths = [
        1.0 if row_tree else 0.0,
        _BAR * len(row_bars.columns) + (0.35 if groups is not None else 0.0),
        heat_w,
        lab_w,
        2.0 if show_legend else 0.0,
    ]
    heights = [
        0.45 if title else 0.0,
        0.8 if col_tree else 0.0,
        _BAR * len(col_bars.columns),
        heat_h,
        col_lab_h,
        0.6 if show_caption else 0.0,
    ]
    W, H = sum(widths) + 0.2, sum(heights) + 0.2
    if figsize is not None:
        W, H = figsize
    fig = new_figure((W, H), show=show, layout=None)
    wr = [max(w, 1e-3) for w in widths]
    hr = [max(h, 1e-3) for h in heights]
    gs = fig.add_gridspec(
        len(hr),
        len(wr),
        width_ratios=wr,
        height_ratios=hr,
        wspace=0.0,
        hspace=0.0,
        left=0.1 / W,
        right=1 - 0.1 / W,
        bottom=0.1 / H,
        top=1 - 0.1 / H,
    )

    # ---- heatmap
    ax = fig.add_subplot(gs[3, 2])
    vals = mat.to_numpy()
    diverging = result.params.get("scale") == "zscore" or (np.nanmin(vals) < 0 < np.nanmax(vals))
    if diverging:
        lim = float(np.nanmax(np.abs(vals))) or 1.0
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    cmap = cmap or (CMAP_DIVERGING if diverging else CMAP_CONTINUOUS)
    im = ax.imshow(
        vals, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax, extent=(0, n_cols, n_rows, 0)
    )
    ax.set_xlim(0, n_cols)
    ax.set_ylim(n_rows, 0)
    ax.yaxis.tick_right()
    ax.set_yticks(row_labels + 0.5, [str(r) for r in rows[row_labels]], fontsize=7 if n_rows > 30 else 8)
    if show_col_labels:
        ax.set_xticks(np.arange(n_cols) + 0.5, [str(c) for c in cols], rotation=90, fontsize=8)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0 if row_labels.size == n_rows else 2, pad=1)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_gid("heatmap")

    # ---- dendrograms
    if row_tree:
        dax = fig.add_subplot(gs[3, 0])
        _dendrogram(dax, result.row_linkage, "left", n_rows, groups, result.row_groups)
        dax.set_gid("row_dendrogram")
    if col_tree:
        dax = fig.add_subplot(gs[1, 2])
        _dendrogram(dax, result.col_linkage, "top", n_cols, None, None)
        dax.set_gid("col_dendrogram")

    # ---- annotation bars
    legend_items: list[tuple[str, list[tuple[str, str]]]] = []
    if len(row_bars.columns) or groups is not None:
        bax = fig.add_subplot(gs[3, 1])
        n_b = len(row_bars.columns)
        img = np.ones((n_rows, n_b + (1 if groups is not None else 0), 4))
        for j, name in enumerate(row_bars.columns):
            img[:, j] = row_cols_[name][0]
            legend_items.append((name, row_cols_[name][1]))
        gcolors = {}
        if groups is not None:
            cats = list(groups.cat.categories)
            gcolors = dict(zip(cats, _group_colors(len(cats)), strict=True))
            img[:, n_b] = [_rgba(gcolors[g]) for g in groups]
        widths_b = [_BAR] * n_b + ([0.35] if groups is not None else [])
        edges = np.concatenate([[0], np.cumsum(widths_b)])
        for j in range(img.shape[1]):
            bax.imshow(
                img[:, j : j + 1], aspect="auto", interpolation="nearest", extent=(edges[j], edges[j + 1], n_rows, 0)
            )
        bax.set_xlim(0, edges[-1])
        bax.set_ylim(n_rows, 0)
        bax.set_yticks([])
        bax.set_xticks(
            (edges[:-1] + edges[1:]) / 2,
            [*row_bars.columns, *(["group"] if groups is not None else [])],
            rotation=90,
            fontsize=7,
        )
        bax.tick_params(length=0)
        for spine in bax.spines.values():
            spine.set_visible(False)
        bax.set_gid("row_annotations")
        if groups is not None:
            codes = groups.cat.codes.to_numpy()
            bounds = np.flatnonzero(np.diff(codes)) + 1
            for b in bounds:
                ax.axhline(b, color="white", lw=1.5)
                bax.axhline(b, xmin=edges[n_b] / edges[-1], color="white", lw=1.5)
            starts = np.concatenate([[0], bounds])
            ends = np.concatenate([bounds, [n_rows]])
            x = (edges[n_b] + edges[-1]) / 2
            for s, e in zip(starts, ends, strict=True):
                bax.text(
                    x,
                    (s + e) / 2,
                    str(groups.iloc[s]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    fontweight="bold",
                    color="black",
                )
            stab = result.stability if show_stability else None
            entries = []
            for g in cats:
                n = int((groups == g).sum())
                label = f"{g} (n={n}"
                if stab is not None and g in stab.index and np.isfinite(stab.loc[g, "mean_jaccard"]):
                    label += f", J={stab.loc[g, 'mean_jaccard']:.2f}"
                entries.append((label + ")", gcolors[g]))
            legend_items.append(("row group" + (" (bootstrap Jaccard)" if stab is not None else ""), entries))
    if len(col_bars.columns):
        cax = fig.add_subplot(gs[2, 2])
        img = np.stack([col_cols_[name][0] for name in col_bars.columns])
        cax.imshow(img, aspect="auto", interpolation="nearest", extent=(0, n_cols, len(col_bars.columns), 0))
        cax.set_xticks([])
        cax.yaxis.tick_right()
        cax.set_yticks(np.arange(len(col_bars.columns)) + 0.5, list(col_bars.columns), fontsize=7)
        cax.tick_params(length=0)
        for spine in cax.spines.values():
            spine.set_visible(False)
        cax.set_gid("col_annotations")
        for name in col_bars.columns:
            legend_items.append((name, col_cols_[name][1]))

    # ---- legends and colour bar (outside the data, in their own column)
    if show_legend:
        lax = fig.add_subplot(gs[1:4, 4])
        lax.set_axis_off()
        lax.set_gid("legends")
        from matplotlib.patches import Patch

        y = 1.0
        for name, entries in legend_items:
            handles = [Patch(facecolor=c, edgecolor="none", label=lab) for lab, c in entries]
            leg = lax.legend(
                handles=handles,
                title=name,
                loc="upper left",
                bbox_to_anchor=(0.05, y),
                frameon=False,
                fontsize=7,
                title_fontsize=7,
                handlelength=1.0,
                handleheight=1.0,
                borderaxespad=0,
            )
            leg._legend_box.align = "left"
            lax.add_artist(leg)
            y -= (len(entries) + 1.6) * 0.16 / max(sum(heights[1:4]), 1.0)
        cbax = lax.inset_axes([0.08, max(y - 0.32, 0.0), 0.08, 0.25])
        cbar = fig.colorbar(im, cax=cbax)
        label = {"zscore": "row z-score", "standard": "row min-max (0-1)"}.get(result.params.get("scale"), "value")
        cbar.set_label(label, fontsize=7)
        cbar.ax.tick_params(labelsize=7)
        cbax.set_gid("colorbar")

    if show_caption and result.caption:
        width_chars = max(int(W * 13), 40)
        fig.text(
            0.1 / W,
            (0.1 + heights[-1] - 0.1) / H,
            textwrap.fill(result.caption, width_chars),
            fontsize=7,
            va="top",
            ha="left",
            gid="caption",
        )
    if title:
        fig.suptitle(title, y=1 - 0.12 / H, va="top", fontsize=10)
    return finish_figure(fig, show)


# ------------------------------------------------------------------------------------------ helpers
def _bars(table: pd.DataFrame | None, index: pd.Index, what: str) -> pd.DataFrame:
    if table is None:
        return pd.DataFrame(index=index)
    if isinstance(table, pd.Series):
        table = table.to_frame()
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"{what} must be a DataFrame indexed by names; got {type(table).__name__}")
    tab = table.copy()
    tab.index = tab.index.astype(str)
    names = index.astype(str)
    if not names.isin(tab.index).any():
        raise InputError(
            f"{what} index matches none of the heatmap's names (e.g. {choices(names[:3])}; "
            f"{what} has {choices(tab.index[:3])})"
        )
    out = tab.reindex(names)
    out.index = index
    return out


def _colorize(
    bars: pd.DataFrame, colors: dict[str, dict[str, str]], shared: dict[str, str]
) -> dict[str, tuple[np.ndarray, list]]:
    """annotation -> (RGBA per position, legend entries); a value keeps its colour across bars."""
    import matplotlib as mpl

    out = {}
    for name in bars.columns:
        v = bars[name]
        numeric = pd.api.types.is_numeric_dtype(v) and not isinstance(v.dtype, pd.CategoricalDtype) and v.nunique() > 12
        if numeric:
            x = v.to_numpy(dtype=float)
            lo, hi = np.nanmin(x), np.nanmax(x)
            cm = mpl.colormaps[CMAP_CONTINUOUS]
            rgba = cm((x - lo) / (hi - lo if hi > lo else 1.0))
            rgba[~np.isfinite(x)] = _rgba("#DDDDDD")
            out[name] = (rgba, [(f"{lo:.3g}", mpl.colors.to_hex(cm(0.0))), (f"{hi:.3g}", mpl.colors.to_hex(cm(1.0)))])
            continue
        cats = (
            list(v.cat.categories)
            if isinstance(v.dtype, pd.CategoricalDtype)
            else sorted(v.dropna().astype(str).unique())
        )
        cats = [c for c in cats if (v.astype(str) == str(c)).any()]
        given = colors.get(name, {})
        lut = {}
        for c in cats:
            if str(c) in given:
                lut[str(c)] = given[str(c)]
            else:
                if str(c) not in shared:
                    shared[str(c)] = PALETTE[len(shared) % len(PALETTE)]
                lut[str(c)] = shared[str(c)]
        s = v.astype(object).where(v.notna(), None)
        rgba = np.array([_rgba(lut[str(x)]) if x is not None else _rgba("#DDDDDD") for x in s])
        entries = [(str(c), lut[str(c)]) for c in cats] + ([("NA", "#DDDDDD")] if v.isna().any() else [])
        out[name] = (rgba, entries)
    return out


def _rgba(c: str) -> np.ndarray:
    import matplotlib as mpl

    return np.array(mpl.colors.to_rgba(c))


def _group_colors(n: int) -> list[str]:
    from ._style import TOL_LIGHT

    if n <= len(TOL_LIGHT):  # light colours: the black group numbers stay readable
        return TOL_LIGHT[:n]
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _which_row_labels(label_rows, rows: pd.Index) -> np.ndarray:
    if label_rows is True:
        return np.arange(len(rows))
    if label_rows is False or label_rows is None:
        return np.array([], dtype=int)
    if isinstance(label_rows, str):
        if label_rows != "auto":
            raise InputError(f"label_rows {label_rows!r} is not valid; give 'auto', true, false or a list of row names")
        return np.arange(len(rows)) if len(rows) <= MAX_ROW_LABELS else np.array([], dtype=int)
    wanted = [str(r) for r in label_rows]
    names = rows.astype(str)
    missing = [r for r in wanted if r not in set(names)]
    if missing:
        warn(f"label_rows: {len(missing)} name(s) not among the rows: {choices(missing, 10)}")
    return np.flatnonzero(names.isin(wanted))


def _dendrogram(
    ax, Z: np.ndarray, orientation: str, n: int, groups: pd.Series | None, all_groups: pd.Series | None
) -> None:
    """scipy's dendrogram on ``ax``; with groups, branches inside one group take its colour."""
    from scipy.cluster.hierarchy import dendrogram

    colored = groups is not None and all_groups is not None
    dendrogram(
        Z,
        ax=ax,
        orientation=orientation,
        no_labels=True,
        link_color_func=_group_link_colors(Z, all_groups) if colored else None,
        color_threshold=None if colored else 0,
        above_threshold_color=_GREY,
    )
    if orientation == "left":
        ax.set_ylim(10 * n, 0)
    else:
        ax.set_xlim(0, 10 * n)
    ax.set_axis_off()


def _group_link_colors(Z: np.ndarray, all_groups: pd.Series):
    """``link_color_func`` for scipy's dendrogram: a link inside one group gets its colour, others grey."""
    cats = list(all_groups.cat.categories)
    gcol = dict(zip(cats, _group_colors(len(cats)), strict=True))
    codes = all_groups.to_numpy().astype(str)  # data order (scipy leaf ids)
    m = Z.shape[0] + 1
    node_group: dict[int, str | None] = {i: codes[i] for i in range(m)}
    for i, (a, b) in enumerate(Z[:, :2].astype(int)):
        ga, gb = node_group[a], node_group[b]
        node_group[m + i] = ga if ga == gb else None

    def color(node: int) -> str:
        g = node_group.get(node)
        return gcol[g] if g is not None else _GREY

    return color
