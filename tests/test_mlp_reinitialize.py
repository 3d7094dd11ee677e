"""MLP.reinitialize (a net redrawn in place is a fresh net of that seed, bit for bit), the shared
draws of vgkern.init.NormalStream, and MLP.unscale_grads (the log-scale contract: unscaled
gradients are the true ones, also where plain float32 gradients underflow)."""
import numpy as np
import pytest

import vgkern
from vgkern.init import INITS, NormalStream

SIZES = [5, 7, 6, 3]


def init_options(init):
    return dict(sigma_w=1.3, sigma_b=0.2) if init == "scaled_normal" else {}


def batch(dtype, rows=8, seed=0, sizes=SIZES):
    rng = np.random.default_rng([seed, 99])
    return (rng.standard_normal((rows, sizes[0])).astype(dtype),
            rng.standard_normal((rows, sizes[-1])).astype(dtype))


def state_bytes(net):
    """Everything a fresh net of a seed fixes: parameters and running statistics."""
    parts = [net.params, *net.running_means, *net.running_vars]
    return [np.asarray(p).tobytes() for p in parts]


def assert_same_steps(net, fresh, dtype, steps=3, lr=0.05):
    """Training both for a few SGD steps gives the same reports and parameters, bit for bit."""
    x, t = batch(dtype)
    for _ in range(steps):
        a, b = net.step(x, t), fresh.step(x, t)
        for field in vgkern.report.FIELDS:
            assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field
        assert a.loss == b.loss
        for n in (net, fresh):
            n.params = n.params - np.asarray(lr, dtype) * n.grads
    assert state_bytes(net) == state_bytes(fresh)


def used(net, dtype):
    """A net whose parameters, gradients and running statistics are far from a fresh net's."""
    x, t = batch(dtype, seed=1, sizes=net.sizes)
    for _ in range(2):
        net.step(x, t)
        net.params = net.params - np.asarray(0.5, dtype) * net.grads
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("init", INITS)
def test_reinitialize_gives_a_fresh_net_of_that_seed(init, batch_norm, dtype, device):
    kw = dict(activation="tanh", dtype=dtype, batch_norm=batch_norm, device=device)
    fresh = vgkern.MLP(SIZES, init=init, seed=7, **kw, **init_options(init))
    # another init and seed, then trained: every buffer differs from the fresh net's
    net = used(vgkern.MLP(SIZES, init="he_uniform", seed=1, **kw), dtype)
    assert state_bytes(net) != state_bytes(fresh)
    params = net.params if device == "cpu" else None
    assert net.reinitialize(7, init=init, **init_options(init)) is net
    assert net.init == init
    assert state_bytes(net) == state_bytes(fresh)
    if device == "cpu":
        assert net.params is params  # the same buffers, rewritten
    assert_same_steps(net, fresh, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_normal_stream_generators_give_the_seeds_parameters(batch_norm, dtype):
    stream = NormalStream(11)
    nets = {}
    for init in INITS:  # one stream shared by every init, sizes growing and shrinking
        for sizes in ([4, 3, 2], [9, 8, 8, 8, 2], [3, 2]):
            kw = dict(activation="relu", dtype=dtype, batch_norm=batch_norm,
                      **init_options(init))
            want = vgkern.MLP(sizes, init=init, seed=11, **kw)
            built = vgkern.MLP(sizes, init=init, seed=stream.generator(), **kw)
            assert state_bytes(built) == state_bytes(want), (init, sizes)
            reused = nets.setdefault(tuple(sizes), used(vgkern.MLP(sizes, seed=3, **{
                k: v for k, v in kw.items() if k not in ("sigma_w", "sigma_b")}), dtype))
            reused.reinitialize(stream.generator(), init=init, **init_options(init))
            assert state_bytes(reused) == state_bytes(want), (init, sizes)
    assert stream.nbytes >= 8 * (8 * 9 + 8 * 8 * 2 + 2 * 8)  # the largest net's normals


def test_normal_stream_generator_refuses_draws_it_cannot_give_exactly():
    g = NormalStream(3).generator()
    assert g.standard_normal(4).tobytes() == np.random.default_rng(3).standard_normal(4).tobytes()
    with pytest.raises(RuntimeError, match="would not be default_rng"):
        g.uniform(size=2)
    u = NormalStream(3).generator()
    assert u.uniform(size=3).tobytes() == np.random.default_rng(3).uniform(size=3).tobytes()
    r = np.random.default_rng(3)
    r.uniform(size=3)
    assert u.standard_normal(2).tobytes() == r.standard_normal(2).tobytes()  # its own bits now
    with pytest.raises(ValueError, match="NormalStream: seed"):
        NormalStream(-1)


def test_reinitialize_keeps_the_options_the_net_was_drawn_with():
    a = vgkern.MLP(SIZES, init="scaled_normal", sigma_w=2.5, sigma_b=0.3, seed=4)
    b = vgkern.MLP(SIZES, init="scaled_normal", sigma_w=2.5, sigma_b=0.3, seed=5)
    a.reinitialize(5)
    assert state_bytes(a) == state_bytes(b)
    c = vgkern.MLP(SIZES, init="xavier_normal", gain=2.0, bias_init=0.5, seed=6)
    d = vgkern.MLP(SIZES, init="xavier_normal", gain=2.0, bias_init=0.5, seed=8)
    c.reinitialize(8)
    assert state_bytes(c) == state_bytes(d)
    # overrides replace them, and are kept for the next redraw
    c.reinitialize(9, gain=0.5)
    c.reinitialize(8)
    assert state_bytes(c) == state_bytes(vgkern.MLP(SIZES, gain=0.5, bias_init=0.5, seed=8))


def test_reinitialize_keeps_the_mode_and_the_statistics_switch():
    net = vgkern.MLP(SIZES, batch_norm=True, seed=0, stats=False).eval()
    net.reinitialize(1)
    assert not net.training and not net.stats


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(init="glorot"), ValueError, r"MLP.reinitialize: init must be one of"),
    (dict(sigma_w=2.0), ValueError, r"sigma_w does not apply to init='xavier_normal'"),
    (dict(init="he_normal", gain=2.0), ValueError, r"gain does not apply to init='he_normal'"),
    (dict(init="scaled_normal", bias_init=0.1), ValueError, r"bias_init does not apply"),
    (dict(init="scaled_normal", sigma_w=-1.0), ValueError, r"sigma_w must be >= 0, got -1.0"),
    (dict(init="scaled_normal", sigma_b=float("nan")), ValueError, r"sigma_b must be a finite"),
    (dict(init="scaled_normal", sigma_w="2"), TypeError, r"sigma_w must be a number"),
    (dict(bias_init=1e300), ValueError, r"bias_init = 1e\+300 overflows float32"),
    (dict(seed=-3), ValueError, r"MLP.reinitialize: seed must be None or an integer >= 0"),
])
def test_reinitialize_refuses_bad_options_before_writing(kwargs, error, message):
    net = vgkern.MLP(SIZES, seed=0)
    before = state_bytes(net)
    seed = kwargs.pop("seed", 1)
    with pytest.raises(error, match=message):
        net.reinitialize(seed, **kwargs)
    assert state_bytes(net) == before and net.init == "xavier_normal"


