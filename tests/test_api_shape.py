"""One API shape for MLP, LSTM and RNN: options are keywords, gradients are named alike (the
gradient of X is X_grad, dL/dx is input_grad), the old names still work for one release with a
DeprecationWarning, the recurrent nets refuse log_scale=True with a reason, arguments are
checked alike, and sigma_w/sigma_b are refused where no init uses them."""
import copy
import inspect
import math
import warnings

import numpy as np
import pytest

import vgkern
from vgkern import ops

F32 = np.float32
NET_CLASSES = {"MLP": (vgkern.MLP, 1), "LSTM": (vgkern.LSTM, 2), "RNN": (vgkern.RNN, 2)}


def small(kind, **kw):
    return {"MLP": lambda: vgkern.MLP([3, 5, 2], **kw),
            "LSTM": lambda: vgkern.LSTM(3, 4, **kw),
            "RNN": lambda: vgkern.RNN(3, 4, **kw)}[kind]()


def stepped(kind, rng, **kw):
    """A small net after one step, and its input."""
    net = small(kind, seed=1)
    if kind == "MLP":
        x = rng.standard_normal((6, 3)).astype(F32)
        net.step(x, rng.standard_normal((6, 2)).astype(F32), compute_input_grad=True, **kw)
    else:
        x = rng.standard_normal((5, 2, 3)).astype(F32)
        net.step(x, rng.standard_normal((2, 4)).astype(F32), **kw)
    return net, x


