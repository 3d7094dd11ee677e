"""Plots over training steps (matplotlib, imported only when a plot is made).

    hist = vgkern.History(net); ...; hist.record(step, rep, *net.evaluate(x_test, y_test))
    vgkern.plot_training(hist, stat="weight_change")      # one curve per layer over the steps
    vgkern.plot_training(vgkern.read_results("r.parquet"), stat="log10_preact_grad_norm",
                         where={"activation": "sigmoid"})  # one panel per configuration

Per-layer curves are coloured from the input side (dark) to the output side (yellow), with a
colour bar instead of a legend; a statistic that is one number per step (loss, the LSTM/RNN
per-network scalars such as weight_ih_change) is one black curve. Below each panel, when the
table has test_accuracy values (History.record(..., test_accuracy=...) or a sweep's
eval_every), a second panel shows the held-out accuracy (and the training loss's axis on the
right).
"""
import os
from typing import TYPE_CHECKING

import numpy as np

from .plots import GROUP_COLUMNS, _filter, _frame, _label, _matplotlib

if TYPE_CHECKING:  # annotations only: matplotlib, pandas and pyarrow load when a plot is made
    import matplotlib.figure
    import pandas
    import pyarrow

    from .history import History

INDEX_COLUMNS = ("layer", "t")  # per-row index: MLP layers, LSTM/RNN time steps


def _table(results):
    """A DataFrame from a History, a sweep table, a pyarrow Table or a results path."""
    from .history import History

    if isinstance(results, History):
        return results.to_pandas()
    return _frame(results)


def _index_column(df, what):
    for name in INDEX_COLUMNS:
        if name in df.columns:
            return name
    raise ValueError(f"{what}: the table has no 'layer' or 't' column; pass a History, its "
                     "to_pandas() or a sweep table")


def _configurations(df):
    """[(label, rows)] one per configuration (sweep tables), else the whole table."""
    if "config_id" not in df.columns:
        return [("", df)]
    varying = [c for c in GROUP_COLUMNS + ("depth", "seed")
               if c in df.columns and df[c].nunique(dropna=False) > 1]
    out = []
    for _, rows in df.groupby("config_id", sort=False):
        key = tuple(rows[c].iloc[0] for c in varying)
        out.append((_label(key, varying) if varying else "", rows))
    return out


def _use_log_scale(values, stat, log):
    if log is not None:
        return bool(log)
    finite = values[np.isfinite(values)]
    return (not stat.startswith("log10_") and finite.size > 0 and (finite > 0).all()
            and finite.max() > 10 * finite.min())


def _draw_stat(ax, rows, stat, index, log, colormap):
    """Per-row curves of `stat` over the steps -> True if one curve per row was drawn."""
    wide = rows.pivot_table(index="step", columns=index, values=stat, aggfunc="first",
                            dropna=False).sort_index()
    per_row = wide.shape[1] > 1 and not (wide.nunique(axis=1, dropna=False) <= 1).all()
    steps = wide.index.to_numpy()
    values = wide.to_numpy(np.float64)
    if per_row:
        n = wide.shape[1]
        for j in range(n):
            ax.plot(steps, values[:, j], color=colormap(j / max(1, n - 1)), lw=1.2)
    else:
        ax.plot(steps, values[:, 0], color="black", lw=1.4)
    if _use_log_scale(values.ravel(), stat, log):
        ax.set_yscale("log")
        zero = [str(c) for c, col in zip(wide.columns, values.T) if (col[np.isfinite(col)] == 0).all()]
        if zero:  # a log axis cannot show them: say so instead of leaving them out silently
            shown = ", ".join(zero[:6]) + (" ..." if len(zero) > 6 else "")
            ax.text(0.02, 0.02, f"{index} {shown}: exactly 0 (not on the log axis)",
                    transform=ax.transAxes, fontsize=7, va="bottom")
    ax.set_ylabel(stat)
    ax.grid(True, alpha=0.3)
    return per_row, wide.shape[1]


