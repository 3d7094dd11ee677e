"""vgkern.optim (SGD, Adam, AdamW) and the update statistics it writes into the reports.

- Against torch.optim: 100 steps of the same nets (MLP with and without batch norm, LSTM, RNN)
  from the same weights on the same batches, torch computing its own gradients with autograd:
  parameters, optimizer state, and every statistic (recomputed from torch's parameters before
  and after each step) within the cross-check tolerances of test_mlp_crosscheck.py
  (norm-relative: float64 1e-10, float32 1e-4), in float32 or twice the distance that float32
  rounding alone puts between torch's own run and its float64 twin, where that is larger.
- Against a NumPy float64 reference (scaled, so exact in range) for the statistics of chosen
  weights and updates, tiny (1e-30, and 1e-200 in float64) and huge (1e30, 1e200).
- Log-scale training equals plain training; lr changes and schedules; state and pickling
  continue bit-identically; bad arguments are refused with clear errors.
"""
import copy
import pickle

import numpy as np
import pytest
import torch

import vgkern
from vgkern import optim

from conftest import assert_close_norm

pytestmark = pytest.mark.usefixtures("torch_single_thread")

RTOL = {"float32": 1e-4, "float64": 1e-10}
STATS = ("update_norm", "update_ratio", "norm", "change")

# name -> (vgkern optimizer, torch optimizer, keyword arguments): torch.optim's edge cases
RULES = {
    "sgd": (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    "momentum": (optim.SGD, torch.optim.SGD,
                 dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-3)),
    "nesterov": (optim.SGD, torch.optim.SGD,
                 dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    "adam": (optim.Adam, torch.optim.Adam,
             dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3)),
    "adamw": (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2)),
}
STATE_NAMES = {"sgd": (), "momentum": ("momentum_buffer",), "nesterov": ("momentum_buffer",),
               "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}


def ref_norm(x):
    """||x|| in float64, scaled by the largest magnitude: no under- or overflow."""
    x = np.asarray(x, dtype=np.float64).ravel()
    m = np.max(np.abs(x)) if x.size else 0.0
    if m == 0 or not np.isfinite(m):
        return m
    return m * np.linalg.norm(x / m)


def ref_stats(before, after, w0):
    """The four statistics of one tensor from its values before and after a step and W0."""
    before, after, w0 = (np.asarray(a, dtype=np.float64) for a in (before, after, w0))
    update = ref_norm(after - before)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return {"update_norm": update, "update_ratio": update / ref_norm(before),
                "norm": ref_norm(after), "change": ref_norm(after - w0) / ref_norm(w0)}


def tensor_indices(net):
    """{tensor: flat indices into net.params} from the public views (entries numbered 0..N-1)."""
    saved = np.array(net.params)
    net.params = np.arange(saved.size).astype(net.dtype)
    if isinstance(net, vgkern.MLP):
        out = {f"weight{l}": np.array(w).astype(np.int64).ravel() for l, w in enumerate(net.weights)}
        out.update({f"bias{l}": np.array(b).astype(np.int64) for l, b in enumerate(net.biases)})
    else:
        out = {n: np.array(getattr(net, n)).astype(np.int64).ravel()
               for n in ("weight_ih", "weight_hh", "bias")}
    net.params = saved
    return out


def stat_rows(net):
    """(report field prefix, tensor, layer or None) for every tensor with statistics."""
    if isinstance(net, vgkern.MLP):
        return [(kind, f"{kind}{l}", l) for l in range(net.num_layers)
                for kind in ("weight", "bias")]
    return [(n, n, None) for n in ("weight_ih", "weight_hh", "bias")]


def report_stat(rep, prefix, stat, layer):
    value = getattr(rep, f"{prefix}_{stat}")
    return float(value if layer is None else value[layer])


# --- the nets and their torch twins ---------------------------------------------------------

def as_tensors(module, *arrays):
    """NumPy batches as tensors of the module's dtype (a float64 twin takes float32 data)."""
    dtype = next(module.parameters()).dtype
    return tuple(torch.from_numpy(a).to(dtype) for a in arrays)


def make_mlp(dtype, device, batch_norm=False):
    net = vgkern.MLP([6, 9, 7, 3], activation="tanh", init="scaled_normal", sigma_b=0.2,
                     dtype=dtype, seed=3, device=device, batch_norm=batch_norm)
    module = net.to_torch()

    def data(rng):
        return (rng.standard_normal((16, 6)).astype(dtype),
                rng.standard_normal((16, 3)).astype(dtype))

    def torch_loss(module, x, y):
        x, y = as_tensors(module, x, y)
        return 0.5 * ((module(x) - y) ** 2).sum() / len(x)

    return net, module, list(module.parameters()), data, torch_loss


def make_recurrent(cls, dtype, device):
    net = cls(4, 5, dtype=dtype, seed=3, device=device)
    module = net.to_torch()
    module.bias_hh_l0.requires_grad_(False)  # vgkern's one bias is torch's bias_ih (+ 0)
    params = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0]

    def data(rng):
        return (rng.standard_normal((6, 3, 4)).astype(dtype),
                rng.standard_normal((3, 5)).astype(dtype))

    def torch_loss(module, x, y):
        x, y = as_tensors(module, x, y)
        return 0.5 * ((module(x)[0][-1] - y) ** 2).sum() / x.shape[1]

    return net, module, params, data, torch_loss


