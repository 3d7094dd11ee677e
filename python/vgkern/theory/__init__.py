"""vgkern.theory: what mean-field theory predicts for the gradients vgkern measures (NumPy and
SciPy only; no compiled code).

    from vgkern import theory
    mf = theory.mean_field("tanh", 1.5, 0.05, q0=1.0, depth=20)
    mf.gain, mf.q_star, mf.xi_grad, mf.log10_profile   # compare with GradReport
    theory.critical_sigma_w("tanh", 0.05)               # the edge of chaos

MLP: mean_field, gradient_profile, critical_sigma_w, init_sigmas (vgkern's inits as
sigma_w, sigma_b).
Batch norm: batch_norm_chi, batch_norm_gain, batch_norm_profile. Vanilla RNN: rnn_mean_field.
Sweep rows: predict_config, predicted_profile. Gaussian integrals: vgkern.theory.gaussian.
"""
from . import gaussian
from .gaussian import ACTIVATIONS
from .batchnorm import batch_norm_chi, batch_norm_gain, batch_norm_profile
from .inits import THEORY_INITS, init_sigmas
from .configs import predict_config, predicted_profile
from .mean_field import MeanField, critical_sigma_w, gradient_profile, length_map, mean_field
from .recurrent import rnn_mean_field

__all__ = ["ACTIVATIONS", "THEORY_INITS", "MeanField", "batch_norm_chi", "batch_norm_gain",
           "batch_norm_profile", "critical_sigma_w", "gaussian",
           "gradient_profile", "init_sigmas", "length_map", "mean_field", "predict_config",
           "predicted_profile", "rnn_mean_field"]
