"""vgkern.torch_convert: MLP/LSTM/RNN.from_torch, to_torch, state_dict, load_state_dict.

Outputs and gradients of converted nets are compared with torch autograd at the tolerances of
test_mlp_crosscheck.py / test_recurrent.py (norm-relative: float64 1e-10, float32 1e-4)."""
import subprocess
import sys

import numpy as np
import pytest

import vgkern

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL = {"float64": 1e-10, "float32": 1e-4}


def assert_close_norm(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    err, ref = np.linalg.norm(actual - expected), np.linalg.norm(expected)
    assert err <= rtol * ref + 1e-300, f"{what}: ||vgkern - torch|| = {err:.3e} > {rtol} * {ref:.3e}"


def tdtype(dtype):
    return getattr(torch, dtype)


def torch_mlp(dtype, bn=False, act=nn.Tanh, out_act=None, seed=0):
    torch.manual_seed(seed)
    mods = []
    for d_in, d_out in ((6, 8), (8, 8)):
        mods.append(nn.Linear(d_in, d_out, bias=not bn))
        if bn:
            mods.append(nn.BatchNorm1d(d_out, eps=1e-4, momentum=0.2))
        mods.append(act())
    mods.append(nn.Linear(8, 3))
    if out_act is not None:
        mods.append(out_act())
    module = nn.Sequential(*mods).to(tdtype(dtype))
    if bn:  # non-trivial gamma, beta and running statistics
        with torch.no_grad():
            for m in module:
                if isinstance(m, nn.BatchNorm1d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
    return module


def mse_torch(module, x, target):
    xt = torch.from_numpy(x).requires_grad_(True)
    out = module(xt)
    loss = 0.5 * ((out - torch.from_numpy(target)) ** 2).sum() / x.shape[0]
    loss.backward()
    return out.detach().numpy(), loss.item(), xt.grad.numpy()


def data(dtype, shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- MLP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bn,mode", [(False, "train"), (True, "train"), (True, "eval")])
@pytest.mark.parametrize("act,out_act", [(nn.Tanh, None), (nn.ReLU, nn.Sigmoid),
                                         (lambda: nn.ELU(alpha=0.7), None)])
def test_mlp_outputs_and_gradients_match_torch(dtype, bn, mode, act, out_act):
    module = torch_mlp(dtype, bn, act, out_act)
    getattr(module, mode)()
    net = vgkern.MLP.from_torch(module)
    assert net.dtype == np.dtype(dtype) and net.training == (mode == "train")
    x, target = data(dtype, (16, 6)), data(dtype, (16, 3), seed=2)
    out, loss, dx = mse_torch(module, x, target)
    rep = net.step(x, target, compute_input_grad=True)
    rtol = RTOL[dtype]
    assert_close_norm(net.last_output, out, rtol, "output")
    assert abs(rep.loss - loss) <= rtol * abs(loss)
    assert_close_norm(net.input_grad, dx, rtol, "input_grad")
    linears = [m for m in module if isinstance(m, nn.Linear)]
    for l, lin in enumerate(linears):
        assert_close_norm(net.weight_grads[l], lin.weight.grad.numpy(), rtol, f"weight_grads[{l}]")
        if lin.bias is not None:
            assert_close_norm(net.bias_grads[l], lin.bias.grad.numpy(), rtol, f"bias_grads[{l}]")
    bns = [m for m in module if isinstance(m, nn.BatchNorm1d)]
    for j, b in enumerate(bns):
        assert_close_norm(net.bn_gamma_grads[j], b.weight.grad.numpy(), rtol, "gamma grad")
        assert_close_norm(net.bn_beta_grads[j], b.bias.grad.numpy(), rtol, "beta grad")
        # train mode updated the running statistics in both, eval mode in neither
        assert_close_norm(net.running_means[j], b.running_mean.numpy(), rtol, "running_mean")
        assert_close_norm(net.running_vars[j], b.running_var.numpy(), rtol, "running_var")
    assert_close_norm(net(x), module(torch.from_numpy(x)).detach().numpy(), rtol, "net(x)")


@pytest.mark.parametrize("bn", [False, True])
def test_mlp_round_trip_is_bit_identical(bn):
    net = vgkern.MLP([5, 7, 7, 2], activation="elu", alpha=0.5, output_activation="tanh",
                     dtype="float64", batch_norm=bn, bn_momentum=0.3, bn_eps=1e-3, seed=3)
    if bn:
        net.running_means = [np.full(7, 0.25), np.full(7, -0.5)]
        net.bn_gammas = [np.linspace(0.5, 1.5, 7)] * 2
        net.eval()
    module = net.to_torch()
    assert next(module.parameters()).dtype == torch.float64 and module.training == net.training
    back = vgkern.MLP.from_torch(module)
    np.testing.assert_array_equal(back.params, net.params)
    assert back.state().keys() == net.state().keys()
    for key, value in net.state().items():
        np.testing.assert_array_equal(back.state()[key], value)
    assert (back.activation, back.output_activation, back.alpha, back.training) == \
        (net.activation, net.output_activation, net.alpha, net.training)
    unused = () if bn else ("bn_momentum", "bn_eps", "bn_affine")  # not read without batch norm
    assert {k: v for k, v in back._config.items() if k not in unused} == \
        {k: v for k, v in net._config.items() if k not in unused}


def test_mlp_identity_activations_and_dtype_override():
    module = nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Linear(4, 4), nn.Linear(4, 2))
    net = vgkern.MLP.from_torch(module, dtype="float64")
    assert net.sizes == [3, 4, 4, 2] and net.activation == "identity"
    assert net.dtype == np.float64 and net.output_activation == "identity"
    x = data("float64", (5, 3))
    assert_close_norm(net(x), module.double()(torch.from_numpy(x)).detach().numpy(), 1e-6, "out")


@pytest.mark.parametrize("module,message", [
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)),
     "unsupported module Dropout at position 1"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softmax(dim=1)),
     "unsupported module Softmax at position 3"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)),
     "Linear at position 0 has a bias before the BatchNorm1d at position 1"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)),
     "Linear at position 0 has no bias"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
     "position 2 is followed by 'relu', the first hidden layer by 'tanh'"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ELU(0.5), nn.Linear(4, 2), nn.ELU(1.0)),
     "different alphas"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)),
     "Linear at position 1 has in_features=5"),
    (lambda: nn.Sequential(nn.Tanh(), nn.Linear(3, 4)), "Tanh at position 0 must follow a Linear"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Sigmoid()),
     "Sigmoid at position 2 must follow a Linear"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.BatchNorm1d(4)),
     "BatchNorm1d at position 2 must directly follow a Linear"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4)),
     "BatchNorm1d at position 1 is on the last layer"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Tanh(),
                           nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)),
     "the Linear at position 3 has no BatchNorm1d"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4, momentum=None),
                           nn.Linear(4, 2)), "momentum=None"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4, track_running_stats=False),
                           nn.Linear(4, 2)), "track_running_stats=False"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 4, bias=False),
                           nn.BatchNorm1d(4, eps=1e-3), nn.Linear(4, 2)),
     "BatchNorm1d at position 3 has eps=0.001"),
    (lambda: nn.Sequential(), "no Linear layer"),
])
def test_mlp_from_torch_refusals(module, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        vgkern.MLP.from_torch(module())


def test_mlp_from_torch_refuses_other_types_and_dtypes():
    with pytest.raises(TypeError, match="must be a torch.nn.Sequential, got Linear"):
        vgkern.MLP.from_torch(nn.Linear(3, 4))
    with pytest.raises(TypeError, match=r"float32 or all float64 .*\['float16'\]"):
        vgkern.MLP.from_torch(nn.Sequential(nn.Linear(3, 4)).half())
    mixed = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2).double())
    with pytest.raises(TypeError, match=r"\['float32', 'float64'\]"):
        vgkern.MLP.from_torch(mixed)