# --------------------------------------------------------------------------------------------
# Keyword-only options
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NET_CLASSES)
def test_options_after_the_sizes_are_keyword_only(kind):
    cls, sizes = NET_CLASSES[kind]
    params = list(inspect.signature(cls).parameters.values())
    assert [p.kind for p in params[:sizes]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * sizes
    assert params[sizes:] and all(p.kind is inspect.Parameter.KEYWORD_ONLY
                                  for p in params[sizes:]), params


@pytest.mark.parametrize("call", [
    lambda: vgkern.MLP([3, 4], "relu"),
    lambda: vgkern.MLP([3, 4], "tanh", "he_normal"),
    lambda: vgkern.LSTM(3, 4, "float64"),
    lambda: vgkern.LSTM(3, 4, "float32", 0, 1.0),
    lambda: vgkern.RNN(3, 4, "relu"),
    lambda: vgkern.RNN(3, 4, "tanh", "float64"),
], ids=["mlp-activation", "mlp-activation-init", "lstm-dtype", "lstm-all", "rnn-nonlinearity",
        "rnn-nonlinearity-dtype"])
def test_positional_options_are_refused(call):
    with pytest.raises(TypeError, match="positional argument"):
        call()


def test_keywords_give_what_the_positional_options_gave():
    """The options mean what they meant: a keyword-built net is the one the old positional call
    built (same parameters for the same seed)."""
    a = vgkern.RNN(3, 4, nonlinearity="relu", dtype="float64", seed=2)
    assert a.nonlinearity == "relu" and a.dtype == np.float64
    b = vgkern.RNN(input_size=3, hidden_size=4, seed=2, dtype="float64", nonlinearity="relu")
    np.testing.assert_array_equal(a.params, b.params)
    lstm = vgkern.LSTM(3, 4, forget_bias=2.0, seed=5)
    plain = vgkern.LSTM(3, 4, seed=5)
    np.testing.assert_allclose(lstm.bias[4:8] - plain.bias[4:8], 2.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Gradient names
# --------------------------------------------------------------------------------------------

GRADIENTS = {  # parameter attribute -> its gradient, per net
    "MLP": {"weights": "weight_grads", "biases": "bias_grads"},
    "LSTM": {"weight_ih": "weight_ih_grad", "weight_hh": "weight_hh_grad", "bias": "bias_grad"},
    "RNN": {"weight_ih": "weight_ih_grad", "weight_hh": "weight_hh_grad", "bias": "bias_grad"},
}


@pytest.mark.parametrize("kind", NET_CLASSES)
def test_gradients_are_named_after_their_parameters(kind, rng):
    """The gradient of X is X_grad (per-layer lists: weights -> weight_grads), shaped like X;
    the flat `grads` holds them where `params` holds the parameters."""
    net, x = stepped(kind, rng)
    flat = net.params.size
    assert net.grads.shape == (flat,)
    for param, grad in GRADIENTS[kind].items():
        p, g = getattr(net, param), getattr(net, grad)
        if kind == "MLP":
            assert [a.shape for a in p] == [a.shape for a in g]
            assert any(np.any(a != 0) for a in g)
        else:
            assert p.shape == g.shape and np.any(g != 0)
    nbn = vgkern.MLP([3, 5, 2], batch_norm=True)
    assert [a.shape for a in nbn.bn_gammas] == [a.shape for a in nbn.bn_gamma_grads]
    assert [a.shape for a in nbn.bn_betas] == [a.shape for a in nbn.bn_beta_grads]


@pytest.mark.parametrize("kind", NET_CLASSES)
def test_input_grad_is_dl_dx_in_every_net(kind, rng):
    """input_grad = dL/d(input), shaped like the input, in all three nets: the MLP's from
    step(compute_input_grad=True), the recurrent nets' dL/dx_seq from every step/backward."""
    net, x = stepped(kind, rng)
    assert isinstance(net.input_grad, np.ndarray)
    assert net.input_grad.shape == x.shape and net.input_grad.dtype == x.dtype
    assert np.all(np.isfinite(net.input_grad)) and np.any(net.input_grad != 0)
    if kind != "MLP":
        assert net.h0_grad.shape == (2, 4)
        assert (net.c0_grad is None) == (kind == "RNN")


def test_input_grad_is_none_unless_computed(rng):
    net, x = stepped("MLP", rng)
    net.step(x, np.zeros((6, 2), F32))
    assert net.input_grad is None
    net.forward(x)
    net.backward(np.ones((6, 2), F32), compute_input_grad=True)
    assert net.input_grad.shape == x.shape


# --------------------------------------------------------------------------------------------
# Deprecated aliases: warn, name the new name, do exactly what it does
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_x_grad_is_a_deprecated_alias_of_input_grad(kind, rng):
    net, _ = stepped(kind, rng)
    with pytest.warns(DeprecationWarning, match=rf"{kind}\.x_grad .*use {kind}\.input_grad") as rec:
        alias = net.x_grad
    assert alias is net.input_grad
    assert rec[0].filename == __file__  # points at the user's line
    new = np.zeros_like(net.input_grad)
    with pytest.warns(DeprecationWarning, match="input_grad"):
        net.x_grad = new
    assert net.input_grad is new


@pytest.mark.parametrize("method", ["backward", "step"])
def test_input_grad_flag_is_a_deprecated_alias_of_compute_input_grad(method, rng):
    net = vgkern.MLP([3, 5, 2], activation="sigmoid", seed=4)
    x = rng.standard_normal((6, 3)).astype(F32)
    target = rng.standard_normal((6, 2)).astype(F32)
    before = net.params.copy()

    def run(**flag):
        net.params = before
        if method == "step":
            return net.step(x, target, **flag)
        net.forward(x)
        return net.backward(target, **flag)

    report = run(compute_input_grad=True)
    want, grads = net.input_grad.copy(), net.grads.copy()
    with pytest.warns(DeprecationWarning,
                      match=rf"MLP\.{method}\(input_grad=\.\.\.\).*use compute_input_grad=") as rec:
        old = run(input_grad=True)
    assert rec[0].filename == __file__
    assert want.tobytes() == net.input_grad.tobytes() and grads.tobytes() == net.grads.tobytes()
    for key, value in report.as_dict().items():
        np.testing.assert_array_equal(value, old.as_dict()[key], err_msg=key)
    with pytest.warns(DeprecationWarning):
        run(input_grad=False)
    assert net.input_grad is None
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="compute_input_grad"):
        run(input_grad="yes")  # checked as the new flag is


def test_both_flag_names_at_once_are_refused(rng):
    net = vgkern.MLP([3, 2])
    x = np.ones((2, 3), F32)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="both"):
        net.step(x, np.zeros((2, 2), F32), compute_input_grad=True, input_grad=True)


