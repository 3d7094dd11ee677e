"""pickle and copy.deepcopy of MLP (with and without batch norm), LSTM and RNN, on the CPU and on
CUDA: the copy has the configuration, parameters, gradients, batch-norm running statistics,
train/eval mode and statistics switch of the original, is independent of it, and steps
bit-identically to it."""
import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import vgkern

COPIERS = {
    "pickle": lambda net: pickle.loads(pickle.dumps(net)),
    "pickle-protocol-2": lambda net: pickle.loads(pickle.dumps(net, protocol=2)),
    "deepcopy": copy.deepcopy,
}

# name -> (constructor(device), data(rng, dtype) -> (x, target), step keyword arguments)
MLP_SIZES = [5, 7, 6, 3]


def mlp_data(rng, dtype):
    return (rng.standard_normal((9, MLP_SIZES[0])).astype(dtype),
            rng.standard_normal((9, MLP_SIZES[-1])).astype(dtype))


def labels_data(rng, dtype):
    return (rng.standard_normal((9, MLP_SIZES[0])).astype(dtype),
            rng.integers(0, MLP_SIZES[-1], 9))


def sequence_data(rng, dtype, every_step=False):
    T, B, I, H = 4, 3, 5, 6
    return (rng.standard_normal((T, B, I)).astype(dtype),
            rng.standard_normal((T, B, H) if every_step else (B, H)).astype(dtype))


NETS = {
    "mlp": (lambda device: vgkern.MLP(MLP_SIZES, activation="tanh", dtype="float32", seed=3,
                                      device=device),
            mlp_data, dict(compute_input_grad=True)),
    "mlp-scaled-float64-no-stats": (
        lambda device: vgkern.MLP(MLP_SIZES, activation="relu", init="scaled_normal",
                                  sigma_w=1.4, sigma_b=0.2, dtype="float64", seed=4, stats=False,
                                  device=device),
        mlp_data, dict(log_scale=True)),
    "mlp-batchnorm": (lambda device: vgkern.MLP(MLP_SIZES, activation="elu", alpha=0.7,
                                                batch_norm=True, bn_momentum=0.3, seed=5,
                                                device=device),
                      labels_data, dict(loss="cross_entropy", compute_input_grad=True)),
    "mlp-batchnorm-no-affine-float64": (
        lambda device: vgkern.MLP(MLP_SIZES, activation="sigmoid", dtype="float64",
                                  batch_norm=True, bn_affine=False, bn_eps=1e-3, seed=6,
                                  device=device),
        mlp_data, {}),
    "lstm": (lambda device: vgkern.LSTM(5, 6, forget_bias=1.0, seed=7, device=device),
             sequence_data, {}),
    "lstm-float64-sequence-loss": (
        lambda device: vgkern.LSTM(5, 6, dtype="float64", seed=8, device=device),
        lambda rng, dtype: sequence_data(rng, dtype, every_step=True),
        dict(loss="mse_sequence")),
    "rnn-relu": (lambda device: vgkern.RNN(5, 6, nonlinearity="relu", seed=9, device=device),
                 sequence_data, {}),
    "rnn-tanh-float64-no-stats": (
        lambda device: vgkern.RNN(5, 6, dtype="float64", stats=False, seed=10, device=device),
        sequence_data, {}),
}


def is_mlp(net):
    return isinstance(net, vgkern.MLP)


def sgd(net, lr=0.05):
    net.params = net.params - np.asarray(lr, net.params.dtype) * net.grads


def trained(name, device, rng, steps=3):
    """The net after a few SGD steps (so that parameters, gradients, running statistics and the
    last-call results are all away from their initial values)."""
    make, data, kw = NETS[name]
    net = make(device)
    for _ in range(steps):
        x, target = data(rng, net.dtype)
        net.step(x, target, **kw)
        sgd(net)
    return net