def plot_training(results: "History | pandas.DataFrame | pyarrow.Table | str | os.PathLike",
                  stat: str = "weight_change", path: "str | os.PathLike | None" = None, *,
                  where: "dict | None" = None, log: "bool | None" = None, max_panels: int = 12,
                  fig: "matplotlib.figure.FigureBase | None" = None,
                  dpi: int = 120) -> "matplotlib.figure.FigureBase":
    """A statistic over training steps, one curve per layer (LSTM/RNN: per time step).

    results: a vgkern.History, its to_pandas() table, a sweep table (DataFrame or pyarrow
        Table: one panel per configuration) or the path of a sweep's results file.
    stat: a column of the table, e.g. "weight_change" (||W - W0|| / ||W0||, vgkern.optim),
        "update_ratio" ... spelled as the report's fields ("weight_update_ratio",
        "log10_preact_grad_norm", "weight_ih_change", "loss").
    where: {column: value or list} keeps only matching rows first (as the other plots).
    log: a log y axis (None: when the values are positive and span more than 10x).
    path: where to save the figure (.png, .pdf, .svg), if given. fig: a matplotlib Figure or
        SubFigure to draw into. Returns the Figure.
    """
    what = "plot_training"
    df = _filter(_table(results), where, None, what, over_steps=True)
    if not len(df):
        raise ValueError(f"{what}: no rows to plot (after where={where!r})")
    if stat not in df.columns:
        stats = [c for c in df.columns if df[c].dtype.kind == "f"]
        raise ValueError(f"{what}: no column {stat!r}; statistics in the table: "
                         f"{', '.join(stats)}")
    index = _index_column(df, what)
    panels = _configurations(df)
    if len(panels) > max_panels:
        raise ValueError(f"{what}: {len(panels)} configurations is more than max_panels="
                         f"{max_panels}; narrow the table with where={{...}}")
    has_test = "test_accuracy" in df.columns and bool(np.isfinite(
        df["test_accuracy"].to_numpy(np.float64)).any())
    matplotlib, Figure = _matplotlib()
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    if fig is None:
        height = (3.6 + (1.9 if has_test else 0)) * nrows + 0.4
        fig = Figure(figsize=(5.2 * ncols + 1.2, height), layout="constrained")
    grid = fig.subplots(nrows * (2 if has_test else 1), ncols, squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [3.6, 1.9] * nrows} if has_test else None)
    colormap = matplotlib.colormaps["viridis"]
    per_row_any, rows_max = False, 1
    for i, (label, rows) in enumerate(panels):
        r, c = divmod(i, ncols)
        ax = grid[r * (2 if has_test else 1), c]
        per_row, n = _draw_stat(ax, rows, stat, index, log, colormap)
        per_row_any |= per_row
        rows_max = max(rows_max, n)
        if label:
            ax.set_title(label, fontsize=9)
        bottom = ax
        if has_test:
            bottom = grid[r * 2 + 1, c]
            test = rows.drop_duplicates("step").sort_values("step")
            test = test[np.isfinite(test["test_accuracy"].to_numpy(np.float64))]
            bottom.plot(test["step"], test["test_accuracy"], color="#d62728", marker="o",
                        markersize=3, lw=1.2, label="test accuracy")
            bottom.set_ylim(-0.02, 1.02)
            bottom.set_ylabel("test accuracy", color="#d62728")
            bottom.grid(True, alpha=0.3)
            loss = rows.drop_duplicates("step").sort_values("step")
            twin = bottom.twinx()
            twin.plot(loss["step"], loss["loss"], color="#7f7f7f", lw=0.8, alpha=0.8)
            twin.set_ylabel("training loss", color="#7f7f7f")
        bottom.set_xlabel("training step")
    for j in range(len(panels), nrows * ncols):
        r, c = divmod(j, ncols)
        for k in range(2 if has_test else 1):
            grid[r * (2 if has_test else 1) + k, c].set_visible(False)
    if per_row_any:
        norm = matplotlib.colors.Normalize(vmin=0, vmax=rows_max - 1)
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap),
                           ax=list(grid[::2 if has_test else 1].ravel()), shrink=0.9,
                           aspect=30)
        recurrent = index == "t" or ("model" in df.columns and df["model"].isin(
            ("lstm", "rnn")).all())
        bar.set_label("time step t (0 = first)" if recurrent else "layer (0 = input side)")
    fig.suptitle(f"{stat} over training steps", fontsize=10)
    if path is not None:
        # a SubFigure saves its Figure
        fig.savefig(path, dpi=dpi)  # type: ignore[union-attr]
    return fig
