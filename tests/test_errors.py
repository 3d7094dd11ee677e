"""Bad inputs: the right exception type, and a message that names the argument, the expected and
the actual value. Also: NaN/Inf inputs propagate as in PyTorch without a crash, and
non-C-contiguous inputs give the same result as their contiguous copies.

Messages are matched with ``all_of(...)``: every fragment must appear somewhere in the message,
in any order, so the tests pin the content, not the wording.
"""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vgkern
from vgkern import ops

SIZES = [7, 11, 6]  # d0 = 7 inputs, 6 outputs / classes
BATCH = 5


def all_of(*fragments):
    """Regex that matches when every fragment (itself a regex) occurs, in any order."""
    return "(?s)" + "".join(f"(?=.*(?:{f}))" for f in fragments)


def shape_re(*dims):
    """A shape such as (5, 7, 2) in any of the usual spellings: (5, 7, 2), [5, 7, 2], 5x7x2."""
    return r"\D{1,3}".join(str(d) for d in dims) + r"(?!\d)"


def lit(text):
    return re.escape(text)


X = r"\bx\b"


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return request.param


def other_dtype(dtype):
    return "float64" if dtype == "float32" else "float32"


@pytest.fixture
def net(dtype):
    return vgkern.MLP(SIZES, activation="tanh", dtype=dtype, seed=0)


def data(dtype, batch=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, SIZES[0])).astype(dtype)
    target = rng.standard_normal((batch, SIZES[-1])).astype(dtype)
    labels = rng.integers(0, SIZES[-1], size=batch).astype(np.int64)
    return x, target, labels


# --------------------------------------------------------------------------------------------
# MLP.forward
# --------------------------------------------------------------------------------------------

def test_forward_wrong_dtype_is_type_error_not_a_cast(net, dtype):
    x, _, _ = data(dtype)
    bad = x.astype(other_dtype(dtype))
    with pytest.raises(TypeError, match=all_of(X, dtype, other_dtype(dtype))):
        net.forward(bad)
    with pytest.raises(TypeError, match=all_of(X, dtype, "int32")):
        net.forward(x.astype(np.int32))
    with pytest.raises(TypeError, match=all_of(X, dtype, "float16")):
        net.forward(x.astype(np.float16))
    # the net still works after refusing
    np.testing.assert_array_equal(net.forward(x), net.forward(x.copy()))


def test_forward_python_list_is_type_error(net):
    with pytest.raises(TypeError, match=X):
        net.forward([[0.0] * SIZES[0]] * BATCH)


def test_forward_wrong_width(net, dtype):
    x = np.zeros((BATCH, 9), dtype=dtype)
    with pytest.raises(ValueError, match=all_of(X, "7", shape_re(5, 9))):
        net.forward(x)


def test_forward_wrong_rank(net, dtype):
    # expected: 2 dimensions (or the shape (*, 7)); actual: the shape given
    with pytest.raises(ValueError, match=all_of(X, r"\b2\b|7", shape_re(5, 7, 2))):
        net.forward(np.zeros((5, 7, 2), dtype=dtype))
    with pytest.raises(ValueError, match=all_of(X, r"\b2\b|7", r"\(5,\)|\b1\b")):
        net.forward(np.zeros((5,), dtype=dtype))
    with pytest.raises(ValueError, match=X):
        net.forward(np.zeros((), dtype=dtype))


def test_empty_batch(net, dtype):
    with pytest.raises(ValueError, match=all_of(rf"{X}|batch", r"\b0\b")):
        net.forward(np.zeros((0, SIZES[0]), dtype=dtype))
    with pytest.raises(ValueError, match=all_of(rf"{X}|batch|target", r"\b0\b")):
        net.step(np.zeros((0, SIZES[0]), dtype=dtype), np.zeros((0, SIZES[-1]), dtype=dtype))
    with pytest.raises(ValueError, match=all_of(rf"{X}|batch|target|labels", r"\b0\b")):
        net.step(np.zeros((0, SIZES[0]), dtype=dtype), np.zeros(0, dtype=np.int64),
                 loss="cross_entropy")


# --------------------------------------------------------------------------------------------
# MLP.backward
# --------------------------------------------------------------------------------------------