NETS = {
    "mlp": lambda dtype, device: make_mlp(dtype, device),
    "mlp-bn": lambda dtype, device: make_mlp(dtype, device, batch_norm=True),
    "lstm": lambda dtype, device: make_recurrent(vgkern.LSTM, dtype, device),
    "rnn": lambda dtype, device: make_recurrent(vgkern.RNN, dtype, device),
}


def float64_twin(module, params, torch_cls, kwargs, dtype):
    """For float32: a float64 copy of the torch module from the same weights, its parameters in
    the order of `params` and their optimizer -- the yardstick of how far float32 rounding
    alone moves 100 steps (an RNN with momentum 0.9 amplifies it to ~1e-4 on some CPUs).
    (None, None, None) for float64."""
    if dtype != "float32":
        return None, None, None
    twin = copy.deepcopy(module).double()
    names = {id(p): name for name, p in module.named_parameters()}
    by_name = dict(twin.named_parameters())
    twin_params = [by_name[names[id(p)]] for p in params]
    return twin, twin_params, torch_cls(twin_params, **kwargs)


def torch_flat(tensors, order, size):
    """torch tensors (in net.to_torch() parameter order) gathered into vgkern's flat layout."""
    flat = np.zeros(size)
    for index, t in zip(order, tensors):
        flat[index] = t.detach().numpy().ravel() if hasattr(t, "detach") else t.ravel()
    return flat


def torch_parameter_order(net, module, params):
    """Flat indices of each torch parameter, in the order of `params`."""
    saved = np.array(net.params)
    net.params = np.arange(saved.size).astype(net.dtype)
    marked = net.to_torch()  # the same module layout, parameters = their flat indices
    net.params = saved
    names = {id(p): n for n, p in module.named_parameters()}
    numbered = dict(marked.named_parameters())
    return [numbered[names[id(p)]].detach().numpy().astype(np.int64).ravel() for p in params]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("net_name", list(NETS))
