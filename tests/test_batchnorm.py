"""Batch normalization (issue 3): vgkern.ops.batchnorm_forward / batchnorm_backward and
vgkern.MLP(batch_norm=True).

* ops against the NumPy oracle (tests/reference.py: float64 oracle for float32 results, long
  double for float64 results, with the tolerance rule of conftest.py), against central finite
  differences in float64 and against torch.nn.functional.batch_norm autograd (float32 and
  float64, train and eval, affine on and off; running statistics updated in place like torch);
* the whole BN-MLP against the oracle (every GradReport field) and against a torch twin
  nn.Sequential([nn.Linear(bias=False), nn.BatchNorm1d, act] * (L-1) + [nn.Linear]) with copied
  weights, gammas, betas and running statistics: three train-mode steps, each followed by an
  SGD update of both (``net.params -= lr * net.grads``), then two eval-mode steps, comparing
  outputs, losses, every gradient, every reported norm, the forward statistics and the running
  statistics after every step, at depths 1 (no BN at all: only hidden layers get BN), 5 and 30;
* the known effect on fixed seeds: at initialization a deep tanh or ReLU MLP with batch norm has
  gradients that grow towards the input (Yang et al., 2019, "A Mean Field Theory of Batch
  Normalization"; for ReLU the squared gradient norm grows by pi / (pi - 1) per layer), while the
  same sigmoid network without batch norm has vanishing gradients;
* bad input: a training batch of 1, zero-variance features, NaN / Inf inputs, wrong shapes and
  dtypes; the GradReport conventions on BN layers (no dense bias: NaN bias_grad_norm);
  log_scale=True.

Tolerances of the torch cross-checks are norm-relative, ``||a - b|| <= rtol ||b||``, as in
test_mlp_crosscheck.py: float64 1e-10; float32 3e-4 (depth <= 5) and 5e-3 (depth 30), about
10x the measured torch-float32 vs torch-float64 deviation over the same trajectories (see
twin_rtol). After every SGD update the twin is re-synced to vgkern's parameters (once they have
been compared), so each step compares one step's arithmetic, not the growth of rounding
differences along a chaotic trajectory.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import vgkern
from vgkern import ops

import reference as R
from conftest import (assert_preact_stats, DTYPE_IDS, DTYPES, assert_fractions_within, assert_rel_rule, assert_rule,
                      assert_close_norm, assert_matches_fd, assert_scalar_rel,
                      central_difference, eps,
                      fraction_bounds, max_abs, max_abs_error,
                      oracle_dtype, reduction_rtol)

NP_DTYPE = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64,
               np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

BN_FIELDS = R.BN_NORM_FIELDS + R.BN_LOG10_FIELDS
ALL_FIELDS = R.BN_REPORT_ARRAY_FIELDS


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def dname(dtype):
    return np.dtype(dtype).name


def bn_net(sizes, activation="tanh", init="xavier_normal", dtype="float64", **kw):
    kw.setdefault("batch_norm", True)
    return vgkern.MLP(list(sizes), activation=activation, init=init, dtype=dname(dtype), **kw)


def randomize_bn_state(net, rng, *, gamma_spread=0.3, beta_spread=0.3, rm_spread=0.2,
                       rv_range=(0.6, 1.6), last_bias=0.2):
    """Non-trivial gammas, betas, running statistics and last-layer bias (assigned: on the CPU
    and on CUDA)."""
    dt = net.weights[0].dtype
    net.bn_gammas = [(1 + gamma_spread * rng.standard_normal(g.shape)).astype(dt)
                     for g in net.bn_gammas]
    net.bn_betas = [(beta_spread * rng.standard_normal(b.shape)).astype(dt) for b in net.bn_betas]
    net.running_means = [(rm_spread * rng.standard_normal(m.shape)).astype(dt)
                         for m in net.running_means]
    net.running_vars = [rng.uniform(*rv_range, v.shape).astype(dt) for v in net.running_vars]
    net.biases[-1] = (last_bias * rng.standard_normal(net.biases[-1].shape)).astype(dt)


def snapshot(net):
    """Copies of everything the oracle needs."""
    copy = lambda arrays: [np.array(a, copy=True) for a in arrays]  # noqa: E731
    return dict(weights=copy(net.weights), biases=copy(net.biases),
                gammas=copy(net.bn_gammas) or None, betas=copy(net.bn_betas) or None,
                running_means=copy(net.running_means), running_vars=copy(net.running_vars))


def oracle_for(state, x, activation, dtype, *, alpha=1.0, output_activation="identity",
               training=True, momentum=0.1, eps_=1e-5, wide=None, **kw):
    return R.bn_mlp_reference(
        state["weights"], state["biases"], x, state["gammas"], state["betas"],
        state["running_means"], state["running_vars"], activation, output_activation, alpha,
        training=training, momentum=momentum, eps=eps_,
        dtype=wide if wide is not None else dtype, **kw)


# ============================================================================================
# ops: batchnorm_forward / batchnorm_backward
# ============================================================================================

OPS_SHAPES = [(2, 5), (7, 1), (13, 37), (129, 3), (64, 37)]
OPS_SHAPE_IDS = [f"N{n}-C{c}" for n, c in OPS_SHAPES]


def bn_inputs(rng, n, c, dtype, affine=True):
    """x with per-column offsets and scales, gamma, beta, running statistics, dy."""
    x = (rng.uniform(-2, 2, c) + rng.uniform(0.3, 3, c) * rng.standard_normal((n, c)))
    gamma = 1 + 0.5 * rng.standard_normal(c) if affine else None
    beta = 0.5 * rng.standard_normal(c) if affine else None
    rm = 0.5 * rng.standard_normal(c)
    rv = rng.uniform(0.3, 3.0, c)
    dy = rng.standard_normal((n, c))
    cast = lambda a: None if a is None else np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return cast(x), cast(gamma), cast(beta), cast(rm), cast(rv), cast(dy)


@pytest.mark.parametrize("shape", OPS_SHAPES, ids=OPS_SHAPE_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_ops_match_reference(dtype, training, affine, shape, rng, device):
    n, c = shape
    momentum, bn_eps = (0.1, 1e-5) if n % 2 else (0.3, 1e-3)
    x, gamma, beta, rm, rv, dy = bn_inputs(rng, n, c, dtype, affine)
    x0, rm0, rv0 = x.copy(), rm.copy(), rv.copy()
    wide = oracle_dtype(dtype)
    ref = R.batchnorm_forward(x.astype(wide), None if gamma is None else gamma.astype(wide),
                              None if beta is None else beta.astype(wide), rm.astype(wide),
                              rv.astype(wide), training, momentum, bn_eps)
    naive = R.batchnorm_forward(x, gamma, beta, rm, rv, training, momentum, bn_eps)

    y, mean, rstd = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=training,
                                          momentum=momentum, eps=bn_eps, device=device)
    assert np.array_equal(x, x0), "batchnorm_forward modified x"
    for a, name in ((y, "y"), (mean, "mean"), (rstd, "rstd")):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype), (name, type(a))
    assert y.shape == (n, c) and mean.shape == (c,) and rstd.shape == (c,)
    # sums over N rows: allow sqrt(N) ulps of accumulation-order noise on top of the rule
    ulps = max(4.0, 2 * math.sqrt(n))
    assert_rule(mean, ref.mean, naive.mean, dtype, atol_ulps=ulps, name="mean")
    assert_rel_rule(rstd, ref.rstd, naive.rstd, dtype, rtol_ulps=4 * ulps, name="rstd")
    assert_rule(y, ref.y, naive.y, dtype, atol_ulps=ulps, name="y")
    if training:
        assert_rule(rm, ref.running_mean, naive.running_mean, dtype, atol_ulps=ulps,
                    name="running_mean (in place)")
        assert_rel_rule(rv, ref.running_var, naive.running_var, dtype, rtol_ulps=4 * ulps,
                        name="running_var (in place)")
    else:
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0), (
            "eval mode changed the running statistics")
        assert np.array_equal(mean, rm0), "eval mode: mean must be the running mean"

    dy0 = dy.copy()
    dx, dgamma, dbeta = ops.batchnorm_backward(dy, x, mean, rstd, gamma, training=training, device=device)
    assert np.array_equal(dy, dy0)
    rdx, rdg, rdb = R.batchnorm_backward(dy.astype(wide), x.astype(wide), ref.mean, ref.rstd,
                                         None if gamma is None else gamma.astype(wide), training)
    ndx, ndg, ndb = R.batchnorm_backward(dy, x, naive.mean, naive.rstd, gamma, training)
    assert dx.dtype == np.dtype(dtype) and dx.shape == (n, c)
    assert_rule(dx, rdx, ndx, dtype, atol_ulps=ulps, name="dx")
    if affine:
        assert dgamma.dtype == np.dtype(dtype) and dgamma.shape == (c,)
        assert dbeta.dtype == np.dtype(dtype) and dbeta.shape == (c,)
        assert_rule(dgamma, rdg, ndg, dtype, atol_ulps=ulps, name="dgamma")
        assert_rule(dbeta, rdb, ndb, dtype, atol_ulps=ulps, name="dbeta")
    else:
        assert dgamma is None and dbeta is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_forward_without_running_stats(dtype, rng, device):
    x, gamma, beta, _, _, _ = bn_inputs(rng, 9, 4, dtype)
    y, mean, rstd = ops.batchnorm_forward(x, gamma, beta, None, None, training=True, device=device)
    wide = oracle_dtype(dtype)
    ref = R.batchnorm_forward(x.astype(wide), gamma.astype(wide), beta.astype(wide))
    naive = R.batchnorm_forward(x, gamma, beta)
    assert_rule(y, ref.y, naive.y, dtype, atol_ulps=6, name="y")
    assert_rule(mean, ref.mean, naive.mean, dtype, atol_ulps=6, name="mean")
    # the result does not depend on whether running statistics are tracked
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    y2, mean2, rstd2 = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True, device=device)
    assert np.array_equal(y, y2) and np.array_equal(mean, mean2) and np.array_equal(rstd, rstd2)


def test_batchnorm_forward_large_offset_float32(rng, device):
    """Columns with mean 1e3 and std 1 in float32: a one-pass E[x^2] - E[x]^2 variance in
    float32 loses ~6 digits here (and can go negative); the two-pass / Welford variance of
    torch and NumPy does not."""
    n, c = 64, 8
    x = (1000 + rng.standard_normal((n, c))).astype(np.float32)
    y, mean, rstd = ops.batchnorm_forward(x, None, None, None, None, training=True, device=device)
    ref = R.batchnorm_forward(x.astype(np.float64))
    naive = R.batchnorm_forward(x)
    assert_rel_rule(rstd, ref.rstd, naive.rstd, np.float32, rtol_ulps=32, name="rstd")
    assert_rule(y, ref.y, naive.y, np.float32, atol_ulps=16, name="y")


# --------------------------------------------------------------------------------------------
# ops: finite differences (float64)
# --------------------------------------------------------------------------------------------



@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(2, 3), (5, 4), (9, 1)], ids=["N2-C3", "N5-C4", "N9-C1"])
def test_batchnorm_backward_matches_finite_differences(shape, training, affine, rng, device):
    n, c = shape
    x, gamma, beta, rm, rv, g = bn_inputs(rng, n, c, np.float64, affine)
    bn_eps = 1e-3

    def f():
        # running statistics are copies: the finite differences must not move them
        y, _, _ = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(),
                                        training=training, momentum=0.1, eps=bn_eps, device=device)
        return float(np.sum(y * g))

    _, mean, rstd = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(),
                                          training=training, momentum=0.1, eps=bn_eps, device=device)
    dx, dgamma, dbeta = ops.batchnorm_backward(g, x, mean, rstd, gamma, training=training, device=device)
    f0 = f()
    arrays = [x] + ([gamma, beta] if affine else [])
    numeric = central_difference(f, arrays)
    scale = max(1e-3, max(float(np.abs(a).max()) for a in numeric))
    assert_matches_fd(dx, numeric[0], "dx", scale, f0)
    if affine:
        assert_matches_fd(dgamma, numeric[1], "dgamma", scale, f0)
        assert_matches_fd(dbeta, numeric[2], "dbeta", scale, f0)


# --------------------------------------------------------------------------------------------
# ops: torch.nn.functional.batch_norm
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 5), (16, 1), (129, 37)], ids=["N2-C5", "N16-C1",
                                                                      "N129-C37"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_ops_match_torch(dtype, training, affine, shape, rng, device):
    n, c = shape
    momentum, bn_eps = 0.25, 1e-4
    x, gamma, beta, rm, rv, dy = bn_inputs(rng, n, c, dtype, affine)
    tdt = TORCH_DTYPE[np.dtype(dtype)]
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True) if affine else None
    bt = torch.tensor(beta, requires_grad=True) if affine else None
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    yt = F.batch_norm(xt, rmt, rvt, gt, bt, training=training, momentum=momentum, eps=bn_eps)
    yt.backward(torch.tensor(dy))
    assert yt.dtype == tdt

    y, mean, rstd = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=training,
                                          momentum=momentum, eps=bn_eps, device=device)
    dx, dgamma, dbeta = ops.batchnorm_backward(dy, x, mean, rstd, gamma, training=training, device=device)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    close = lambda a, t, what: assert_close_norm(a, t.detach().numpy(), rtol, what)  # noqa
    close(y, yt, "y")
    # dx = gamma rstd / N (N dy - sum dy - xhat sum(dy xhat)) cancels (for N = 2 almost
    # completely): the error scale is that of the terms, ||gamma * rstd * dy||
    g64 = np.ones(c) if gamma is None else gamma.astype(np.float64)
    terms = np.linalg.norm(dy.astype(np.float64) * g64 * rstd.astype(np.float64))
    assert_close_norm(dx, xt.grad.numpy(), rtol, "dx", atol=rtol * terms)
    close(rm, rmt, "running_mean")
    close(rv, rvt, "running_var")
    if affine:
        close(dgamma, gt.grad, "dgamma")
        close(dbeta, bt.grad, "dbeta")
    if not training:
        np.testing.assert_array_equal(rm, rmt.numpy())
        np.testing.assert_array_equal(rv, rvt.numpy())


# ============================================================================================
# vgkern.MLP(batch_norm=True): structure
# ============================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_net_structure(dtype):
    sizes = [6, 9, 8, 7, 3]
    net = bn_net(sizes, "relu", "he_normal", dtype, seed=3)
    L = 4
    assert net.training is True
    assert len(net.bn_gammas) == len(net.bn_betas) == L - 1
    assert len(net.bn_gamma_grads) == len(net.bn_beta_grads) == L - 1
    assert len(net.running_means) == len(net.running_vars) == L - 1
    for l in range(L - 1):
        d = sizes[l + 1]
        for arr, fill in ((net.bn_gammas[l], 1), (net.bn_betas[l], 0), (net.running_means[l], 0),
                          (net.running_vars[l], 1)):
            assert arr.shape == (d,) and arr.dtype == np.dtype(dtype)
            assert np.all(arr == fill)
            assert arr.flags.writeable
        assert np.shares_memory(net.bn_gammas[l], net.params)
        assert np.shares_memory(net.bn_betas[l], net.params)
        assert not np.shares_memory(net.bn_gammas[l], net.bn_betas[l])
        # no dense bias on BN layers
        assert net.biases[l].shape == (0,)
        assert net.weights[l].shape == (d, sizes[l])
    assert net.biases[L - 1].shape == (sizes[-1],)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(dtype)
    net.forward(x)
    net.backward(np.ones((5, 3), dtype))
    for l in range(L - 1):
        assert net.bn_gamma_grads[l].shape == (sizes[l + 1],)
        assert np.shares_memory(net.bn_gamma_grads[l], net.grads)
        assert np.shares_memory(net.bn_beta_grads[l], net.grads)
        assert net.bias_grads[l].shape == (0,)
    # gradients are laid out like the parameters: the gamma gradient sits where gamma sits
    for l in range(L - 1):
        off_p = net.bn_gammas[l].__array_interface__["data"][0] - \
            net.params.__array_interface__["data"][0]
        off_g = net.bn_gamma_grads[l].__array_interface__["data"][0] - \
            net.grads.__array_interface__["data"][0]
        assert off_p == off_g
    # train() / eval()
    net.eval()
    assert net.training is False
    net.train()
    assert net.training is True


def test_plain_net_has_empty_bn_lists():
    net = vgkern.MLP([4, 5, 3], activation="tanh")
    assert list(net.bn_gammas) == [] and list(net.bn_betas) == []
    assert list(net.running_means) == [] and list(net.running_vars) == []
    assert net.biases[0].shape == (5,)
    x = np.ones((3, 4), np.float32)
    rep = net.step(x, np.zeros((3, 3), np.float32))
    for field in BN_FIELDS:
        assert np.all(np.isnan(getattr(rep, field))), field
    assert np.all(np.isfinite(rep.bias_grad_norm))


def test_bn_affine_false_has_no_gammas(rng):
    net = bn_net([5, 6, 6, 2], "tanh", dtype="float64", bn_affine=False)
    assert list(net.bn_gammas) == [] and list(net.bn_betas) == []
    assert len(net.running_means) == 2
    x = rng.standard_normal((4, 5))
    rep = net.step(x, rng.standard_normal((4, 2)))
    for field in BN_FIELDS:
        assert np.all(np.isnan(getattr(rep, field))), field
    assert np.all(np.isnan(rep.bias_grad_norm[:2])) and np.isfinite(rep.bias_grad_norm[2])


def test_depth_one_bn_net_is_a_plain_layer(rng):
    """Only hidden layers get BN: a single layer net with batch_norm=True is a plain dense layer,
    batch 1 in train mode included."""
    a = bn_net([7, 4], "tanh", dtype="float64", seed=5)
    b = vgkern.MLP([7, 4], activation="tanh", dtype="float64", seed=5)
    assert list(a.bn_gammas) == [] and list(a.running_means) == []
    assert a.biases[0].shape == (4,)
    a.weights[0][...] = b.weights[0]
    a.biases[0][...] = b.biases[0][...] = 0.3
    for batch in (1, 6):
        x = rng.standard_normal((batch, 7))
        t = rng.standard_normal((batch, 4))
        ra, rb = a.step(x, t), b.step(x, t)
        np.testing.assert_array_equal(a.forward(x), b.forward(x))
        assert ra.loss == rb.loss
        np.testing.assert_array_equal(a.weight_grads[0], b.weight_grads[0])
        np.testing.assert_array_equal(a.bias_grads[0], b.bias_grads[0])
        for field in R.REPORT_ARRAY_FIELDS:
            np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field), err_msg=field)
        for field in BN_FIELDS:
            assert np.all(np.isnan(getattr(ra, field))), field


def test_sgd_idiom_through_params(rng):
    """The contract's `net.params -= lr * net.grads` updates weights, gammas and betas."""
    net = bn_net([4, 6, 3], "tanh", dtype="float64", seed=1)
    x = rng.standard_normal((5, 4))
    net.step(x, rng.standard_normal((5, 3)))
    before = snapshot(net)
    gg, gb, gw = (np.array(net.bn_gamma_grads[0]), np.array(net.bn_beta_grads[0]),
                  np.array(net.weight_grads[0]))
    assert np.abs(gg).max() > 0 and np.abs(gb).max() > 0
    net.params -= 0.5 * net.grads
    np.testing.assert_array_equal(net.bn_gammas[0], before["gammas"][0] - 0.5 * gg)
    np.testing.assert_array_equal(net.bn_betas[0], before["betas"][0] - 0.5 * gb)
    np.testing.assert_array_equal(net.weights[0], before["weights"][0] - 0.5 * gw)
    # running statistics are state, not parameters: the SGD step leaves them alone
    np.testing.assert_array_equal(net.running_means[0], before["running_means"][0])
    np.testing.assert_array_equal(net.running_vars[0], before["running_vars"][0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_parameter_assignment_is_checked(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    net = bn_net([4, 6, 5, 2], "tanh", dtype=dtype)
    new = np.arange(6, dtype=dtype)
    net.bn_gammas[0] = new
    new[...] = -1  # item assignment copies
    np.testing.assert_array_equal(net.bn_gammas[0], np.arange(6, dtype=dtype))
    net.bn_betas[1] = np.full(5, 0.5, dtype)
    assert np.all(net.bn_betas[1] == dtype(0.5))
    net.running_vars[0] = np.full(6, 2.0, dtype)
    assert np.all(net.running_vars[0] == 2)
    for lst, good in ((net.bn_gammas, 6), (net.bn_betas, 6), (net.running_means, 6),
                      (net.running_vars, 6)):
        with pytest.raises(ValueError):
            lst[0] = np.ones(good + 1, dtype)
        with pytest.raises(ValueError):
            lst[0] = np.ones((1, good), dtype)
        with pytest.raises(TypeError):
            lst[0] = np.ones(good, other)
    with pytest.raises(ValueError):
        net.bn_gammas[1] = np.ones(6, dtype)  # layer 1 has width 5


# ============================================================================================
# vgkern.MLP(batch_norm=True) against the NumPy oracle
# ============================================================================================

ORACLE_SIZES = [[5, 3], [5, 7, 3], [17, 33, 9], [6, 8, 8, 8, 8, 4]]
ORACLE_SIZE_IDS = ["depth1", "depth2", "depth2-wide", "depth5"]


def assert_rel_rule_nan(got, ref, naive, dtype, *, rtol=0.0, rtol_ulps=16.0, name=""):
    """conftest.assert_rel_rule, with NaN where the oracle has NaN (a parameter the layer does
    not have) required exactly there."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan), f"{name}: NaN pattern {got} vs oracle {ref}"
    keep = ~nan
    rtol = np.broadcast_to(np.asarray(rtol, dtype=np.float64), ref.shape)[keep]
    assert_rel_rule(got[keep], ref[keep], np.asarray(naive)[keep], dtype, rtol=rtol,
                    rtol_ulps=rtol_ulps, name=name)


def check_report_vs_oracle(net, rep, ref, naive, dtype, activation, output_activation, alpha):
    L = len(ref.dW)
    assert rep.num_layers == L
    for field in ALL_FIELDS:
        arr = getattr(rep, field)
        assert isinstance(arr, np.ndarray), field
        assert arr.dtype == np.float64 and arr.shape == (L,), (field, arr.dtype, arr.shape)
    groups = {"weight_grad_norm": ref.dW, "bias_grad_norm": ref.db, "preact_grad_norm": ref.dz,
              "act_grad_norm": ref.dh, "gamma_grad_norm": ref.dgamma,
              "beta_grad_norm": ref.dbeta}
    term_scales = gradient_term_scales(ref)
    scale_key = {"weight_grad_norm": "dW", "bias_grad_norm": "db", "gamma_grad_norm": "dgamma",
                 "beta_grad_norm": "dbeta"}
    for field, arrays in groups.items():
        got = np.array(getattr(rep, field))
        expected = np.array(ref[field], dtype=np.float64)
        sizes = [1 if a is None else a.size for a in arrays]
        if field in scale_key:
            # a gradient that is 0 in exact arithmetic (dbeta before another BN layer through an
            # identity activation) is pure rounding noise: its norm is only bounded, by the
            # rounding error of its terms; elsewhere the relative rule applies
            noise = np.array([16 * eps(dtype) * t * math.sqrt(n)
                              for t, n in zip(term_scales[scale_key[field]], sizes)])
            tiny = expected < 100 * noise
            assert np.all(got[tiny] <= noise[tiny]), (
                f"{field}: {got[tiny]} for a gradient that is 0 up to rounding (bound "
                f"{noise[tiny]})")
            got[tiny] = expected[tiny] = 0.0
            naive_f = np.array(naive[field], dtype=np.float64)
            naive_f[tiny] = 0.0
        else:
            naive_f = naive[field]
        assert_rel_rule_nan(got, expected, naive_f, dtype, rtol=reduction_rtol(sizes),
                            name=field)
        logs = getattr(rep, "log10_" + field)
        assert np.array_equal(np.isnan(logs), np.isnan(ref["log10_" + field])), (field, logs)
        fin = np.isfinite(got) & (got > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            assert np.allclose(logs[fin], np.log10(got[fin]), rtol=0, atol=1e-12), field
    assert_preact_stats(rep, ref, naive, dtype)
    # saturated / zero / dead fractions are of h = act(y), y the BN output
    assert_fractions_within(rep, fraction_bounds(ref.ys, activation, output_activation, alpha))
    assert np.array_equal(rep.grad_log2_scale, np.zeros(L))


def mlp_ulps(batch, depth):
    """The ulps term of the MLP oracle rule: sums over the batch (sqrt(B)) in every one of
    ``depth`` layers, whose errors add up along the chain (sqrt(depth) for independent
    roundings, 8 per layer). vgkern's float64 BN (a shifted one-pass variance) is 2-5 ulps
    less accurate than NumPy's two-pass one, so in float64 the 2x-NumPy part of the rule alone
    is too tight; measured worst case over 50 seeds of every configuration: 17 ulps of the term
    scale at depth 5 (this gives 25)."""
    return 2 * math.sqrt(batch) + 8 * math.sqrt(depth)


def gradient_term_scales(ref):
    """Magnitudes of the terms whose sums are the gradients, from the oracle.

    The training-mode BN backward dz = gamma rstd / N (N dy - sum dy - xhat sum(dy xhat))
    cancels (e.g. dbeta of a layer followed by another BN layer through an identity activation
    is 0 in exact arithmetic), so an error bound relative to the result itself is meaningless
    there; the rounding error of a sum is bounded by eps times the sum of |terms|."""
    L = len(ref.dW)
    scales = {"dW": [], "dgamma": [], "dbeta": [], "db": []}
    for l in range(L):
        h_prev = np.abs(np.asarray(ref.hs[l - 1] if l > 0 else ref.x, np.float64))
        dy = np.abs(np.asarray(ref.dy[l], np.float64))
        if l < L - 1:
            c = ref.bn[l]
            xhat = np.abs(np.asarray(c.xhat, np.float64))
            rstd = np.asarray(c.rstd, np.float64)
            g = 1.0 if ref.gammas is None else np.abs(np.asarray(ref.gammas[l], np.float64))
            dz_terms = g * rstd * (dy + dy.mean(axis=0) + xhat * (dy * xhat).mean(axis=0))
            scales["dgamma"].append(float((dy * xhat).sum(axis=0).max()))
            scales["dbeta"].append(float(dy.sum(axis=0).max()))
            scales["db"].append(0.0)
        else:
            dz_terms = dy
            scales["db"].append(float(dy.sum(axis=0).max()))
            scales["dgamma"].append(0.0)
            scales["dbeta"].append(0.0)
        scales["dW"].append(float((dz_terms.T @ h_prev).max()))
    return scales


def assert_rule_multi(got, ref, naives, dtype, *, ulps, scale=0.0, name=""):
    """max|got - ref| <= 2 max_i max|naive_i - ref| + ulps eps max(max|ref|, scale).

    ``naives`` are plain implementations in ``dtype`` (the NumPy oracle run in that precision
    and torch autograd): vgkern may be at most twice as far from the wide-precision oracle as
    the worse of them."""
    got_arr = np.asarray(got)
    assert got_arr.dtype == np.dtype(dtype), f"{name}: dtype {got_arr.dtype}"
    err = max_abs_error(got, ref)
    base = max(max_abs_error(np.asarray(n), ref) for n in naives)
    bound = 2.0 * base + ulps * eps(dtype) * max(max_abs(ref), scale) + np.finfo(dtype).tiny
    assert err <= bound, (
        f"{name}: max abs error {err:.3e} > bound {bound:.3e} (plain {dname(dtype)} error "
        f"{base:.3e}, max|ref| {max_abs(ref):.3e}, term scale {scale:.3e})")


def torch_naive(net, x, activation, alpha, momentum, bn_eps, affine, **run_kw):
    """Gradients of the torch twin (same dtype as the net), as a second plain implementation.
    Call before net.step / net.forward (the twin copies the running statistics)."""
    twin = TorchTwin(net, activation, alpha=alpha, momentum=momentum, bn_eps=bn_eps,
                     affine=affine)
    t = twin.run(x, **run_kw)
    L = net.num_layers
    none = [None] * L
    return dict(dW=t["dw"], db=none[:-1] + [t["db"]],
                dgamma=(t["dgamma"] + [None]) if t["dgamma"] else none,
                dbeta=(t["dbeta"] + [None]) if t["dbeta"] else none)


def check_grads_vs_oracle(net, ref, naives, dtype, ulps):
    L = len(ref.dW)
    affine = ref.dgamma[0] is not None if L > 1 else False
    scales = gradient_term_scales(ref)

    def check(got, key, l, name):
        assert_rule_multi(got, ref[key][l], [n[key][l] for n in naives], dtype, ulps=ulps,
                          scale=scales[key][l], name=name)

    for l in range(L):
        check(net.weight_grads[l], "dW", l, f"dW[{l}]")
        if l < L - 1:
            assert net.bias_grads[l].shape == (0,)
            if affine:
                check(net.bn_gamma_grads[l], "dgamma", l, f"dgamma[{l}]")
                check(net.bn_beta_grads[l], "dbeta", l, f"dbeta[{l}]")
        else:
            check(net.bias_grads[l], "db", l, f"db[{l}]")


@pytest.mark.parametrize("sizes", ORACLE_SIZES, ids=ORACLE_SIZE_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation,alpha", [("tanh", 1.0), ("relu", 1.0), ("sigmoid", 1.0),
                                              ("elu", 0.7), ("identity", 1.0)],
                         ids=["tanh", "relu", "sigmoid", "elu0.7", "identity"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_mlp_step_matches_reference(dtype, activation, alpha, training, affine, sizes, rng, device):
    batch = 13
    loss = "mse" if len(sizes) % 2 else "cross_entropy"
    momentum, bn_eps = 0.2, 1e-4
    net = bn_net(sizes, activation, "he_normal", dtype, alpha=alpha, seed=7, bn_affine=affine,
                 bn_momentum=momentum, bn_eps=bn_eps, device=device)
    randomize_bn_state(net, rng)
    if not training:
        net.eval()
    state = snapshot(net)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "mse":
        target = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    else:
        target = rng.integers(0, sizes[-1], batch)
    kw = dict(alpha=alpha, training=training, momentum=momentum, eps_=bn_eps, target=target,
              loss=loss)
    ref = oracle_for(state, x, activation, dtype, wide=oracle_dtype(dtype), **kw)
    naive = oracle_for(state, x, activation, dtype, **kw)
    tnaive = torch_naive(net, x, activation, alpha, momentum, bn_eps, affine, target=target,
                         loss=loss)

    rep = net.step(x, target, loss=loss)
    ulps = mlp_ulps(batch, len(sizes) - 1)
    assert isinstance(rep.loss, float)
    assert_rule(np.float64(rep.loss), ref.loss, naive.loss, dtype, name="loss",
                atol_ulps=max(ulps, math.sqrt(ref.out.size)))
    check_grads_vs_oracle(net, ref, [naive, tnaive], dtype, ulps)
    check_report_vs_oracle(net, rep, ref, naive, dtype, activation, "identity", alpha)
    # running statistics: updated once by the step's forward in train mode, untouched in eval
    for l in range(len(sizes) - 2):
        assert net.running_means[l].dtype == np.dtype(dtype)
        assert_rule(net.running_means[l], ref.running_means[l], naive.running_means[l], dtype,
                    atol_ulps=ulps, name=f"running_mean[{l}]")
        assert_rel_rule(net.running_vars[l], ref.running_vars[l], naive.running_vars[l], dtype,
                        rtol_ulps=4 * ulps, name=f"running_var[{l}]")
        if not training:
            np.testing.assert_array_equal(net.running_means[l], state["running_means"][l])
            np.testing.assert_array_equal(net.running_vars[l], state["running_vars"][l])
    # parameters unchanged by step
    for l in range(len(sizes) - 1):
        np.testing.assert_array_equal(net.weights[l], state["weights"][l])
    for a, b in zip(net.bn_gammas, state["gammas"] or []):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_mlp_forward_backward_matches_reference(dtype, training, rng, device):
    """forward + backward(grad_out), sigmoid output activation."""
    sizes, batch = [9, 16, 12, 16, 5], 10
    net = bn_net(sizes, "elu", "xavier_uniform", dtype, output_activation="sigmoid", seed=4,
                 device=device)
    randomize_bn_state(net, rng)
    net.train() if training else net.eval()
    state = snapshot(net)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    g = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    kw = dict(output_activation="sigmoid", training=training, grad_out=g)
    ref = oracle_for(state, x, "elu", dtype, wide=oracle_dtype(dtype), **kw)
    naive = oracle_for(state, x, "elu", dtype, **kw)
    tnaive = TorchTwin(net, "elu", output_activation="sigmoid").run(x, grad_out=g)
    L = net.num_layers
    tnaive = dict(dW=tnaive["dw"], db=[None] * (L - 1) + [tnaive["db"]],
                  dgamma=tnaive["dgamma"] + [None], dbeta=tnaive["dbeta"] + [None])
    out = net.forward(x)
    ulps = mlp_ulps(batch, len(sizes) - 1)
    assert_rule(out, ref.out, naive.out, dtype, atol_ulps=ulps, name="out")
    rep = net.backward(g)
    assert math.isnan(rep.loss)
    check_grads_vs_oracle(net, ref, [naive, tnaive], dtype, ulps)
    check_report_vs_oracle(net, rep, ref, naive, dtype, "elu", "sigmoid", 1.0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_mlp_column_split_layers_match_reference(dtype, training, rng):
    """Layers that cut each GEMM by output columns (csrc/ops/layer_plan.h: 256 x 600 x 700 and
    256 x 700 x 650, halves split at columns 288, 336 and 320), against the oracle."""
    sizes, batch = [600, 700, 650, 7], 256
    net = bn_net(sizes, "tanh", "xavier_normal", dtype, seed=4)
    randomize_bn_state(net, rng)
    net.train() if training else net.eval()
    state = snapshot(net)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    g = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    kw = dict(training=training, grad_out=g)
    ref = oracle_for(state, x, "tanh", dtype, wide=oracle_dtype(dtype), **kw)
    naive = oracle_for(state, x, "tanh", dtype, **kw)
    ulps = mlp_ulps(batch, len(sizes) - 1)
    assert_rule(net.forward(x), ref.out, naive.out, dtype, atol_ulps=ulps, name="out")
    rep = net.backward(g)
    check_grads_vs_oracle(net, ref, [naive], dtype, ulps)
    check_report_vs_oracle(net, rep, ref, naive, dtype, "tanh", "identity", 1.0)


# --------------------------------------------------------------------------------------------
# Whole BN-MLP: finite differences (float64)
# --------------------------------------------------------------------------------------------

KINK_MARGIN = 1e-3


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "elu", "relu"])
def test_bn_mlp_gradients_match_finite_differences(activation, training, loss, rng, device):
    sizes, batch = [3, 4, 4, 2], 5
    net = bn_net(sizes, activation, "he_normal", np.float64, seed=11, bn_eps=1e-3,
                 device=device)
    randomize_bn_state(net, rng)
    net.train() if training else net.eval()
    state = snapshot(net)
    for _ in range(200):
        x = rng.standard_normal((batch, sizes[0]))
        ref = oracle_for(state, x, activation, np.float64, training=training, eps_=1e-3,
                         grad_out=np.zeros((batch, 2)))
        if min(float(np.abs(y).min()) for y in ref.ys[:-1]) > KINK_MARGIN:
            break
    else:
        raise AssertionError("no kink-free input")
    target = (rng.standard_normal((batch, 2)) if loss == "mse"
              else np.argmin(ref.out, axis=1))
    rep = net.step(x, target, loss=loss)
    analytic = ([np.array(g) for g in net.weight_grads] + [np.array(net.bias_grads[-1])]
                + [np.array(g) for g in net.bn_gamma_grads]
                + [np.array(g) for g in net.bn_beta_grads])

    def f():
        out = net.forward(x)  # in train mode this also moves the running stats: harmless
        return float(R.loss_and_grad(out, target, loss)[0])

    f0 = f()
    assert rep.loss == pytest.approx(f0, rel=1e-12)
    if device == "cpu":  # perturbed in place through the views
        params = (list(net.weights) + [net.biases[-1]] + list(net.bn_gammas)
                  + list(net.bn_betas))
        numeric = central_difference(f, params)
    else:  # CUDA: host copies, written to the device before every evaluation
        L = net.num_layers
        params = [np.array(a) for a in (list(net.weights) + [net.biases[-1]]
                                        + list(net.bn_gammas) + list(net.bn_betas))]

        def write_then_f():
            net.weights, net.biases[-1] = params[:L], params[L]
            net.bn_gammas, net.bn_betas = params[L + 1:2 * L], params[2 * L:]
            return f()

        numeric = central_difference(write_then_f, params)
    scale = max(1e-3, max(float(np.abs(n).max()) for n in numeric))
    names = ([f"dW[{l}]" for l in range(3)] + ["db[2]"] + [f"dgamma[{l}]" for l in range(2)]
             + [f"dbeta[{l}]" for l in range(2)])
    for a, n, name in zip(analytic, numeric, names):
        assert_matches_fd(a, n, name, scale, f0)
    assert scale > 1e-3


# ============================================================================================
# vgkern.MLP(batch_norm=True) against a torch twin, several SGD steps, train then eval
# ============================================================================================

def torch_activation(name, alpha=1.0):
    return {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "relu": nn.ReLU(),
            "elu": nn.ELU(alpha=alpha), "identity": nn.Identity()}[name]


class TorchTwin:
    """nn.Sequential([Linear(bias=False), BatchNorm1d, act] * (L-1) + [Linear]) holding copies
    of a vgkern net's parameters and running statistics, with hooks that keep z (Linear
    output), y (BN output), h (activation output) and their gradients."""

    def __init__(self, net, activation, *, alpha=1.0, momentum=0.1, bn_eps=1e-5, affine=True,
                 output_activation="identity"):
        self.dtype = TORCH_DTYPE[net.weights[0].dtype]
        L = net.num_layers
        self.L = L
        self.activation = activation
        self.lins, self.bns, modules = [], [], []
        self.z, self.y, self.h = ([None] * L for _ in range(3))
        self.dz, self.dy, self.dh = ([None] * L for _ in range(3))
        for l in range(L):
            w = np.array(net.weights[l])
            d_out, d_in = w.shape
            bn_layer = l < L - 1
            lin = nn.Linear(d_in, d_out, bias=not bn_layer, dtype=self.dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                if not bn_layer:
                    lin.bias.copy_(torch.from_numpy(np.array(net.biases[l])))
            lin.register_forward_hook(self._hook(self.z, self.dz, l))
            modules.append(lin)
            self.lins.append(lin)
            if bn_layer:
                bn = nn.BatchNorm1d(d_out, eps=bn_eps, momentum=momentum, affine=affine,
                                    dtype=self.dtype)
                with torch.no_grad():
                    if affine:
                        bn.weight.copy_(torch.from_numpy(np.array(net.bn_gammas[l])))
                        bn.bias.copy_(torch.from_numpy(np.array(net.bn_betas[l])))
                    bn.running_mean.copy_(torch.from_numpy(np.array(net.running_means[l])))
                    bn.running_var.copy_(torch.from_numpy(np.array(net.running_vars[l])))
                bn.register_forward_hook(self._hook(self.y, self.dy, l))
                a = torch_activation(activation, alpha)
                a.register_forward_hook(self._hook(self.h, self.dh, l))
                modules += [bn, a]
                self.bns.append(bn)
            elif output_activation != "identity":
                modules.append(torch_activation(output_activation, alpha))
        self.model = nn.Sequential(*modules)
        self.model.train(net.training)

    @staticmethod
    def _hook(store, grad_store, l):
        def save(grad):
            grad_store[l] = grad.detach().clone()

        def hook(module, inputs, output):
            store[l] = output
            if output.requires_grad:
                output.register_hook(save)
        return hook

    def run(self, x, *, target=None, loss=None, grad_out=None):
        self.model.zero_grad(set_to_none=True)
        out = self.model(torch.from_numpy(np.array(x)))
        out.retain_grad()
        L = self.L
        self.y[L - 1] = self.z[L - 1]
        self.h[L - 1] = out
        loss_value = float("nan")
        if grad_out is not None:
            out.backward(torch.from_numpy(np.array(grad_out)))
        elif loss == "mse":
            lt = 0.5 * ((out - torch.from_numpy(np.array(target))) ** 2).sum() / x.shape[0]
            lt.backward()
            loss_value = float(lt.detach().double())
        else:
            lt = F.cross_entropy(out, torch.from_numpy(np.asarray(target, dtype=np.int64)))
            lt.backward()
            loss_value = float(lt.detach().double())
        self.dy[L - 1] = self.dz[L - 1]
        self.dh[L - 1] = out.grad.detach().clone()
        np64 = lambda t: t.detach().to(torch.float64).numpy().copy()  # noqa: E731
        affine = bool(self.bns) and self.bns[0].affine
        return dict(
            out=np64(out), loss=loss_value,
            z=[np64(t) for t in self.z], y=[np64(t) for t in self.y],
            h_native=[t.detach().numpy().copy() for t in self.h],
            dz=[np64(t) for t in self.dz], dh=[np64(t) for t in self.dh],
            dw=[np64(m.weight.grad) for m in self.lins], db=np64(self.lins[-1].bias.grad),
            dgamma=[np64(b.weight.grad) for b in self.bns] if affine else None,
            dbeta=[np64(b.bias.grad) for b in self.bns] if affine else None,
            running_means=[np64(b.running_mean) for b in self.bns],
            running_vars=[np64(b.running_var) for b in self.bns],
        )

    def sgd(self, lr):
        with torch.no_grad():
            for p in self.model.parameters():
                p -= lr * p.grad

    def load_parameters(self, net):
        with torch.no_grad():
            for l, lin in enumerate(self.lins):
                lin.weight.copy_(torch.from_numpy(np.array(net.weights[l])))
            self.lins[-1].bias.copy_(torch.from_numpy(np.array(net.biases[-1])))
            for l, bn in enumerate(self.bns):
                if bn.affine:
                    bn.weight.copy_(torch.from_numpy(np.array(net.bn_gammas[l])))
                    bn.bias.copy_(torch.from_numpy(np.array(net.bn_betas[l])))

    def eval(self):
        self.model.eval()

    def train(self):
        self.model.train()




def fraction_brackets(y, h_native, act, alpha, tol):
    """[lo, hi] of saturated / zero / dead fractions of h = act(y) for y +- tol."""
    def sat(t):
        if act in ("identity", "relu"):
            return np.zeros(t.shape, bool)
        d = R.act_derivative(t, act, alpha)
        return R.saturated_mask(d, act, alpha)

    samples = [sat(y), sat(y - tol), sat(y + tol)]
    sat_lo, sat_hi = samples[0] & samples[1] & samples[2], samples[0] | samples[1] | samples[2]
    if act == "relu":
        zs = [y <= 0, y - tol <= 0, y + tol <= 0]
        zero_lo, zero_hi = zs[0] & zs[1] & zs[2], zs[0] | zs[1] | zs[2]
    else:
        zero_lo = zero_hi = h_native == 0
    return dict(saturated_fraction=(sat_lo.mean(), sat_hi.mean()),
                zero_fraction=(zero_lo.mean(), zero_hi.mean()),
                dead_fraction=(zero_lo.all(axis=0).mean(), zero_hi.all(axis=0).mean()))


def check_step_vs_torch(net, rep, ref, rtol, activation, alpha, affine, *, with_loss):
    L = net.num_layers
    assert rep.num_layers == L
    for field in ALL_FIELDS:
        arr = getattr(rep, field)
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.shape == (L,), field
    np.testing.assert_array_equal(rep.grad_log2_scale, np.zeros(L))
    if with_loss:
        assert_scalar_rel(rep.loss, ref["loss"], rtol, "loss")
    else:
        assert math.isnan(rep.loss)
    own = 1e-6 if net.weights[0].dtype == np.float32 else 1e-12
    for l in range(L):
        assert_close_norm(net.weight_grads[l], ref["dw"][l], rtol, f"weight_grads[{l}]")
        assert_scalar_rel(rep.weight_grad_norm[l], np.linalg.norm(ref["dw"][l]), rtol,
                          f"weight_grad_norm[{l}]")
        assert_scalar_rel(rep.weight_grad_norm[l],
                          np.linalg.norm(net.weight_grads[l].astype(np.float64)), own,
                          f"weight_grad_norm[{l}] vs ||net.weight_grads[{l}]||")
        assert_scalar_rel(rep.preact_grad_norm[l], np.linalg.norm(ref["dz"][l]), rtol,
                          f"preact_grad_norm[{l}] (pre-BN dL/dz)")
        assert_scalar_rel(rep.act_grad_norm[l], np.linalg.norm(ref["dh"][l]), rtol,
                          f"act_grad_norm[{l}]")
        if l < L - 1:
            assert net.bias_grads[l].shape == (0,)
            assert math.isnan(rep.bias_grad_norm[l]), f"bias_grad_norm[{l}] on a BN layer"
            assert math.isnan(rep.log10_bias_grad_norm[l])
            if affine:
                assert_close_norm(net.bn_gamma_grads[l], ref["dgamma"][l], rtol,
                                  f"bn_gamma_grads[{l}]")
                assert_close_norm(net.bn_beta_grads[l], ref["dbeta"][l], rtol,
                                  f"bn_beta_grads[{l}]")
                assert_scalar_rel(rep.gamma_grad_norm[l], np.linalg.norm(ref["dgamma"][l]), rtol,
                                  f"gamma_grad_norm[{l}]")
                assert_scalar_rel(rep.beta_grad_norm[l], np.linalg.norm(ref["dbeta"][l]), rtol,
                                  f"beta_grad_norm[{l}]")
                assert_scalar_rel(rep.gamma_grad_norm[l],
                                  np.linalg.norm(net.bn_gamma_grads[l].astype(np.float64)), own,
                                  f"gamma_grad_norm[{l}] vs ||net.bn_gamma_grads[{l}]||")
            else:
                assert math.isnan(rep.gamma_grad_norm[l]) and math.isnan(rep.beta_grad_norm[l])
        else:
            assert_close_norm(net.bias_grads[l], ref["db"], rtol, "bias_grads[-1]")
            assert_scalar_rel(rep.bias_grad_norm[l], np.linalg.norm(ref["db"]), rtol,
                              "bias_grad_norm[-1]")
            assert math.isnan(rep.gamma_grad_norm[l]) and math.isnan(rep.beta_grad_norm[l])
            assert math.isnan(rep.log10_gamma_grad_norm[l])
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in R.NORM_FIELDS + R.BN_NORM_FIELDS:
            np.testing.assert_allclose(getattr(rep, "log10_" + name),
                                       np.log10(getattr(rep, name)), rtol=0, atol=1e-12,
                                       err_msg="log10_" + name)
    # forward statistics: preact of the pre-BN z, fractions of h = act(y)
    z_rtol = 1e-9 if rtol <= 1e-9 else rtol
    for l in range(L):
        z = ref["z"][l]
        mean, std = z.mean(), z.std()
        assert_scalar_rel(rep.preact_mean[l], mean, 0.0, f"preact_mean[{l}] (pre-BN z)",
                          atol=rtol * (std + abs(mean)) + 1e-300)
        assert_scalar_rel(rep.preact_std[l], std, rtol, f"preact_std[{l}] (pre-BN z)")
        act = activation if l < L - 1 else "identity"
        y = ref["y"][l]
        tol = z_rtol * (np.abs(y) + y.std()) + 1e-300
        for name, (lo, hi) in fraction_brackets(y, ref["h_native"][l], act, alpha, tol).items():
            value = getattr(rep, name)[l]
            assert lo - 1e-12 <= value <= hi + 1e-12, (
                f"{name}[{l}] = {value!r}, torch bracket [{lo!r}, {hi!r}]")


def check_state_vs_torch(net, twin, rtol, what):
    """Parameters and running statistics after an update."""
    L = net.num_layers
    for l in range(L):
        assert_close_norm(net.weights[l], twin.lins[l].weight.detach().numpy(), rtol,
                          f"{what}: weights[{l}]")
    assert_close_norm(net.biases[-1], twin.lins[-1].bias.detach().numpy(), rtol,
                      f"{what}: biases[-1]")
    for l, bn in enumerate(twin.bns):
        if bn.affine:
            assert_close_norm(net.bn_gammas[l], bn.weight.detach().numpy(), rtol,
                              f"{what}: bn_gammas[{l}]")
            assert_close_norm(net.bn_betas[l], bn.bias.detach().numpy(), rtol,
                              f"{what}: bn_betas[{l}]")
        assert_close_norm(net.running_means[l], bn.running_mean.numpy(), rtol,
                          f"{what}: running_means[{l}]")
        assert_close_norm(net.running_vars[l], bn.running_var.numpy(), rtol,
                          f"{what}: running_vars[{l}]")


# (sizes, batch, bn_momentum, bn_eps, lr): depth 1 (no BN at all), depth 5 with a tiny batch
# and with batch 64 and odd widths, depth 30. At depth 30 the learning rate is small and the
# momentum large, so that the running statistics have caught up with the batch statistics when
# the net switches to eval mode (with lr 0.05 and momentum 0.1 a ReLU net's eval-mode output
# explodes to ~1e6 within three steps: a property of BN, not a useful test).
TWIN_SHAPES = [
    ([13, 7], 5, 0.1, 1e-5, 0.05),
    ([13, 37, 64, 37, 100, 10], 3, 0.3, 1e-3, 0.05),
    ([13, 37, 64, 37, 100, 10], 64, 0.1, 1e-5, 0.05),
    ([37] * 30 + [7], 32, 0.5, 1e-5, 0.003),
]
TWIN_IDS = [f"L{len(s[0]) - 1}-B{s[1]}" for s in TWIN_SHAPES]
TRAIN_STEPS, EVAL_STEPS = 3, 2


def twin_rtol(dtype, depth):
    """Norm-relative tolerance of the torch cross-check over a trajectory. Measured on these
    exact trajectories: torch-float32 vs torch-float64 <= 3e-5 (depth 5; 1e-6 at batch 64) and
    <= 6e-4 (depth 30, ReLU: BN's gradient explosion amplifies rounding); a NumPy-float32
    implementation vs torch-float32 <= 2e-5 / 5e-4; NumPy-float64 vs torch-float64 <= 6e-14
    (depth 5) and <= 5e-13 (depth 30)."""
    if dtype == "float64":
        return 1e-10
    return 3e-4 if depth <= 5 else 5e-3


def twin_data(rng, sizes, batch, dtype, loss, steps):
    xs, ts = [], []
    for _ in range(steps):
        xs.append(rng.standard_normal((batch, sizes[0])).astype(NP_DTYPE[dtype]))
        if loss == "mse":
            ts.append(rng.standard_normal((batch, sizes[-1])).astype(NP_DTYPE[dtype]))
        else:
            ts.append(rng.integers(0, sizes[-1], batch))
    return xs, ts


def grad_out_for(out, target, loss):
    """dL/d(out) of the loss in float64, cast to out's dtype."""
    return R.loss_and_grad(np.asarray(out, np.float64), target, loss)[1].astype(out.dtype)


def run_twin_trajectory(net, twin, xs, ts, loss, rtol, activation, alpha, affine, *, lr):
    """TRAIN_STEPS steps in train mode, each followed by an SGD update of both nets, then
    EVAL_STEPS in eval mode (inference: no update; an SGD step on an eval-mode loss of a deep
    ReLU net whose running statistics lag behind diverges). Even steps use net.step, odd steps
    forward + backward(grad_out)."""
    for k, (x, t) in enumerate(zip(xs, ts)):
        if k == TRAIN_STEPS:
            net.eval()
            twin.eval()
            assert net.training is False
        mode = "train" if k < TRAIN_STEPS else "eval"
        what = f"step {k} ({mode})"
        if k % 2 == 0:
            ref = twin.run(x, target=t, loss=loss)
            rep = net.step(x, t, loss=loss)
            with_loss = True
        else:
            out = net.forward(x)
            assert out.dtype == x.dtype and out.shape == (x.shape[0], net.sizes[-1])
            g = grad_out_for(out, t, loss)
            ref = twin.run(x, grad_out=g)
            assert_close_norm(out, ref["out"], rtol, f"{what}: forward output")
            rep = net.backward(g)
            with_loss = False
        try:
            check_step_vs_torch(net, rep, ref, rtol, activation, alpha, affine,
                                with_loss=with_loss)
            check_state_vs_torch(net, twin, rtol, what + " before the update")
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        if k >= TRAIN_STEPS:
            continue
        net.params = net.params - lr * net.grads
        twin.sgd(lr)
        check_state_vs_torch(net, twin, rtol, what + " after the update")
        # continue both from vgkern's parameters, so that the next step compares one step's
        # arithmetic instead of the growth of rounding differences along a chaotic trajectory
        # (the running statistics are not synced: their errors do not grow)
        twin.load_parameters(net)
    # eval mode: forward is deterministic and leaves the running statistics alone
    before = [np.array(m) for m in net.running_means]
    a = net.forward(xs[0])
    b = net.forward(xs[0])
    np.testing.assert_array_equal(a, b)
    for m, m0 in zip(net.running_means, before):
        np.testing.assert_array_equal(m, m0)


# float32 x ReLU x depth 30 is left out of the gradient comparison: BN's forward is as
# sensitive as its backward (Yang et al.), so float32 rounding moves a layer-20 pre-activation
# by ~1e-5 and over 5 steps some entry of the ~35000 per step lies that close to ReLU's kink
# (measured: y = 6.3e-6 in float64; vgkern float32 puts it at <= 0, torch float32 at 4e-5).
# One flipped mask entry changes dL/dW_0 by 18% after BN's gradient explosion, for any float32
# implementation: the gradient is not a continuous function of the rounding there. Its forward
# pass (continuous) is compared below; float64 ReLU depth 30 is in the full comparison.
TWIN_CASES = [(d, a, l, s) for d in ("float32", "float64")
              for a in ("tanh", "relu", "sigmoid", "elu")
              for l in ("mse", "cross_entropy")
              for s in range(len(TWIN_SHAPES))
              if not (d == "float32" and a == "relu" and len(TWIN_SHAPES[s][0]) > 10)]


def make_twin_case(dtype, activation, shape, device="cpu"):
    sizes, batch, momentum, bn_eps, lr = shape
    depth = len(sizes) - 1
    seed = 100 + 7 * depth + batch
    init = "he_normal" if activation == "relu" else "xavier_normal"
    net = bn_net(sizes, activation, init, dtype, seed=seed, bn_momentum=momentum, bn_eps=bn_eps,
                 device=device)
    rng = np.random.default_rng(seed)
    randomize_bn_state(net, rng, rv_range=(0.8, 1.25), rm_spread=0.1)
    twin = TorchTwin(net, activation, momentum=momentum, bn_eps=bn_eps)
    return net, twin, rng


@pytest.mark.parametrize("dtype,activation,loss,shape_index", TWIN_CASES,
                         ids=[f"{d}-{a}-{l}-{TWIN_IDS[s]}" for d, a, l, s in TWIN_CASES])
def test_bn_mlp_matches_torch_over_sgd_steps(dtype, activation, loss, shape_index, device):
    shape = TWIN_SHAPES[shape_index]
    sizes, batch, _, _, lr = shape
    depth = len(sizes) - 1
    net, twin, rng = make_twin_case(dtype, activation, shape, device)
    if depth == 1:
        assert list(net.bn_gammas) == [] and list(net.running_means) == []
    xs, ts = twin_data(rng, sizes, batch, dtype, loss, TRAIN_STEPS + EVAL_STEPS)
    run_twin_trajectory(net, twin, xs, ts, loss, twin_rtol(dtype, depth), activation, 1.0,
                        affine=True, lr=lr)


def test_bn_relu_depth30_float32_forward_matches_torch():
    """The forward half of the case left out above: outputs, forward statistics and running
    statistics over train-mode forwards, then eval-mode forwards."""
    shape = TWIN_SHAPES[-1]
    sizes, batch = shape[0], shape[1]
    net, twin, rng = make_twin_case("float32", "relu", shape)
    xs, _ = twin_data(rng, sizes, batch, "float32", "mse", 5)
    rtol = twin_rtol("float32", 30)
    for k, x in enumerate(xs):
        if k == 3:
            net.eval()
            twin.eval()
        ref = twin.run(x, grad_out=np.zeros((batch, sizes[-1]), np.float32))
        out = net.forward(x)
        assert_close_norm(out, ref["out"], rtol, f"forward {k}: output")
        rep = net.backward(np.zeros((batch, sizes[-1]), np.float32))
        for l in range(30):
            z = ref["z"][l]
            assert_scalar_rel(rep.preact_std[l], z.std(), rtol, f"forward {k}: preact_std[{l}]")
            assert_scalar_rel(rep.preact_mean[l], z.mean(), 0.0, f"forward {k}: preact_mean[{l}]",
                              atol=rtol * (z.std() + abs(z.mean())))
        for l in range(29):
            assert_close_norm(net.running_means[l], twin.bns[l].running_mean.numpy(), rtol,
                              f"forward {k}: running_means[{l}]")
            assert_close_norm(net.running_vars[l], twin.bns[l].running_var.numpy(), rtol,
                              f"forward {k}: running_vars[{l}]")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bn_affine_false_matches_torch_over_sgd_steps(dtype):
    sizes, batch = [11, 24, 24, 24, 5], 16
    net = bn_net(sizes, "tanh", "xavier_normal", dtype, seed=3, bn_affine=False,
                 bn_momentum=0.2)
    rng = np.random.default_rng(3)
    randomize_bn_state(net, rng)
    twin = TorchTwin(net, "tanh", momentum=0.2, affine=False)
    xs, ts = twin_data(rng, sizes, batch, dtype, "mse", TRAIN_STEPS + EVAL_STEPS)
    run_twin_trajectory(net, twin, xs, ts, "mse", twin_rtol(dtype, 4), "tanh", 1.0,
                        affine=False, lr=0.05)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bn_eval_mode_batch_of_one_matches_torch(dtype):
    sizes = [6, 10, 10, 3]
    net = bn_net(sizes, "relu", "he_normal", dtype, seed=2)
    rng = np.random.default_rng(2)
    randomize_bn_state(net, rng)
    net.eval()
    twin = TorchTwin(net, "relu")
    x = rng.standard_normal((1, 6)).astype(NP_DTYPE[dtype])
    t = rng.standard_normal((1, 3)).astype(NP_DTYPE[dtype])
    ref = twin.run(x, target=t, loss="mse")
    rep = net.step(x, t)
    check_step_vs_torch(net, rep, ref, twin_rtol(dtype, 3), "relu", 1.0, True, with_loss=True)


# ============================================================================================
# The known effect: BN makes gradients grow towards the input at initialization
# ============================================================================================

EFFECT_WIDTH, EFFECT_BATCH, EFFECT_DEPTH = 128, 128, 40


def effect_report(activation, init, batch_norm, seed, dtype="float32", device="cpu"):
    sizes = [EFFECT_WIDTH] * EFFECT_DEPTH + [10]
    net = vgkern.MLP(sizes, activation=activation, init=init, dtype=dtype, seed=seed,
                     batch_norm=batch_norm, device=device)
    data = np.random.default_rng(seed + 1000)
    x = data.standard_normal((EFFECT_BATCH, EFFECT_WIDTH)).astype(dtype)
    t = data.standard_normal((EFFECT_BATCH, 10)).astype(dtype)
    return net.step(x, t, loss="mse").log10_preact_grad_norm


def growth_per_layer(logs):
    """Least-squares slope of log10 ||dL/dz_l|| over the hidden layers, sign flipped:
    > 0 when gradients grow towards the input."""
    hidden = logs[:-1]
    return -np.polyfit(np.arange(hidden.size), hidden, 1)[0]


# Measured (torch float32 and the NumPy float64 oracle agree to 0.01), seeds 0-7, depth 40,
# width 128, batch 128: relu+BN layer0 - layer38 = +2.88..+2.98, slope 0.081..0.084
# (Yang et al.: 0.5 log10(pi / (pi - 1)) = 0.0832); tanh+BN +1.28..+1.42, slope 0.038..0.042;
# sigmoid without BN -23.8..-24.1, slope -0.63; sigmoid with BN -0.23..-0.25.
@pytest.mark.parametrize("seed", [0, 1])
def test_bn_gradients_grow_towards_input(seed, device):
    relu = effect_report("relu", "he_normal", True, seed, device=device)
    tanh = effect_report("tanh", "xavier_normal", True, seed, device=device)
    L = EFFECT_DEPTH
    assert np.all(np.isfinite(relu)) and np.all(np.isfinite(tanh))
    # layer 0 clearly above the last hidden layer
    assert relu[0] - relu[L - 2] > 2.3, relu
    assert tanh[0] - tanh[L - 2] > 0.9, tanh
    # steady geometric growth, at Yang et al.'s rate for ReLU
    assert 0.070 < growth_per_layer(relu) < 0.095, growth_per_layer(relu)
    assert 0.025 < growth_per_layer(tanh) < 0.060, growth_per_layer(tanh)
    # monotone at a stride of 5 (ReLU) / 10 (tanh) layers
    assert np.all(relu[:L - 6] > relu[5:L - 1]), relu
    assert np.all(tanh[:L - 11] > tanh[10:L - 1]), tanh


@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_gradients_vanish_without_bn(seed, device):
    plain = effect_report("sigmoid", "xavier_normal", False, seed, device=device)
    bn = effect_report("sigmoid", "xavier_normal", True, seed, device=device)
    L = EFFECT_DEPTH
    assert plain[0] - plain[L - 2] < -18, plain
    assert np.all(plain[:L - 2] < plain[1:L - 1]), "without BN sigmoid gradients shrink per layer"
    assert growth_per_layer(plain) < -0.5
    # the same net with BN: no vanishing (within a factor 10 over 38 layers)
    assert bn[0] - bn[L - 2] > -1.0, bn


# ============================================================================================
# Bad input
# ============================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_train_batch_of_one_raises(dtype, device):
    net = bn_net([4, 5, 5, 2], "tanh", dtype=dtype, device=device)
    x = np.ones((1, 4), dtype)
    for call in (lambda: net.forward(x), lambda: net.step(x, np.zeros((1, 2), dtype)),
                 lambda: net.step(x, np.array([1]), loss="cross_entropy")):
        with pytest.raises(ValueError, match="(?i)batch"):
            call()
    # running statistics untouched by the failed calls, and the net still works
    assert all(np.all(m == 0) for m in net.running_means)
    assert all(np.all(v == 1) for v in net.running_vars)
    rep = net.step(np.ones((2, 4), dtype), np.zeros((2, 2), dtype))
    assert np.isfinite(rep.loss)
    # torch agrees that this is an error
    with pytest.raises(ValueError):
        nn.BatchNorm1d(5)(torch.ones(1, 5))
    # the op too
    with pytest.raises(ValueError):
        ops.batchnorm_forward(np.ones((1, 3), dtype), None, None, None, None, training=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_eval_batch_of_one_works(dtype, rng, device):
    sizes = [4, 5, 5, 2]
    net = bn_net(sizes, "tanh", dtype=dtype, seed=1, device=device)
    randomize_bn_state(net, rng)
    net.eval()
    state = snapshot(net)
    x = rng.standard_normal((1, 4)).astype(dtype)
    out = net.forward(x)
    ref = oracle_for(state, x, "tanh", np.float64, training=False, grad_out=np.ones((1, 2)))
    np.testing.assert_allclose(out, ref.out, rtol=1e-5 if dtype == np.float32 else 1e-12)
    rep = net.backward(np.ones((1, 2), dtype))
    assert np.all(np.isfinite(rep.weight_grad_norm))
    assert np.all(np.isfinite(rep.gamma_grad_norm[:2]))
    y, mean, rstd = ops.batchnorm_forward(x, None, None, np.zeros(4, dtype), np.ones(4, dtype),
                                          training=False)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=4 * eps(dtype))


@pytest.mark.parametrize("width", [16, 37, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_dead_and_saturated_units_are_counted_exactly(dtype, width, rng, device):
    """BN layers count saturation and zeros per vector lane and mark nonzero columns per row
    block: units forced dead (beta = -100 before a relu) or saturated (gamma = 100 before a
    tanh) must come out exactly, for widths that are and are not multiples of the lanes."""
    x = rng.standard_normal((64, width)).astype(dtype)
    target = np.zeros((64, 3), dtype)
    net = vgkern.MLP([width, width, 3], activation="relu", batch_norm=True, dtype=dtype, seed=0,
                     device=device)
    betas = np.array(net.bn_betas[0])
    betas[:5] = -100.0
    net.bn_betas[0] = betas
    rep = net.step(x, target)
    xhat = (x @ np.asarray(net.weights[0], np.float64).T)
    xhat = (xhat - xhat.mean(0)) / np.sqrt(xhat.var(0) + 1e-5)
    h = np.maximum(np.asarray(net.bn_gammas[0], np.float64) * xhat + betas, 0.0)
    assert rep.dead_fraction[0] == (h == 0).all(axis=0).mean() == 5 / width
    assert rep.zero_fraction[0] == pytest.approx((h == 0).mean(), abs=2 / h.size)
    assert rep.saturated_fraction[0] == 0.0

    net = vgkern.MLP([width, width, 3], activation="tanh", batch_norm=True, dtype=dtype, seed=0,
                     device=device)
    gammas = np.array(net.bn_gammas[0])
    gammas[:3] = 100.0
    net.bn_gammas[0] = gammas
    rep = net.step(x, target)
    y = gammas * xhat + np.asarray(net.bn_betas[0], np.float64)
    saturated = 1 - np.tanh(y) ** 2 < 0.01
    assert rep.saturated_fraction[0] == pytest.approx(saturated.mean(), abs=2 / y.size)
    assert rep.saturated_fraction[0] > 3 / width * 0.8
    assert rep.dead_fraction[0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_dead_fraction_ignores_the_blocks_of_earlier_calls(dtype, device):
    """Batches of 4 rows (row blocks 0-1 and 2-3), x = c * (1, 1) with nonnegative weights: after
    batch norm a relu unit is zero exactly where c is below the batch's mean. Call 1 makes block
    0 zero in every unit, call 2 block 1 (block 0 then has no zero at all); no unit is zero in
    every row, so dead_fraction is 0. Reading block 0's nonzero-column flags left over from call
    1 (all 0) in call 2 would report every unit dead."""
    net = vgkern.MLP([2, 4, 1], activation="relu", batch_norm=True, dtype=dname(dtype), seed=0,
                     device=device)
    net.weights[0] = np.abs(np.array(net.weights[0])) + np.asarray(0.1, dtype)
    target = np.zeros((4, 1), dtype)
    calls = [[-2, -1, 1, 2], [2, 1, -1, -2], [-2, -1, 1, 2], [1, -1, 2, -2], [2, 1, -1, -2]]
    for i, c in enumerate(calls):
        x = np.outer(c, [1.0, 1.0]).astype(dtype)
        rep = net.step(x, target, loss="mse")
        assert rep.zero_fraction[0] == 0.5, (i, c, rep.zero_fraction)
        assert rep.dead_fraction[0] == 0.0, f"call {i} with c = {c}: {rep.dead_fraction}"


@pytest.mark.parametrize("case", ["constant-column", "zero-weight-row", "all-constant"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_zero_variance_feature_is_finite(dtype, case, rng, device):
    sizes, batch = [5, 6, 6, 3], 8
    net = bn_net(sizes, "tanh", "xavier_normal", dtype, seed=3, device=device)
    randomize_bn_state(net, rng)
    x = rng.standard_normal((batch, 5)).astype(dtype)
    ws = [np.array(w) for w in net.weights]
    if case == "zero-weight-row":
        ws[0][2, :] = 0  # unit 2 of layer 0 is 0 for every example: var = 0
        ws[1][4, :] = 0
    elif case == "constant-column":
        x[:, 1] = dtype(1000.1)
        ws[0][...] = 0
        ws[0][:, 1] = dtype(0.01)  # every unit of layer 0 sees only the constant
    else:
        x[...] = dtype(0.3)
    net.weights = ws
    state = snapshot(net)
    t = rng.standard_normal((batch, 3)).astype(dtype)
    rep = net.step(x, t)
    assert np.isfinite(rep.loss)
    for arrays in (net.weight_grads, net.bn_gamma_grads, net.bn_beta_grads,
                   [net.bias_grads[-1]], net.running_means, net.running_vars):
        for a in arrays:
            assert np.all(np.isfinite(a)), (case, a)
    for field in ("weight_grad_norm", "preact_grad_norm", "act_grad_norm", "preact_std"):
        assert np.all(np.isfinite(getattr(rep, field))), (field, getattr(rep, field))
    # and it is the right answer: y = beta on a zero-variance unit, gradients as the oracle's
    ref = oracle_for(state, x, "tanh", np.float64, target=t, loss="mse")
    tol = 1e-3 if dtype == np.float32 else 1e-9
    assert rep.loss == pytest.approx(ref.loss, rel=tol)
    inputs = [x.astype(np.float64)] + ref.hs[:-1]
    for l in range(3):
        # dW = dz^T h: a sum over rows of dz (which sums to ~0 on a zero-variance unit), so
        # the absolute error scale is ||dz|| ||h||
        scale = np.linalg.norm(ref.dz[l]) * np.linalg.norm(inputs[l])
        assert_close_norm(net.weight_grads[l], ref.dW[l], tol, f"dW[{l}]", atol=tol * scale)
    for l in range(2):
        scale = np.linalg.norm(ref.dy[l]) * math.sqrt(batch)
        assert_close_norm(net.bn_gamma_grads[l], ref.dgamma[l], tol, f"dgamma[{l}]",
                          atol=tol * scale)
        assert_close_norm(net.bn_beta_grads[l], ref.dbeta[l], tol, f"dbeta[{l}]",
                          atol=tol * scale)
    # the op on constant columns: finite everything; y = beta up to the rounding of the mean
    # (|x - mean| of a few ulps of x, amplified by rstd = 1/sqrt(eps))
    xc = np.empty((6, 3), dtype)
    xc[:, 0] = dtype(1000.1)
    xc[:, 1] = dtype(0.75)
    xc[:, 2] = rng.standard_normal(6)
    gamma, beta = np.array([2.0, 2.0, 1.0], dtype), np.array([0.25, -0.5, 0.0], dtype)
    y, mean, rstd = ops.batchnorm_forward(xc, gamma, beta, None, None, training=True)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(rstd)) and np.all(np.isfinite(mean))
    for col in (0, 1):
        atol = 4 * 2.0 * float(rstd[col]) * float(np.spacing(xc[0, col]))
        assert float(rstd[col]) == pytest.approx(1 / math.sqrt(1e-5), rel=1e-3)
        np.testing.assert_allclose(y[:, col], beta[col], rtol=0, atol=atol)
    dx, dg, db = ops.batchnorm_backward(rng.standard_normal((6, 3)).astype(dtype), xc, mean,
                                        rstd, gamma)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dg)) and np.all(np.isfinite(db))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_non_finite_input_does_not_crash(dtype, training, bad, rng):
    sizes, batch = [4, 6, 6, 2], 5
    net = bn_net(sizes, "relu", "he_normal", dtype, seed=4)
    net.train() if training else net.eval()
    x = rng.standard_normal((batch, 4)).astype(dtype)
    x[2, 1] = bad
    t = rng.standard_normal((batch, 2)).astype(dtype)
    twin = TorchTwin(net, "relu")
    with np.errstate(all="ignore"):
        torch_out = twin.run(x, grad_out=np.ones((batch, 2), dtype))["out"]
    out = net.forward(x)
    assert out.shape == (batch, 2)
    # non-finite exactly where torch's output is (train: the batch statistics of every unit
    # are poisoned, so every row; eval: only the poisoned row)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(torch_out))
    assert np.isfinite(out).any() != training
    rep = net.step(x, t)
    for field in ALL_FIELDS:
        assert getattr(rep, field).shape == (3,), field
    net.backward(np.ones((batch, 2), dtype))
    # a clean batch afterwards works (train: running stats may now be NaN, as in torch)
    x_clean = rng.standard_normal((batch, 4)).astype(dtype)
    net.train()
    rep = net.step(x_clean, t)
    assert np.isfinite(rep.loss) and np.all(np.isfinite(rep.weight_grad_norm))
    # the ops as well
    xb = rng.standard_normal((6, 3)).astype(dtype)
    xb[0, 0] = bad
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y, mean, rstd = ops.batchnorm_forward(xb, None, None, rm, rv, training=training)
    dx, _, _ = ops.batchnorm_backward(np.ones((6, 3), dtype), xb, mean, rstd, None,
                                      training=training)
    # the clean columns are unaffected
    assert np.all(np.isfinite(y[:, 1:])) and np.all(np.isfinite(dx[:, 1:]))
    if training:
        assert not np.isfinite(y[:, 0]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_ops_argument_checks(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    n, c = 4, 3
    x = np.ones((n, c), dtype)
    x[0] = 2
    g, b = np.ones(c, dtype), np.zeros(c, dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    fwd = ops.batchnorm_forward
    # dtypes: never a silent cast
    with pytest.raises(TypeError):
        fwd(x.astype(other), g, b, rm, rv)
    with pytest.raises(TypeError):
        fwd(x, g.astype(other), b, rm, rv)
    with pytest.raises(TypeError):
        fwd(x, g, b.astype(other), rm, rv)
    with pytest.raises(TypeError):
        fwd(x, g, b, rm.astype(other), rv)
    with pytest.raises(TypeError):
        fwd(x, g, b, rm, rv.astype(other))
    with pytest.raises(TypeError):
        fwd(x.astype(np.int64), None, None, None, None)
    # shapes
    with pytest.raises(ValueError):
        fwd(np.ones(c, dtype), g, b, rm, rv)
    with pytest.raises(ValueError):
        fwd(np.ones((n, c, 1), dtype), g, b, rm, rv)
    with pytest.raises(ValueError):
        fwd(x, np.ones(c + 1, dtype), b, rm, rv)
    with pytest.raises(ValueError):
        fwd(x, g, np.zeros(c - 1, dtype), rm, rv)
    with pytest.raises(ValueError):
        fwd(x, g, b, np.zeros(c + 1, dtype), rv)
    with pytest.raises(ValueError):
        fwd(x, g, b, rm, np.ones((c, 1), dtype))
    # eval mode needs running statistics
    with pytest.raises(ValueError, match="(?i)running"):
        fwd(x, g, b, None, None, training=False)
    with pytest.raises(ValueError):
        fwd(x, g, b, rm, None, training=False)
    # none of the failed calls touched the running statistics
    np.testing.assert_array_equal(rm, np.zeros(c, dtype))
    np.testing.assert_array_equal(rv, np.ones(c, dtype))
    # backward
    y, mean, rstd = fwd(x, g, b, rm, rv)
    np.testing.assert_allclose(rm, 0.1 * 1.25, rtol=4 * eps(dtype))
    bwd = ops.batchnorm_backward
    dy = np.ones((n, c), dtype)
    with pytest.raises(TypeError):
        bwd(dy.astype(other), x, mean, rstd, g)
    with pytest.raises(TypeError):
        bwd(dy, x, mean.astype(other), rstd, g)
    with pytest.raises(TypeError):
        bwd(dy, x, mean, rstd, g.astype(other))
    with pytest.raises(ValueError):
        bwd(np.ones((n + 1, c), dtype), x, mean, rstd, g)
    with pytest.raises(ValueError):
        bwd(dy, x, np.zeros(c + 1, dtype), rstd, g)
    with pytest.raises(ValueError):
        bwd(dy, x, mean, rstd[:-1].copy(), g)
    with pytest.raises(ValueError):
        bwd(dy, x, mean, rstd, np.ones(c + 1, dtype))
    with pytest.raises(ValueError):
        bwd(dy, np.ones((n, c + 1), dtype), mean, rstd, g)


@pytest.mark.parametrize("kwargs", [dict(eps=-1e-5), dict(eps=float("nan")),
                                    dict(eps=float("inf")), dict(momentum=float("nan"))],
                         ids=["eps-neg", "eps-nan", "eps-inf", "momentum-nan"])
def test_batchnorm_ops_hyperparameter_checks(kwargs):
    """Hyper-parameters that can only give NaN are a ValueError (value errors name the
    argument), for the op and for the MLP constructor."""
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    with pytest.raises(ValueError):
        ops.batchnorm_forward(x, None, None, np.zeros(3), np.ones(3), **kwargs)
    with pytest.raises(ValueError):
        bn_net([4, 5, 3], **{"bn_" + k: v for k, v in kwargs.items()})


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bn_mlp_input_checks(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    net = bn_net([4, 5, 3], "tanh", dtype=dtype)
    with pytest.raises(TypeError):
        net.forward(np.zeros((3, 4), other))
    with pytest.raises(ValueError):
        net.forward(np.zeros((3, 5), dtype))
    net.forward(np.arange(12, dtype=dtype).reshape(3, 4))
    with pytest.raises((RuntimeError, ValueError)):
        net.backward(np.zeros((2, 3), dtype))


# ============================================================================================
# log_scale=True on a BN net
# ============================================================================================

LOG10_ALL = R.LOG10_FIELDS + R.BN_LOG10_FIELDS


def grads_of(net):
    return ([np.array(g) for g in net.weight_grads], [np.array(g) for g in net.bn_gamma_grads],
            [np.array(g) for g in net.bn_beta_grads], np.array(net.bias_grads[-1]))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_scale_equals_plain_on_bn_net(dtype, activation, rng):
    sizes = [7] + [16] * 9 + [3]  # depth 10
    L = 10
    net = bn_net(sizes, activation, "he_normal", dtype, seed=31)
    randomize_bn_state(net, rng)
    x = rng.standard_normal((12, 7)).astype(dtype)
    t = rng.standard_normal((12, 3)).astype(dtype)
    plain = net.step(x, t)
    pw, pg, pb, plast = grads_of(net)
    assert np.all(np.isfinite(plain.gamma_grad_norm[:-1]))
    logrep = net.step(x, t, log_scale=True)
    lw, lg, lb, llast = grads_of(net)
    scale = logrep.grad_log2_scale
    assert scale.dtype == np.float64 and scale.shape == (L,)
    assert np.all(np.isfinite(scale)) and np.array_equal(scale, np.round(scale))
    tol = 16 * eps(dtype) / math.log(10)
    for field in LOG10_ALL:
        np.testing.assert_allclose(getattr(logrep, field), getattr(plain, field), rtol=0,
                                   atol=tol, err_msg=field)
    for field in R.NORM_FIELDS + R.BN_NORM_FIELDS:
        np.testing.assert_allclose(getattr(logrep, field), getattr(plain, field),
                                   rtol=16 * eps(dtype), err_msg=field)
    for field in R.FORWARD_STAT_FIELDS:
        np.testing.assert_array_equal(getattr(logrep, field), getattr(plain, field),
                                      err_msg=field)
    assert math.isnan(logrep.bias_grad_norm[0])

    def rebuilt_ok(stored, true, l, what):
        rebuilt = stored.astype(np.float64) * 2.0 ** scale[l]
        atol = 4 * eps(dtype) * float(np.abs(true).max())
        np.testing.assert_allclose(rebuilt, true, rtol=0, atol=atol,
                                   err_msg=f"{what}[{l}] * 2**scale != plain gradient")

    for l in range(L):
        rebuilt_ok(lw[l], pw[l], l, "dW")
        if l < L - 1:
            rebuilt_ok(lg[l], pg[l], l, "dgamma")
            rebuilt_ok(lb[l], pb[l], l, "dbeta")
    rebuilt_ok(llast, plast, L - 1, "db")