def result_names(net):
    names = ["input_grad", "last_output", "h0_grad"] + (["c0_grad"] if isinstance(
        net, vgkern.LSTM) else [])
    return names[:2] if is_mlp(net) else names


def assert_same_arrays(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: the bytes differ"


def assert_same_net(a, b):
    """Everything a later step reads, and the public configuration, bit for bit."""
    assert type(a) is type(b) and repr(a) == repr(b)
    assert a.device == b.device and a.dtype == b.dtype and a.stats == b.stats
    assert_same_arrays(a.params, b.params, "params")
    assert_same_arrays(a.grads, b.grads, "grads")
    for key, value in a.state().items():
        assert_same_arrays(value, b.state()[key], f"state()[{key!r}]")
    if is_mlp(a):
        assert a.training == b.training and a.batch_norm == b.batch_norm
        assert (a.sizes, a.activation, a.output_activation, a.init, a.alpha) == (
            b.sizes, b.activation, b.output_activation, b.init, b.alpha)
        assert len(a.bn_gammas) == len(b.bn_gammas) and len(a.running_means) == len(
            b.running_means)
    else:
        assert (a.input_size, a.hidden_size) == (b.input_size, b.hidden_size)
        assert getattr(a, "nonlinearity", None) == getattr(b, "nonlinearity", None)
    for name in result_names(a):
        assert_same_arrays(getattr(a, name), getattr(b, name), name)


def assert_same_reports(r, s):
    r, s = r.as_dict(), s.as_dict()
    assert r.keys() == s.keys()
    for key in r:
        np.testing.assert_array_equal(r[key], s[key], err_msg=key)
        assert np.asarray(r[key]).tobytes() == np.asarray(s[key]).tobytes(), key


def step_both(a, b, name, rng, steps=2):
    """Steps both nets on the same data (with an SGD update in between): same reports, same
    gradients, same parameters, bit for bit."""
    _, data, kw = NETS[name]
    for _ in range(steps):
        x, target = data(rng, a.dtype)
        assert_same_reports(a.step(x, target, **kw), b.step(x.copy(), target.copy(), **kw))
        assert_same_net(a, b)
        sgd(a)
        sgd(b)
        assert_same_arrays(a.params, b.params, "params after SGD")


@pytest.mark.parametrize("copier", COPIERS, ids=list(COPIERS))
@pytest.mark.parametrize("name", NETS, ids=list(NETS))
def test_round_trip_steps_bit_identically(name, copier, device, rng):
    net = trained(name, device, rng)
    twin = COPIERS[copier](net)
    assert twin is not net and twin._core is not net._core
    assert_same_net(net, twin)
    step_both(net, twin, name, rng)


@pytest.mark.parametrize("name", ["mlp-batchnorm", "mlp-batchnorm-no-affine-float64"])
def test_eval_mode_and_running_statistics_travel(name, device, rng):
    """Batch norm in eval mode normalises with the running statistics: a copy that lost them or
    the mode would give other outputs."""
    net = trained(name, device, rng).eval()
    assert any(np.any(m != 0) for m in net.running_means)  # trained away from the defaults
    twin = pickle.loads(pickle.dumps(net))
    assert not twin.training
    for stat in ("running_means", "running_vars"):
        for m, n in zip(getattr(net, stat), getattr(twin, stat)):
            assert_same_arrays(m, n, stat)
    x, _ = NETS[name][1](rng, net.dtype)
    assert_same_arrays(net.forward(x), twin.forward(x), "eval-mode output")
    step_both(net, twin, name, rng)
    twin.train()
    assert twin.training and not net.training


@pytest.mark.parametrize("name", ["mlp-batchnorm", "lstm", "rnn-relu"])
def test_copy_is_independent(name, device, rng):
    net = trained(name, device, rng)
    before = net.params.copy()
    twin = copy.deepcopy(net)
    twin.params = np.zeros_like(before)
    twin.stats = not net.stats
    if is_mlp(net):
        twin.eval()
        assert net.training
    np.testing.assert_array_equal(net.params, before)
    assert net.stats != twin.stats


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_fresh_net_round_trips(name, device):
    """Straight after construction (no step yet): parameters as drawn, results None."""
    net = NETS[name][0](device)
    twin = pickle.loads(pickle.dumps(net))
    assert_same_arrays(net.params, twin.params, "params")
    assert twin.input_grad is None and not hasattr(twin, "last_output")


def test_backward_on_a_copy_needs_its_own_forward(rng):
    """The activations saved by the last forward do not travel: a backward on the copy is
    refused as on a new net, and after a forward gives the original's gradients."""
    net = trained("mlp", "cpu", rng)
    x, target = mlp_data(rng, net.dtype)
    net.forward(x)
    twin = pickle.loads(pickle.dumps(net))
    grad_out = np.ones((9, 3), np.float32)
    with pytest.raises(RuntimeError, match="forward"):
        twin.backward(grad_out)
    twin.forward(x)
    assert_same_reports(net.backward(grad_out), twin.backward(grad_out))
    assert_same_arrays(net.grads, twin.grads, "grads")


def test_unknown_pickle_format_is_refused():
    state = vgkern.RNN(2, 3).__getstate__()
    state["format"] = 99
    net = vgkern.RNN.__new__(vgkern.RNN)
    with pytest.raises(ValueError, match="unknown pickle format 99"):
        net.__setstate__(state)


def test_net_travels_to_another_process(tmp_path, rng):
    """What dask does: pickle in one process, unpickle and step in another."""
    net = trained("mlp-batchnorm", "cpu", rng)
    x, labels = labels_data(rng, net.dtype)
    (tmp_path / "net.pkl").write_bytes(pickle.dumps((net, x, labels)))
    script = (
        "import pickle, sys\n"
        "net, x, labels = pickle.load(open(sys.argv[1], 'rb'))\n"
        "rep = net.step(x, labels, loss='cross_entropy', compute_input_grad=True)\n"
        "pickle.dump((rep.as_dict(), net.params, net.input_grad), open(sys.argv[2], 'wb'))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(vgkern.__file__))] + sys.path))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "net.pkl"),
                    str(tmp_path / "out.pkl")], check=True, env=env, timeout=120)
    there, params, input_grad = pickle.loads((tmp_path / "out.pkl").read_bytes())
    here = net.step(x, labels, loss="cross_entropy", compute_input_grad=True).as_dict()
    for key in here:
        assert np.asarray(here[key]).tobytes() == np.asarray(there[key]).tobytes(), key
    assert_same_arrays(net.params, params, "params")
    assert_same_arrays(net.input_grad, input_grad, "input_grad")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unpickled_arrays_are_accepted_as_inputs(dtype):
    # An unpickled (or copied) array may carry a dtype object of its own: equal to float32, not
    # the same object. It is the dtype a Dask worker receives, and must be accepted as such.
    rng = np.random.default_rng(0)
    net = vgkern.MLP(MLP_SIZES, dtype=dtype, seed=3)
    x, target = (pickle.loads(pickle.dumps(a)) for a in mlp_data(rng, dtype))
    assert x.dtype == np.dtype(dtype)
    rep = net.step(x, target)
    expected = vgkern.MLP(MLP_SIZES, dtype=dtype, seed=3).step(*mlp_data(
        np.random.default_rng(0), dtype))
    np.testing.assert_array_equal(rep.preact_grad_norm, expected.preact_grad_norm)
    h, _ = vgkern.ops.dense_forward(x, np.ascontiguousarray(net.weights[0]),
                                    np.ascontiguousarray(net.biases[0]), "identity")
    assert h.shape == (x.shape[0], MLP_SIZES[1])


def test_byte_swapped_arrays_are_still_refused():
    net = vgkern.MLP(MLP_SIZES, seed=3)
    x = np.ones((4, MLP_SIZES[0]), dtype=">f4")
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got >f4"):
        net.forward(x)