def test_matches_torch_optim(net_name, rule, dtype, device):
    torch.manual_seed(0)
    net, module, params, data, torch_loss = NETS[net_name](dtype, device)
    order = torch_parameter_order(net, module, params)
    indices = tensor_indices(net)
    ours_cls, torch_cls, kwargs = RULES[rule]
    opt = ours_cls(net, **kwargs)
    topt = torch_cls(params, **kwargs)
    n = net.params.size
    w0 = torch_flat(params, order, n)
    twin, twin_params, twin_opt = float64_twin(module, params, torch_cls, kwargs, dtype)
    rng = np.random.default_rng(1)
    ours = {(t, s): [] for _, t, _ in stat_rows(net) for s in STATS}
    theirs = {key: [] for key in ours}
    for _ in range(100):
        x, y = data(rng)
        rep = net.step(x, y)
        assert all(np.isnan(report_stat(rep, p, s, l)) for p, _, l in stat_rows(net) for s in STATS)
        assert opt.step(rep) is rep
        before = torch_flat(params, order, n)
        for m, o in [(module, topt)] + ([(twin, twin_opt)] if twin is not None else []):
            o.zero_grad()
            torch_loss(m, x, y).backward()
            o.step()
        after = torch_flat(params, order, n)
        for prefix, tensor, layer in stat_rows(net):
            if net_name == "mlp-bn" and prefix == "bias" and layer < net.num_layers - 1:
                assert np.isnan(report_stat(rep, prefix, "norm", layer))  # no bias under BN
                continue
            ref = ref_stats(before[indices[tensor]], after[indices[tensor]], w0[indices[tensor]])
            for s in STATS:
                ours[tensor, s].append(report_stat(rep, prefix, s, layer))
                theirs[tensor, s].append(ref[s])

    def rtol_for(tensors, twin_tensors):
        """RTOL, or in float32 twice torch's own distance from its float64 twin if larger."""
        if twin is None:
            return RTOL[dtype]
        mine, exact = (torch_flat(t, order, n) for t in (tensors, twin_tensors))
        return max(RTOL[dtype], 2 * np.linalg.norm(mine - exact) / np.linalg.norm(exact))

    rtol = rtol_for(params, twin_params)
    assert opt.step_count == 100
    assert_close_norm(net.params, torch_flat(params, order, n), rtol, "params")
    buffers = opt.state_dict()["buffers"]
    assert sorted(buffers) == sorted(STATE_NAMES[rule])
    for name in STATE_NAMES[rule]:
        state = [topt.state[p][name] for p in params]
        twin_state = None if twin is None else [twin_opt.state[p][name] for p in twin_params]
        assert_close_norm(buffers[name][np.concatenate(order)],
                          torch_flat(state, order, n)[np.concatenate(order)],
                          rtol_for(state, twin_state), name)
    for key, values in ours.items():
        if values:
            assert_close_norm(values, theirs[key], rtol, f"{key[0]} {key[1]}")
    logs = [(getattr(rep, f"log10_{p}_{s}"), getattr(rep, f"{p}_{s}"))
            for p, _, _ in stat_rows(net) for s in STATS]
    for log, linear in logs:
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(log, np.log10(linear), rtol=1e-15)
    if isinstance(net, vgkern.MLP):  # the table carries them too
        frame = rep.to_pandas()
        np.testing.assert_array_equal(frame["weight_change"], rep.weight_change)


# --- the statistics against NumPy float64, tiny and huge ------------------------------------

SCALES = {"float32": [1e-30, 1.0, 1e30], "float64": [1e-200, 1e-30, 1.0, 1e30, 1e200]}


def write_buffer(net, name, flat):
    if net.device == "cpu":
        getattr(net, name)[...] = flat
    else:
        net._core.write(name, 0, np.ascontiguousarray(flat))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("net_name", ["mlp", "lstm"])
def test_statistics_match_numpy_at_any_scale(net_name, dtype, device):
    """SGD with lr = 1 and the gradient set to -u moves W by u exactly (up to one rounding):
    chosen W0, W and u of every magnitude, each tensor with its own scales."""
    # W_1 (60, 300): 18000 entries, many 1024-entry blocks, cut in two halves by the CPU pass
    net = (vgkern.MLP([5, 300, 60], dtype=dtype, device=device) if net_name == "mlp"
           else vgkern.LSTM(3, 40, dtype=dtype, device=device))
    rng = np.random.default_rng(5)
    data = ((rng.standard_normal((4, 5)), rng.standard_normal((4, 60))) if net_name == "mlp" else
            (rng.standard_normal((2, 4, 3)), rng.standard_normal((4, 40))))
    indices = tensor_indices(net)
    scales = SCALES[dtype]
    opt = optim.SGD(net, lr=1.0)
    for trial in range(6):
        n = net.params.size
        w0, w, u = (np.zeros(n) for _ in range(3))
        for k, index in enumerate(indices.values()):
            pick = rng.integers(len(scales), size=3)
            for flat, p in zip((w0, w, u), pick):
                flat[index] = scales[p] * rng.uniform(0.5, 2.0, index.size) * rng.choice(
                    [-1, 1], index.size)
        write_buffer(net, "params", w0.astype(dtype))
        net.set_reference()
        rep = net.step(*(a.astype(dtype) for a in data))
        write_buffer(net, "params", w.astype(dtype))
        write_buffer(net, "grads", (-u).astype(dtype))
        before = np.array(net.params, dtype=np.float64)
        opt.step(rep)
        after = np.array(net.params, dtype=np.float64)
        ref_w0 = w0.astype(dtype)
        for prefix, tensor, layer in stat_rows(net):
            i = indices[tensor]
            ref = ref_stats(before[i], after[i], ref_w0[i])
            for s in STATS:
                got = report_stat(rep, prefix, s, layer)
                np.testing.assert_allclose(got, ref[s], rtol=1e-12, atol=0,
                                           err_msg=f"trial {trial}: {tensor} {s}")


