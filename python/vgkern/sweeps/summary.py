"""sweep_summary: per (configuration, step), the fitted per-layer gain and the first/last ratio."""
import numpy as np

from . import store
from .spec import CONFIG_COLUMNS

SUMMARY_COLUMNS = ("slope", "gain", "log10_ratio_first_last", "ratio_first_last", "num_layers",
                   "gain_stat")
# The statistic a configuration's gain is fitted to: MLP rows ||dL/dz_l||, LSTM/RNN ||dL/dx_t||.
GAIN_STAT = {"mlp": "log10_preact_grad_norm", "lstm": "log10_x_grad_norm",
             "rnn": "log10_x_grad_norm"}


def sweep_summary(table):
    """Per (configuration, step): the fitted per-layer gain and the first/last ratio.

    slope: least-squares slope of log10 ||dL/dz_l|| (MLP; LSTM/RNN: log10 ||dL/dx_t||) against
        the layer (time step) index, over the finite values: orders of magnitude per layer,
        positive when the gradient is smaller at the input side (vanishing).
    gain: 10 ** -slope, the factor by which one layer (step) of backpropagation multiplies the
        gradient norm: < 1 vanishing, > 1 exploding, 1 for a perfectly balanced network.
    log10_ratio_first_last, ratio_first_last: norm at layer 0 over norm at the last layer.
    gain_stat: the column the gain was fitted to. Columns: the configuration's, then 'step',
    'loss' and the above. NaN where fewer than two finite values exist.
    """
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else store.to_pandas(table)
    if not len(df):
        return pd.DataFrame(columns=["config_id", *CONFIG_COLUMNS, "step", "loss", *SUMMARY_COLUMNS])
    df = df.reset_index(drop=True)
    is_mlp = (df["model"] == "mlp").to_numpy()
    y = np.where(is_mlp, df[GAIN_STAT["mlp"]].to_numpy(np.float64),
                 df[GAIN_STAT["lstm"]].to_numpy(np.float64))
    x = df["layer"].to_numpy(np.float64)
    codes, uniques = pd.factorize(pd.MultiIndex.from_arrays([df["config_id"], df["step"]]),
                                  sort=False)
    n_groups = len(uniques)
    # least squares over the finite values of each group, from sums
    ok = np.isfinite(y)
    xs, ys = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    sums = lambda v: np.bincount(codes, weights=v, minlength=n_groups)
    n, sx, sy, sxx, sxy = sums(ok.astype(np.float64)), sums(xs), sums(ys), sums(xs * xs), sums(xs * ys)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = n * sxx - sx * sx
        slope = np.where((n >= 2) & (denom > 0), (n * sxy - sx * sy) / denom, np.nan)
    # first and last layer of each group
    order = np.lexsort((x, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    first, last = order[starts], order[ends]
    out = df.loc[first, ["config_id", *CONFIG_COLUMNS, "step", "loss"]].reset_index(drop=True)
    with np.errstate(invalid="ignore", over="ignore"):
        out["slope"] = slope
        out["gain"] = np.power(10.0, -slope)
        log_ratio = y[first] - y[last]
        out["log10_ratio_first_last"] = log_ratio
        out["ratio_first_last"] = np.power(10.0, log_ratio)
    out["num_layers"] = np.bincount(codes, minlength=n_groups)
    out["gain_stat"] = np.where(out["model"].to_numpy() == "mlp", GAIN_STAT["mlp"], GAIN_STAT["lstm"])
    return out
