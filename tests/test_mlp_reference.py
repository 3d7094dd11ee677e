"""vgkern.MLP forward / backward / step against the NumPy oracle (tests/reference.py).

Every activation (ELU with three alphas), every init, both losses, float32 and float64,
depths 1, 2, 3 and 7, batch 1 and 13: outputs, every gradient (weight_grads, bias_grads) and
every GradReport field. Plus: writes to net.weights take effect, init statistics, seeding,
net.stats = False, the GradReport API and error handling.
"""

import math

import numpy as np
import pytest

import vgkern

import reference as R
from conftest import (assert_preact_stats, ACTIVATION_CONFIGS, ACTIVATION_IDS, DTYPE_IDS, DTYPES, INITS, LOSSES,
                      assert_fractions_within, assert_rel_rule, assert_rule, eps,
                      fraction_bounds, oracle_dtype, random_weights, reduction_rtol)

SIZES = [[5, 3], [5, 7, 3], [17, 33, 9], [64, 64, 64, 64], [6, 8, 8, 8, 8, 8, 8, 4]]
SIZE_IDS = ["depth1_5-3", "depth2_5-7-3", "depth2_17-33-9", "depth3_64x4", "depth7_width8"]


def make_net(sizes, activation="tanh", init="xavier_normal", dtype=np.float32, **kwargs):
    return vgkern.MLP(list(sizes), activation=activation, init=init,
                      dtype=np.dtype(dtype).name, **kwargs)


def params_of(net):
    return ([np.array(w, copy=True) for w in net.weights],
            [np.array(b, copy=True) for b in net.biases])


def write_params(net, ws, bs):
    for l, (w, b) in enumerate(zip(ws, bs)):
        if net.device == "cpu":  # in place, into the views
            net.weights[l][...] = w
            net.biases[l][...] = b
        else:  # a CUDA net's lists hold read-only host copies; assignment writes to the device
            net.weights[l] = w
            net.biases[l] = b


def oracles(ws, bs, x, activation, output_activation, alpha, dtype, **kw):
    """(ref, naive): the oracle in the wide precision and the plain NumPy run in ``dtype``."""
    ref = R.mlp_reference(ws, bs, x, activation, output_activation, alpha,
                          dtype=oracle_dtype(dtype), **kw)
    naive = R.mlp_reference(ws, bs, x, activation, output_activation, alpha, dtype=dtype, **kw)
    return ref, naive


def check_gradients(net, ref, naive, dtype):
    num_layers = len(ref.dW)
    assert len(net.weight_grads) == num_layers and len(net.bias_grads) == num_layers
    for l in range(num_layers):
        assert net.weight_grads[l].shape == ref.dW[l].shape
        assert net.bias_grads[l].shape == ref.db[l].shape
        assert_rule(net.weight_grads[l], ref.dW[l], naive.dW[l], dtype, name=f"dW[{l}]")
        assert_rule(net.bias_grads[l], ref.db[l], naive.db[l], dtype, name=f"db[{l}]")


def check_report(rep, ref, naive, dtype, activation, output_activation, alpha, *, loss=None):
    """Every GradReport field against the oracle."""
    num_layers = len(ref.dW)
    assert rep.num_layers == num_layers
    for field in R.REPORT_ARRAY_FIELDS:
        arr = getattr(rep, field)
        assert isinstance(arr, np.ndarray), field
        assert arr.dtype == np.float64 and arr.shape == (num_layers,), (field, arr.dtype, arr.shape)
    sizes = {"weight_grad_norm": [a.size for a in ref.dW],
             "bias_grad_norm": [a.size for a in ref.db],
             "preact_grad_norm": [a.size for a in ref.dz],
             "act_grad_norm": [a.size for a in ref.dh]}
    for field in R.NORM_FIELDS:
        got = getattr(rep, field)
        assert_rel_rule(got, ref[field], naive[field], dtype, rtol=reduction_rtol(sizes[field]),
                        name=field)
        logs = getattr(rep, "log10_" + field)
        with np.errstate(divide="ignore"):
            expected_logs = np.log10(got)
        # log10 fields are the log10 of the norms (-inf for an exact 0) ...
        assert np.array_equal(np.isneginf(logs), got == 0), (field, logs, got)
        fin = got > 0
        assert np.allclose(logs[fin], expected_logs[fin], rtol=0, atol=1e-12), (field, logs, got)
        # ... and agree with the oracle's log10 norms
        assert np.array_equal(np.isneginf(logs), np.isneginf(ref["log10_" + field]))
    # forward statistics
    assert_preact_stats(rep, ref, naive, dtype)
    assert_fractions_within(rep, fraction_bounds(ref.zs, activation, output_activation, alpha))
    assert np.array_equal(rep.grad_log2_scale, np.zeros(num_layers))
    if loss is None:
        assert math.isnan(rep.loss), f"loss after plain backward: {rep.loss}"
    else:
        assert isinstance(rep.loss, float)
        # a reduction over B * d_L terms (NumPy sums pairwise): allow sqrt(B * d_L) ulps
        assert_rule(np.float64(rep.loss), ref.loss, naive.loss, dtype, name="loss",
                    atol_ulps=max(4.0, math.sqrt(ref.out.size)))


