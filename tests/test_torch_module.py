"""vgkern.torch.Module: vgkern nets inside torch models, trained by torch.optim.

The oracle is the same model in pure torch (net.to_torch(), the twin), compared at the
cross-check tolerances of test_mlp_crosscheck.py / test_torch_convert.py (norm-relative: float64
1e-10, float32 1e-4)."""
import copy

import numpy as np
import pytest

import vgkern

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

RTOL = {"float64": 1e-10, "float32": 1e-4}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def assert_close_norm(actual, expected, rtol, what):
    actual = np.asarray(torch.as_tensor(actual).detach(), np.float64)
    expected = np.asarray(torch.as_tensor(expected).detach(), np.float64)
    err, ref = np.linalg.norm(actual - expected), np.linalg.norm(expected)
    assert err <= rtol * ref + 1e-300, f"{what}: ||vgkern - torch|| = {err:.3e} > {rtol} * {ref:.3e}"


def mse(out, y):
    """vgkern's "mse": 0.5 * mean over the batch of the squared error summed over outputs."""
    return 0.5 * ((out - y) ** 2).sum() / out.shape[0]


def data(dtype, n=96, d_in=6, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=TORCH_DTYPE[dtype])
    y = torch.randn(n, d_out, generator=g, dtype=TORCH_DTYPE[dtype])
    return torch.utils.data.TensorDataset(x, y)


def mlp(dtype, batch_norm=False):
    return vgkern.MLP([6, 16, 16, 3], activation="tanh", dtype=dtype, seed=1,
                      batch_norm=batch_norm, bn_momentum=0.2)


OPTIMIZERS = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
}


def train(model, optimizer, loader, steps):
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            optimizer.zero_grad()
            loss = mse(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return np.array(losses)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_50_steps_of_a_torch_loop_match_the_pure_torch_model(dtype, opt, batch_norm):
    net = mlp(dtype, batch_norm)
    twin = net.to_torch()
    module = vgkern.torch.Module(net)
    dataset = data(dtype)
    runs = []
    for model in (module, twin):
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True,
                                             generator=torch.Generator().manual_seed(3))
        runs.append(train(model, OPTIMIZERS[opt](model.parameters()), loader, 50))
    assert_close_norm(runs[0], runs[1], RTOL[dtype], "losses")
    assert runs[0][-5:].mean() < runs[0][:5].mean()  # it trained
    ours = net.state_dict()
    for key, value in twin.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert_close_norm(ours[key], value, RTOL[dtype], key)
    # eval mode reaches the net (batch norm's running statistics), and outputs agree there too
    module.eval(), twin.eval()
    assert not module.training and not net.training
    x = dataset.tensors[0][:7]
    assert_close_norm(module(x), twin(x), RTOL[dtype], "eval output")


def test_parameters_share_the_nets_memory_and_optimizer_updates_are_the_nets():
    net = mlp("float32", batch_norm=True)
    module = vgkern.torch.Module(net)
    names = [n for n, _ in module.named_parameters()]
    assert names == ["weight_0", "bn_gamma_0", "bn_beta_0", "weight_1", "bn_gamma_1",
                     "bn_beta_1", "weight_2", "bias_2"]
    assert module.weight_1.data_ptr() == net.weights[1].ctypes.data
    assert module.bn_beta_0.data_ptr() == net.bn_betas[0].ctypes.data
    assert module.running_var_1.data_ptr() == net.running_vars[1].ctypes.data
    assert sum(p.numel() for p in module.parameters()) == net.params.size
    assert module._ex.contiguous  # gradient views made in one call (vgkern.torch.grad_views)
    before = net.params.copy()
    x, y = data("float32").tensors
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    mse(module(x[:8]), y[:8]).backward()
    opt.step()
    assert not np.array_equal(net.params, before)  # the net saw the update, in place
    for (name, p), w in zip(module.named_parameters(), [net.weights[0], net.bn_gammas[0]]):
        np.testing.assert_array_equal(p.detach().numpy(), w, err_msg=name)
    np.testing.assert_array_equal(module(x).detach().numpy(), net.forward(x.numpy()))
    net.params[:] = 0.5  # and the other way round
    assert float(module.bias_2.detach()[0]) == 0.5