def test_backward_before_forward(dtype):
    net = vgkern.MLP(SIZES, dtype=dtype, seed=1)
    _, target, _ = data(dtype)
    with pytest.raises((RuntimeError, ValueError), match="forward"):
        net.backward(target)


def test_backward_with_other_batch_size(net, dtype):
    x, _, _ = data(dtype, batch=5)
    net.forward(x)
    grad_out = np.ones((3, SIZES[-1]), dtype=dtype)
    with pytest.raises((RuntimeError, ValueError), match=all_of("grad_out", r"\b5\b", r"\b3\b")):
        net.backward(grad_out)
    # a matching grad_out still works afterwards
    rep = net.backward(np.ones((5, SIZES[-1]), dtype=dtype))
    assert np.all(np.isfinite(rep.weight_grad_norm))


def test_backward_wrong_grad_out(net, dtype):
    x, _, _ = data(dtype)
    net.forward(x)
    with pytest.raises(TypeError, match=all_of("grad_out", dtype, other_dtype(dtype))):
        net.backward(np.ones((BATCH, SIZES[-1]), dtype=other_dtype(dtype)))
    with pytest.raises(ValueError, match=all_of("grad_out", shape_re(5, 6), shape_re(5, 4))):
        net.backward(np.ones((BATCH, 4), dtype=dtype))
    with pytest.raises(ValueError, match="grad_out"):
        net.backward(np.ones((BATCH * SIZES[-1],), dtype=dtype))
    with pytest.raises(ValueError, match="grad_out"):
        net.backward(np.ones((BATCH, SIZES[-1], 1), dtype=dtype))


# --------------------------------------------------------------------------------------------
# MLP.step
# --------------------------------------------------------------------------------------------

def test_step_wrong_x(net, dtype):
    x, target, labels = data(dtype)
    with pytest.raises(TypeError, match=all_of(X, dtype, other_dtype(dtype))):
        net.step(x.astype(other_dtype(dtype)), target, loss="mse")
    with pytest.raises(ValueError, match=all_of(X, "7", shape_re(5, 8))):
        net.step(np.zeros((BATCH, 8), dtype=dtype), labels, loss="cross_entropy")


def test_step_mse_target_dtype_and_shape(net, dtype):
    x, target, _ = data(dtype)
    with pytest.raises(TypeError, match=all_of("target", dtype, other_dtype(dtype))):
        net.step(x, target.astype(other_dtype(dtype)), loss="mse")
    with pytest.raises(ValueError, match=all_of("target", shape_re(5, 6), shape_re(5, 4))):
        net.step(x, target[:, :4].copy(), loss="mse")
    with pytest.raises(ValueError, match=all_of("target", shape_re(5, 6), shape_re(4, 6))):
        net.step(x, target[:4].copy(), loss="mse")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_step_mse_non_finite_target(net, dtype, bad):
    x, target, _ = data(dtype)
    target[2, 3] = bad
    with pytest.raises(ValueError, match=all_of("target", r"(?i:nan|inf|finite)")):
        net.step(x, target, loss="mse")


def test_step_unknown_loss(net, dtype):
    x, target, _ = data(dtype)
    with pytest.raises(ValueError, match=all_of("loss", "mae", "mse", "cross_entropy")):
        net.step(x, target, loss="mae")


def test_step_cross_entropy_float_labels(net, dtype):
    x, _, labels = data(dtype)
    with pytest.raises(TypeError, match=all_of("target|labels", "int", "float")):
        net.step(x, labels.astype(dtype), loss="cross_entropy")


@pytest.mark.parametrize("label", [9, 6, -1])
def test_step_cross_entropy_label_out_of_range(net, dtype, label):
    x, _, labels = data(dtype)
    labels[3] = label
    with pytest.raises(ValueError, match=all_of("target|labels", rf"(?<!\d){label}(?!\d)", "6")):
        net.step(x, labels, loss="cross_entropy")


def test_step_cross_entropy_label_shape(net, dtype):
    x, _, labels = data(dtype)
    with pytest.raises(ValueError, match=all_of("target|labels", r"\b5\b", r"\b4\b")):
        net.step(x, labels[:4].copy(), loss="cross_entropy")
    with pytest.raises(ValueError, match="target|labels"):
        net.step(x, labels.reshape(BATCH, 1), loss="cross_entropy")


