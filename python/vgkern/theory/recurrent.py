"""Vanilla (Elman) RNN at initialisation: the mean-field gradient factor per time step (Chen,
Pennington, Schoenholz 2018, "Dynamical Isometry and a Mean Field Theory of RNNs").

Setting (vgkern.RNN): h_t = phi(u_t), u_t = W_hh h_{t-1} + W_ih x_t + b, h_{-1} = 0 (vgkern's
default h0), weight_hh (H, H) entries N(0, sigma_w^2 / H), weight_ih (H, I) entries
N(0, sigma_v^2 / I), bias entries N(0, sigma_b^2), inputs x_t with mean square q_x per entry,
independent over time. vgkern.RNN's own init is torch's uniform one (sigma_w^2 = H Var W =
1/3, sigma_v^2 = I / (3 H), sigma_b^2 = 2 / (3 H): two uniform biases); pass those to compare.

In the wide limit u_t is Gaussian with variance q_t = sigma_w^2 E[phi(sqrt(q_{t-1}) z)^2] +
sigma_v^2 q_x + sigma_b^2, q_0 = sigma_v^2 q_x + sigma_b^2: the MLP's length map with
sigma_b_eff^2 = sigma_v^2 q_x + sigma_b^2 and q0 = 0. Backpropagating from step t+1 to t
multiplies ||dL/du||^2 (and so ||dL/dx_t|| = ||(dL/du_t) W_ih||, up to sigma_v) by
chi1(q_t) = sigma_w^2 E[phi'(sqrt(q_t) z)^2]. Chen et al. show this holds for tied weights
across time at large width (the gradient-independence assumption holds as for the MLP).

LSTM: left out. Its mean-field theory (Chen et al. 2018, and the minimalRNN of the same paper)
needs the joint Gaussian statistics of four gates and the cell-state recursion; vgkern's LSTM
uses torch's uniform init, and no closed prediction is offered here.
"""
from __future__ import annotations

import math
from typing import Optional

from .mean_field import MeanField, _number, mean_field

RNN_NONLINEARITIES = ("tanh", "relu")


def rnn_mean_field(nonlinearity: str, sigma_w: float, sigma_b: float = 0.0, *,
                   sigma_v: float = 1.0, input_q: float = 1.0, steps: Optional[int] = None
                   ) -> MeanField:
    """MeanField of a vanilla RNN (fields as mean_field's): q_star, chi1, gain (the predicted
    factor of ||dL/dx_t|| and ||dL/dh_t|| per step back in time at the fixed point), xi's; with
    steps = T, q_layers[t] = Var u_t from h_{-1} = 0 and log10_profile[t] = predicted
    log10 ||dL/dx_t|| - log10 ||dL/dx_{T-1}|| for a loss on the last hidden state only
    (SequenceReport.log10_x_grad_norm, step 0 first)."""
    if nonlinearity not in RNN_NONLINEARITIES:
        raise ValueError(f"rnn_mean_field: nonlinearity must be one of "
                         f"{', '.join(map(repr, RNN_NONLINEARITIES))}, got {nonlinearity!r}")
    sigma_v = _number("rnn_mean_field: sigma_v", sigma_v)
    input_q = _number("rnn_mean_field: input_q", input_q)
    sigma_b = _number("rnn_mean_field: sigma_b", sigma_b)
    sigma_b_eff = math.sqrt(sigma_v ** 2 * input_q + sigma_b ** 2)
    return mean_field(nonlinearity, sigma_w, sigma_b_eff, q0=None if steps is None else 0.0,
                      depth=steps)