def test_new_names_do_not_warn(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in NET_CLASSES:
            net, _ = stepped(kind, rng)
            net.input_grad  # noqa: B018


# --------------------------------------------------------------------------------------------
# log_scale: MLP only, refused on the recurrent nets with the reason
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_recurrent_log_scale_is_refused_with_a_reason(kind, rng):
    net, x = stepped(kind, rng)
    target = np.zeros((2, 4), F32)
    params = net.params.copy()
    with pytest.raises(NotImplementedError, match=rf"{kind}\.step: log_scale=True"):
        net.step(x, target, log_scale=True)
    net.forward(x)
    with pytest.raises(NotImplementedError, match=rf"{kind}\.backward: log_scale=True .*BPTT"):
        net.backward(None, np.ones((2, 4), F32), log_scale=True)
    with pytest.raises(TypeError, match="log_scale"):
        net.backward(None, np.ones((2, 4), F32), log_scale="yes")
    np.testing.assert_array_equal(net.params, params)
    # log_scale=False is the plain step
    a = net.step(x, target, log_scale=False).as_dict()
    b = net.step(x, target).as_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert "log_scale" in type(net).backward.__doc__
    assert "log_scale" in vgkern.recurrent.__doc__


# --------------------------------------------------------------------------------------------
# Arguments checked alike (one parser for dtype and device)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NET_CLASSES)
def test_dtype_and_device_are_refused_alike(kind):
    with pytest.raises(ValueError, match=rf"^{kind}: dtype must be 'float32' or 'float64', "
                                         r"got 'float16'$"):
        small(kind, dtype="float16")
    with pytest.raises(ValueError, match=rf"^{kind}: dtype must be 'float32' or 'float64', "
                                         r"got None$"):
        small(kind, dtype=None)
    with pytest.raises(ValueError, match=rf"^{kind}: device must be 'cpu' or 'cuda', got 'tpu'$"):
        small(kind, device="tpu")
    net = small(kind, dtype=np.float64)
    assert net.dtype == np.dtype("float64") and net.device == "cpu"


def test_ops_refuse_a_device_as_the_nets_do():
    x = np.ones((2, 3), F32)
    with pytest.raises(ValueError, match=r"^sum_squares_norm: device must be 'cpu' or 'cuda', "
                                         r"got 'tpu'$"):
        ops.sum_squares_norm(x, device="tpu")
    assert ops.sum_squares_norm(x, device=None) == pytest.approx(math.sqrt(6))


def test_modules_share_the_argument_helpers():
    """mlp, recurrent and ops check arguments with vgkern._checks; none borrows another's
    private helpers (recurrent.py used to import _as_input & co. from mlp.py)."""
    import ast

    for module in (vgkern.mlp, vgkern.recurrent, vgkern.ops):
        tree = ast.parse(inspect.getsource(module))
        borrowed = [(node.module, a.name) for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom)
                    for a in node.names if a.name.startswith("_") and node.module]
        assert not borrowed, f"{module.__name__} imports private names {borrowed}"
        assert module._checks is vgkern._checks


def test_activation_lists_are_one():
    assert vgkern.ACTIVATIONS == ops.ACTIVATIONS
    with pytest.raises(ValueError, match="nonlinearity"):
        vgkern.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        ops.rnn_cell_forward(np.ones((1, 1), F32), np.ones((1, 1), F32), np.ones((1, 1), F32),
                             np.ones((1, 1), F32), np.ones(1, F32), nonlinearity="sigmoid")


# --------------------------------------------------------------------------------------------
# sigma_w / sigma_b: only with the init that uses them, never negative or non-finite
# --------------------------------------------------------------------------------------------

OTHER_INITS = [i for i in vgkern.INITS if i != "scaled_normal"]


@pytest.mark.parametrize("init", OTHER_INITS)
@pytest.mark.parametrize("arg, value", [("sigma_w", 3.0), ("sigma_w", 1.0), ("sigma_b", 0.1),
                                        ("sigma_b", 0.0)])
def test_sigma_with_an_init_that_ignores_it_is_refused(init, arg, value):
    """Even the old default values: given explicitly, they say the caller expects them to act."""
    with pytest.raises(ValueError, match=rf"MLP: {arg} does not apply to init='{init}' \(only "
                                         rf"to 'scaled_normal'\)"):
        vgkern.MLP([4, 3], init=init, **{arg: value})


