"""Gradient explosion in batch-normalised MLPs at initialisation (Yang, Pennington, Rao,
Sohl-Dickstein, Schoenholz 2019, "A Mean Field Theory of Batch Normalization").

Setting (vgkern.MLP(batch_norm=True)): every hidden layer computes z_l = h_{l-1} W_l^T,
x_hat_l = BN(z_l) with batch statistics (training mode), gamma = 1, beta = 0 (the init),
h_l = phi(x_hat_l); the output layer has no BN. Backward, per hidden layer,
dL/dz_l = P(dL/dh_l * phi'(x_hat_l)) / std_batch(z_l), where P removes the batch mean and the
x_hat component (a rank-2 projection out of B dimensions), and dL/dh_{l-1} = dL/dz_l W_l, which
multiplies ||.||^2 by sigma_w^2 (gradient independence). The batch variance of z_l is
sigma_w^2 times the batch variance of h_{l-1}. So sigma_w cancels and each hidden layer
multiplies ||dL/dz||^2 towards the input by

    lambda = E[phi'(x)^2] / Var[phi(x)],  x ~ N(0, 1),

and the step into layer 0 by E[phi'(x)^2] / v_in (v_in: the input's per-feature batch
variance). By the Gaussian Poincare inequality lambda >= 1 with equality only for a linear phi:
batch norm makes the gradient explode for every nonlinearity (Yang et al.'s main result).
ReLU: lambda = (1/2) / (1/2 - 1/(2 pi)) = pi / (pi - 1) ~ 1.467 (gain ~ 1.211), Yang et al.'s
large-batch ReLU rate.

Assumptions: (1) large batch B: the entries of x_hat over the batch are then ~ iid N(0, 1) (BN
centres and scales them, and the large-B fixed point of the batch covariance is isotropic on the
centred subspace, Yang et al.'s BSB1 fixed point, reached at once here because the inputs are
iid); P's rank-2 removal is neglected. The corrections are O(1/B): Yang et al. give the exact
finite-B rate for ReLU, larger than pi / (pi - 1) at small B; this module does not. At small
batch (B = 8 and below, see README) the measured gain is visibly off this prediction, so do not
compare it there. (2) large width (gradient independence, as in mean_field). (3) Equal sigma_w
in all layers (it cancels), gamma = 1, beta = 0, training mode; eval mode (running statistics)
is not BN in this sense.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import NDArray

from . import gaussian
from .mean_field import _number, check_activation


def batch_norm_chi(activation: str, *, elu_alpha: float = 1.0) -> float:
    """lambda = E[phi'(x)^2] / Var[phi(x)] at x ~ N(0, 1): the factor of ||dL/dz||^2 per hidden
    batch-norm layer towards the input, in the large-batch, large-width limit. relu: exactly
    pi / (pi - 1); identity: 1."""
    activation = check_activation("batch_norm_chi", activation)
    elu_alpha = _number("batch_norm_chi: elu_alpha", elu_alpha)
    if activation == "relu":
        return math.pi / (math.pi - 1)
    if activation == "identity":
        return 1.0
    mean = gaussian.expectation(lambda u: gaussian.phi(activation, u, elu_alpha)[0], 1.0)
    e_phi2, e_dphi2, _ = gaussian.moments(activation, 1.0, elu_alpha)
    return e_dphi2 / (e_phi2 - mean * mean)


def batch_norm_gain(activation: str, *, elu_alpha: float = 1.0) -> float:
    """sqrt(batch_norm_chi): the predicted factor of ||dL/dz|| per hidden batch-norm layer."""
    return math.sqrt(batch_norm_chi(activation, elu_alpha=elu_alpha))


def batch_norm_profile(activation: str, depth: int, *, input_var: float = 1.0,
                       elu_alpha: float = 1.0) -> NDArray[np.float64]:
    """Returns the predicted profile: (depth,), log10 ||dL/dz_l|| - log10 ||dL/dz_{L-1}|| of
    vgkern.MLP(batch_norm=True), layer 0 = input side as GradReport (pre-BN gradients, as
    preact_grad_norm): each step from layer l+1 down to l >= 1 adds log10(lambda) / 2, the step
    into layer 0 log10(E[phi'^2] / input_var) / 2."""
    activation = check_activation("batch_norm_profile", activation)
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"batch_norm_profile: depth must be an integer >= 1, got {depth!r}")
    input_var = _number("batch_norm_profile: input_var", input_var, allow_equal=False)
    elu_alpha = _number("batch_norm_profile: elu_alpha", elu_alpha)
    steps = np.full(int(depth) - 1,
                    0.5 * math.log10(batch_norm_chi(activation, elu_alpha=elu_alpha)))
    if depth > 1:
        e_dphi2 = 0.5 if activation == "relu" else gaussian.moments(activation, 1.0, elu_alpha)[1]
        steps[0] = 0.5 * math.log10(e_dphi2 / input_var)
    return np.append(np.cumsum(steps[::-1])[::-1], 0.0)
