"""NumPy oracle for vgkern: every forward and backward, written for clarity, not speed.

Everything here computes in the dtype of its inputs: call it with float64 arrays for the
float64 oracle (the default of ``mlp_reference``), with ``np.longdouble`` arrays for a
higher-precision oracle (used to judge vgkern's float64 results) or with float32 arrays for
"a plain NumPy implementation in float32" (the yardstick of the tolerance rule in conftest.py).

The formulas are numerically safe: no overflow, no NaN and full relative accuracy for finite
inputs of any size (e.g. sigmoid is computed from exp(-|z|), which never overflows).

Conventions are those of the vgkern API contract:

* layer l has ``W_l`` of shape (d_{l+1}, d_l) and ``b_l`` of shape (d_{l+1},), like
  ``torch.nn.Linear``; ``z_l = h_{l-1} @ W_l.T + b_l``, ``h_l = act(z_l)``, ``h_{-1} = x``;
* hidden layers use ``activation``, the last layer uses ``output_activation``;
* ``act'(z)``: relu'(0) = 0, elu'(z) = alpha*exp(z) for z <= 0 (so elu'(0) = alpha), as in PyTorch.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "elu")

# Names of the per-layer GradReport fields (float64 arrays of length L).
NORM_FIELDS = ("weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm")
LOG10_FIELDS = tuple("log10_" + f for f in NORM_FIELDS)
FORWARD_STAT_FIELDS = ("preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
                       "dead_fraction")
REPORT_ARRAY_FIELDS = NORM_FIELDS + LOG10_FIELDS + FORWARD_STAT_FIELDS + ("grad_log2_scale",)


def _check_activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}")


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def sigmoid(z):
    """1 / (1 + exp(-z)), evaluated without overflow: with e = exp(-|z|) <= 1,
    sigmoid(z) = 1/(1+e) for z >= 0 and e/(1+e) for z < 0."""
    z = np.asarray(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_derivative(z):
    """sigmoid'(z) = sigmoid(z) * sigmoid(-z) = e / (1 + e)^2 with e = exp(-|z|) (even in z).
    Unlike s*(1-s) this keeps full relative accuracy for large |z|."""
    z = np.asarray(z)
    e = np.exp(-np.abs(z))
    return e / ((1 + e) * (1 + e))


def tanh(z):
    return np.tanh(np.asarray(z))


def tanh_derivative(z):
    """tanh'(z) = 1 - tanh(z)^2 = 1/cosh(z)^2 = 4e / (1 + e)^2 with e = exp(-2|z|)."""
    z = np.asarray(z)
    e = np.exp(-2 * np.abs(z))
    return 4 * e / ((1 + e) * (1 + e))


def relu(z):
    z = np.asarray(z)
    # np.where(z > 0, z, 0) would turn NaN into 0; NaN must propagate.
    return np.where(np.isnan(z), z, np.where(z > 0, z, np.zeros_like(z)))


def relu_derivative(z):
    """1 for z > 0, else 0 (relu'(0) = 0)."""
    z = np.asarray(z)
    return np.where(z > 0, np.ones_like(z), np.zeros_like(z))


def elu(z, alpha=1.0):
    """z for z > 0, alpha * (exp(z) - 1) (computed with expm1) for z <= 0."""
    z = np.asarray(z)
    neg = alpha * np.expm1(np.minimum(z, 0))  # min() keeps expm1 away from overflow
    return np.where(z > 0, z, neg)


def elu_derivative(z, alpha=1.0):
    """1 for z > 0, alpha * exp(z) for z <= 0 (so elu'(0) = alpha)."""
    z = np.asarray(z)
    neg = alpha * np.exp(np.minimum(z, 0))
    return np.where(z > 0, np.ones_like(z), neg).astype(z.dtype, copy=False)


def identity(z):
    return np.asarray(z).copy()


def identity_derivative(z):
    return np.ones_like(np.asarray(z))


def act(z, name, alpha=1.0):
    """h = act(z) elementwise (NaN in -> NaN out)."""
    _check_activation(name)
    if name == "identity":
        return identity(z)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return tanh(z)
    if name == "relu":
        return relu(z)
    return elu(z, alpha)


def act_derivative(z, name, alpha=1.0):
    """act'(z) elementwise, computed from z."""
    _check_activation(name)
    if name == "identity":
        return identity_derivative(z)
    if name == "sigmoid":
        return sigmoid_derivative(z)
    if name == "tanh":
        return tanh_derivative(z)
    if name == "relu":
        return relu_derivative(z)
    return elu_derivative(z, alpha)


