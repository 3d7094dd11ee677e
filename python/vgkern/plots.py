"""Plots of sweep results (matplotlib, imported only when a plot is made).

    table = vgkern.sweep(...)                      # or vgkern.read_results("results.parquet")
    vgkern.plot_gradient_norms(table, depth=30)    # log10 ||dL/dz_l|| vs layer, one line per group
    vgkern.plot_gradient_heatmap(table)            # log10 ||dL/dz_l|| over (depth x layer)
    vgkern.plot_gain_vs_depth(table)               # fitted gain per layer vs depth
    vgkern.plot_sweep(table, "fig.png")            # all of them in one figure (`vgkern plot`)

A "group" is one line: the configuration columns that vary in the (filtered) table, except seed
and depth; lines show the mean over seeds, the band the range (min..max) over seeds. Colour
encodes the activation (or LSTM/RNN), line style batch norm (solid off, dashed on), markers the
init. Predictions of mean-field theory (vgkern.theory, where it covers the configuration: see
vgkern.theory.configs) are drawn as thin dashed lines in the group's colour; theory=False
leaves them out.
Every function takes `step` (the training step to show, default 0) and `where`, a dict
{column: value or list of values} that filters the rows first. They draw into `ax` (or make a
new matplotlib Figure, without pyplot, so they work in scripts, threads and notebooks) and
return the Figure.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import matplotlib.axes
    import matplotlib.figure
    import pandas
    import pyarrow

# a sweep's results: its table, the same as a pyarrow Table, or the path of a results file
Results = Union["pandas.DataFrame", "pyarrow.Table", str, "os.PathLike[str]"]

GROUP_COLUMNS = ("model", "data", "activation", "init", "sigma_w", "sigma_b", "batch_norm",
                 "width", "batch", "dtype", "steps", "lr", "log_scale", "forget_bias",
                 "optimizer", "momentum", "weight_decay", "eval_every")
COLORS = {"sigmoid": "#1f77b4", "tanh": "#ff7f0e", "relu": "#2ca02c", "elu": "#d62728",
          "identity": "#7f7f7f", "lstm": "#9467bd", "rnn/tanh": "#8c564b", "rnn/relu": "#e377c2"}
EXTRA_COLORS = ("#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39")
MARKERS = ("", "o", "s", "^", "D", "v", "P", "X")
STAT_LABEL = {"mlp": r"log$_{10}$ $\|\partial L/\partial z_l\|$",
              "recurrent": r"log$_{10}$ $\|\partial L/\partial x_t\|$"}


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("vgkern plots need matplotlib: pip install 'vgkern[sweep]'") from err
    return matplotlib, Figure


def _frame(results):
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results
    if isinstance(results, (str, bytes)) or hasattr(results, "__fspath__"):
        from .sweeps import read_results

        return read_results(results)
    if hasattr(results, "to_pandas"):  # a pyarrow Table
        return results.to_pandas()
    raise TypeError(f"expected a sweep table (DataFrame), a pyarrow Table or a path, got "
                    f"{type(results).__name__}")


def _filter(df, where, step, what, over_steps=False):
    """The rows of `where`, then of training step `step`. step=None keeps every step only for
    plots over the steps (over_steps); the others refuse it rather than average the steps."""
    if where:
        for key, value in where.items():
            if key not in df.columns:
                raise ValueError(f"{what}: where: no column {key!r}; columns: {', '.join(df.columns)}")
            values = list(value) if isinstance(value, (list, tuple, set, range)) else [value]
            df = df[df[key].isin(values)]
    if step is None and not over_steps and "step" in df.columns and df["step"].nunique() > 1:
        steps = sorted(df["step"].unique().tolist())
        raise ValueError(f"{what}: step=None would average {len(steps)} training steps "
                         f"({steps[0]}..{steps[-1]}); pass step=N to show one of them, or plot "
                         "a statistic over the steps with vgkern.plot_training(table, stat=...)")
    if step is not None and "step" in df.columns:
        if len(df) and step not in set(df["step"].unique()):
            raise ValueError(f"{what}: no rows with step={step}; steps in the table: "
                             f"{sorted(df['step'].unique().tolist())}")
        df = df[df["step"] == step]
    return df


def _split_models(df, model, what):
    if model == "mlp":
        part = df[df["model"] == "mlp"]
    elif model in ("recurrent", "lstm", "rnn"):
        part = df[df["model"].isin(("lstm", "rnn") if model == "recurrent" else (model,))]
    else:
        raise ValueError(f"{what}: model must be 'mlp', 'lstm', 'rnn' or 'recurrent', got {model!r}")
    return part


def _varying(df, exclude=("depth",)):
    """Columns that tell the lines apart: 'model' if several models are present, and the
    columns that vary among the rows of one model (a column that is only empty for the other
    models, like init for LSTM rows, does not count)."""
    cols = []
    models = df["model"].unique() if "model" in df.columns else [None]
    for c in GROUP_COLUMNS:
        if c in exclude or c not in df.columns:
            continue
        if c == "model":
            if len(models) > 1:
                cols.append(c)
            continue
        if any((df[c] if m is None else df.loc[df["model"] == m, c]).nunique(dropna=False) > 1
               for m in models):
            cols.append(c)
    return cols


def _fmt(v):
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _label(key, cols):
    """Readable label of one group."""
    d = dict(zip(cols, key))
    parts = []
    model = d.get("model")
    if model in ("lstm", "rnn"):
        parts.append(model.upper())
    act, init = d.get("activation"), d.get("init")
    if "activation" in d and isinstance(act, str):
        parts.append(act)
    if "init" in d and isinstance(init, str):
        if init == "scaled_normal":
            sw, sb = d.get("sigma_w"), d.get("sigma_b")
            parts.append("scaled σw=" + (_fmt(sw) if sw is not None else "?")
                         + (f" σb={_fmt(sb)}" if sb is not None and sb == sb and sb != 0 else ""))
        else:
            parts.append(init)
    elif ("sigma_w" in d or "sigma_b" in d) and init is None:
        sw, sb = d.get("sigma_w"), d.get("sigma_b")
        if sw == sw and sw is not None:
            parts.append(f"σw={_fmt(sw)}")
        if sb == sb and sb is not None:
            parts.append(f"σb={_fmt(sb)}")
    if "batch_norm" in d and model not in ("lstm", "rnn"):
        parts.append("BN" if d["batch_norm"] else "no BN")
    for c in cols:
        if c in ("model", "activation", "init", "sigma_w", "sigma_b", "batch_norm"):
            continue
        v = d[c]
        if v is None or (isinstance(v, float) and v != v):
            continue
        parts.append(f"{c}={_fmt(v)}")
    return ", ".join(parts) if parts else "all"


def _groups(df, cols):
    """[(key tuple, label, sub-frame)] in a stable, readable order."""
    if not cols:
        return [((), "all", df)]
    out = []
    for key, sub in df.groupby(list(cols), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((key, _label(key, cols), sub))
    return out


class _Styler:
    """Colour by activation/model, line style by batch norm, marker by init (and sigma)."""

    def __init__(self, df):
        self._extra = {}
        inits = []
        if "init" in df.columns:
            for _, row in df[["init", "sigma_w", "sigma_b"]].drop_duplicates().iterrows():
                inits.append(self._init_key(row))
        inits = sorted(set(inits), key=str)
        self._markers = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(inits)}

    @staticmethod
    def _init_key(d):
        init = d.get("init")
        if init == "scaled_normal":
            return (init, float(d.get("sigma_w")), float(d.get("sigma_b")))
        return (init if isinstance(init, str) else None,)

    def __call__(self, sub: Any) -> Dict[str, Any]:  # keyword arguments of Axes.plot
        row = sub.iloc[0]
        model, act = row.get("model"), row.get("activation")
        name = ("lstm" if model == "lstm" else f"rnn/{act}" if model == "rnn"
                else act if isinstance(act, str) else "?")
        color = COLORS.get(name)
        if color is None:
            color = self._extra.setdefault(name, EXTRA_COLORS[len(self._extra) % len(EXTRA_COLORS)])
        linestyle = "--" if bool(row.get("batch_norm", False)) else "-"
        marker = self._markers.get(self._init_key(row), "")
        return dict(color=color, linestyle=linestyle, marker=marker)


def _legend_layout(labels):
    """(columns outside the axes on the right (0: inside), font size, width in inches)."""
    n = len(labels)
    longest = max((len(str(label)) for label in labels), default=0)
    fontsize = 8 if n <= 10 else 7 if n <= 20 else 6
    if n <= 1 or (n <= 8 and longest <= 28):
        return 0, fontsize, 0.0
    cols = 1 if n <= 16 else 2
    return cols, fontsize, cols * (longest * fontsize * 0.55 / 72 + 0.55) + 0.2


def _legend(ax, labels):
    if len(labels) <= 1:
        return
    cols, fontsize, _ = _legend_layout(labels)
    if not cols:
        ax.legend(fontsize=fontsize, frameon=False, loc="best")
    else:
        ax.legend(fontsize=fontsize, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=cols, borderaxespad=0.0)


def _new_axes(ax, figsize, labels=()):
    if ax is not None:
        return ax.figure, ax
    _, Figure = _matplotlib()
    width, height = figsize
    fig = Figure(figsize=(width + _legend_layout(labels)[2], height), layout="constrained")
    return fig, fig.add_subplot()


THEORY_STYLE: Dict[str, Any] = dict(linestyle=(0, (3, 2)), lw=1.1, alpha=0.9, marker="")


def _predicted_profile(sub, num_layers):
    """The theory's log10 profile (num_layers,) for a group's configuration, or None."""
    from .sweeps.summary import _THEORY_KEYS, _input_q
    from .theory import predicted_profile

    row = sub.iloc[0]
    if any(k not in sub.columns for k in _THEORY_KEYS):
        return None
    config = {k: row[k] for k in _THEORY_KEYS}
    return predicted_profile(config, num_layers, _input_q(config["data"]))


def _curve_column(model):
    return "log10_preact_grad_norm" if model == "mlp" else "log10_x_grad_norm"


def plot_gradient_norms(results: Results, depth: Optional[int] = None, *, step: int = 0,
                        model: str = "mlp", where: Optional[Dict[str, Any]] = None,
                        ax: Optional[matplotlib.axes.Axes] = None, theory: bool = True
                        ) -> matplotlib.figure.Figure:
    """log10 gradient norm against the layer index (MLP: ||dL/dz_l||; model="lstm"/"rnn"/
    "recurrent": ||dL/dx_t|| against the time step), one line per group, for one depth
    (default: the largest in the table; for LSTM/RNN the sequence length). theory=True: the
    predicted profile, dashed, anchored at the measured mean of the last layer."""
    what = "plot_gradient_norms"
    df = _filter(_frame(results), where, step, what)
    df = _split_models(df, model, what)
    if not len(df):
        raise ValueError(f"{what}: no {model} rows to plot (after where={where!r}, step={step})")
    depths = sorted(df["depth"].unique().tolist())
    if depth is None:
        depth = depths[-1]
    if depth not in depths:
        raise ValueError(f"{what}: no {model} rows with depth={depth}; depths in the table: {depths}")
    df = df[df["depth"] == depth]
    y_col = _curve_column("mlp" if model == "mlp" else "recurrent")
    groups = _groups(df, _varying(df))
    fig, ax = _new_axes(ax, (7.5, 4.5), [g[1] for g in groups])
    style = _Styler(df)
    n_seeds = df["seed"].nunique()
    underflow = bool(np.isneginf(df[y_col].to_numpy(np.float64)).any())
    drawn_theory = False
    for _, label, sub in groups:
        y = sub[y_col].replace([np.inf, -np.inf], np.nan)
        stats = y.groupby(sub["layer"]).agg(["mean", "min", "max"])
        st = style(sub)
        every = max(1, len(stats) // 12)
        ax.plot(stats.index, stats["mean"], label=label, lw=1.6, markevery=every,
                markersize=4, **st)
        if n_seeds > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=st["color"],
                            alpha=0.12, lw=0)
        predicted = _predicted_profile(sub, len(stats)) if theory else None
        if predicted is not None and np.isfinite(stats["mean"].iloc[-1]):
            ax.plot(stats.index, predicted + stats["mean"].iloc[-1], color=st["color"],
                    **THEORY_STYLE)
            drawn_theory = True
    if model == "mlp":
        ax.set_xlabel("layer l (0 = input side)")
        title = f"Gradient norm per layer, depth {depth}"
    else:
        ax.set_xlabel("time step t (the loss is on the last step)")
        title = f"Gradient norm through time, T = {depth}"
    ax.set_ylabel(STAT_LABEL["mlp" if model == "mlp" else "recurrent"])
    seeds = f"mean of {n_seeds} seeds (band: min-max)" if n_seeds > 1 else "1 seed"
    if underflow:
        seeds += "; lines end where the gradient underflows to 0"
    if drawn_theory:
        seeds += "; thin dashed: theory"
    ax.set_title(f"{title}\n{seeds}, step {step}" if step is not None else title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(ax, [g[1] for g in groups])
    return fig


def plot_gradient_heatmap(results: Results, *, step: int = 0, model: str = "mlp",
                          where: Optional[Dict[str, Any]] = None,
                          fig: Optional[Union[matplotlib.figure.Figure,
                                              matplotlib.figure.SubFigure]] = None,
                          max_panels: int = 24, ncols: int = 4
                          ) -> Union[matplotlib.figure.Figure, matplotlib.figure.SubFigure]:
    """Heatmaps of log10 ||dL/dz_l|| over (depth x layer), one panel per group (mean over
    seeds), with one shared colour scale. `fig`: a matplotlib Figure or SubFigure to draw in."""
    what = "plot_gradient_heatmap"
    df = _filter(_frame(results), where, step, what)
    df = _split_models(df, model, what)
    if not len(df):
        raise ValueError(f"{what}: no {model} rows to plot (after where={where!r}, step={step})")
    y_col = _curve_column("mlp" if model == "mlp" else "recurrent")
    groups = _groups(df, _varying(df))
    if len(groups) > max_panels:
        raise ValueError(f"{what}: {len(groups)} groups is more than max_panels={max_panels}; "
                         "narrow the table with where={...}")
    depths = sorted(df["depth"].unique().tolist())
    width = int(df["layer"].max()) + 1
    mats = []
    for _, label, sub in groups:
        m = np.full((len(depths), width), np.nan)  # NaN: no such layer (drawn blank)
        y = sub[y_col].replace(np.inf, np.nan)  # -inf: the gradient underflowed to 0
        mean = y.groupby([sub["depth"], sub["layer"]]).mean()
        rows = np.searchsorted(depths, mean.index.get_level_values(0))
        m[rows, mean.index.get_level_values(1).to_numpy()] = mean.to_numpy()
        mats.append((label, m))
    finite = np.concatenate([m[np.isfinite(m)] for _, m in mats]) if mats else np.array([])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    underflow = any(np.isneginf(m).any() for _, m in mats)
    mats = [(label, np.where(np.isneginf(m), vmin - 1.0, m)) for label, m in mats]
    matplotlib, _ = _matplotlib()
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="black")
    ncols = max(1, min(ncols, len(mats)))
    nrows = -(-len(mats) // ncols)
    if fig is None:
        _, Figure = _matplotlib()
        fig = Figure(figsize=(3.4 * ncols + 1.0, 2.6 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    image = None
    for ax, (label, m) in zip(axes, mats):
        image = ax.imshow(m, aspect="auto", origin="lower", interpolation="nearest",
                          cmap=cmap, vmin=vmin, vmax=vmax,
                          extent=(-0.5, width - 0.5, -0.5, len(depths) - 0.5))
        ax.set_title(label, fontsize=9)
        ticks = np.arange(len(depths))
        if len(depths) > 12:
            ticks = ticks[:: -(-len(depths) // 12)]
        ax.set_yticks(ticks, [str(depths[i]) for i in ticks], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("layer" if model == "mlp" else "time step", fontsize=8)
        ax.set_ylabel("depth" if model == "mlp" else "T", fontsize=8)
    for ax in axes[len(mats):]:
        ax.set_visible(False)
    if image is not None:
        cbar = fig.colorbar(image, ax=list(axes[:len(mats)]), shrink=0.9, aspect=30,
                            extend="min" if underflow else "neither")
        cbar.set_label(STAT_LABEL["mlp" if model == "mlp" else "recurrent"])
    seeds = df["seed"].nunique()
    note = ("; black: the gradient underflowed to 0 (log_scale=True gives exact log-norms)"
            if underflow else "")
    fig.suptitle(f"Gradient norm over depth x layer (mean of {seeds} seed{'s' * (seeds > 1)}, "
                 f"step {step}; blank: no such layer{note})", fontsize=10)
    return fig


def plot_gain_vs_depth(results: Results, *, step: int = 0,
                       where: Optional[Dict[str, Any]] = None,
                       ax: Optional[matplotlib.axes.Axes] = None, model: Optional[str] = None,
                       theory: bool = True) -> matplotlib.figure.Figure:
    """The fitted gain per layer (10**-slope of log10 ||dL/dz_l|| against l; LSTM/RNN: of
    ||dL/dx_t|| against t) against depth (T), one line per group: mean over seeds, error bars
    min..max. Accepts a sweep table or its sweep_summary(). theory=True: the summary's
    predicted_gain, dashed, where it is finite."""
    from .sweeps import sweep_summary

    what = "plot_gain_vs_depth"
    df = _frame(results)
    summary = df if "gain" in df.columns else sweep_summary(df)
    summary = _filter(summary, where, step, what)
    if model is not None:
        summary = _split_models(summary, model, what)
    summary = summary[np.isfinite(summary["gain"])]
    if not len(summary):
        raise ValueError(f"{what}: no configuration with a finite gain (depth >= 2) to plot")
    groups = _groups(summary, _varying(summary))
    fig, ax = _new_axes(ax, (7.0, 4.5), [g[1] for g in groups])
    style = _Styler(summary)
    n_seeds = summary["seed"].nunique()
    for _, label, sub in groups:
        stats = sub.groupby("depth")["gain"].agg(["mean", "min", "max"])
        st = style(sub)
        yerr = None
        if n_seeds > 1:
            yerr = np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]])
        ax.errorbar(stats.index, stats["mean"], yerr=yerr, label=label, lw=1.6, capsize=2,
                    markersize=4, **st)
        predicted = sub.groupby("depth")["predicted_gain"].mean() if (
            theory and "predicted_gain" in sub.columns) else None
        if predicted is not None and np.isfinite(predicted).any():
            ax.plot(predicted.index, predicted, color=st["color"], **THEORY_STYLE)
    ax.axhline(1.0, color="black", lw=0.8, alpha=0.6)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = summary["gain"].min(), summary["gain"].max()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    depths = sorted(summary["depth"].unique().tolist())
    if depths[-1] >= 8 * max(1, depths[0]):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(depths) <= 12:
        ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth L (LSTM/RNN: sequence length T)")
    ax.set_ylabel("gain per layer  (< 1 vanishing, > 1 exploding)")
    seeds = f"mean of {n_seeds} seeds (bars: min-max)" if n_seeds > 1 else "1 seed"
    if theory and "predicted_gain" in summary.columns and np.isfinite(
            summary["predicted_gain"]).any():
        seeds += "; thin dashed: theory"
    ax.set_title(f"Fitted gain per layer vs depth\n{seeds}, step {step}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, [g[1] for g in groups])
    return fig


def plot_sweep(results: Results, path: Optional[Union[str, os.PathLike[str]]] = None, *,
               depth: Optional[int] = None, step: int = 0,
               where: Optional[Dict[str, Any]] = None, dpi: int = 120, max_panels: int = 24,
               theory: bool = True) -> matplotlib.figure.Figure:
    """One figure with everything: gradient norm vs layer at one depth, gain vs depth, (LSTM/RNN:
    gradient norm through time) and the depth x layer heatmaps; theory=True adds the dashed
    predictions to the first three. Saved to `path` if given (format from the extension: .png,
    .pdf, .svg); returns the Figure."""
    _, Figure = _matplotlib()
    df = _filter(_frame(results), where, step, "plot_sweep")
    if not len(df):
        raise ValueError(f"plot_sweep: nothing to plot (after where={where!r}, step={step})")
    has_mlp = bool((df["model"] == "mlp").any())
    has_rec = bool(df["model"].isin(("lstm", "rnn")).any())
    top = (["norms"] if has_mlp else []) + ["gain"] + (["time"] if has_rec else [])
    mlp = df[df["model"] == "mlp"]
    n_groups = len(_groups(mlp, _varying(mlp))) if has_mlp else 0
    heat = has_mlp and n_groups <= max_panels
    hcols = max(1, min(4, n_groups))
    hrows = -(-n_groups // hcols) if heat else 0
    labels = [g[1] for g in _groups(mlp, _varying(mlp))] if has_mlp else []
    every = [g[1] for g in _groups(df, _varying(df))]  # the gain panel has every group
    legends = _legend_layout(labels)[2] + _legend_layout(every)[2]
    width = max(6.0 * len(top) + 1.0 + legends, 3.4 * hcols + 1.0)
    top_h = 5.0
    fig = Figure(figsize=(width, top_h + 2.6 * hrows + (0.6 if heat else 0)), layout="constrained")
    if heat:
        sub_top, sub_heat = fig.subfigures(2, 1, height_ratios=[top_h, 2.6 * hrows + 0.6])
    else:
        sub_top, sub_heat = fig, None
    axes = np.atleast_1d(sub_top.subplots(1, len(top), squeeze=False)).ravel()
    for ax, kind in zip(axes, top):
        if kind == "norms":
            plot_gradient_norms(df, depth, step=step, model="mlp", ax=ax, theory=theory)
        elif kind == "gain":
            plot_gain_vs_depth(df, step=step, ax=ax, theory=theory)
        else:
            plot_gradient_norms(df, None, step=step, model="recurrent", ax=ax, theory=theory)
    if heat:
        plot_gradient_heatmap(df, step=step, model="mlp", fig=sub_heat, ncols=hcols,
                              max_panels=max_panels)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
