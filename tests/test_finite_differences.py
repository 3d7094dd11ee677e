"""Central finite differences in float64 on tiny shapes.

d loss / d W and d loss / d b from ``net.step`` are compared with (L(p + h) - L(p - h)) / (2 h),
where L is evaluated with ``net.forward`` and the loss written in NumPy (tests/reference.py).
The same is done for vgkern.ops.dense_backward, activation_backward and the two losses.
Inputs are chosen so that every pre-activation stays at least 1e-3 away from 0 (the kinks of
relu and of elu with alpha != 1), which is far more than the perturbation moves it.
"""

import numpy as np
import pytest

import vgkern
from vgkern import ops

import reference as R
from conftest import ACTIVATION_CONFIGS, ACTIVATION_IDS, INITS, LOSSES, central_difference

H = 1e-6          # finite-difference step (parameters are O(1))
RTOL = 1e-5       # relative agreement of analytic and numerical derivatives
KINK_MARGIN = 1e-3


def assert_matches_fd(analytic, numeric, name, scale, f_scale=1.0):
    """|analytic - numeric| <= RTOL * |numeric| + 1e-8 * scale + noise, with scale the largest
    gradient entry (at least 1e-3) and noise = 10 eps max(|f|, 1) / H the rounding noise of the
    central difference of a function of magnitude f_scale."""
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == numeric.shape, (name, analytic.shape, numeric.shape)
    noise = 10 * np.finfo(np.float64).eps * max(abs(f_scale), 1.0) / H
    bound = RTOL * np.abs(numeric) + 1e-8 * scale + noise
    bad = np.abs(analytic - numeric) > bound
    assert not bad.any(), (
        f"{name}: analytic {analytic[bad]} vs finite differences {numeric[bad]} at "
        f"{np.argwhere(bad)[:5].tolist()}")


def min_abs_preactivation(ws, bs, x, activation, output_activation, alpha):
    _, zs, _ = R.mlp_forward(ws, bs, x, activation, output_activation, alpha)
    return min(float(np.abs(z).min()) for z in zs)


def kink_free_input(rng, ws, bs, batch, activation, output_activation, alpha):
    """An input whose pre-activations all stay KINK_MARGIN away from 0 (deterministic search)."""
    for _ in range(200):
        x = rng.standard_normal((batch, ws[0].shape[1]))
        if min_abs_preactivation(ws, bs, x, activation, output_activation, alpha) > KINK_MARGIN:
            return x
    raise AssertionError("no kink-free input found; change the seed")


def numpy_loss(out, target, loss):
    return float(R.loss_and_grad(np.asarray(out, np.float64), target, loss)[0])


def net_central_difference(net, f):
    """central_difference over every weight and bias of `net` (weights first): on the CPU
    perturbed in place through the views; on CUDA in host copies, written to the device before
    every evaluation."""
    if net.device == "cpu":
        return central_difference(f, list(net.weights) + list(net.biases))
    num_layers = net.num_layers
    params = [np.array(a) for a in list(net.weights) + list(net.biases)]

    def write_then_f():
        net.weights, net.biases = params[:num_layers], params[num_layers:]
        return f()

    return central_difference(write_then_f, params)


def check_mlp_against_fd(net, x, target, loss):
    rep = net.step(x, target, loss=loss)
    analytic_w = [np.array(g) for g in net.weight_grads]
    analytic_b = [np.array(g) for g in net.bias_grads]
    loss0 = numpy_loss(net.forward(x), target, loss)
    assert rep.loss == pytest.approx(loss0, rel=1e-12, abs=1e-300)

    num_layers = len(analytic_w)
    numeric = net_central_difference(net, lambda: numpy_loss(net.forward(x), target, loss))
    scale = max(1e-3, max(float(np.abs(g).max()) for g in numeric))
    for l in range(num_layers):
        assert_matches_fd(analytic_w[l], numeric[l], f"dW[{l}]", scale, loss0)
        assert_matches_fd(analytic_b[l], numeric[num_layers + l], f"db[{l}]", scale, loss0)
    # the gradient is not trivially zero (the comparison would then prove little)
    assert scale > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_mlp_step_gradients_match_finite_differences(activation, alpha, init, loss, rng, device):
    sizes = [3, 4, 2]
    kw = ({"sigma_w": 1.2, "sigma_b": 0.5} if init == "scaled_normal" else {"bias_init": 0.1})
    net = vgkern.MLP(sizes, activation=activation, init=init, dtype="float64", alpha=alpha,
                     seed=21, device=device, **kw)
    ws = [np.array(w) for w in net.weights]
    bs = [np.array(b) for b in net.biases]
    x = kink_free_input(rng, ws, bs, 3, activation, "identity", alpha)
    target = make_target(rng, ws, bs, x, activation, "identity", alpha, loss)
    check_mlp_against_fd(net, x, target, loss)


def make_target(rng, ws, bs, x, activation, output_activation, alpha, loss):
    """mse: a random target; cross-entropy: the least likely class of each example, so that
    the gradient is never negligible."""
    if loss == "mse":
        return rng.standard_normal((x.shape[0], ws[-1].shape[0]))
    out, _, _ = R.mlp_forward(ws, bs, x, activation, output_activation, alpha)
    return np.argmin(out, axis=1)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_deeper_mlp_gradients_match_finite_differences(activation, alpha, loss, rng, device):
    """Depth 5 with a non-identity output activation: the chain rule across many layers."""
    sizes = [2, 3, 3, 3, 3, 3]
    output_activation = "sigmoid" if activation != "sigmoid" else "tanh"
    net = vgkern.MLP(sizes, activation=activation, init="xavier_normal", dtype="float64",
                     output_activation=output_activation, alpha=alpha, seed=5, gain=1.3,
                     device=device)
    ws, bs = random_params(rng, sizes)
    for l in range(len(ws)):
        net.weights[l] = ws[l]
        net.biases[l] = bs[l]
    x = kink_free_input(rng, ws, bs, 2, activation, output_activation, alpha)
    target = make_target(rng, ws, bs, x, activation, output_activation, alpha, loss)
    check_mlp_against_fd(net, x, target, loss)