def make_target(rng, loss, batch, d_out, dtype):
    if loss == "mse":
        return rng.standard_normal((batch, d_out)).astype(dtype)
    return rng.integers(0, d_out, batch).astype(np.int64)


# --------------------------------------------------------------------------------------------
# step(): every activation x every init x both losses x both dtypes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_step_matches_reference(activation, alpha, init, loss, dtype, rng, device):
    sizes = [17, 33, 9]
    batch = 13
    extra = {"sigma_w": 1.5, "sigma_b": 0.3} if init == "scaled_normal" else {}
    net = make_net(sizes, activation, init, dtype, alpha=alpha, seed=7, device=device, **extra)
    ws, bs = params_of(net)
    if init == "scaled_normal":
        assert any(np.any(b != 0) for b in bs), "scaled_normal with sigma_b=0.3 gave zero biases"
    else:
        assert all(np.all(b == 0) for b in bs), "biases must be zero unless bias_init is given"
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    target = make_target(rng, loss, batch, sizes[-1], dtype)
    rep = net.step(x, target, loss=loss)
    ref, naive = oracles(ws, bs, x, activation, "identity", alpha, dtype, target=target, loss=loss)
    check_gradients(net, ref, naive, dtype)
    check_report(rep, ref, naive, dtype, activation, "identity", alpha, loss=loss)
    # parameters are not modified by step (no optimizer update)
    ws_after, bs_after = params_of(net)
    assert all(np.array_equal(a, b) for a, b in zip(ws, ws_after))
    assert all(np.array_equal(a, b) for a, b in zip(bs, bs_after))


# --------------------------------------------------------------------------------------------
# forward() + backward(grad_out): every activation x depths/widths x batch 1, 13 x dtypes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("batch", [1, 13])
@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_forward_backward_matches_reference(activation, alpha, sizes, batch, dtype, rng, device):
    net = make_net(sizes, activation, "xavier_normal", dtype, alpha=alpha, seed=3, device=device)
    ws, bs = random_weights(rng, sizes, dtype, scale=None)
    write_params(net, ws, bs)  # non-zero biases; also exercises in-place writes
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    grad_out = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    out = net.forward(x)
    ref, naive = oracles(ws, bs, x, activation, "identity", alpha, dtype, grad_out=grad_out)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype)
    assert out.shape == (batch, sizes[-1])
    assert_rule(out, ref.out, naive.out, dtype, name="out")
    rep = net.backward(grad_out)
    check_gradients(net, ref, naive, dtype)
    check_report(rep, ref, naive, dtype, activation, "identity", alpha)
    # act_grad_norm of the last layer is ||grad_out||
    assert rep.act_grad_norm[-1] == pytest.approx(np.linalg.norm(grad_out.astype(np.float64)),
                                                  rel=1e-6 if dtype == np.float32 else 1e-12)


# Layers above 2^25 multiply-adds per GEMM, with fewer rows than units and both widths >= 128,
# cut each GEMM by output columns (csrc/ops/layer_plan.h): 256 x 600 x 700 and 256 x 700 x 650
# do, their halves split at columns 288, 336 and 320 (not the middle); the 650 -> 7 output layer
# is cut by rows instead.
BIG_SIZES, BIG_BATCH = [600, 700, 650, 7], 256


