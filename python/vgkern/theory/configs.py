"""Predictions for sweep configurations (the rows of vgkern.sweep's tables): the gain that
sweep_summary fits and the first/last ratio, from the configuration alone.

Which configurations the theory covers (NaN for the others):
    mlp, init scaled_normal / he / lecun (any data), xavier (data="gaussian": square layers),
        with or without batch norm (batch norm: the large-batch rate, see batchnorm.py);
        orthogonal is outside the Gaussian theory.
    rnn, data="gaussian": vgkern.RNN's torch-uniform init, sigma_w^2 = 1/3 (weight_hh),
        sigma_v^2 = 1/3 (weight_ih with I = H), sigma_b^2 = 2 / (3 H), inputs N(0, 1).
    lstm: not covered (see recurrent.py).
The inputs: data="gaussian" has standard-normal entries (q0 = 1); data="digits" passes its
mean square as input_q. The prediction is for the initial weights: rows of later training steps
are compared with the same prediction, so their gain_error shows how far training moved them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from .batchnorm import batch_norm_profile
from .inits import init_sigmas
from .mean_field import gradient_profile
from .recurrent import rnn_mean_field

NAN_PAIR = (math.nan, math.nan)


def profile_gain(profile: Union[Sequence[float], NDArray[np.float64]]) -> float:
    """10 ** -(least-squares slope of a log10 profile: (L,) against its index), as
    sweep_summary fits the measured one; NaN for fewer than two layers."""
    if len(profile) < 2:
        return math.nan
    return float(10.0 ** -np.polyfit(np.arange(len(profile), dtype=np.float64), profile, 1)[0])


def predicted_profile(config: Mapping[str, Any], num_layers: int, input_q: float = 1.0
                      ) -> Optional[NDArray[np.float64]]:
    """Returns the predicted log10 profile: (num_layers,) of a sweep configuration (a mapping
    with the sweep's configuration keys), relative to its last layer; None where the theory
    does not cover it."""
    model = config["model"]
    if model == "rnn":
        if config["data"] != "gaussian":
            return None
        H = config["width"]
        return rnn_mean_field(config["activation"], math.sqrt(1 / 3), math.sqrt(2 / (3 * H)),
                              sigma_v=math.sqrt(1 / 3), input_q=1.0,
                              steps=num_layers).log10_profile
    if model != "mlp":
        return None
    init = config["init"]
    if init.startswith("xavier") and config["data"] != "gaussian":
        return None  # non-square first and last layers: sigma_w differs by layer
    try:
        sigma_w, sigma_b = init_sigmas(init, sigma_w=config["sigma_w"], sigma_b=config["sigma_b"])
    except ValueError:  # orthogonal
        return None
    if config["batch_norm"]:
        return batch_norm_profile(config["activation"], num_layers, input_var=input_q)
    return gradient_profile(config["activation"], sigma_w, sigma_b, q0=input_q, depth=num_layers)


def predict_config(config: Mapping[str, Any], num_layers: int, input_q: float = 1.0
                   ) -> Tuple[float, float]:
    """(predicted_gain, predicted_log10_ratio_first_last) of a configuration, NaN where not
    covered."""
    profile = predicted_profile(config, num_layers, input_q)
    if profile is None:
        return NAN_PAIR
    return profile_gain(profile), float(profile[0])