# --------------------------------------------------------------------------------------------
# MLP constructor
# --------------------------------------------------------------------------------------------

def test_sizes_too_short():
    with pytest.raises(ValueError, match=all_of("sizes", r"\b2\b|two", r"\b1\b|\[7\]")):
        vgkern.MLP([7])
    with pytest.raises(ValueError, match=all_of("sizes", r"\b2\b|two", r"\b0\b|\[\]")):
        vgkern.MLP([])


@pytest.mark.parametrize("bad", [0, -3])
def test_sizes_not_positive(bad):
    with pytest.raises(ValueError, match=all_of("sizes", rf"(?<![\d-]){bad}(?!\d)",
                                                r"(?i:positive)|> ?0|>= ?1")):
        vgkern.MLP([7, bad, 6])


def test_sizes_not_integer():
    with pytest.raises((TypeError, ValueError), match=all_of("sizes", r"2\.5")):
        vgkern.MLP([7, 2.5, 6])


def test_sizes_numpy_integers_accepted():
    net = vgkern.MLP(np.array([7, 11, 6], dtype=np.int64))
    assert [w.shape for w in net.weights] == [(11, 7), (6, 11)]


@pytest.mark.parametrize("arg,bad,valid", [
    ("activation", "tanhh", "sigmoid"),
    ("output_activation", "softmax", "sigmoid"),
    ("init", "xavier", "he_normal"),
    ("dtype", "float16", "float32"),
    ("dtype", "int32", "float64"),
    ("device", "tpu", "cpu"),
])
def test_unknown_names(arg, bad, valid):
    with pytest.raises(ValueError, match=all_of(lit(arg), lit(bad), lit(valid))):
        vgkern.MLP(SIZES, **{arg: bad})


def test_cuda_without_cuda_is_runtime_error():
    if vgkern.cuda_available():
        pytest.skip("this build has CUDA; the no-CUDA error path cannot be reached")
    with pytest.raises(RuntimeError, match="(?i)cuda"):
        vgkern.MLP(SIZES, device="cuda")


# --------------------------------------------------------------------------------------------
# parameter assignment
# --------------------------------------------------------------------------------------------

def test_weight_item_assignment_checks_shape_and_dtype(net, dtype):
    before_w = [w.copy() for w in net.weights]
    before_b = [b.copy() for b in net.biases]
    with pytest.raises(ValueError, match=all_of("weight", shape_re(11, 7), shape_re(7, 11))):
        net.weights[0] = np.zeros((7, 11), dtype=dtype)
    with pytest.raises(ValueError, match=all_of("weight", shape_re(6, 11), shape_re(66,))):
        net.weights[1] = np.zeros(66, dtype=dtype)
    with pytest.raises(TypeError, match=all_of("weight", dtype, other_dtype(dtype))):
        net.weights[0] = np.zeros((11, 7), dtype=other_dtype(dtype))
    with pytest.raises(ValueError, match=all_of("bias", r"\b6\b", r"\b5\b")):
        net.biases[1] = np.zeros(5, dtype=dtype)
    with pytest.raises(TypeError, match=all_of("bias", dtype, other_dtype(dtype))):
        net.biases[1] = np.zeros(6, dtype=other_dtype(dtype))
    with pytest.raises(IndexError):
        net.weights[2] = np.zeros((6, 11), dtype=dtype)
    # nothing was written by the refused assignments
    for a, b in zip(net.weights, before_w):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(net.biases, before_b):
        np.testing.assert_array_equal(a, b)


def test_weight_assignment_takes_effect(net, dtype):
    x, _, _ = data(dtype)
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((11, 7)).astype(dtype)
    net.weights[0] = w0
    np.testing.assert_array_equal(net.weights[0], w0)
    assert np.shares_memory(net.weights[0], net.params)
    assert any(np.array_equal(net.params[i:i + w0.size], w0.ravel())
               for i in range(net.params.size - w0.size + 1))
    # identity readout: zero last weights, constant bias -> output is exactly the bias
    net.weights[1] = np.zeros((6, 11), dtype=dtype)
    net.biases[1] = np.arange(6, dtype=dtype)
    out = net.forward(x)
    np.testing.assert_array_equal(out, np.tile(np.arange(6, dtype=dtype), (BATCH, 1)))
    # in-place writes through the view take effect as well
    net.biases[1][...] = 2.5
    np.testing.assert_array_equal(net.forward(x), np.full((BATCH, 6), 2.5, dtype=dtype))