@pytest.mark.parametrize("log_scale", [False, True], ids=["linear", "log_scale"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_column_split_layers_match_reference(activation, dtype, log_scale, rng):
    net = make_net(BIG_SIZES, activation, "xavier_normal", dtype, seed=3)
    ws, bs = random_weights(rng, BIG_SIZES, dtype, scale=None)
    write_params(net, ws, bs)
    x = rng.standard_normal((BIG_BATCH, BIG_SIZES[0])).astype(dtype)
    grad_out = rng.standard_normal((BIG_BATCH, BIG_SIZES[-1])).astype(dtype)
    ref, naive = oracles(ws, bs, x, activation, "identity", 1.0, dtype, grad_out=grad_out)
    assert_rule(net.forward(x), ref.out, naive.out, dtype, name="out")
    rep = net.backward(grad_out, log_scale=log_scale)
    if not log_scale:
        check_gradients(net, ref, naive, dtype)
        check_report(rep, ref, naive, dtype, activation, "identity", 1.0)
        return
    # gradients come back scaled by 2^-grad_log2_scale; the log10 norms are the true ones
    for l in range(len(BIG_SIZES) - 1):
        scale = 2.0 ** rep.grad_log2_scale[l]
        assert_rule(net.weight_grads[l] * np.asarray(scale, dtype), ref.dW[l], naive.dW[l],
                    dtype, name=f"dW[{l}]")
    for field in R.NORM_FIELDS:
        np.testing.assert_allclose(getattr(rep, "log10_" + field), ref["log10_" + field],
                                   rtol=0, atol=1e-5, err_msg=field)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("output_activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_output_activation(output_activation, alpha, loss, dtype, rng, device):
    sizes = [5, 7, 6, 3]
    net = make_net(sizes, "tanh", "he_normal", dtype, output_activation=output_activation,
                   alpha=alpha, seed=11, bias_init=0.05, device=device)
    ws, bs = params_of(net)
    assert all(np.all(b == np.asarray(0.05, dtype)) for b in bs)
    x = rng.standard_normal((4, sizes[0])).astype(dtype)
    target = make_target(rng, loss, 4, sizes[-1], dtype)
    rep = net.step(x, target, loss=loss)
    ref, naive = oracles(ws, bs, x, "tanh", output_activation, alpha, dtype, target=target,
                         loss=loss)
    check_gradients(net, ref, naive, dtype)
    check_report(rep, ref, naive, dtype, "tanh", output_activation, alpha, loss=loss)
    out = net.forward(x)
    assert_rule(out, ref.out, naive.out, dtype, name="out")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_step_equals_forward_plus_loss_plus_backward(dtype, rng, device):
    sizes = [6, 10, 4]
    net = make_net(sizes, "elu", "lecun_normal", dtype, alpha=0.5, seed=5, device=device)
    x = rng.standard_normal((7, 6)).astype(dtype)
    target = rng.standard_normal((7, 4)).astype(dtype)
    rep = net.step(x, target, loss="mse")
    grads = [g.copy() for g in net.weight_grads] + [g.copy() for g in net.bias_grads]
    out = net.forward(x)
    loss, dout = vgkern.ops.mse_loss(out, target)
    rep2 = net.backward(dout)
    grads2 = list(net.weight_grads) + list(net.bias_grads)
    for a, b in zip(grads, grads2):
        np.testing.assert_allclose(a, b, rtol=0, atol=8 * eps(dtype) * np.abs(b).max())
    assert rep.loss == pytest.approx(loss, rel=4 * eps(dtype))
    np.testing.assert_allclose(rep.weight_grad_norm, rep2.weight_grad_norm, rtol=16 * eps(dtype))


# --------------------------------------------------------------------------------------------
# Forward statistics with non-trivial saturation / zeros / dead units
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_forward_statistics_saturated_zero_dead(activation, alpha, dtype, rng, device):
    sizes = [8, 48, 48, 6]
    batch = 9
    net = make_net(sizes, activation, "xavier_normal", dtype, alpha=alpha, device=device)
    ws, bs = random_weights(rng, sizes, dtype, scale=None)
    ws = [(4.0 * w).astype(dtype) for w in ws]
    bs = [(10.0 * b).astype(dtype) for b in bs]  # N(0, 1)
    # zero units: rows 0..4 of W_0 and W_1 and their biases are exactly 0 -> z = 0 exactly,
    # so h = act(0) = 0 for identity, tanh, relu, elu (dead units), 0.5 for sigmoid.
    for l in (0, 1):
        ws[l][:5] = 0
        bs[l][:5] = 0
    # units 5..9 of layer 1 have a large negative bias: dead for relu, exactly 0 for sigmoid.
    bs[1][5:10] = -1e3
    write_params(net, ws, bs)
    x = (2.0 * rng.standard_normal((batch, sizes[0]))).astype(dtype)
    grad_out = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    net.forward(x)
    rep = net.backward(grad_out)
    ref, naive = oracles(ws, bs, x, activation, "identity", alpha, dtype, grad_out=grad_out)
    check_report(rep, ref, naive, dtype, activation, "identity", alpha)
    check_gradients(net, ref, naive, dtype)
    # the test is only meaningful if the statistics are non-trivial
    hidden = slice(0, 2)
    if activation in ("sigmoid", "tanh", "elu"):
        assert np.all(ref.saturated_fraction[hidden] > 0.05), ref.saturated_fraction
    else:
        assert np.all(rep.saturated_fraction == 0)
    if activation != "sigmoid":
        assert np.all(rep.zero_fraction[hidden] >= 5 / 48 - 1e-12), rep.zero_fraction
        assert np.all(rep.dead_fraction[hidden] >= 5 / 48 - 1e-12), rep.dead_fraction
    else:
        # sigmoid(0) = 0.5; only the units with bias -1e3 give an exact 0 (exp underflow)
        assert rep.zero_fraction[0] == 0 and rep.dead_fraction[0] == 0
        assert rep.zero_fraction[1] == pytest.approx(5 / 48, abs=1e-12)
        assert rep.dead_fraction[1] == pytest.approx(5 / 48, abs=1e-12)
    if activation == "relu":
        assert rep.dead_fraction[1] >= 10 / 48 - 1e-12
        assert 0.3 < rep.zero_fraction[0] < 0.7
    assert rep.saturated_fraction[-1] == 0  # identity output layer


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation,alpha", list(ACTIVATION_CONFIGS) + [("elu", 0.0)],
                         ids=list(ACTIVATION_IDS) + ["elu0"])
def test_zero_fraction_is_exact_around_nan_rows(activation, alpha, dtype, device):
    """Where act(z) = 0 only at z = 0 (tanh, ELU), the epilogue finds zeros by the smallest |h|
    of each lane and counts them in a second pass: NaN rows before and after rows of exact
    zeros (the same lanes) must not hide them, and h = 0 from z < 0 (relu, ELU with alpha 0)
    is counted as well. Checked against NumPy on the same z (z = 0 exactly or |z| > 1e-3)."""
    net = make_net([4, 40, 3], activation=activation, dtype=dtype, seed=0, device=device,
                   **({"alpha": alpha} if activation == "elu" else {}))
    ws, bs = params_of(net)
    bs[0][:] = 0
    write_params(net, ws, bs)
    rng = np.random.default_rng(0)
    w0 = ws[0].astype(np.float64)
    rows = [r for r in rng.standard_normal((400, 4)).astype(dtype)  # no rounding-borderline z
            if np.min(np.abs(r.astype(np.float64) @ w0.T)) > 1e-3][:64]
    x = np.array(rows)
    x[3:10] = 0  # z = 0 exactly
    x[0, 1] = x[20, 2] = np.nan  # NaN rows before and after them
    rep = net.step(x, np.zeros((64, 3), dtype))
    z = x.astype(np.float64) @ w0.T
    finite = np.isfinite(z).all(axis=1)
    zero_h = {"relu": z <= 0, "sigmoid": np.zeros_like(z, bool)}.get(
        activation, (z == 0) | ((z < 0) if (activation, alpha) == ("elu", 0.0) else False))
    assert rep.zero_fraction[0] * z.size == np.sum(zero_h & finite[:, None])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_saturated_fraction_threshold_is_relative_to_max_derivative(dtype, device):
    """One layer, identity output replaced by the activation under test via a 1-layer net
    whose output activation is that activation: z values on both sides of each threshold."""
    # thresholds on |z| where act'(z) = 1% of max: sigmoid e/(1+e)^2 = 0.0025, tanh 1/cosh^2 = 0.01
    sig_t = 2 * math.acosh(math.sqrt(1 / (4 * 0.0025)))  # sigmoid'(z) = 1/(4 cosh^2(z/2))
    tanh_t = math.acosh(math.sqrt(1 / 0.01))
    cases = {
        ("sigmoid", 1.0): sig_t,
        ("tanh", 1.0): tanh_t,
        ("elu", 1.0): math.log(0.01),           # elu'(z) = alpha e^z < 0.01 max(1, alpha)
        ("elu", 0.5): math.log(0.01 / 0.5),
        ("elu", 2.0): math.log(0.01 * 2.0 / 2.0),
    }
    for (name, alpha), t in cases.items():
        if name == "elu":
            zs = [t - 0.05, t - 0.01, t + 0.01, t + 0.05, 0.3, 2.0]  # saturated: z < t
            expected = 2 / 6
        else:
            zs = [t + 0.05, -(t + 0.02), t - 0.02, -(t - 0.05), 0.0, 1.0]  # saturated: |z| > t
            expected = 2 / 6
        net = make_net([1, 6], "identity", "xavier_normal", dtype, output_activation=name,
                       alpha=alpha, device=device)
        write_params(net, [np.ones((6, 1), dtype)], [np.array(zs, dtype)])
        net.forward(np.zeros((1, 1), dtype))
        rep = net.backward(np.ones((1, 6), dtype))
        assert rep.saturated_fraction[0] == pytest.approx(expected, abs=1e-12), (name, alpha)


# --------------------------------------------------------------------------------------------
# Statistics of a call depend on that call only (per-part buffers are not left over)
# --------------------------------------------------------------------------------------------
# Each layer's elementwise pass runs in two row blocks (parts) whenever the batch has 2 rows or
# more (csrc/ops/layer_plan.h), each with per-part buffers shared by all layers and calls of a
# thread (e.g. which columns are nonzero, written only by a block that has zeros).

def unit0_relu_net(dtype, device, **kw):
    """relu [2, 4, 1]: hidden unit 0 is z = x[:, 0] (zero where x[:, 0] <= 0), units 1-3 are
    z = 1 (never zero); so each batch says exactly which rows of unit 0 are zero."""
    net = make_net([2, 4, 1], "relu", "xavier_normal", dtype, seed=0, device=device, **kw)
    w0 = np.zeros((4, 2), dtype)
    w0[0, 0] = 1
    write_params(net, [w0, np.ones((1, 4), dtype)], [np.array([0, 1, 1, 1], dtype),
                                                     np.zeros(1, dtype)])
    return net


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dead_fraction_ignores_the_blocks_of_earlier_calls(dtype, device):
    """Batches of 4 rows (blocks: rows 0-1 and 2-3). Unit 0 is zero in block 1 of call 1 and
    in block 0 of call 2, where block 1 has no zero at all: a dead-unit count that read block
    1's nonzero-column flags left over from call 1 reported dead_fraction 0.25 for call 2."""
    net = unit0_relu_net(dtype, device)
    zeros_in = {(): 0, (0, 1): 2, (2, 3): 2, (0, 1, 2, 3): 4}
    calls = [((2, 3), 0.0), ((0, 1), 0.0), ((0, 1, 2, 3), 0.25), ((2, 3), 0.0), ((), 0.0),
             ((0, 1), 0.0), ((0, 1, 2, 3), 0.25), ((), 0.0)]
    for i, (zero_rows, dead) in enumerate(calls):
        x = np.ones((4, 2), dtype)
        x[list(zero_rows), 0] = -1
        rep = net.step(x, np.zeros((4, 1), dtype), loss="mse")
        assert rep.zero_fraction[0] == zeros_in[zero_rows] / 16, (i, zero_rows)
        assert rep.dead_fraction[0] == dead, (
            f"call {i}: unit 0 zero in rows {zero_rows}: dead_fraction {rep.dead_fraction[0]}, "
            f"expected {dead}")


def block_patterned_batch(rng, batch, width, dtype):
    """Each row block (first and second half of the rows) drawn as one kind: positive multiples
    of one positive vector, negative multiples, or rows of mixed signs. With nonnegative
    weights and no bias, a relu layer is nonzero everywhere in the first kind of block and zero
    everywhere in the second (with batch norm: where the multiple is above or below the batch's
    mean), so a block may have no zeros, only zeros or some, changing from call to call."""
    v = np.abs(rng.standard_normal(width)) + 0.1
    x = np.empty((batch, width))
    for rows in (slice(0, batch // 2), slice(batch // 2, batch)):
        n = len(range(*rows.indices(batch)))
        scale = 1 + np.abs(rng.standard_normal((n, 1)))
        kind = rng.integers(0, 3)
        x[rows] = scale * v if kind == 0 else -scale * v if kind == 1 else \
            scale * v * rng.choice([-1.0, 1.0], (n, width))
    return x.astype(dtype)


def report_and_grads(net, rep):
    return dict(rep.as_dict(), grads=np.array(net.grads, copy=True))


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reports_of_a_call_sequence_equal_fresh_nets(dtype, batch_norm, rng, device):
    """One net stepped through 40 batches (other batch sizes, one row or many, blocks with no,
    some or only zeros; layers of other widths sharing the per-part buffers) reports, bit for
    bit, what a fresh net with the same parameters reports for each batch alone, and (without
    batch norm) the zero and dead fractions of the NumPy oracle. (The per-part buffers belong
    to the thread, not the net: the fresh net's call follows the other net's, so a buffer that a
    call reads without writing can fool the bitwise comparison; the oracle cannot be fooled.)"""
    sizes = [5, 7, 12, 3, 4]

    def fresh():
        net = make_net(sizes, "relu", "he_normal", dtype, seed=3, batch_norm=batch_norm,
                       device=device)
        ws, bs = params_of(net)
        write_params(net, [np.abs(w) for w in ws], [np.zeros_like(b) for b in bs])
        return net

    net = fresh()
    dead_seen = set()
    for i in range(40):
        batch = int(rng.choice([1, 2, 3, 4, 7, 16]))
        if batch_norm and batch == 1:
            batch = 2  # training-mode batch norm needs two rows
        x = block_patterned_batch(rng, batch, sizes[0], dtype)
        target = rng.standard_normal((batch, sizes[-1])).astype(dtype)
        rep = net.step(x, target, loss="mse")
        got = report_and_grads(net, rep)
        alone = fresh()
        want = report_and_grads(alone, alone.step(x, target, loss="mse"))
        for name in want:
            np.testing.assert_array_equal(got[name], want[name],
                                          err_msg=f"call {i} (batch {batch}): {name}")
        if not batch_norm:
            ref = R.mlp_reference(*params_of(net), x, "relu", target=target, loss="mse",
                                  dtype=oracle_dtype(dtype))
            bounds = fraction_bounds(ref.zs, "relu", "identity", 1.0)
            assert_fractions_within(rep, bounds, f"call {i}: ")
        dead_seen.update(np.flatnonzero(want["dead_fraction"][:-1] > 0).tolist())
    if not batch_norm:  # (batch norm centres every unit: none is dead in a call's batch)
        assert dead_seen, "no call had a dead unit: the sequence tests nothing"


# --------------------------------------------------------------------------------------------
# Parameters: writes take effect, views into one flat buffer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_weight_writes_take_effect(dtype, rng):
    sizes = [5, 7, 3]
    net = make_net(sizes, "sigmoid", "he_uniform", dtype)
    ws, bs = random_weights(rng, sizes, dtype)
    # layer 0 in place, layer 1 by item assignment (copies in)
    net.weights[0][...] = ws[0]
    net.biases[0][...] = bs[0]
    net.biases[1] = bs[1].copy()
    w1_source = ws[1].copy()
    net.weights[1] = w1_source
    w1_source[...] = 123.0  # item assignment copied: the net must not see this
    assert np.array_equal(net.weights[1], ws[1])
    x = rng.standard_normal((4, 5)).astype(dtype)
    out = net.forward(x)
    ref, naive = oracles(ws, bs, x, "sigmoid", "identity", 1.0, dtype,
                         grad_out=np.ones((4, 3), dtype))
    assert_rule(out, ref.out, naive.out, dtype, name="out")
    # every parameter is a view into net.params, every gradient a view into net.grads
    assert isinstance(net.params, np.ndarray) and net.params.ndim == 1
    assert net.params.size == sum(w.size + b.size for w, b in zip(ws, bs))
    for arr in list(net.weights) + list(net.biases):
        assert np.shares_memory(arr, net.params)
        assert arr.flags.writeable and arr.dtype == np.dtype(dtype)
    net.backward(np.ones((4, 3), dtype))
    for arr in list(net.weight_grads) + list(net.bias_grads):
        assert np.shares_memory(arr, net.grads)
    # a write through net.params is seen by net.weights and by the next forward
    net.params[...] = 0
    assert all(np.all(w == 0) for w in net.weights)
    assert np.all(net.forward(x) == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_weight_item_assignment_is_checked(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    net = make_net([5, 7, 3], "tanh", "xavier_normal", dtype)
    with pytest.raises(ValueError):
        net.weights[0] = np.zeros((5, 7), dtype)  # transposed shape
    with pytest.raises(ValueError):
        net.biases[1] = np.zeros(4, dtype)
    with pytest.raises(TypeError):
        net.weights[0] = np.zeros((7, 5), other)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_grads_are_overwritten_by_each_backward(dtype, rng):
    sizes = [4, 6, 2]
    net = make_net(sizes, "tanh", "xavier_normal", dtype, seed=1)
    ws, bs = params_of(net)
    x = rng.standard_normal((3, 4)).astype(dtype)
    views = list(net.weight_grads)
    for scale in (1.0, -2.0):
        g = (scale * np.ones((3, 2))).astype(dtype)
        net.forward(x)
        net.backward(g)
        ref, naive = oracles(ws, bs, x, "tanh", "identity", 1.0, dtype, grad_out=g)
        check_gradients(net, ref, naive, dtype)
        # lists handed out earlier see the new values (views, overwritten in place)
        assert_rule(views[0], ref.dW[0], naive.dW[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_forward_returns_new_array_and_copies_noncontiguous_input(dtype, rng):
    net = make_net([6, 5, 4], "relu", "he_normal", dtype, seed=2, bias_init=0.1)
    x = rng.standard_normal((8, 12)).astype(dtype)
    x_strided = x[:, ::2]
    assert not x_strided.flags.c_contiguous
    x_contig = np.ascontiguousarray(x_strided)
    out1 = net.forward(x_contig)
    out1_copy = out1.copy()
    out2 = net.forward(x_strided)
    assert np.array_equal(out1, out2)
    out3 = net.forward(np.asfortranarray(x_contig))
    assert np.array_equal(out1, out3)
    net.forward(2 * x_contig)
    assert np.array_equal(out1, out1_copy), "a later forward changed an earlier result"
    assert not np.shares_memory(out1, out2)


# --------------------------------------------------------------------------------------------
# Initialisation statistics
# --------------------------------------------------------------------------------------------

BIG = [1000, 500]  # fan_in = 1000 != fan_out = 500: swapping the fans is detected


def init_expectation(init, fan_in, fan_out, gain=1.0):
    """(distribution, std) of the weights for each init."""
    if init == "xavier_normal":
        return "normal", gain * math.sqrt(2 / (fan_in + fan_out))
    if init == "xavier_uniform":
        return "uniform", gain * math.sqrt(6 / (fan_in + fan_out)) / math.sqrt(3)
    if init == "he_normal":
        return "normal", math.sqrt(2 / fan_in)
    if init == "he_uniform":
        return "uniform", math.sqrt(6 / fan_in) / math.sqrt(3)
    if init == "lecun_normal":
        return "normal", math.sqrt(1 / fan_in)
    raise AssertionError(init)


def check_weight_distribution(w, dist, std):
    w = np.asarray(w, dtype=np.float64).ravel()
    n = w.size
    se = std / math.sqrt(2 * n)  # standard error of the sample std (normal data)
    assert abs(w.std() - std) <= 6 * se + 1e-7 * std, f"std {w.std()} != {std}"
    assert abs(w.mean()) <= 6 * std / math.sqrt(n), f"mean {w.mean()}"
    if dist == "uniform":
        a = std * math.sqrt(3)
        assert np.abs(w).max() <= a * (1 + 1e-6), f"|w| max {np.abs(w).max()} > a = {a}"
        assert np.abs(w).max() >= 0.999 * a
        kurt = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert abs(kurt - 1.8) < 0.05, f"kurtosis {kurt} is not that of a uniform distribution"
    else:
        assert np.abs(w).max() > 4 * std, "tails too light for a normal distribution"
        kurt = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert abs(kurt - 3.0) < 0.1, f"kurtosis {kurt} is not that of a normal distribution"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("init", ["xavier_normal", "xavier_uniform", "he_normal", "he_uniform",
                                  "lecun_normal"])
def test_init_weight_statistics(init, dtype):
    net = make_net(BIG, "tanh", init, dtype, seed=0)
    w = net.weights[0]
    assert w.shape == (BIG[1], BIG[0]) and w.dtype == np.dtype(dtype)
    dist, std = init_expectation(init, fan_in=BIG[0], fan_out=BIG[1])
    check_weight_distribution(w, dist, std)
    assert np.all(net.biases[0] == 0)


@pytest.mark.parametrize("init", ["xavier_normal", "xavier_uniform"])
def test_xavier_gain(init):
    net = make_net(BIG, "tanh", init, np.float32, seed=4, gain=2.5)
    dist, std = init_expectation(init, BIG[0], BIG[1], gain=2.5)
    check_weight_distribution(net.weights[0], dist, std)


def test_init_uses_each_layers_own_fans():
    sizes = [300, 700, 200]
    net = make_net(sizes, "relu", "he_normal", np.float32, seed=9)
    check_weight_distribution(net.weights[0], "normal", math.sqrt(2 / 300))
    check_weight_distribution(net.weights[1], "normal", math.sqrt(2 / 700))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("gain", [1.0, 2.0])
@pytest.mark.parametrize("fans", [(64, 64), (32, 96), (96, 32)], ids=["square", "wide", "tall"])
def test_orthogonal_init(fans, gain, dtype):
    fan_in, fan_out = fans
    net = make_net([fan_in, fan_out], "tanh", "orthogonal", dtype, seed=3, gain=gain)
    w = np.asarray(net.weights[0], dtype=np.float64)  # (fan_out, fan_in)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    if fan_out <= fan_in:  # orthonormal rows
        gram = w @ w.T
    else:  # orthonormal columns
        gram = w.T @ w
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(gram.shape[0]), rtol=0,
                               atol=tol * gain ** 2)
    assert np.all(net.biases[0] == 0)
    # random, not a fixed matrix: another seed gives another matrix
    net2 = make_net([fan_in, fan_out], "tanh", "orthogonal", dtype, seed=4, gain=gain)
    assert not np.allclose(net2.weights[0], net.weights[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_scaled_normal_init(dtype):
    sizes = [50, 20000, 40]
    sigma_w, sigma_b = 1.7, 0.4
    net = make_net(sizes, "tanh", "scaled_normal", dtype, seed=12, sigma_w=sigma_w,
                   sigma_b=sigma_b)
    check_weight_distribution(net.weights[0], "normal", sigma_w / math.sqrt(50))
    check_weight_distribution(net.weights[1], "normal", sigma_w / math.sqrt(20000))
    check_weight_distribution(net.biases[0], "normal", sigma_b)
    b1 = np.asarray(net.biases[1], np.float64)
    assert abs(b1.std() - sigma_b) < 0.35 * sigma_b  # only 40 samples
    net0 = make_net(sizes[:2], "tanh", "scaled_normal", dtype, seed=12, sigma_w=sigma_w)
    assert np.all(net0.biases[0] == 0), "sigma_b = 0 (the default) must give zero biases"


@pytest.mark.parametrize("init", [i for i in INITS if i != "scaled_normal"])
def test_bias_init_constant(init):
    """bias_init sets constant biases for every init but scaled_normal (which uses sigma_b)."""
    net = make_net([5, 7, 3], "tanh", init, np.float32, bias_init=0.25)
    for b in net.biases:
        assert np.all(b == np.float32(0.25)), b


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("init", INITS)
def test_seeding(init, dtype):
    sizes = [9, 9, 9, 4]
    kw = {"sigma_w": 1.3, "sigma_b": 0.2} if init == "scaled_normal" else {}
    a = make_net(sizes, "tanh", init, dtype, seed=123, **kw)
    b = make_net(sizes, "tanh", init, dtype, seed=123, **kw)
    c = make_net(sizes, "tanh", init, dtype, seed=124, **kw)
    for l in range(3):
        assert np.array_equal(a.weights[l], b.weights[l]), "same seed, different weights"
        assert np.array_equal(a.biases[l], b.biases[l])
        assert not np.array_equal(a.weights[l], c.weights[l]), "different seed, same weights"
    # layers draw different numbers (same shape layers 0 and 1)
    assert not np.array_equal(a.weights[0], a.weights[1])
    if init == "scaled_normal":
        assert not np.array_equal(a.biases[0], c.biases[0])


# --------------------------------------------------------------------------------------------
# net.stats = False
# --------------------------------------------------------------------------------------------

STAT_FIELDS = R.NORM_FIELDS + R.LOG10_FIELDS + R.FORWARD_STAT_FIELDS


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_stats_false_gives_nan_stats_and_same_gradients(activation, dtype, rng):
    sizes = [7, 12, 12, 5]
    x = rng.standard_normal((6, 7)).astype(dtype)
    target = rng.standard_normal((6, 5)).astype(dtype)
    on = make_net(sizes, activation, "he_normal", dtype, seed=8)
    off = make_net(sizes, activation, "he_normal", dtype, seed=8, stats=False)
    assert off.stats is False and on.stats is True
    rep_on = on.step(x, target)
    rep_off = off.step(x, target)
    for field in STAT_FIELDS:
        assert np.all(np.isnan(getattr(rep_off, field))), field
        assert np.all(~np.isnan(getattr(rep_on, field))), field
    for a, b in zip(list(on.weight_grads) + list(on.bias_grads),
                    list(off.weight_grads) + list(off.bias_grads)):
        assert np.array_equal(a, b)
    assert np.array_equal(on.forward(x), off.forward(x))
    # the attribute can be switched on an existing net
    off.stats = True
    rep = off.step(x, target)
    np.testing.assert_array_equal(rep.weight_grad_norm, rep_on.weight_grad_norm)
    on.stats = False
    rep = on.step(x, target)
    assert np.all(np.isnan(rep.weight_grad_norm)) and np.all(np.isnan(rep.preact_std))


# --------------------------------------------------------------------------------------------
# GradReport API
# --------------------------------------------------------------------------------------------

def test_grad_report_as_dict_and_to_pandas(rng):
    sizes = [4, 5, 6, 3]
    net = make_net(sizes, "tanh", "xavier_normal", np.float64, seed=1)
    x = rng.standard_normal((5, 4))
    rep = net.step(x, rng.integers(0, 3, 5), loss="cross_entropy")
    d = rep.as_dict()
    for field in R.REPORT_ARRAY_FIELDS:
        assert field in d, field
        np.testing.assert_array_equal(d[field], getattr(rep, field))
    df = rep.to_pandas()
    assert len(df) == 3
    assert list(df["layer"]) == [0, 1, 2]
    for field in R.REPORT_ARRAY_FIELDS:
        assert field in df.columns, field
        np.testing.assert_array_equal(df[field].to_numpy(), getattr(rep, field))
    assert rep.num_layers == 3
    assert np.isfinite(rep.loss) and rep.loss > 0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_mlp_input_checks(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    net = make_net([4, 5, 3], "tanh", "xavier_normal", dtype)
    with pytest.raises(TypeError):
        net.forward(np.zeros((2, 4), other))
    with pytest.raises(ValueError):
        net.forward(np.zeros((2, 5), dtype))
    with pytest.raises(ValueError):
        net.forward(np.zeros(4, dtype))
    fresh = make_net([4, 5, 3], "tanh", "xavier_normal", dtype)
    with pytest.raises((RuntimeError, ValueError)):
        fresh.backward(np.zeros((2, 3), dtype))  # no forward yet
    net.forward(np.zeros((2, 4), dtype))
    with pytest.raises((RuntimeError, ValueError)):
        net.backward(np.zeros((3, 3), dtype))  # batch differs from the forward's
    with pytest.raises(ValueError):
        net.backward(np.zeros((2, 4), dtype))
    with pytest.raises(TypeError):
        net.backward(np.zeros((2, 3), other))
    x = np.zeros((2, 4), dtype)
    with pytest.raises(TypeError):
        net.step(x, np.zeros((2, 3), other), loss="mse")
    with pytest.raises(ValueError):
        net.step(x, np.zeros((2, 2), dtype), loss="mse")
    with pytest.raises(ValueError):
        net.step(x, np.array([0, 3]), loss="cross_entropy")
    with pytest.raises(ValueError):
        net.step(x, np.zeros((2, 3), dtype), loss="hinge")


def test_mlp_constructor_checks():
    with pytest.raises(ValueError):
        vgkern.MLP([4, 3], activation="softplus")
    with pytest.raises(ValueError):
        vgkern.MLP([4, 3], init="kaiming_magic")
    with pytest.raises(ValueError):
        vgkern.MLP([4, 3], output_activation="swish")
    with pytest.raises(ValueError):
        vgkern.MLP([4])
    with pytest.raises(ValueError):
        vgkern.MLP([4, 0, 3])
    with pytest.raises((TypeError, ValueError)):
        vgkern.MLP([4, 3], dtype="float16")
    if not vgkern.cuda_available():
        with pytest.raises(RuntimeError):
            vgkern.MLP([4, 3], device="cuda")