@pytest.mark.parametrize("rule", ["momentum", "adamw"])
def test_one_or_two_threads_give_the_same_bits(rule):
    """Every tensor runs in two halves, on two threads when the BLAS may use two: the halves
    depend on sizes only, so parameters, state and statistics are bit-identical."""
    from threadpoolctl import threadpool_limits

    results = []
    for threads in (1, 2):
        net = vgkern.MLP([40, 500, 300, 3], seed=1)  # 20000 and 150000 entries
        opt = RULES[rule][0](net, **RULES[rule][2])
        rng = np.random.default_rng(0)
        with threadpool_limits(threads):
            for _ in range(3):
                x = rng.standard_normal((8, 40)).astype(np.float32)
                rep = opt.step(net.step(x, np.zeros((8, 3), np.float32)))
        results.append((np.array(net.params), opt.state_dict()["buffers"], rep.as_dict()))
    (p1, b1, r1), (p2, b2, r2) = results
    assert p1.tobytes() == p2.tobytes()
    assert all(b1[n].tobytes() == b2[n].tobytes() for n in b1)
    assert all(np.array(r1[n]).tobytes() == np.array(r2[n]).tobytes() for n in r1)


def test_statistics_of_zero_and_unchanged_tensors():
    """W0 = 0 (zero-initialised biases): change is inf (NaN while b stays 0); no update: 0."""
    net = vgkern.MLP([3, 4, 2], dtype="float64")
    opt = optim.SGD(net, lr=0.0)
    rep = opt.step(net.step(np.ones((2, 3)), np.zeros((2, 2))))
    np.testing.assert_array_equal(rep.weight_update_norm, 0)
    np.testing.assert_array_equal(rep.log10_weight_update_norm, -np.inf)
    np.testing.assert_array_equal(rep.weight_change, 0)
    assert np.isnan(rep.bias_change).all() and np.isnan(rep.bias_update_ratio).all()
    opt.lr = 0.1
    rep = opt.step(net.step(np.ones((2, 3)), np.ones((2, 2))))
    assert np.isinf(rep.bias_change).all()
    assert (rep.weight_update_norm > 0).all()


# --- log scale, learning rates, schedules ---------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rule", ["momentum", "adam"])
def test_log_scale_training_equals_plain_training(rule, dtype, device):
    nets = [vgkern.MLP([8] * 7 + [3], activation="tanh", dtype=dtype, seed=2, device=device)
            for _ in range(2)]
    opts = [RULES[rule][0](net, **RULES[rule][2]) for net in nets]
    rng = np.random.default_rng(0)
    for _ in range(30):
        x, y = rng.standard_normal((10, 8)).astype(dtype), rng.standard_normal((10, 3)).astype(dtype)
        plain = opts[0].step(nets[0].step(x, y))
        scaled = opts[1].step(nets[1].step(x, y, log_scale=True))
        assert np.any(scaled.grad_log2_scale != 0)
        for name in ("weight_update_norm", "weight_change", "bias_update_ratio"):
            np.testing.assert_allclose(getattr(scaled, name), getattr(plain, name),
                                       rtol=10 * RTOL[dtype])
    assert_close_norm(nets[1].params, nets[0].params, RTOL[dtype], "params")


def test_lr_changes_and_schedule_match_torch():
    net, module, params, data, torch_loss = make_mlp("float64", "cpu")
    order = torch_parameter_order(net, module, params)
    twin = copy.deepcopy(net)
    opt = optim.SGD(net, lr=0.1, momentum=0.9)
    scheduled = optim.SGD(twin, lr=0.1, momentum=0.9, schedule=lambda t: 0.1 / (1 + t))
    topt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for t in range(20):
        x, y = data(rng)
        opt.lr = 0.1 / (1 + t)
        for group in topt.param_groups:
            group["lr"] = 0.1 / (1 + t)
        a, b = opt.step(net.step(x, y)), scheduled.step(twin.step(x, y))
        assert scheduled.lr == opt.lr == 0.1 / (1 + t)
        topt.zero_grad()
        torch_loss(module, x, y).backward()
        topt.step()
        np.testing.assert_array_equal(a.weight_update_norm, b.weight_update_norm)
    np.testing.assert_array_equal(net.params, twin.params)
    assert_close_norm(net.params, torch_flat(params, order, net.params.size), 1e-10, "params")


# --- state and pickling ---------------------------------------------------------------------

def train(net, opt, rng, steps):
    reps = []
    for _ in range(steps):
        x = rng.standard_normal((6, net.sizes[0] if isinstance(net, vgkern.MLP) else 4))
        if isinstance(net, vgkern.MLP):
            reps.append(opt.step(net.step(x.astype(net.dtype), np.ones((6, 3), net.dtype))))
        else:
            seq = rng.standard_normal((5, 6, 4)).astype(net.dtype)
            reps.append(opt.step(net.step(seq, np.ones((6, 5), net.dtype))))
    return reps