def random_params(rng, sizes):
    ws = [rng.standard_normal((o, i)) * 1.3 / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [0.3 * rng.standard_normal(o) for o in sizes[1:]]
    return ws, bs


@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_mlp_backward_with_grad_out_matches_finite_differences(activation, alpha, rng, device):
    """backward(grad_out) is the vector-Jacobian product: d <out, G> / d params."""
    sizes = [3, 5, 4, 2]
    net = vgkern.MLP(sizes, activation=activation, init="he_normal", dtype="float64",
                     alpha=alpha, seed=2, bias_init=-0.05, device=device)
    ws = [np.array(w) for w in net.weights]
    bs = [np.array(b) for b in net.biases]
    x = kink_free_input(rng, ws, bs, 4, activation, "identity", alpha)
    grad_out = rng.standard_normal((4, 2))
    net.forward(x)
    net.backward(grad_out)
    analytic = [np.array(g) for g in net.weight_grads] + [np.array(g) for g in net.bias_grads]

    def f():
        return float(np.sum(net.forward(x) * grad_out))

    f0 = f()
    numeric = net_central_difference(net, f)
    scale = max(1e-3, max(float(np.abs(g).max()) for g in numeric))
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert_matches_fd(a, n, f"param {i}", scale, f0)


# --------------------------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_dense_backward_matches_finite_differences(activation, alpha, with_bias, rng):
    batch, fan_in, fan_out = 3, 4, 5
    for _ in range(200):
        x = rng.standard_normal((batch, fan_in))
        w = rng.standard_normal((fan_out, fan_in)) / 2
        b = rng.standard_normal(fan_out) / 2
        z = x @ w.T + (b if with_bias else 0)
        if np.abs(z).min() > KINK_MARGIN:
            break
    else:
        raise AssertionError("no kink-free input")
    g = rng.standard_normal((batch, fan_out))
    bias = b if with_bias else None

    def f():
        h, _ = ops.dense_forward(x, w, bias, activation=activation, alpha=alpha)
        return float(np.sum(h * g))

    _, dact = ops.dense_forward(x, w, bias, activation=activation, alpha=alpha)
    dx, dw, db = ops.dense_backward(g, dact, x, w)
    arrays = [x, w] + ([b] if with_bias else [])
    f0 = f()
    numeric = central_difference(f, arrays)
    scale = max(1e-3, max(float(np.abs(n).max()) for n in numeric))
    assert_matches_fd(dx, numeric[0], "dx", scale, f0)
    assert_matches_fd(dw, numeric[1], "dw", scale, f0)
    if with_bias:
        assert_matches_fd(db, numeric[2], "db", scale, f0)
    else:
        # without a bias, db is still delta.sum(0) = d f / d (a bias added to z)
        shift = np.zeros(fan_out)

        def f_shift():
            h, _ = ops.dense_forward(x, w, shift, activation=activation, alpha=alpha)
            return float(np.sum(h * g))

        assert_matches_fd(db, central_difference(f_shift, [shift])[0], "db", scale, f0)


@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_backward_matches_finite_differences(activation, alpha, rng):
    z = rng.uniform(-8, 8, (6, 7))
    z[np.abs(z) < 0.05] = 0.5  # away from the kink at 0
    g = rng.standard_normal(z.shape)
    dz = ops.activation_backward(g, z, activation, alpha=alpha)
    # the activation is elementwise: perturbing all entries at once gives every partial
    h_plus, _ = ops.activation_forward(z + H, activation, alpha=alpha)
    h_minus, _ = ops.activation_forward(z - H, activation, alpha=alpha)
    numeric = g * (h_plus - h_minus) / (2 * H)
    assert_matches_fd(dz, numeric, "dz", max(1e-3, float(np.abs(numeric).max())))
    _, dact = ops.activation_forward(z, activation, alpha=alpha)
    assert_matches_fd(dact, (h_plus - h_minus) / (2 * H), "dact", 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 5)], ids=str)
def test_mse_loss_gradient_matches_finite_differences(shape, rng):
    out = rng.standard_normal(shape)
    target = rng.standard_normal(shape)
    loss, dout = ops.mse_loss(out, target)
    assert loss == pytest.approx(R.mse_loss(out, target)[0], rel=1e-14)
    numeric = central_difference(lambda: ops.mse_loss(out, target)[0], [out])[0]
    assert_matches_fd(dout, numeric, "dout", max(1e-3, float(np.abs(numeric).max())))


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 5), (4, 2)], ids=str)
def test_cross_entropy_gradient_matches_finite_differences(shape, rng):
    logits = 2 * rng.standard_normal(shape)
    labels = rng.integers(0, shape[1], shape[0])
    loss, dlogits = ops.cross_entropy_loss(logits, labels)
    assert loss == pytest.approx(R.cross_entropy_loss(logits, labels)[0], rel=1e-14, abs=1e-300)
    numeric = central_difference(lambda: ops.cross_entropy_loss(logits, labels)[0], [logits])[0]
    assert_matches_fd(dlogits, numeric, "dlogits", max(1e-3, float(np.abs(numeric).max())))
