"""vgkern's named inits (vgkern.init.draw_layer, W_l of shape (fan_out, fan_in)) as the
(sigma_w, sigma_b) of mean-field theory, where W ~ N(0, sigma_w^2 / fan_in), b ~ N(0, sigma_b^2).

Only the variance of W enters the theory (uniform inits are covered by their variance, as
the Gaussian limit of z = W h does not depend on the entries' law):
    scaled_normal          sigma_w, sigma_b as given
    xavier_normal/uniform  Var W = gain^2 * 2 / (fan_in + fan_out): sigma_w = gain at
                           fan_in = fan_out (gain * sqrt(2 fan_in / (fan_in + fan_out)) else)
    he_normal/uniform      Var W = 2 / fan_in: sigma_w = sqrt(2)
    lecun_normal           Var W = 1 / fan_in: sigma_w = 1
    orthogonal             outside the Gaussian theory: the singular values of W are all 1
                           (dynamical isometry, Pennington et al. 2017), so products of layers
                           do not behave as Gaussian ones; refused.
The inits other than scaled_normal have constant biases (0, or bias_init): 0 is sigma_b = 0; a
nonzero constant shifts every pre-activation's mean, which the zero-mean theory does not cover,
and is refused.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

THEORY_INITS = ("scaled_normal", "xavier_normal", "xavier_uniform", "he_normal", "he_uniform",
                "lecun_normal")


def init_sigmas(init: str, *, sigma_w: Optional[float] = None, sigma_b: Optional[float] = None,
                bias_init: Optional[float] = None, gain: float = 1.0,
                fan_in: Optional[int] = None, fan_out: Optional[int] = None
                ) -> Tuple[float, float]:
    """(sigma_w, sigma_b) of a vgkern init (arguments as vgkern.MLP's); fan_in/fan_out matter
    for xavier only (default: equal). ValueError for orthogonal, a nonzero bias_init or an
    unknown init."""
    if init == "orthogonal":
        raise ValueError("init_sigmas: init='orthogonal' is outside the Gaussian mean-field "
                         "theory (orthogonal W has all singular values 1, not a Gaussian "
                         f"spectrum); expected one of {', '.join(map(repr, THEORY_INITS))}")
    if init not in THEORY_INITS:
        raise ValueError(f"init_sigmas: init must be one of "
                         f"{', '.join(map(repr, THEORY_INITS))}, got {init!r}")
    if init == "scaled_normal":
        return (1.0 if sigma_w is None else float(sigma_w),
                0.0 if sigma_b is None else float(sigma_b))
    if bias_init not in (None, 0, 0.0):
        raise ValueError("init_sigmas: a constant nonzero bias_init shifts the mean of every "
                         "pre-activation, outside the zero-mean Gaussian theory; expected None or "
                         f"0, got {bias_init!r}")
    if init.startswith("xavier"):
        ratio = 1.0 if fan_in is None or fan_out is None else 2.0 * fan_in / (fan_in + fan_out)
        return float(gain) * math.sqrt(ratio), 0.0
    return (math.sqrt(2.0) if init.startswith("he") else 1.0), 0.0