# --------------------------------------------------------------------------------------------
# vgkern.ops
# --------------------------------------------------------------------------------------------

def arr(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_ops_activation_errors(dtype):
    z = arr((4, 5), dtype)
    with pytest.raises(TypeError, match=all_of(r"\bz\b", "int64")):
        ops.activation_forward(np.zeros((4, 5), dtype=np.int64), "tanh")
    with pytest.raises(TypeError, match=all_of(r"\bz\b", "float16")):
        ops.activation_forward(z.astype(np.float16), "tanh")
    with pytest.raises(ValueError, match=all_of("activation", "swish", "sigmoid")):
        ops.activation_forward(z, "swish")
    with pytest.raises(TypeError, match=all_of(r"\bdh\b|\bz\b", dtype, other_dtype(dtype))):
        ops.activation_backward(z.astype(other_dtype(dtype)), z, "tanh")
    with pytest.raises(ValueError, match=all_of(r"\bdh\b|\bz\b", shape_re(4, 5), shape_re(4, 6))):
        ops.activation_backward(arr((4, 6), dtype), z, "tanh")
    with pytest.raises(ValueError, match=all_of("activation", "swish")):
        ops.activation_backward(z, z, "swish")


@pytest.mark.parametrize("shape", [(4, 5, 1), (20,), (2, 2, 5), ()],
                         ids=["4x5x1", "20", "2x2x5", "0d"])
def test_ops_activation_other_ranks_refused_or_elementwise(dtype, shape):
    """The contract says z is 2-D; an elementwise op may accept other ranks too, but then the
    result must be elementwise with z's own shape (or a ValueError naming z)."""
    z = np.asarray(arr((20,), dtype).reshape(shape) if shape else np.asarray(arr((1,), dtype)[0]))
    assert z.shape == shape
    try:
        h, dact = ops.activation_forward(z, "tanh")
    except ValueError as err:
        assert re.search(all_of(r"\bz\b", r"\b2\b|dimensions|shape"), str(err)), str(err)
        return
    assert h.shape == shape and dact.shape == shape, (
        f"activation_forward(z of shape {shape}) returned shapes {h.shape}, {dact.shape}")
    h2, d2 = ops.activation_forward(z.reshape(1, -1), "tanh")
    np.testing.assert_array_equal(h.ravel(), h2.ravel())
    np.testing.assert_array_equal(dact.ravel(), d2.ravel())


def test_ops_dense_forward_errors(dtype):
    x, w, b = arr((4, 5), dtype), arr((3, 5), dtype), arr((3,), dtype)
    with pytest.raises(ValueError, match=all_of(r"\bw\b|\bx\b", r"\b5\b", r"\b6\b")):
        ops.dense_forward(x, arr((3, 6), dtype), b)
    with pytest.raises(ValueError, match=all_of(r"\bb\b", r"\b3\b", r"\b4\b")):
        ops.dense_forward(x, w, arr((4,), dtype))
    with pytest.raises(ValueError, match=r"\bb\b"):
        ops.dense_forward(x, w, arr((1, 3), dtype))
    with pytest.raises(ValueError, match=all_of(r"\bx\b", shape_re(4, 5, 1))):
        ops.dense_forward(x.reshape(4, 5, 1), w, b)
    with pytest.raises(TypeError, match=all_of(r"\bw\b|\bx\b", dtype, other_dtype(dtype))):
        ops.dense_forward(x, w.astype(other_dtype(dtype)), b)
    with pytest.raises(TypeError, match=all_of(r"\bb\b", dtype, other_dtype(dtype))):
        ops.dense_forward(x, w, b.astype(other_dtype(dtype)))
    with pytest.raises(ValueError, match=all_of("activation", "gelu")):
        ops.dense_forward(x, w, b, activation="gelu")


def test_ops_dense_backward_errors(dtype):
    x, w = arr((4, 5), dtype), arr((3, 5), dtype)
    dh, dact = arr((4, 3), dtype, 1), arr((4, 3), dtype, 2)
    with pytest.raises(ValueError,
                       match=all_of(r"\bdact\b|\bdh\b", shape_re(4, 3), shape_re(4, 2))):
        ops.dense_backward(dh, arr((4, 2), dtype), x, w)
    with pytest.raises(ValueError, match=all_of(r"\bdh\b|\bx\b|\bdact\b", r"\b4\b", r"\b6\b")):
        ops.dense_backward(dh, dact, arr((6, 5), dtype), w)
    with pytest.raises(ValueError, match=all_of(r"\bw\b|\bx\b", r"\b5\b", r"\b7\b")):
        ops.dense_backward(dh, dact, x, arr((3, 7), dtype))
    with pytest.raises(TypeError, match=all_of(dtype, other_dtype(dtype))):
        ops.dense_backward(dh.astype(other_dtype(dtype)), dact, x, w)
    with pytest.raises(TypeError, match=all_of(dtype, other_dtype(dtype))):
        ops.dense_backward(dh, dact, x, w.astype(other_dtype(dtype)))


def test_ops_mse_errors(dtype):
    out, target = arr((4, 3), dtype), arr((4, 3), dtype, 1)
    with pytest.raises(TypeError, match=all_of("target|out", dtype, other_dtype(dtype))):
        ops.mse_loss(out, target.astype(other_dtype(dtype)))
    with pytest.raises(ValueError, match=all_of("target|out", shape_re(4, 3), shape_re(4, 2))):
        ops.mse_loss(out, target[:, :2].copy())
    for bad in (np.nan, np.inf):
        t = target.copy()
        t[1, 1] = bad
        with pytest.raises(ValueError, match=all_of("target", r"(?i:nan|inf|finite)")):
            ops.mse_loss(out, t)


def test_ops_cross_entropy_errors(dtype):
    logits = arr((4, 3), dtype)
    labels = np.array([0, 2, 1, 2], dtype=np.int64)
    with pytest.raises(TypeError, match=all_of("labels", "int", "float")):
        ops.cross_entropy_loss(logits, labels.astype(dtype))
    for bad in (3, 7, -1):
        lab = labels.copy()
        lab[2] = bad
        with pytest.raises(ValueError, match=all_of("labels", rf"(?<!\d){bad}(?!\d)", "3")):
            ops.cross_entropy_loss(logits, lab)
    with pytest.raises(ValueError, match=all_of("labels", r"\b4\b", r"\b5\b")):
        ops.cross_entropy_loss(logits, np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="labels"):
        ops.cross_entropy_loss(logits, labels.reshape(4, 1))
    with pytest.raises(TypeError, match=all_of("logits", "int64")):
        ops.cross_entropy_loss(logits.astype(np.int64), labels)


def test_ops_valid_calls_do_not_raise(dtype):
    """The error tests above are only meaningful if the same calls with good inputs work."""
    x, w, b = arr((4, 5), dtype), arr((3, 5), dtype), arr((3,), dtype)
    h, dact = ops.dense_forward(x, w, b, activation="tanh")
    dx, dw, db = ops.dense_backward(arr((4, 3), dtype, 1), dact, x, w)
    assert dx.shape == (4, 5) and dw.shape == (3, 5) and db.shape == (3,)
    assert ops.dense_backward(arr((4, 3), dtype, 1), dact, x, w, need_dx=False)[0] is None
    ops.activation_backward(h, h, "elu", alpha=0.5)
    ops.mse_loss(h, arr((4, 3), dtype, 1))
    ops.cross_entropy_loss(h, np.array([0, 2, 1, 2], dtype=np.int32))


# --------------------------------------------------------------------------------------------
# NaN / Inf inputs: propagate as in PyTorch, never crash
# --------------------------------------------------------------------------------------------

class _MultiplyReLU(torch.autograd.Function):
    """relu whose backward is dh * relu'(z) (NaN * 0 = NaN) instead of torch's select."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (z > 0).to(grad.dtype)


def torch_mlp(weights, biases, x, activation, target, relu_backward="select"):
    """The torch twin of an MLP with an mse loss. relu_backward="select" is torch's own ReLU
    (threshold_backward: dz = 0 where z <= 0, even if dh is NaN); "multiply" is the contract's
    dz = dh * act'(z), where a NaN dh stays NaN. Both are accepted for ReLU."""
    relu = torch.relu if relu_backward == "select" else _MultiplyReLU.apply
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": relu, "elu": F.elu}
    h = torch.from_numpy(x)
    params, zs = [], []
    for l, (w, b) in enumerate(zip(weights, biases)):
        wt = torch.from_numpy(np.array(w)).requires_grad_()
        bt = torch.from_numpy(np.array(b)).requires_grad_()
        params.append((wt, bt))
        z = h @ wt.T + bt
        zs.append(z)
        h = act[activation](z) if l < len(weights) - 1 else z
    loss = 0.5 * ((h - torch.from_numpy(target)) ** 2).sum() / x.shape[0]
    loss.backward()
    return (h.detach().numpy(), float(loss.detach()), [p[0].grad.numpy() for p in params],
            [p[1].grad.numpy() for p in params], [z.detach().double().numpy() for z in zs])


def assert_same_nonfinite_and_close(actual, expected, what, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected),
                                  err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected),
                                  err_msg=f"{what}: -inf")
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol,
                               atol=rtol * (np.abs(expected[finite]).max(initial=0.0) + 1e-30),
                               err_msg=what)