def max_derivative(name, alpha=1.0):
    """The maximum of act'(z) over z, used by the saturated-fraction statistic."""
    _check_activation(name)
    return {"identity": 1.0, "sigmoid": 0.25, "tanh": 1.0, "relu": 1.0,
            "elu": max(1.0, alpha)}[name]


def saturated_mask(dact, name, alpha=1.0):
    """Entries whose activation derivative is below 1% of its maximum.
    Identity and relu are never counted as saturated."""
    if name in ("identity", "relu"):
        return np.zeros(np.shape(dact), dtype=bool)
    return np.asarray(dact) < 0.01 * max_derivative(name, alpha)


# --------------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------------

def activation_forward(z, name, alpha=1.0):
    """(h, dact) = (act(z), act'(z))."""
    return act(z, name, alpha), act_derivative(z, name, alpha)


def activation_backward(dh, z, name, alpha=1.0):
    """dz = dh * act'(z)."""
    return np.asarray(dh) * act_derivative(z, name, alpha)


def dense_forward(x, w, b=None, activation="identity", alpha=1.0):
    """z = x @ w.T + b; returns (h, dact) = (act(z), act'(z)), both (B, out)."""
    z = np.asarray(x) @ np.asarray(w).T
    if b is not None:
        z = z + np.asarray(b)
    return act(z, activation, alpha), act_derivative(z, activation, alpha)


def dense_preactivation(x, w, b=None):
    z = np.asarray(x) @ np.asarray(w).T
    if b is not None:
        z = z + np.asarray(b)
    return z


def dense_backward(dh, dact, x, w, need_dx=True):
    """delta = dh * dact; dw = delta.T @ x; db = delta.sum(0); dx = delta @ w."""
    delta = np.asarray(dh) * np.asarray(dact)
    dw = delta.T @ np.asarray(x)
    db = delta.sum(axis=0)
    dx = delta @ np.asarray(w) if need_dx else None
    return dx, dw, db


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def mse_loss(out, target):
    """loss = 0.5 * sum((out - target)^2) / B, dout = (out - target) / B."""
    out = np.asarray(out)
    diff = out - np.asarray(target)
    batch = out.shape[0]
    loss = 0.5 * np.sum(diff * diff) / batch
    return loss, diff / batch


def log_softmax(logits):
    logits = np.asarray(logits)
    m = np.max(logits, axis=1, keepdims=True)
    shifted = logits - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def cross_entropy_loss(logits, labels):
    """loss = mean over the batch of -log softmax(logits)[label];
    dlogits = (softmax(logits) - onehot(labels)) / B."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    batch, classes = logits.shape
    logp = log_softmax(logits)
    rows = np.arange(batch)
    loss = -np.sum(logp[rows, labels]) / batch
    onehot = np.zeros_like(logits)
    onehot[rows, labels] = 1
    dlogits = (np.exp(logp) - onehot) / batch
    return loss, dlogits


def loss_and_grad(out, target, loss):
    if loss == "mse":
        return mse_loss(out, target)
    if loss == "cross_entropy":
        return cross_entropy_loss(out, target)
    raise ValueError(f"unknown loss {loss!r}")


# --------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------

def frobenius_norm(a):
    """Frobenius norm with np.linalg.norm, safe against underflow and overflow of the squares:
    ||a|| = s * ||a / s|| with s = max|a| (a power-of-two s would be exact; max|a| is accurate
    to an ulp, plenty for an oracle). Computed in float64, or in long double for long double
    input. NaN in -> NaN; an infinite entry (and no NaN) -> inf."""
    a = np.asarray(a)
    work = np.longdouble if a.dtype == np.longdouble else np.float64
    a = a.astype(work).ravel()
    if a.size == 0:
        return work(0)
    if np.isnan(a).any():
        return work(np.nan)
    s = np.max(np.abs(a))
    if s == 0 or not np.isfinite(s):
        return s
    return s * np.linalg.norm(a / s)


def safe_log10(x):
    """log10 with log10(0) = -inf and no warning."""
    x = np.asarray(x)
    with np.errstate(divide="ignore"):
        return np.log10(x)


# --------------------------------------------------------------------------------------------
# Whole MLP
# --------------------------------------------------------------------------------------------

class Reference(dict):
    """A dict with attribute access, so tests can write ``ref.dW[0]`` or ``ref["dW"][0]``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


def layer_activation(l, num_layers, activation, output_activation):
    return output_activation if l == num_layers - 1 else activation