def test_mlp_bn_modes_must_agree():
    module = torch_mlp("float64", bn=True)
    module[1].eval()
    with pytest.raises(ValueError, match="position 4 has training=True, the one at position 1 False"):
        vgkern.MLP.from_torch(module)


def test_import_vgkern_does_not_import_torch():
    code = "import sys, vgkern; vgkern.MLP([2, 2]).state_dict(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- LSTM and RNN ------------------------------------------------------------------------------

def torch_recurrent(kind, dtype, **options):
    torch.manual_seed(0)
    return getattr(nn, kind)(5, 6, **options).to(tdtype(dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind,options", [("LSTM", {}), ("RNN", {"nonlinearity": "tanh"}),
                                          ("RNN", {"nonlinearity": "relu"}),
                                          ("LSTM", {"batch_first": True})])
def test_recurrent_outputs_and_gradients_match_torch(kind, options, dtype):
    module = torch_recurrent(kind, dtype, **options)
    net = getattr(vgkern, kind).from_torch(module)
    assert net.torch_batch_first == options.get("batch_first", False)
    x, target = data(dtype, (7, 4, 5)), data(dtype, (4, 6), seed=2)  # vgkern: (T, B, I)
    xt = torch.from_numpy(x.transpose(1, 0, 2).copy() if net.torch_batch_first else x)
    xt.requires_grad_(True)
    h_seq, h_last = module(xt)
    h_last = h_last[0] if kind == "LSTM" else h_last
    loss = 0.5 * ((h_last[0] - torch.from_numpy(target)) ** 2).sum() / 4
    loss.backward()
    rep = net.step(x, target)
    rtol = RTOL[dtype]
    expected_seq = h_seq.detach().numpy()
    if net.torch_batch_first:
        expected_seq = expected_seq.transpose(1, 0, 2)
    assert_close_norm(net.last_output, expected_seq, rtol, "h_seq")
    assert abs(rep.loss - loss.item()) <= rtol * loss.item()
    dx = xt.grad.numpy().transpose(1, 0, 2) if net.torch_batch_first else xt.grad.numpy()
    assert_close_norm(net.input_grad, dx, rtol, "input_grad")
    assert_close_norm(net.weight_ih_grad, module.weight_ih_l0.grad.numpy(), rtol, "weight_ih")
    assert_close_norm(net.weight_hh_grad, module.weight_hh_l0.grad.numpy(), rtol, "weight_hh")
    assert_close_norm(net.bias_grad, module.bias_ih_l0.grad.numpy(), rtol, "bias")
    out = net(x)
    assert_close_norm(out[0], expected_seq, rtol, "net(x)")


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_recurrent_round_trip_is_bit_identical(kind):
    options = {"nonlinearity": "relu"} if kind == "RNN" else {"forget_bias": 1.0}
    net = getattr(vgkern, kind)(3, 4, dtype="float64", seed=5, **options)
    module = net.to_torch()
    assert not module.batch_first and module.weight_ih_l0.dtype == torch.float64
    np.testing.assert_array_equal(module.bias_ih_l0.detach().numpy(), net.bias)
    assert not module.bias_hh_l0.detach().any()
    back = type(net).from_torch(module)
    np.testing.assert_array_equal(back.params, net.params)
    assert back._config == net._config
    net.torch_batch_first = True
    assert net.to_torch().batch_first