def check_nonfinite_against(net, rep, out, ref, rtol):
    out_ref, loss_ref, dw_ref, db_ref, z_ref = ref
    assert_same_nonfinite_and_close(out, out_ref, "forward output", rtol)
    if np.isnan(loss_ref):
        assert np.isnan(rep.loss)
    else:
        np.testing.assert_allclose(rep.loss, loss_ref, rtol=rtol)
    with np.errstate(all="ignore"):
        for l in range(len(dw_ref)):
            assert_same_nonfinite_and_close(net.weight_grads[l], dw_ref[l],
                                            f"weight_grads[{l}]", rtol)
            assert_same_nonfinite_and_close(net.bias_grads[l], db_ref[l], f"bias_grads[{l}]",
                                            rtol)
            # norms: NaN exactly where torch's gradient has a NaN, else the float64 norm
            for field, grad in (("weight_grad_norm", dw_ref[l]), ("bias_grad_norm", db_ref[l])):
                expected = np.linalg.norm(grad.astype(np.float64))
                assert_same_nonfinite_and_close(np.array([getattr(rep, field)[l]]),
                                                np.array([expected]), f"{field}[{l}]", rtol)
            z = z_ref[l]
            if np.isnan(z).any() or (np.isposinf(z).any() and np.isneginf(z).any()):
                assert np.isnan(rep.preact_mean[l]), f"preact_mean[{l}]"
            elif np.isinf(z).any():
                # torch gives +-inf; a running-mean update may turn that into NaN: both flag it
                assert not np.isfinite(rep.preact_mean[l]), f"preact_mean[{l}]"
            else:
                np.testing.assert_allclose(rep.preact_mean[l], z.mean(), rtol=rtol,
                                           atol=rtol * z.std(), err_msg=f"preact_mean[{l}]")
    for name in ("saturated_fraction", "zero_fraction", "dead_fraction"):
        values = getattr(rep, name)
        assert np.all((values >= 0) & (values <= 1)), f"{name} = {values}"