def mlp_forward(weights, biases, x, activation="tanh", output_activation="identity",
                alpha=1.0, dtype=np.float64):
    """Forward pass. Returns (out, zs, hs) with zs[l] = z_l and hs[l] = h_l = act(z_l)."""
    x = np.asarray(x, dtype=dtype)
    num_layers = len(weights)
    zs, hs = [], []
    h = x
    for l in range(num_layers):
        w = np.asarray(weights[l], dtype=dtype)
        b = np.asarray(biases[l], dtype=dtype)
        z = h @ w.T + b
        name = layer_activation(l, num_layers, activation, output_activation)
        h = act(z, name, alpha)
        zs.append(z)
        hs.append(h)
    return h, zs, hs


def forward_statistics(zs, hs, activation, output_activation, alpha=1.0):
    """preact_mean, preact_std (ddof=0), saturated_fraction, zero_fraction, dead_fraction."""
    num_layers = len(zs)
    mean = np.zeros(num_layers)
    std = np.zeros(num_layers)
    saturated = np.zeros(num_layers)
    zero = np.zeros(num_layers)
    dead = np.zeros(num_layers)
    for l in range(num_layers):
        name = layer_activation(l, num_layers, activation, output_activation)
        z = np.asarray(zs[l], dtype=np.float64)
        h = np.asarray(hs[l])
        mean[l] = np.mean(z)
        std[l] = np.std(z)  # ddof = 0
        saturated[l] = np.mean(saturated_mask(act_derivative(z, name, alpha), name, alpha))
        zero[l] = np.mean(h == 0)
        dead[l] = np.mean(np.all(h == 0, axis=0))
    return {"preact_mean": mean, "preact_std": std, "saturated_fraction": saturated,
            "zero_fraction": zero, "dead_fraction": dead}


def mlp_reference(weights, biases, x, activation="tanh", output_activation="identity",
                  alpha=1.0, grad_out=None, *, target=None, loss=None, dtype=np.float64):
    """Whole-MLP forward and backward.

    Either pass ``grad_out`` (dL/d(out), shape (B, d_L)) or ``target`` and ``loss``
    ("mse" or "cross_entropy"), in which case grad_out is the loss gradient.

    Returns a Reference (dict with attribute access) holding
      out, zs, hs (per layer), loss (NaN without a loss), grad_out,
      dW, db, dz, dh (per layer; dh[l] = dL/dh_l, dh[L-1] = grad_out), dx = dL/dx,
      and every GradReport statistic (float64 arrays of length L, log10 fields included,
      grad_log2_scale = 0).
    """
    num_layers = len(weights)
    out, zs, hs = mlp_forward(weights, biases, x, activation, output_activation, alpha, dtype)
    loss_value = np.nan
    if loss is not None:
        loss_value, grad_out = loss_and_grad(out, target, loss)
    if grad_out is None:
        raise ValueError("pass grad_out or (target, loss)")
    grad_out = np.asarray(grad_out, dtype=dtype)
    x = np.asarray(x, dtype=dtype)

    dW = [None] * num_layers
    db = [None] * num_layers
    dz = [None] * num_layers
    dh = [None] * num_layers
    g = grad_out
    for l in reversed(range(num_layers)):
        name = layer_activation(l, num_layers, activation, output_activation)
        w = np.asarray(weights[l], dtype=dtype)
        h_prev = hs[l - 1] if l > 0 else x
        dh[l] = g
        dz[l] = g * act_derivative(zs[l], name, alpha)
        dW[l] = dz[l].T @ h_prev
        db[l] = dz[l].sum(axis=0)
        g = dz[l] @ w
    dx = g

    report = {
        "weight_grad_norm": np.array([frobenius_norm(a) for a in dW], dtype=np.float64),
        "bias_grad_norm": np.array([frobenius_norm(a) for a in db], dtype=np.float64),
        "preact_grad_norm": np.array([frobenius_norm(a) for a in dz], dtype=np.float64),
        "act_grad_norm": np.array([frobenius_norm(a) for a in dh], dtype=np.float64),
    }
    # log10 from the norm in the working precision (long double keeps tiny norms finite).
    for field, arrays in (("weight_grad_norm", dW), ("bias_grad_norm", db),
                          ("preact_grad_norm", dz), ("act_grad_norm", dh)):
        report["log10_" + field] = np.array(
            [safe_log10(frobenius_norm(a)) for a in arrays], dtype=np.float64)
    report.update(forward_statistics(zs, hs, activation, output_activation, alpha))
    report["grad_log2_scale"] = np.zeros(num_layers)

    return Reference(out=out, zs=zs, hs=hs, loss=float(loss_value), grad_out=grad_out,
                     dW=dW, db=db, dz=dz, dh=dh, dx=dx, report=report, **report)


