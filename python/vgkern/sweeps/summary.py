"""sweep_summary: per (configuration, step), the fitted per-layer gain and the first/last ratio."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

from . import store
from .spec import CONFIG_COLUMNS

if TYPE_CHECKING:
    import pandas
    import pyarrow

SUMMARY_COLUMNS = ("slope", "gain", "log10_ratio_first_last", "ratio_first_last", "num_layers",
                   "gain_stat", "predicted_gain", "predicted_log10_ratio", "gain_error")
# The configuration keys a prediction depends on (with the number of layers of the group).
_THEORY_KEYS = ("model", "data", "activation", "init", "sigma_w", "sigma_b", "batch_norm", "width")
# The statistic a configuration's gain is fitted to: MLP rows ||dL/dz_l||, LSTM/RNN ||dL/dx_t||.
GAIN_STAT = {"mlp": "log10_preact_grad_norm", "lstm": "log10_x_grad_norm",
             "rnn": "log10_x_grad_norm"}


def sweep_summary(table: Union[pandas.DataFrame, pyarrow.Table]) -> pandas.DataFrame:
    """Per (configuration, step): the fitted per-layer gain and the first/last ratio.

    slope: least-squares slope of log10 ||dL/dz_l|| (MLP; LSTM/RNN: log10 ||dL/dx_t||) against
        the layer (time step) index, over the finite values: orders of magnitude per layer,
        positive when the gradient is smaller at the input side (vanishing).
    gain: 10 ** -slope, the factor by which one layer (step) of backpropagation multiplies the
        gradient norm: < 1 vanishing, > 1 exploding, 1 for a perfectly balanced network.
    log10_ratio_first_last, ratio_first_last: norm at layer 0 over norm at the last layer.
    gain_stat: the column the gain was fitted to.
    predicted_gain, predicted_log10_ratio: what mean-field theory predicts for the initial
        weights of the configuration (vgkern.theory.predict_config: the same least-squares fit
        of the predicted profile, and its first/last log10 ratio); NaN where the theory does
        not cover it (orthogonal init, LSTM, xavier or RNN on digits).
    gain_error: log10(gain) - log10(predicted_gain), orders of magnitude per layer by which the
        measurement departs from theory (finite width, batch size, training steps).
    Columns: the configuration's, then 'step', 'loss' and the above. NaN where fewer than two
    finite values exist.
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
    _add_predictions(out)
    return out


def _input_q(data):
    """Mean square of the inputs' entries: 1 for data="gaussian", the standardised digits'."""
    if data == "digits":
        from .run import digits_data

        return float(np.mean(digits_data()[0] ** 2))
    return 1.0


def _add_predictions(out):
    """predicted_gain, predicted_log10_ratio and gain_error columns, one theory call per
    distinct configuration (seeds and steps share it)."""
    from ..theory import predict_config

    keys = out[list(_THEORY_KEYS)].to_dict("records")
    cache, gains, ratios = {}, [], []
    for config, layers in zip(keys, out["num_layers"].tolist()):
        key = tuple(config.values()) + (layers,)
        if key not in cache:
            cache[key] = predict_config(config, layers, _input_q(config["data"]))
        gains.append(cache[key][0])
        ratios.append(cache[key][1])
    out["predicted_gain"] = np.array(gains, dtype=np.float64)
    out["predicted_log10_ratio"] = np.array(ratios, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gain_error"] = (np.log10(out["gain"].to_numpy())
                             - np.log10(out["predicted_gain"].to_numpy()))