@pytest.mark.parametrize("poison", ["nan", "posinf", "neginf", "mixed"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "elu"])
def test_nonfinite_x_propagates_like_torch(dtype, activation, poison):
    sizes = [6, 9, 9, 4]
    net = vgkern.MLP(sizes, activation=activation, dtype=dtype, seed=2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6)).astype(dtype)
    target = rng.standard_normal((5, 4)).astype(dtype)
    if poison in ("nan", "mixed"):
        x[1, 2] = np.nan
    if poison in ("posinf", "mixed"):
        x[3, 0] = np.inf
    if poison in ("neginf", "mixed"):
        x[4, 5] = -np.inf
    rtol = 1e-4 if dtype == "float32" else 1e-10
    out = net.forward(x)
    rep = net.step(x, target, loss="mse")
    modes = ["select", "multiply"] if activation == "relu" else ["select"]
    failures = []
    for mode in modes:
        ref = torch_mlp(list(net.weights), list(net.biases), x, activation, target, mode)
        try:
            check_nonfinite_against(net, rep, out, ref, rtol)
            return
        except AssertionError as err:
            failures.append(f"[relu backward = {mode}] {err}")
    raise AssertionError("\n".join(failures))


@pytest.mark.parametrize("poison", ["nan", "posinf", "neginf"])
def test_nonfinite_preact_std_is_not_finite(dtype, poison):
    """torch.std of pre-activations that contain NaN or +-inf is NaN; a finite std (e.g. 0.0
    from clamping a NaN variance) would hide the problem in a sweep table."""
    net = vgkern.MLP([6, 9, 9, 4], activation="tanh", dtype=dtype, seed=2)
    x = np.random.default_rng(4).standard_normal((5, 6)).astype(dtype)
    x[3, 0] = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf}[poison]
    _, _, _, _, z_ref = torch_mlp(list(net.weights), list(net.biases), x, "tanh",
                                  np.zeros((5, 4), dtype=dtype))
    rep = net.step(x, np.zeros((5, 4), dtype=dtype), loss="mse")
    assert not np.isfinite(z_ref[0]).all()
    with np.errstate(all="ignore"):
        expected = float(torch.from_numpy(z_ref[0]).std(correction=0))
    assert np.isnan(expected)
    assert not np.isfinite(rep.preact_std[0]), (
        f"preact_std[0] = {rep.preact_std[0]!r} for pre-activations containing {poison} "
        f"(torch: {expected!r})")