def test_gradients_are_views_of_net_grads_and_accumulate_as_in_torch():
    net = mlp("float64")
    twin = net.to_torch()
    module = vgkern.torch.Module(net)
    x, y = data("float64").tensors
    grads_begin = net.grads.ctypes.data
    inside = lambda t: grads_begin <= t.data_ptr() < grads_begin + net.grads.nbytes  # noqa: E731

    mse(module(x[:8]), y[:8]).backward()
    assert all(inside(p.grad) for p in module.parameters())  # no copy
    mse(twin(x[:8]), y[:8]).backward()
    # a second backward without zero_grad accumulates (param.grad becomes a copy first)
    mse(module(x[8:20]), y[8:20]).backward()
    mse(twin(x[8:20]), y[8:20]).backward()
    for p, q in zip(module.parameters(), twin.parameters()):
        assert_close_norm(p.grad, q.grad, 1e-10, "accumulated grad")
        assert not inside(p.grad)
    # zero_grad(set_to_none=False) keeps accumulating into those copies, correctly
    for m in (module, twin):
        m.zero_grad(set_to_none=False)
        mse(m(x[20:30]), y[20:30]).backward()
    for p, q in zip(module.parameters(), twin.parameters()):
        assert_close_norm(p.grad, q.grad, 1e-10, "grad after zero_grad(set_to_none=False)")
    # set_to_none=True (the default): views of net.grads again, equal to the net's gradients
    module.zero_grad()
    mse(module(x[:8]), y[:8]).backward()
    assert all(inside(p.grad) for p in module.parameters())
    np.testing.assert_array_equal(module.weight_0.grad.numpy(), net.weight_grads[0])
    # torch.autograd.grad gets the gradients without touching .grad
    module.zero_grad()
    grads = torch.autograd.grad(mse(module(x[:8]), y[:8]), list(module.parameters()))
    assert all(p.grad is None for p in module.parameters())
    twin.zero_grad()
    mse(twin(x[:8]), y[:8]).backward()
    for g, q in zip(grads, twin.parameters()):
        assert_close_norm(g, q.grad, 1e-10, "autograd.grad")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inside_a_larger_model_input_and_parameter_gradients_are_torchs(dtype):
    torch.manual_seed(0)
    net = mlp(dtype)
    before, after = nn.Linear(5, 6).to(TORCH_DTYPE[dtype]), nn.Linear(3, 2).to(TORCH_DTYPE[dtype])
    model = nn.Sequential(before, vgkern.torch.Module(net), after)
    reference = nn.Sequential(copy.deepcopy(before), net.to_torch(), copy.deepcopy(after))
    x = torch.randn(9, 5, dtype=TORCH_DTYPE[dtype])
    grads = []
    for m in (model, reference):
        xi = x.clone().requires_grad_()
        loss = (m(xi).sin() * torch.arange(2, dtype=x.dtype)).sum()
        loss.backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert len(grads[0]) == len(grads[1])
    for i, (a, b) in enumerate(zip(*grads)):
        assert_close_norm(a, b, RTOL[dtype], f"gradient {i}")
    # and the wrapped net's own input gradient is the gradient reaching `before`'s output
    assert model[1].last_report is not None