COPIES = {
    "pickle-net": lambda net, opt: pickle.loads(pickle.dumps(net)).optimizer,
    "pickle-optimizer": lambda net, opt: pickle.loads(pickle.dumps(opt)),
    "deepcopy": lambda net, opt: copy.deepcopy(opt),
    "state": lambda net, opt: _via_state(net, opt),
}


def _via_state(net, opt):
    fresh = copy.deepcopy(net)
    fresh_opt = type(opt)(fresh, lr=123.0)  # load_state brings lr and the rest back
    fresh.reinitialize(9) if isinstance(fresh, vgkern.MLP) else None
    fresh.load_state(net.state())
    return fresh_opt


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("rule", ["nesterov", "adamw"])
@pytest.mark.parametrize("kind", ["mlp-bn", "lstm"])
def test_copies_continue_bit_identically(kind, rule, how, device):
    net = (vgkern.MLP([4, 6, 3], batch_norm=True, device=device) if kind == "mlp-bn"
           else vgkern.LSTM(4, 5, device=device))
    opt = RULES[rule][0](net, **RULES[rule][2])
    train(net, opt, np.random.default_rng(0), 4)
    copy_opt = COPIES[how](net, opt)
    assert copy_opt.net is not net and copy_opt.net.optimizer is copy_opt
    assert copy_opt.step_count == 4 and copy_opt.lr == opt.lr
    ours = train(net, opt, np.random.default_rng(1), 3)
    theirs = train(copy_opt.net, copy_opt, np.random.default_rng(1), 3)
    assert np.array(net.params).tobytes() == np.array(copy_opt.net.params).tobytes()
    for a, b in zip(ours, theirs):
        for name, value in a.as_dict().items():
            assert np.array(value).tobytes() == np.array(getattr(b, name)).tobytes(), name


def test_state_has_the_optimizer_only_with_one():
    net = vgkern.MLP([3, 4, 2])
    buffers = {"params", "running_means", "running_vars"}
    assert set(net.state()) == buffers and net.optimizer is None
    opt = optim.Adam(net)
    assert set(net.state()) == buffers | {"reference", "optimizer"} and net.optimizer is opt
    with pytest.raises(ValueError, match="has no optimizer; make one on it first"):
        vgkern.MLP([3, 4, 2]).load_state(net.state())


def test_set_reference_and_reinitialize_reset_weight_change():
    net = vgkern.MLP([3, 4, 2], dtype="float64")
    w0 = [np.array(w) for w in net.weights]
    opt = optim.SGD(net, lr=0.5)
    x, y = np.ones((2, 3)), np.ones((2, 2))
    for _ in range(3):
        rep = opt.step(net.step(x, y))
    np.testing.assert_allclose(rep.weight_change, [np.linalg.norm(w - w_0) / np.linalg.norm(w_0)
                                                   for w, w_0 in zip(net.weights, w0)],
                               rtol=1e-12)
    before = [np.linalg.norm(w) for w in net.weights]
    net.set_reference()
    rep = opt.step(net.step(x, y))
    np.testing.assert_allclose(rep.weight_change, rep.weight_update_norm / before, rtol=1e-12)
    net.reinitialize(4)
    rep = opt.step(net.step(x, y))
    np.testing.assert_allclose(rep.weight_change, rep.weight_update_ratio, rtol=1e-12)


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda n: optim.SGD(n, lr=-0.1), ValueError, r"SGD: lr must be >= 0, got -0.1"),
    (lambda n: optim.SGD(n, lr="0.1"), TypeError, r"SGD: lr must be a number"),
    (lambda n: optim.SGD(n, lr=0.1, nesterov=True), ValueError, r"nesterov=True requires momentum"),
    (lambda n: optim.SGD(n, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     r"nesterov=True requires momentum > 0 and dampening = 0"),
    (lambda n: optim.SGD(n, lr=0.1, momentum=-1), ValueError, r"SGD: momentum must be >= 0"),
    (lambda n: optim.SGD(n, lr=0.1, weight_decay=-1), ValueError, r"weight_decay must be >= 0"),
    (lambda n: optim.SGD(n, 0.1, nesterov="yes"), TypeError, r"SGD: nesterov"),
    (lambda n: optim.Adam(n, betas=(1.0, 0.999)), ValueError, r"Adam: betas\[0\] must be in \[0, 1\)"),
    (lambda n: optim.AdamW(n, betas=(0.9, -0.1)), ValueError, r"AdamW: betas\[1\] must be in"),
    (lambda n: optim.Adam(n, betas=0.9), TypeError, r"Adam: betas must be a pair"),
    (lambda n: optim.Adam(n, eps=-1e-8), ValueError, r"Adam: eps must be >= 0"),
    (lambda n: optim.Adam(n, lr=float("nan")), ValueError, r"Adam: lr"),
    (lambda n: optim.Adam(n, schedule=0.1), TypeError, r"schedule must be a callable"),
    (lambda n: optim.Adam(np.zeros(3)), TypeError, r"net must be a vgkern.MLP, LSTM or RNN"),
])
def test_bad_arguments_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make(vgkern.MLP([3, 4, 2]))