def test_all_nan_x_does_not_crash(dtype):
    net = vgkern.MLP([6, 9, 4], activation="relu", dtype=dtype)
    x = np.full((3, 6), np.nan, dtype=dtype)
    out = net.forward(x)
    assert np.isnan(out).all()
    rep = net.backward(np.ones((3, 4), dtype=dtype))
    assert np.isnan(net.weight_grads[0]).all()
    assert np.isnan(rep.weight_grad_norm).all()
    assert np.isnan(rep.preact_mean).all()


# --------------------------------------------------------------------------------------------
# Non-C-contiguous inputs
# --------------------------------------------------------------------------------------------

def non_contiguous_views(x):
    """Views with the values of x (B, d) that are not C-contiguous."""
    batch, width = x.shape
    wide = np.zeros((batch, 2 * width), dtype=x.dtype)
    wide[:, ::2] = x
    transposed = np.ascontiguousarray(x.T).T                    # Fortran order
    reversed_rows = np.ascontiguousarray(x[::-1])[::-1]         # negative row stride
    tall = np.zeros((2 * batch, width), dtype=x.dtype)
    tall[::2] = x
    views = {"every_other_column": wide[:, ::2], "transposed": transposed,
             "negative_stride": reversed_rows, "every_other_row": tall[::2]}
    for name, v in views.items():
        assert not v.flags.c_contiguous, name
        np.testing.assert_array_equal(v, x)
    return views


def snapshot(net, rep):
    return ([g.copy() for g in net.weight_grads], [g.copy() for g in net.bias_grads],
            {k: np.array(v) for k, v in rep.as_dict().items()})


def assert_same_snapshot(a, b):
    for ga, gb in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(ga, gb)
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)


def test_non_contiguous_x_same_as_contiguous(net, dtype):
    x, target, labels = data(dtype, batch=6, seed=5)
    out_ref = net.forward(x)
    rep_ref = net.step(x, target, loss="mse")
    snap_ref = snapshot(net, rep_ref)
    rep_ce = net.step(x, labels, loss="cross_entropy")
    snap_ce = snapshot(net, rep_ce)
    for name, view in non_contiguous_views(x).items():
        np.testing.assert_array_equal(net.forward(view), out_ref, err_msg=name)
        assert_same_snapshot(snapshot(net, net.step(view, target, loss="mse")), snap_ref)
        assert_same_snapshot(snapshot(net, net.step(view, labels, loss="cross_entropy")), snap_ce)
        np.testing.assert_array_equal(view, x, err_msg=f"{name}: input was modified")


def test_read_only_x_accepted(net, dtype):
    x, target, _ = data(dtype)
    out_ref = net.forward(x)
    snap_ref = snapshot(net, net.step(x, target, loss="mse"))
    ro_x, ro_t = x.copy(), target.copy()
    ro_x.setflags(write=False)
    ro_t.setflags(write=False)
    np.testing.assert_array_equal(net.forward(ro_x), out_ref)
    assert_same_snapshot(snapshot(net, net.step(ro_x, ro_t, loss="mse")), snap_ref)