@pytest.mark.parametrize("init", vgkern.INITS)
def test_every_init_works_with_the_defaults(init):
    net = vgkern.MLP([4, 3, 2], init=init, seed=1)
    assert np.all(np.isfinite(net.params)) and np.any(net.weights[0] != 0)


def test_scaled_normal_defaults_are_one_and_zero():
    plain = vgkern.MLP([6, 5, 2], init="scaled_normal", seed=3)
    explicit = vgkern.MLP([6, 5, 2], init="scaled_normal", sigma_w=1.0, sigma_b=0.0, seed=3)
    assert plain.params.tobytes() == explicit.params.tobytes()
    assert all(np.all(b == 0) for b in plain.biases)
    wide = vgkern.MLP([6, 5, 2], init="scaled_normal", sigma_w=2.0, seed=3)
    np.testing.assert_allclose(wide.weights[0], 2 * plain.weights[0], rtol=1e-6)
    zero = vgkern.MLP([6, 5, 2], init="scaled_normal", sigma_w=0, sigma_b=np.float32(0.5), seed=3)
    assert all(np.all(w == 0) for w in zero.weights) and np.any(zero.biases[0] != 0)


@pytest.mark.parametrize("arg", ["sigma_w", "sigma_b"])
@pytest.mark.parametrize("value, error, message", [
    (-1.0, ValueError, "must be >= 0"),
    (-1e-300, ValueError, "must be >= 0"),
    (float("nan"), ValueError, "finite"),
    (float("inf"), ValueError, "finite"),
    (-float("inf"), ValueError, "finite"),
    ("1", TypeError, "number"),
    (True, TypeError, "number"),
])
def test_negative_or_non_finite_sigma_is_refused(arg, value, error, message):
    with pytest.raises(error, match=rf"MLP: {arg} {message}|MLP: {arg} must be a {message}"):
        vgkern.MLP([4, 3], init="scaled_normal", **{arg: value})
    with pytest.raises(error, match=arg):  # whatever the init
        vgkern.MLP([4, 3], init="he_normal", **{arg: value})


@pytest.mark.parametrize("init", [i for i in vgkern.INITS
                                  if i not in vgkern.init.OPTION_USERS["gain"]])
def test_gain_with_an_init_that_ignores_it_is_refused(init):
    with pytest.raises(ValueError, match=rf"MLP: gain does not apply to init='{init}'"):
        vgkern.MLP([4, 3], init=init, gain=2.0)


def test_constructor_and_reinitialize_share_the_option_defaults():
    # A net drawn with xavier (no sigma given) redrawn as scaled_normal takes sigma_w = 1 and
    # sigma_b = 0, as a new scaled_normal net does; the options survive a copy.
    net = copy.deepcopy(vgkern.MLP([6, 5, 2], init="xavier_normal", seed=1))
    net.reinitialize(3, init="scaled_normal")
    fresh = vgkern.MLP([6, 5, 2], init="scaled_normal", seed=3)
    assert net.params.tobytes() == fresh.params.tobytes()



def _arrays(result):
    """The arrays of a forward's result: MLP out; RNN (h_seq, h_T); LSTM (h_seq, (h_T, c_T))."""
    if isinstance(result, np.ndarray):
        return [result]
    return [a for part in result for a in (part if isinstance(part, tuple) else (part,))]


@pytest.mark.parametrize("kind", NET_CLASSES)
def test_calling_a_net_is_its_forward(kind, rng):
    net = small(kind, seed=1)
    x = rng.standard_normal((6, 3) if kind == "MLP" else (5, 6, 3)).astype(F32)
    called, forward = _arrays(net(x)), _arrays(net.forward(x))
    assert len(called) == {"MLP": 1, "RNN": 2, "LSTM": 3}[kind]
    for a, b in zip(called, forward):
        np.testing.assert_array_equal(a, b)
    if kind != "MLP":  # arguments pass through: h0 changes the result
        h0 = np.ones((6, 4), F32)
        np.testing.assert_array_equal(net(x, h0)[0], net.forward(x, h0)[0])
        assert not np.array_equal(net(x, h0)[0], called[0])
    with pytest.raises(TypeError, match=r"\.forward: x(_seq)? must be a numpy.ndarray, got str"):
        net("not an array")