# --------------------------------------------------------------------------------------------
# Batch normalization (issue 3)
# --------------------------------------------------------------------------------------------
#
# Conventions of the API contract: BN sits on every hidden layer l < L-1 between the GEMM and
# the activation, z_l = h_{l-1} @ W_l.T (no dense bias on BN layers),
# y_l = gamma_l * (z_l - mu) / sqrt(var + eps) + beta_l, h_l = act(y_l). Train mode normalises
# with the batch mean and the biased batch variance and updates the running statistics like
# torch.nn.BatchNorm1d (running_var with the unbiased variance); eval mode uses the running
# statistics. The last layer stays z = h @ W.T + b, out = output_activation(z).

BN_NORM_FIELDS = ("gamma_grad_norm", "beta_grad_norm")
BN_LOG10_FIELDS = tuple("log10_" + f for f in BN_NORM_FIELDS)
BN_REPORT_ARRAY_FIELDS = REPORT_ARRAY_FIELDS + BN_NORM_FIELDS + BN_LOG10_FIELDS


def batchnorm_forward(x, gamma=None, beta=None, running_mean=None, running_var=None,
                      training=True, momentum=0.1, eps=1e-5):
    """Batch norm over the rows of x (N, C), in the dtype of x. Pure: the running statistics
    passed in are not modified; the updated ones are returned.

    Returns a Reference with y, mean, var (biased batch variance in train mode, running_var in
    eval mode), rstd = 1/sqrt(var + eps), xhat = (x - mean) * rstd and the new running_mean /
    running_var (None when none were given; unchanged copies in eval mode)."""
    x = np.asarray(x)
    dt = x.dtype
    n = x.shape[0]
    if training:
        if n < 2:
            raise ValueError(f"batch norm in training mode needs a batch of at least 2, got {n}")
        mean = np.mean(x, axis=0)
        centered = x - mean
        var = np.mean(centered * centered, axis=0)  # two-pass, biased (ddof = 0)
        new_rm = new_rv = None
        if running_mean is not None:
            new_rm = ((1 - momentum) * np.asarray(running_mean, dtype=dt)
                      + momentum * mean).astype(dt)
        if running_var is not None:
            unbiased = var * n / (n - 1)
            new_rv = ((1 - momentum) * np.asarray(running_var, dtype=dt)
                      + momentum * unbiased).astype(dt)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch norm in eval mode needs running_mean and running_var")
        mean = np.asarray(running_mean, dtype=dt).copy()
        var = np.asarray(running_var, dtype=dt).copy()
        new_rm, new_rv = mean.copy(), var.copy()
    rstd = (1 / np.sqrt(var + eps)).astype(dt)
    xhat = (x - mean) * rstd
    if gamma is not None:
        y = xhat * np.asarray(gamma, dtype=dt) + np.asarray(beta, dtype=dt)
    else:
        y = xhat.copy()
    return Reference(y=y.astype(dt), mean=mean.astype(dt), var=np.asarray(var, dt),
                     rstd=rstd, xhat=xhat, running_mean=new_rm, running_var=new_rv)


def batchnorm_backward(dy, x, mean, rstd, gamma=None, training=True):
    """(dx, dgamma, dbeta); dgamma and dbeta are None when gamma is None (affine=False).

    train: dbeta = sum dy, dgamma = sum dy * xhat,
           dx = gamma * rstd / N * (N dy - sum dy - xhat * sum(dy * xhat));
    eval:  dx = dy * gamma * rstd (mean and rstd are the running ones: constants)."""
    dy = np.asarray(dy)
    x = np.asarray(x, dtype=dy.dtype)
    n = x.shape[0]
    xhat = (x - np.asarray(mean, dtype=dy.dtype)) * np.asarray(rstd, dtype=dy.dtype)
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    g = np.ones_like(dbeta) if gamma is None else np.asarray(gamma, dtype=dy.dtype)
    if training:
        dx = (g * rstd / n) * (n * dy - dbeta - xhat * dgamma)
    else:
        dx = dy * (g * rstd)
    if gamma is None:
        return dx, None, None
    return dx, dgamma, dbeta