def test_reports_of_other_nets_are_refused():
    net, lstm = vgkern.MLP([3, 4, 2]), vgkern.LSTM(3, 4)
    opt, lstm_opt = optim.SGD(net, lr=0.1), optim.SGD(lstm, lr=0.1)
    x = np.ones((2, 3), np.float32)
    deeper = vgkern.MLP([3, 4, 4, 2]).step(x, np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"rep is not the report of this MLP's last step"):
        opt.step(deeper)
    seq = lstm.step(np.ones((2, 2, 3), np.float32), np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"rep must be the GradReport of this MLP's"):
        opt.step(seq)
    with pytest.raises(TypeError, match=r"rep must be the SequenceReport of this LSTM's"):
        lstm_opt.step(net.step(x, np.ones((2, 2), np.float32)))
    twin = copy.deepcopy(net)
    same_shape = twin.step(x, np.ones((2, 2), np.float32))
    older = net.step(x, np.ones((2, 2), np.float32))
    net.step(x, np.zeros((2, 2), np.float32))
    for rep in (same_shape, older):
        with pytest.raises(ValueError, match=r"rep is not the report of this MLP's last step"):
            opt.step(rep)
    before = np.array(net.params)
    rep = net.step(x, np.ones((2, 2), np.float32))
    rep.grad_log2_scale[0] = 0.5
    with pytest.raises(ValueError, match=r"grad_log2_scale must hold integers"):
        opt.step(rep)
    assert opt.step_count == 0 and np.array_equal(net.params, before)  # nothing moved
    opt.schedule = lambda t: -1.0
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -1.0"):
        opt.step(net.step(x, np.ones((2, 2), np.float32)))


def test_load_state_dict_checks_everything_first():
    net = vgkern.MLP([3, 4, 2])
    opt = optim.Adam(net)
    good = opt.state_dict()
    with pytest.raises(ValueError, match=r"state is of a 'Adam' .* not of a 'AdamW'"):
        optim.AdamW(vgkern.MLP([3, 4, 2])).load_state_dict(good)
    bad = {**good, "buffers": {**good["buffers"], "exp_avg": good["buffers"]["exp_avg"][:-1]}}
    with pytest.raises(ValueError, match=r"state\['buffers'\]\['exp_avg'\] must be a float32"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"Adam: betas\[0\] must be in"):
        opt.load_state_dict({**good, "hyper": {**good["hyper"], "betas": (2.0, 0.5)}})
    assert opt.state_dict()["hyper"] == good["hyper"]


def test_a_busy_net_refuses_the_step():
    """opt.step holds the net's busy guard, as every net call does: while a long forward runs in
    another thread, the step is refused (RuntimeError) and moves nothing."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    net = vgkern.MLP([512] * 9, dtype="float64")
    opt = optim.Adam(net)
    x = np.ones((4, 512))
    rep = net.step(x, np.zeros((4, 512)))
    big = np.ones((4096, 512))
    for _ in range(5):
        started = threading.Event()

        def long_forward():
            started.set()
            while True:
                try:
                    return net.forward(big)
                except RuntimeError as err:  # the step got in first: retry
                    assert "already running" in str(err), err

        before = np.array(net.params)
        refused = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(long_forward)
            started.wait(timeout=60)
            while not future.done() and refused is None:
                try:
                    opt.step(rep)
                    before = np.array(net.params)
                except RuntimeError as err:
                    refused = str(err)
            future.result(timeout=120)
        if refused:
            break
    assert refused and refused.startswith("optim.step: this net is already running"), refused
    assert np.array_equal(net.params, before)