def test_batch_first_survives_pickling():
    import pickle

    net = vgkern.LSTM.from_torch(nn.LSTM(3, 4, batch_first=True))
    copy = pickle.loads(pickle.dumps(net))
    assert copy.torch_batch_first and copy.to_torch().batch_first


@pytest.mark.parametrize("module,error,message", [
    (lambda: nn.LSTM(3, 4, num_layers=2), ValueError, "LSTM with num_layers=2"),
    (lambda: nn.LSTM(3, 4, bidirectional=True), ValueError, "LSTM with bidirectional=True"),
    (lambda: nn.LSTM(3, 4, proj_size=2), ValueError, "LSTM with proj_size=2"),
    (lambda: nn.LSTM(3, 4, bias=False), ValueError, "LSTM with bias=False"),
    (lambda: nn.GRU(3, 4), TypeError, "must be a torch.nn.LSTM, got GRU"),
])
def test_lstm_from_torch_refusals(module, error, message):
    with pytest.raises(error, match=message):
        vgkern.LSTM.from_torch(module())


def test_rnn_from_torch_refusals():
    with pytest.raises(ValueError, match="RNN with num_layers=3"):
        vgkern.RNN.from_torch(nn.RNN(3, 4, num_layers=3))
    with pytest.raises(TypeError, match="must be a torch.nn.RNN, got LSTM"):
        vgkern.RNN.from_torch(nn.LSTM(3, 4))


def test_readme_example_runs_and_moves_the_weights():
    import pathlib

    pytest.importorskip("pandas")  # the example prints rep.to_pandas()

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Bring your torch model", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    net, model, model2 = scope["net"], scope["model"], scope["model2"]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), net.state_dict()[key], err_msg=key)
        np.testing.assert_array_equal(model2.state_dict()[key].numpy(), value.numpy())
    assert np.isfinite(scope["rep"].loss)