def bn_mlp_reference(weights, biases, x, gammas=None, betas=None, running_means=None,
                     running_vars=None, activation="tanh", output_activation="identity",
                     alpha=1.0, *, training=True, momentum=0.1, eps=1e-5, grad_out=None,
                     target=None, loss=None, dtype=np.float64):
    """Whole BN-MLP forward and backward (see the section comment above).

    weights: L arrays; biases: L entries of which only the last is used (the hidden ones may be
    None or empty); gammas / betas: L-1 arrays, or None for bn_affine=False; running_means /
    running_vars: L-1 arrays (the state before this forward). Either ``grad_out`` or
    (``target``, ``loss``).

    Returns a Reference with out, zs (pre-BN z_l; z of the last layer), ys (what the activation
    is applied to: y_l on BN layers, z on the last), hs, bn (the batchnorm_forward caches),
    running_means / running_vars (after this forward), loss, grad_out, dW, db (None on BN
    layers), dgamma, dbeta (None on the last layer or without affine), dz (dL/dz_l, pre-BN),
    dy (dL/d(act input)), dh, dx and every GradReport statistic (bias_grad_norm NaN on BN
    layers, gamma/beta norms NaN where there is no such parameter)."""
    num_layers = len(weights)
    affine = gammas is not None
    x = np.asarray(x, dtype=dtype)
    running_means = [None] * (num_layers - 1) if running_means is None else running_means
    running_vars = [None] * (num_layers - 1) if running_vars is None else running_vars

    zs, ys, hs, caches, new_rm, new_rv = [], [], [], [], [], []
    h = x
    for l in range(num_layers):
        w = np.asarray(weights[l], dtype=dtype)
        name = layer_activation(l, num_layers, activation, output_activation)
        if l < num_layers - 1:
            z = h @ w.T
            c = batchnorm_forward(
                z, None if not affine else np.asarray(gammas[l], dtype),
                None if not affine else np.asarray(betas[l], dtype),
                None if running_means[l] is None else np.asarray(running_means[l], dtype),
                None if running_vars[l] is None else np.asarray(running_vars[l], dtype),
                training=training, momentum=momentum, eps=eps)
            y = c.y
            caches.append(c)
            new_rm.append(c.running_mean)
            new_rv.append(c.running_var)
        else:
            z = h @ w.T + np.asarray(biases[l], dtype=dtype)
            y = z
        h = act(y, name, alpha)
        zs.append(z)
        ys.append(y)
        hs.append(h)
    out = h

    loss_value = np.nan
    if loss is not None:
        loss_value, grad_out = loss_and_grad(out, target, loss)
    if grad_out is None:
        raise ValueError("pass grad_out or (target, loss)")
    grad_out = np.asarray(grad_out, dtype=dtype)

    dW, db, dgamma, dbeta, dz, dy, dh = ([None] * num_layers for _ in range(7))
    g = grad_out
    for l in reversed(range(num_layers)):
        name = layer_activation(l, num_layers, activation, output_activation)
        w = np.asarray(weights[l], dtype=dtype)
        h_prev = hs[l - 1] if l > 0 else x
        dh[l] = g
        dy[l] = g * act_derivative(ys[l], name, alpha)
        if l < num_layers - 1:
            c = caches[l]
            dz[l], dgamma[l], dbeta[l] = batchnorm_backward(
                dy[l], zs[l], c.mean, c.rstd,
                np.asarray(gammas[l], dtype) if affine else None, training=training)
        else:
            dz[l] = dy[l]
            db[l] = dz[l].sum(axis=0)
        dW[l] = dz[l].T @ h_prev
        g = dz[l] @ w
    dx = g

    def norms(arrays, log=False):
        vals = []
        for a in arrays:
            if a is None:
                vals.append(np.nan)
            else:
                n = frobenius_norm(a)
                vals.append(safe_log10(n) if log else n)
        return np.array(vals, dtype=np.float64)

    groups = {"weight_grad_norm": dW, "bias_grad_norm": db, "preact_grad_norm": dz,
              "act_grad_norm": dh, "gamma_grad_norm": dgamma, "beta_grad_norm": dbeta}
    report = {}
    for field, arrays in groups.items():
        report[field] = norms(arrays)
        report["log10_" + field] = norms(arrays, log=True)
    # fractions from h = act(y); preact_mean / preact_std from the pre-BN z
    stats = forward_statistics(ys, hs, activation, output_activation, alpha)
    stats["preact_mean"] = np.array([np.mean(np.asarray(z, np.float64)) for z in zs])
    stats["preact_std"] = np.array([np.std(np.asarray(z, np.float64)) for z in zs])
    report.update(stats)
    report["grad_log2_scale"] = np.zeros(num_layers)

    return Reference(x=x, gammas=None if not affine else [np.asarray(g, dtype) for g in gammas],
                     out=out, zs=zs, ys=ys, hs=hs, bn=caches, running_means=new_rm,
                     running_vars=new_rv, loss=float(loss_value), grad_out=grad_out, dW=dW,
                     db=db, dgamma=dgamma, dbeta=dbeta, dz=dz, dy=dy, dh=dh, dx=dx,
                     report=report, **report)