def test_non_contiguous_grad_out_and_target_correct_or_refused(net, dtype):
    """Only x is promised to be copied; other arrays may be refused, but never misread."""
    x, target, _ = data(dtype, batch=6, seed=6)
    grad_out = np.random.default_rng(7).standard_normal(target.shape).astype(dtype)
    net.forward(x)
    snap_bwd = snapshot(net, net.backward(grad_out))
    snap_step = snapshot(net, net.step(x, target, loss="mse"))
    for name, view in non_contiguous_views(grad_out).items():
        net.forward(x)
        try:
            rep = net.backward(view)
        except (ValueError, TypeError):
            continue
        assert_same_snapshot(snapshot(net, rep), snap_bwd)
    for name, view in non_contiguous_views(target).items():
        try:
            rep = net.step(x, view, loss="mse")
        except (ValueError, TypeError):
            continue
        assert_same_snapshot(snapshot(net, rep), snap_step)


def test_ops_non_contiguous_correct_or_refused(dtype):
    x, w, b = arr((6, 5), dtype), arr((3, 5), dtype, 1), arr((3,), dtype, 2)
    h_ref, dact_ref = ops.dense_forward(x, w, b, activation="tanh")
    dh = arr((6, 3), dtype, 3)
    grads_ref = ops.dense_backward(dh, dact_ref, x, w)
    act_ref = ops.activation_forward(x, "elu", alpha=0.7)
    for name, view in non_contiguous_views(x).items():
        try:
            h, dact = ops.dense_forward(view, w, b, activation="tanh")
        except (ValueError, TypeError):
            pass
        else:
            np.testing.assert_array_equal(h, h_ref, err_msg=name)
            np.testing.assert_array_equal(dact, dact_ref, err_msg=name)
        try:
            got = ops.dense_backward(dh, dact_ref, view, w)
        except (ValueError, TypeError):
            pass
        else:
            for g, r in zip(got, grads_ref):
                np.testing.assert_array_equal(g, r, err_msg=name)
        try:
            got = ops.activation_forward(view, "elu", alpha=0.7)
        except (ValueError, TypeError):
            pass
        else:
            for g, r in zip(got, act_ref):
                np.testing.assert_array_equal(g, r, err_msg=name)
    for name, view in non_contiguous_views(np.ascontiguousarray(w)).items():
        try:
            h, dact = ops.dense_forward(x, view, b, activation="tanh")
        except (ValueError, TypeError):
            continue
        np.testing.assert_array_equal(h, h_ref, err_msg=name)


# --------------------------------------------------------------------------------------------
# Sizes that cannot fit in memory are refused before anything is allocated
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: vgkern.MLP([100_000, 100_000, 3]),                      # 2e10 parameters
    lambda: vgkern.LSTM(100_000, 100_000),
    lambda: vgkern.RNN(300_000, 300_000),
    lambda: vgkern.MLP([3, 10**5, 2]).forward(np.zeros((10**5, 3), np.float32)),  # workspace
    lambda: ops.dense_forward(np.zeros((10**5, 1), np.float32), np.zeros((10**5, 1), np.float32),
                              np.zeros(10**5, np.float32), activation="tanh"),  # (1e5, 1e5) out
    # valid-shaped but non-contiguous: refused before the (12 GB) contiguous copy is made
    lambda: vgkern.MLP([3, 64, 2]).forward(np.broadcast_to(np.float32(1), (10**9, 3))),
    lambda: vgkern.LSTM(3, 64).forward(np.broadcast_to(np.float32(1), (10**5, 10**4, 3))),
], ids=["mlp-params", "lstm-params", "rnn-params", "mlp-workspace", "op-output",
        "mlp-strided-input", "lstm-strided-input"])
def test_sizes_larger_than_physical_memory_are_memory_errors(make):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(MemoryError, match=all_of("GiB", "physical memory")):
        make()
    # refused before allocating: the peak resident size did not grow by the request (> 20 GB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KiB: 1 GiB


def test_uint64_labels_beyond_int64_are_refused_with_their_value():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=all_of("labels", "9223372036854775808")):
        ops.cross_entropy_loss(logits, np.array([2**63, 0, 0], np.uint64))
    loss, _ = ops.cross_entropy_loss(logits, np.array([2, 0, 0], np.uint64))
    assert loss == pytest.approx(np.log(4))
