"""Weight initialisations. Random numbers come from numpy.random.default_rng(seed) (PCG64, the
same stream on every platform), drawn in float64 layer by layer, weight then bias."""
import numpy as np

INITS = (
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    "scaled_normal",
)


def _orthogonal(rng, rows, cols):
    # As torch.nn.init.orthogonal_: QR of a Gaussian matrix, signs fixed by diag(R).
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q.T if rows < cols else q


def draw_layer(rng, init, fan_out, fan_in, *, sigma_w, sigma_b, gain):
    """Float64 (W (fan_out, fan_in), b (fan_out,) or None for 'zero unless bias_init')."""
    shape = (fan_out, fan_in)
    if init == "xavier_normal":
        return gain * np.sqrt(2.0 / (fan_in + fan_out)) * rng.standard_normal(shape), None
    if init == "xavier_uniform":
        a = gain * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape), None
    if init == "he_normal":
        return np.sqrt(2.0 / fan_in) * rng.standard_normal(shape), None
    if init == "he_uniform":
        a = np.sqrt(6.0 / fan_in)
        return rng.uniform(-a, a, shape), None
    if init == "lecun_normal":
        return np.sqrt(1.0 / fan_in) * rng.standard_normal(shape), None
    if init == "orthogonal":
        return gain * _orthogonal(rng, fan_out, fan_in), None
    if init == "scaled_normal":  # mean-field convention: W ~ N(0, sigma_w^2 / fan_in), b ~ N(0, sigma_b^2)
        w = sigma_w / np.sqrt(fan_in) * rng.standard_normal(shape)
        return w, sigma_b * rng.standard_normal(fan_out)
    raise ValueError(f"MLP: init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