def test_last_report_matches_a_direct_net_step():
    net = mlp("float64", batch_norm=True)
    direct = copy.deepcopy(net)
    module = vgkern.torch.Module(net)
    assert module.last_report is None
    x, y = data("float64").tensors
    mse(module(x[:32]), y[:32]).backward()
    rep = direct.step(x[:32].numpy(), y[:32].numpy())
    ours = module.last_report
    assert isinstance(ours, vgkern.GradReport)
    for name, value in rep.as_dict().items():
        if name != "loss":  # a backward has no loss (NaN); torch has it
            np.testing.assert_allclose(getattr(ours, name), value, rtol=1e-10, atol=1e-12,
                                       err_msg=name)
    np.testing.assert_allclose(net.grads, direct.grads, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_recurrent_modules_replace_the_torch_module_they_came_from(kind, batch_first):
    torch.manual_seed(0)
    cls, tcls = (vgkern.LSTM, nn.LSTM) if kind == "lstm" else (vgkern.RNN, nn.RNN)
    source = tcls(4, 5, batch_first=batch_first).double()
    module = vgkern.torch.Module(cls.from_torch(source))
    assert module.batch_first is batch_first
    T, B = 6, 3
    x = torch.randn((B, T, 4) if batch_first else (T, B, 4), dtype=torch.float64)
    h0 = torch.randn(1, B, 5, dtype=torch.float64)
    hx = (h0, torch.randn(1, B, 5, dtype=torch.float64)) if kind == "lstm" else h0
    w_out = torch.randn(x.shape[:2] + (5,), dtype=torch.float64)
    results = []
    for m in (module, source):
        xi = x.clone().requires_grad_()
        hxi = tuple(h.clone().requires_grad_() for h in hx) if kind == "lstm" else hx.clone(
            ).requires_grad_()
        out, state = m(xi, hxi)
        last = state if kind == "rnn" else state[0]
        loss = (out * w_out).sum() + last.pow(2).sum()
        if kind == "lstm":
            loss = loss + state[1].sin().sum()
        loss.backward()
        states = hxi if kind == "lstm" else (hxi,)
        results.append([out, *(state if kind == "lstm" else (state,)), xi.grad,
                        *(h.grad for h in states)] + [p.grad for p in m.parameters()])
    ours, theirs = results
    # torch has bias_ih and bias_hh (equal gradients); vgkern one bias
    theirs = theirs[:-1]
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, i
        assert_close_norm(a, b, 1e-10, f"result {i}")
    assert isinstance(module.last_report, vgkern.SequenceReport)
    # only the output sequence used, no initial state: h_n/c_n get no gradient
    module.zero_grad()
    source.zero_grad()
    for m in (module, source):
        m(x)[0].pow(2).sum().backward()
    for p, q in zip(module.parameters(), source.parameters()):
        assert_close_norm(p.grad, q.grad, 1e-10, "output-only gradient")


def test_lstm_report_matches_a_direct_backward():
    net = vgkern.LSTM(3, 4, dtype="float64", seed=2)
    direct = copy.deepcopy(net)
    module = vgkern.torch.Module(net)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, (h_n, c_n) = module(x)
    out.sum().backward()
    direct.forward(x.numpy())
    rep = direct.backward(np.ones((5, 2, 4)))
    for name, value in rep.as_dict().items():
        np.testing.assert_allclose(getattr(module.last_report, name), value, rtol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_functions_run_without_the_public_apply_and_match_it(kind, monkeypatch):
    """Outside functorch transforms vgkern.torch calls the C++ apply directly (the public
    Function.apply loops over all 102 arguments in Python): the same outputs and gradients as
    through the public apply, which is not called."""
    import vgkern.torch as vt

    if vt._unwrap_if_dead is None or vt._transforms_active is None:
        pytest.skip("this torch lacks the functorch hooks: the public apply runs")
    fn = vt._MLPFunction if kind == "mlp" else vt._RecurrentFunction
    g = torch.Generator().manual_seed(3)
    if kind == "mlp":
        net = mlp("float64")
        x = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    else:
        net = vgkern.LSTM(4, 6, dtype="float64", seed=2)
        x = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def run():
        module = vgkern.torch.Module(copy.deepcopy(net))
        out = module(x)
        out = out if kind == "mlp" else out[0]
        x.grad = None
        (out ** 2).sum().backward()
        return [out.detach().clone(), x.grad.clone()] + [p.grad.clone()
                                                          for p in module.parameters()]

    public = run()
    calls = []
    original = fn.apply.__func__
    monkeypatch.setattr(fn, "apply", classmethod(
        lambda cls, *args: calls.append(1) or original(cls, *args)))
    direct = run()
    assert not calls, "the public Function.apply ran"
    for a, b in zip(direct, public):
        assert torch.equal(a, b)


def test_inside_functorch_transforms_the_public_apply_refuses():
    """Inside torch.func transforms the public apply runs, and refuses as torch refuses a
    Function without setup_context (vgkern's backward is not a functorch rule)."""
    module = vgkern.torch.Module(mlp("float64"))
    x = torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda v: module(v).sum())(x)


def test_train_and_eval_switch_the_nets_batch_norm():
    net = mlp("float32", batch_norm=True).eval()
    module = vgkern.torch.Module(net)
    assert not module.training  # starts in the net's mode
    model = nn.Sequential(nn.Identity(), module)
    model.train()
    assert net.training and module.training
    model.eval()
    assert not net.training


def test_bad_inputs_are_refused_with_clear_errors():
    net = mlp("float32")
    module = vgkern.torch.Module(net)
    x = torch.randn(4, 6)
    with pytest.raises(TypeError, match=r"x must have dtype float32, got torch.float64"):
        module(x.double())
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        module(x.numpy())
    with pytest.raises(ValueError, match=r"shape \(\*, 6\)"):
        module(torch.randn(4, 5))
    with pytest.raises(TypeError, match="one input"):
        module(x, x)
    # double backward
    xi = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(module(xi).pow(2).sum(), xi, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()
    # a forward in between: the net no longer holds this graph's activations
    out = module(x)
    module(x[:2])
    with pytest.raises(RuntimeError, match="no longer the net's last one"):
        out.sum().backward()
    with pytest.raises(TypeError, match="cannot move or convert weight_0"):
        module.double()
    module.float()  # changes nothing: allowed
    with pytest.raises(TypeError, match="must be a vgkern.MLP, LSTM or RNN, got Linear"):
        vgkern.torch.Module(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_first is for LSTM/RNN"):
        vgkern.torch.Module(net, batch_first=True)
    lstm = vgkern.torch.Module(vgkern.LSTM(3, 4))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h0, c0\)"):
        lstm(torch.randn(2, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"h0 must be a \(1, B, H\) tensor"):
        lstm(torch.randn(2, 2, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))


def test_vgkern_torch_is_imported_on_first_use_only():
    import subprocess
    import sys

    code = ("import sys, vgkern; assert 'torch' not in sys.modules; "
            "m = vgkern.torch.Module; import torch; assert vgkern.torch.torch is torch; "
            "assert vgkern.torch.Module.__module__ == 'vgkern.torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_train_it_inside_torch_example_runs_as_printed(tmp_path):
    """README's "Train it inside torch" block, exactly as printed, in a fresh interpreter (as
    test_examples.py runs examples/): 4 batches, each a loss and the L = 3 per-layer norms."""
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Train it inside torch", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 11  # a "10-line" example (+ the import line)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^(\d+\.\d{3}) \[\s*(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s*\]$",
                      proc.stdout, re.M)
    assert len(rows) == 4, proc.stdout
    losses = [float(r[0]) for r in rows]
    assert all(1.5 < v < 3.5 for v in losses), proc.stdout  # ~ln(10) for 10 random classes
    assert all(-4 < float(n) < 1 for r in rows for n in r[1:]), proc.stdout


def test_deepcopy_and_pickle_give_a_module_around_an_independent_net():
    import pickle

    net = mlp("float32", batch_norm=True)
    module = vgkern.torch.Module(net).eval()
    x, y = data("float32").tensors
    for other in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert other.net is not net and not other.training and not other.net.training
        assert other.weight_0.data_ptr() == other.net.weights[0].ctypes.data  # its own views
        np.testing.assert_array_equal(other(x).detach(), module(x).detach())
        other.train()
        opt = torch.optim.SGD(other.parameters(), lr=0.1)
        mse(other(x), y).backward()
        opt.step()
        assert not np.array_equal(other.net.params, net.params)  # the copy trained alone
    with pytest.raises(TypeError, match="cannot move or convert weight_0"):
        module.share_memory()


needs_cuda = pytest.mark.skipif(not vgkern.cuda_available(),
                                reason="no CUDA GPU visible (and no emulated build)")
needs_torch_cuda = pytest.mark.skipif(
    not (vgkern.cuda_available() and torch.cuda.is_available()
         and not vgkern.build_info().get("cuda_emulated")),
    reason="needs a GPU, and PyTorch with CUDA")


@needs_cuda
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_device_buffer_views_the_cuda_nets_memory_and_keeps_it_alive(kind):
    """The core's device_buffer (what vgkern.torch.Module hands to torch.from_dlpack) is the
    net's memory, not a copy. Read through __cuda_array_interface__ as host memory, which
    only the emulated build allows (its device memory is host memory)."""
    import ctypes
    import gc

    if not vgkern.build_info().get("cuda_emulated"):
        pytest.skip("reads device memory as host memory: emulated build only")
    net = (vgkern.MLP([3, 5, 2], device="cuda", batch_norm=True) if kind == "mlp"
           else vgkern.LSTM(3, 4, device="cuda"))
    view = net._core.device_buffer("params")
    iface = view.__cuda_array_interface__
    assert iface["shape"] == (net.params.size,) and view.__dlpack_device__()[0] == 2
    host = np.ctypeslib.as_array((ctypes.c_float * net.params.size).from_address(iface["data"][0]))
    np.testing.assert_array_equal(host, net.params)
    host[0] = 42.0  # a write through the view is the net's
    assert net.params[0] == 42.0
    if kind == "mlp":
        assert net._core.device_buffer("running_vars").shape == (5,)
    del net
    gc.collect()
    assert host[0] == 42.0  # the view keeps the net's memory alive
    with pytest.raises(ValueError, match="device_buffer: no buffer named 'weights'"):
        vgkern.MLP([3, 2], device="cuda")._core.device_buffer("weights")
    with pytest.raises(ValueError, match="the net is on the CPU"):
        vgkern.MLP([3, 2])._core.device_buffer("params")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
            vgkern.torch.Module(vgkern.MLP([3, 2], device="cuda"))


@needs_torch_cuda
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_cuda_module_trains_as_the_cpu_module(kind):
    """On a GPU: the CUDA net's module shares its memory with torch (DLPack) and trains as the
    CPU net's module does."""
    if kind == "mlp":
        cpu_net = mlp("float64", batch_norm=True)
    else:
        cpu_net = vgkern.LSTM(6, 3, dtype="float64", seed=1)
    gpu_net = type(cpu_net).from_torch(cpu_net.to_torch(), device="cuda")
    modules = [vgkern.torch.Module(cpu_net), vgkern.torch.Module(gpu_net)]
    p0 = next(modules[1].parameters())
    assert p0.is_cuda and p0.data_ptr() == gpu_net._core.device_buffer(
        "params").__cuda_array_interface__["data"][0]
    x, y = data("float64").tensors
    losses = []
    for module, device in zip(modules, ("cpu", "cuda")):
        opt = torch.optim.Adam(module.parameters(), lr=1e-2)
        run = []
        for i in range(5):
            xb, yb = x[16 * i:16 * (i + 1)].to(device), y[16 * i:16 * (i + 1)].to(device)
            if kind == "lstm":
                xb = xb.reshape(4, 4, 6)
                out = module(xb)[0][-1]
                yb = yb[:4]
            else:
                out = module(xb)
            opt.zero_grad()
            loss = mse(out, yb)
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert_close_norm(losses[0], losses[1], 1e-9, "losses")
    assert_close_norm(gpu_net.params, cpu_net.params, 1e-9, "parameters")
    assert isinstance(modules[1].last_report, type(modules[0].last_report))