# --------------------------------------------------------------------------------------------
# unscale_grads: the log-scale contract
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_norm, activation, depth", [
    (False, "sigmoid", 40), (True, "sigmoid", 12), (True, "tanh", 10)])
def test_unscaled_log_scale_gradients_are_the_plain_ones(batch_norm, activation, depth, dtype,
                                                         device):
    """Where nothing underflows, a log-scale backward only multiplies by powers of two: its
    unscaled gradients (dW, db, dgamma, dbeta) equal the plain backward's bit for bit."""
    sizes = [8] * (depth + 1)
    kw = dict(activation=activation, seed=3, batch_norm=batch_norm, dtype=dtype, device=device)
    plain, scaled = vgkern.MLP(sizes, **kw), vgkern.MLP(sizes, **kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 8)).astype(dtype)
    t = rng.standard_normal((16, 8)).astype(dtype)
    plain.step(x, t)
    rep = scaled.step(x, t, log_scale=True)
    assert np.count_nonzero(rep.grad_log2_scale[:-1]) >= depth // 2  # really rescaled
    assert scaled.grads.tobytes() != plain.grads.tobytes()
    assert scaled.unscale_grads(rep) is scaled
    assert scaled.grads.tobytes() == plain.grads.tobytes()


def identity_chain(dtype, depth=26, width=4, shrink=0.01, seed=0):
    """An identity-activation MLP whose layers are `shrink` times orthogonal matrices: the
    backward signal shrinks by `shrink` per layer. With inputs ~1e20 every dW_l is ~1e-30 while
    dL/dz_0 is ~1e-50, far below float32's smallest subnormal (1.4e-45)."""
    rng = np.random.default_rng(seed)
    weights = [shrink * np.linalg.qr(rng.standard_normal((width, width)))[0]
               for _ in range(depth)]
    net = vgkern.MLP([width] * (depth + 1), activation="identity", dtype=dtype)
    net.weights = [w.astype(dtype) for w in weights]
    x = 1e20 * rng.standard_normal((3, width))
    t = rng.standard_normal((3, width))
    return net, x.astype(dtype), t.astype(dtype)


def test_unscale_grads_recovers_gradients_that_plain_float32_loses(device):
    reference, x64, t64 = identity_chain("float64")
    reference.step(x64, t64)  # float64 holds every gradient: the reference
    plain, x, t = identity_chain("float32")
    plain.step(x, t)
    assert not plain.weight_grads[0].any()  # plain float32: dW_0 underflowed to 0
    net, x, t = identity_chain("float32")
    if device == "cuda":
        net = vgkern.MLP(net.sizes, activation="identity", dtype="float32", device="cuda")
        net.weights = identity_chain("float32")[0].weights
    rep = net.step(x, t, log_scale=True)
    assert rep.grad_log2_scale[0] < -150
    net.unscale_grads(rep)
    for l in range(net.num_layers):
        want = reference.weight_grads[l]
        assert np.abs(want).min() > 1e-36  # normal float32 numbers: kept to ~float32 precision
        np.testing.assert_allclose(net.weight_grads[l], want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())
        # the bias gradients are ~1e-50 .. 1e-30: subnormal or 0 in float32, as the reference's
        want = reference.bias_grads[l]
        np.testing.assert_allclose(net.bias_grads[l], want.astype(np.float32), rtol=1e-4,
                                   atol=max(3e-45, 1e-5 * np.abs(want).max()))


def test_unscale_grads_refuses_a_report_of_another_net():
    net = vgkern.MLP(SIZES, seed=0)
    other = vgkern.MLP([5, 5], seed=0)
    x, t = batch("float32")
    rep = other.step(x, t[:, :1].repeat(5, axis=1), log_scale=True)
    with pytest.raises(ValueError, match="report has 1 layers, this net 3"):
        net.unscale_grads(rep)
    with pytest.raises(TypeError, match="report must be the GradReport"):
        net.unscale_grads(np.zeros(3))
    rep = net.step(x, t)
    rep.grad_log2_scale = np.array([0.5, 0, 0])
    with pytest.raises(ValueError, match="must hold integers"):
        net.unscale_grads(rep)
