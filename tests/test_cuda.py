"""The CUDA backend: what is specific to device="cuda" (the numerics tests in test_mlp_reference,
test_mlp_crosscheck, test_batchnorm, test_recurrent, test_ops, test_log_scale,
test_norm_edge_cases and test_determinism also run on CUDA through their
`device` argument; test_fuzz draws CUDA nets too).

Runs on a CUDA GPU, or on the CPU against a build with VGKERN_CUDA=EMULATE (.ci/sanitize.sh
builds one): the CUDA sources compiled as C++, which tests the backend's logic but not its
speed or data races. Elsewhere the CUDA tests skip; the tests at the end (cuBLAS loading and the
Python parameter lists) run everywhere.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import vgkern
from vgkern import _core, _cuda
from vgkern._params import ParameterList

from conftest import eps

needs_cuda = pytest.mark.skipif(not vgkern.cuda_available(),
                                reason="no CUDA GPU visible (and no emulated build)")
DTYPES = ("float32", "float64")


def pair(sizes, dtype, **kwargs):
    """The same net (same seed, so the same parameters) on the CPU and on CUDA."""
    return (vgkern.MLP(sizes, dtype=dtype, seed=4, **kwargs),
            vgkern.MLP(sizes, dtype=dtype, seed=4, device="cuda", **kwargs))


def assert_same_errors(cases, cpu, gpu):
    """Each case(net) raises on both nets: the same exception type and message."""
    for i, case in enumerate(cases):
        with pytest.raises(Exception) as on_cpu:
            case(cpu)
        with pytest.raises(Exception) as on_cuda:
            case(gpu)
        assert type(on_cuda.value) is type(on_cpu.value), i
        assert str(on_cuda.value) == str(on_cpu.value), i


def max_error(a, reference):
    return float(np.max(np.abs(np.asarray(a, np.float64) - reference)))


@needs_cuda
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "elu"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_float32_error_at_most_twice_the_cpu_error(activation, loss):
    """The CUDA rule: float32 CUDA's error against float64 at most twice float32 CPU's error,
    plus a tiny atol; for outputs, every gradient and every report field (W=64, 12 layers)."""
    sizes = [64] * 12 + [10]
    cpu, gpu = pair(sizes, "float32", activation=activation)
    ref = vgkern.MLP(sizes, dtype="float64", activation=activation)
    ref.params = cpu.params.astype(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((96, 64)).astype(np.float32)
    target = (rng.standard_normal((96, 10)).astype(np.float32) if loss == "mse"
              else rng.integers(0, 10, 96))
    reports = {}
    for name, net, xs, ts in (("cpu", cpu, x, target), ("cuda", gpu, x, target),
                              ("ref", ref, x.astype(np.float64),
                               target.astype(np.float64) if loss == "mse" else target)):
        reports[name] = (net.step(xs, ts, loss=loss), np.array(net.last_output),
                         np.array(net.grads))
    (rep_ref, out_ref, grads_ref) = reports["ref"]
    for i, what in ((1, "output"), (2, "gradients")):
        cpu_err = max_error(reports["cpu"][i], reports["ref"][i])
        atol = 4 * eps(np.float32) * float(np.max(np.abs(reports["ref"][i])))
        assert max_error(reports["cuda"][i], reports["ref"][i]) <= 2 * cpu_err + atol, what
    assert abs(reports["cuda"][0].loss - rep_ref.loss) <= (
        2 * abs(reports["cpu"][0].loss - rep_ref.loss) + 4 * eps(np.float32) * rep_ref.loss)
    for field, expected in rep_ref.as_dict().items():
        if not isinstance(expected, np.ndarray) or not np.isfinite(expected).any():
            continue
        finite = np.isfinite(expected)
        got_cpu = getattr(reports["cpu"][0], field)[finite]
        got_cuda = getattr(reports["cuda"][0], field)[finite]
        scale = np.abs(expected[finite]) + (1.0 if "fraction" in field else 0.0)
        cpu_err = np.abs(got_cpu - expected[finite])
        assert np.all(np.abs(got_cuda - expected[finite]) <= 2 * cpu_err + 8 * eps(np.float32)
                      * scale), field


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_parameters_are_host_copies_and_setters_write_the_device(dtype):
    cpu, gpu = pair([5, 7, 3], dtype)
    assert gpu.device == "cuda"
    w0 = gpu.weights[0]
    assert not w0.flags.writeable and np.array_equal(w0, cpu.weights[0])
    with pytest.raises(ValueError, match="read-only"):
        w0[...] = 1
    with pytest.raises(ValueError, match="read-only"):
        params = gpu.params
        params -= 1
    new_w = np.full((7, 5), 0.25, dtype)
    gpu.weights[0] = new_w
    cpu.weights[0] = new_w
    assert np.array_equal(gpu.weights[0], new_w)
    gpu.biases = [np.full(7, 0.5, dtype), np.full(3, -1.0, dtype)]
    cpu.biases = [np.full(7, 0.5, dtype), np.full(3, -1.0, dtype)]
    assert np.array_equal(gpu.params, cpu.params)
    gpu.params = cpu.params * 2
    cpu.params = cpu.params * 2
    assert np.array_equal(gpu.params, cpu.params)
    # the checks of the CPU lists hold on CUDA too
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(3, 7\)"):
        gpu.weights[1] = np.zeros((7, 3), dtype)
    with pytest.raises(TypeError, match="never casts"):
        gpu.params = cpu.params.astype(np.float16)
    # the new parameters are the ones used
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(dtype)
    np.testing.assert_allclose(gpu.forward(x), cpu.forward(x), rtol=0,
                               atol=16 * eps(np.dtype(dtype).type))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_input_grad_and_stats_off_match_the_cpu(dtype):
    cpu, gpu = pair([6, 9, 9, 4], dtype, activation="elu")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 6)).astype(dtype)
    target = rng.standard_normal((11, 4)).astype(dtype)
    tol = 64 * eps(np.dtype(dtype).type)
    for stats in (True, False):
        cpu.stats = gpu.stats = stats
        rc = cpu.step(x, target, compute_input_grad=True)
        rg = gpu.step(x, target, compute_input_grad=True)
        np.testing.assert_allclose(gpu.input_grad, cpu.input_grad, rtol=tol, atol=tol)
        for a, b in zip(gpu.weight_grads, cpu.weight_grads):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        for a, b in zip(gpu.bias_grads, cpu.bias_grads):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        np.testing.assert_allclose(gpu.grads, cpu.grads, rtol=tol, atol=tol)
        assert rg.loss == pytest.approx(rc.loss, rel=tol)
        if not stats:
            assert np.all(np.isnan(rg.weight_grad_norm)) and np.all(np.isnan(rg.preact_mean))


@needs_cuda
def test_errors_are_the_cpu_errors():
    cpu, gpu = pair([5, 7, 3], "float32")
    x = np.zeros((4, 5), np.float32)
    bad_target = np.zeros((4, 3), np.float32)
    bad_target[2, 1] = np.nan
    cases = [
        lambda net: net.forward(np.zeros((4, 6), np.float32)),
        lambda net: net.forward(np.zeros((4, 5), np.float64)),
        lambda net: net.forward(np.zeros((0, 5), np.float32)),
        lambda net: net.step(x, bad_target),
        lambda net: net.step(x, np.array([0, 1, 2, 3]), loss="cross_entropy"),
        lambda net: net.step(x, np.array([0, 1, 2]), loss="cross_entropy"),
        lambda net: vgkern.MLP([3, 2], device="cuda").backward(np.zeros((1, 2), np.float32)),
    ]
    assert_same_errors(cases, cpu, gpu)
    # a refused step leaves no forward behind, as on the CPU
    gpu.forward(x)
    with pytest.raises(ValueError):
        gpu.step(x, bad_target)
    with pytest.raises(RuntimeError, match="no forward pass"):
        gpu.backward(np.zeros((4, 3), np.float32))


@needs_cuda
def test_one_net_two_threads_refused_not_corrupted():
    net = vgkern.MLP([32, 64, 64, 10], device="cuda", seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    t = rng.standard_normal((64, 10)).astype(np.float32)
    expected = net.step(x, t).as_dict()
    barrier = threading.Barrier(2)
    seen = []

    def work():
        barrier.wait()
        for _ in range(20):
            try:
                seen.append(net.step(x, t).as_dict())
            except RuntimeError as err:
                assert "already running in another thread" in str(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen
    for rep in seen:
        for k, v in expected.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(rep[k], v, equal_nan=True), k


@needs_cuda
def test_sync_after_every_launch_runs(tmp_path):
    """VGKERN_CUDA_SYNC=1 (debugging): a synchronisation after every kernel, same results."""
    script = ("import numpy as np, vgkern\n"
              "net = vgkern.MLP([8, 16, 4], device='cuda', seed=1)\n"
              "x = np.ones((3, 8), np.float32)\n"
              "print(repr(net.step(x, np.zeros((3, 4), np.float32)).loss))\n")
    env = dict(os.environ, VGKERN_CUDA_SYNC="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    net = vgkern.MLP([8, 16, 4], device="cuda", seed=1)
    assert float(out) == net.step(np.ones((3, 8), np.float32), np.zeros((3, 4), np.float32)).loss


@needs_cuda
@pytest.mark.parametrize("cls", [vgkern.LSTM, vgkern.RNN])
def test_recurrent_parameters_are_host_copies_and_setters_write_the_device(cls):
    cpu, gpu = cls(3, 4, dtype="float64", seed=5), cls(3, 4, dtype="float64", seed=5,
                                                       device="cuda")
    assert gpu.device == "cuda" and np.array_equal(gpu.params, cpu.params)
    w = gpu.weight_hh
    assert not w.flags.writeable and np.array_equal(w, cpu.weight_hh)
    with pytest.raises(ValueError, match="read-only"):
        w[...] = 0
    for net in (cpu, gpu):
        net.weight_hh = 2 * np.array(net.weight_hh)
        net.bias = np.linspace(-1, 1, net.bias.size)
    assert np.array_equal(gpu.params, cpu.params)
    with pytest.raises(ValueError, match=r"weight_ih must have shape"):
        gpu.weight_ih = np.zeros((2, 2))
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    target = np.zeros((2, 4))
    assert gpu.step(x, target).loss == pytest.approx(cpu.step(x, target).loss, rel=1e-12)
    for name in ("weight_ih_grad", "weight_hh_grad", "bias_grad"):
        got = getattr(gpu, name)
        assert not got.flags.writeable
        np.testing.assert_allclose(got, getattr(cpu, name), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpu.input_grad, cpu.input_grad, rtol=1e-12, atol=1e-14)


@needs_cuda
@pytest.mark.parametrize("cls", [vgkern.LSTM, vgkern.RNN])
def test_recurrent_errors_are_the_cpu_errors(cls):
    cpu, gpu = cls(3, 4, seed=1), cls(3, 4, seed=1, device="cuda")
    x = np.zeros((5, 2, 3), np.float32)
    bad = np.zeros((2, 4), np.float32)
    bad[1, 2] = np.inf
    cases = [
        lambda net: net.forward(np.zeros((5, 3), np.float32)),
        lambda net: net.forward(np.zeros((0, 2, 3), np.float32)),
        lambda net: net.forward(x, h0=np.zeros((3, 4), np.float32)),
        lambda net: net.step(x, bad),
        lambda net: net.step(x, np.zeros((2, 5), np.float32)),
        lambda net: cls(3, 4, device=net.device).backward(np.zeros((5, 2, 4), np.float32)),
    ]
    assert_same_errors(cases, cpu, gpu)


@needs_cuda
@pytest.mark.parametrize("make", [
    lambda device: vgkern.MLP([5, 6, 6, 3], batch_norm=True, seed=3, device=device),
    lambda device: vgkern.MLP([5, 6, 3], seed=3, dtype="float64", device=device),
    lambda device: vgkern.LSTM(4, 5, seed=3, device=device),
], ids=["mlp-bn", "mlp", "lstm"])
def test_state_moves_a_net_between_devices(make):
    cpu, gpu = make("cpu"), make("cuda")
    rng = np.random.default_rng(7)
    cpu.params = (cpu.params + rng.standard_normal(cpu.params.shape)).astype(cpu.params.dtype)
    if isinstance(cpu, vgkern.MLP) and cpu.batch_norm:
        cpu.step(rng.standard_normal((8, 5)).astype(np.float32), np.zeros((8, 3), np.float32))
    state = cpu.state()
    gpu.load_state(state)
    for name, value in gpu.state().items():
        assert np.array_equal(value, state[name]), name
    back = make("cpu")
    back.load_state(gpu.state())
    assert all(np.array_equal(v, state[k]) for k, v in back.state().items())
    with pytest.raises(ValueError, match="state must have the keys"):
        gpu.load_state({"params": state["params"]} if len(state) > 1 else {})
    with pytest.raises(ValueError, match=r"state\['params'\] must have shape"):
        gpu.load_state({**state, "params": state["params"][:-1]})
    if isinstance(cpu, vgkern.MLP):
        gpu.set_weights([np.zeros_like(w) for w in cpu.weights])
        assert all(not w.any() for w in gpu.weights)


# --------------------------------------------------------------------------------------------
# Device arrays in (__cuda_array_interface__)
# --------------------------------------------------------------------------------------------

class EmulatedDeviceArray:
    """A host array posing as a device array: valid in the emulated build, where device memory
    is host memory."""

    def __init__(self, a, strides=None, typestr=None, stream=None):
        self.base = a
        self.__cuda_array_interface__ = dict(
            shape=a.shape, typestr=typestr or a.dtype.str, data=(a.ctypes.data, False),
            strides=strides, version=3, stream=stream)


def on_device(a):
    """`a` as a device array: emulated, or a PyTorch CUDA tensor on a GPU."""
    if vgkern.build_info()["cuda_emulated"]:
        return EmulatedDeviceArray(np.ascontiguousarray(a))
    import torch
    if not torch.cuda.is_available():
        pytest.skip("needs PyTorch with CUDA for device arrays")
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


@needs_cuda
@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_takes_device_arrays_in_place_of_numpy(batch_norm):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    t = rng.standard_normal((9, 3)).astype(np.float32)
    g = rng.standard_normal((9, 3)).astype(np.float32)
    host, dev = (vgkern.MLP([5, 8, 3], seed=2, device="cuda", batch_norm=batch_norm)
                 for _ in range(2))
    expected = host.step(x, t, compute_input_grad=True).as_dict()
    got = dev.step(on_device(x), on_device(t), compute_input_grad=True).as_dict()
    for k, v in expected.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(got[k], v, equal_nan=True), k
    assert np.array_equal(dev.input_grad, host.input_grad)
    assert np.array_equal(dev.forward(on_device(x)), host.forward(x))
    assert np.array_equal(dev.backward(on_device(g)).weight_grad_norm,
                          host.backward(g).weight_grad_norm)


@needs_cuda
def test_recurrent_takes_device_arrays_in_place_of_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 2, 3))
    h0, c0, t = (rng.standard_normal((2, 4)) for _ in range(3))
    host, dev = (vgkern.LSTM(3, 4, dtype="float64", seed=1, device="cuda") for _ in range(2))
    a = host.step(x, t, h0=h0, c0=c0)
    b = dev.step(on_device(x), on_device(t), h0=on_device(h0), c0=on_device(c0))
    assert a.loss == b.loss and np.array_equal(a.x_grad_norm, b.x_grad_norm)
    assert np.array_equal(host.grads, dev.grads)


@needs_cuda
def test_device_arrays_that_are_refused():
    if not vgkern.build_info()["cuda_emulated"]:
        pytest.skip("the emulated build builds these arrays by hand")
    net = vgkern.MLP([4, 3], device="cuda")
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        net.forward(EmulatedDeviceArray(x, strides=(4, 8)))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64, got typestr '<f2'"):
        net.forward(EmulatedDeviceArray(x, typestr="<f2"))
    with pytest.raises(TypeError, match="x must have dtype float32"):
        net.forward(EmulatedDeviceArray(x.astype(np.float64)))
    target = np.zeros((2, 3), np.float32)
    target[1, 2] = np.nan
    with pytest.raises(ValueError) as on_device_err:
        net.step(x, EmulatedDeviceArray(target))
    with pytest.raises(ValueError) as on_host_err:
        net.step(x, target)
    assert str(on_device_err.value) == str(on_host_err.value)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        vgkern.MLP([4, 3]).forward(EmulatedDeviceArray(x))  # a CPU net takes host arrays only


# --------------------------------------------------------------------------------------------
# vgkern.ops on device arrays: CudaArray outputs, DLPack
# --------------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_on_device_arrays_return_device_arrays(dtype):
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((7, 5), (4, 5), (4,)))
    g = rng.standard_normal((7, 4)).astype(dtype)
    xd, wd, bd, gd = (vgkern.to_device(a) for a in (x, w, b, g))
    h, dact = vgkern.ops.dense_forward(xd, wd, bd, "tanh")
    assert isinstance(h, vgkern.CudaArray) and h.shape == (7, 4) and h.dtype == np.dtype(dtype)
    h_cpu, dact_cpu = vgkern.ops.dense_forward(x, w, b, "tanh")
    tol = 64 * eps(np.dtype(dtype).type)
    np.testing.assert_allclose(h.numpy(), h_cpu, rtol=tol, atol=tol)
    for got, want in zip(vgkern.ops.dense_backward(gd, dact, xd, wd),
                         vgkern.ops.dense_backward(g, dact_cpu, x, w)):
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    loss, dout = vgkern.ops.mse_loss(h, gd)
    assert isinstance(dout, vgkern.CudaArray)
    assert loss == pytest.approx(vgkern.ops.mse_loss(h_cpu, g)[0], rel=tol)
    assert vgkern.ops.sum_squares_norm(xd) == pytest.approx(np.linalg.norm(x), rel=tol)
    # inputs on two devices, or device='cpu' with a device array: refused
    with pytest.raises(RuntimeError, match="b must be on device cuda, got cpu"):
        vgkern.ops.dense_forward(xd, wd, b)
    with pytest.raises(ValueError, match="device='cpu' but x is a device array"):
        vgkern.ops.dense_forward(xd, wd, bd, device="cpu")
    # batch norm and the cells too; running statistics are updated on the device
    rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
    rmd, rvd = vgkern.to_device(rm), vgkern.to_device(rv)
    for got, want in zip(vgkern.ops.batchnorm_forward(xd, None, None, rmd, rvd),
                         vgkern.ops.batchnorm_forward(x, None, None, rm, rv)):
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(rvd.numpy(), rv, rtol=tol)
    h_prev = rng.standard_normal((7, 3)).astype(dtype)
    w_ih, w_hh, bias = (rng.standard_normal(s).astype(dtype) for s in ((3, 5), (3, 3), (3,)))
    got = vgkern.ops.rnn_cell_forward(xd, *map(vgkern.to_device, (h_prev, w_ih, w_hh, bias)))
    want = vgkern.ops.rnn_cell_forward(x, h_prev, w_ih, w_hh, bias)
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)


@needs_cuda
def test_cuda_array_interface_and_dlpack_describe_the_array():
    import ctypes

    a = vgkern.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    iface = a.__cuda_array_interface__
    assert iface["shape"] == (2, 3) and iface["typestr"] == "<f4" and iface["version"] == 3
    assert iface["strides"] is None and iface["data"][0] != 0
    assert a.__dlpack_device__() == (2, 0)  # kDLCUDA, device 0
    assert vgkern.ops.sum_squares_norm(a) == pytest.approx(np.sqrt(55.0))  # read through CAI

    class DLTensor(ctypes.Structure):  # dlpack.h
        _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                    ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                    ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                    ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.c_void_p), ("byte_offset", ctypes.c_uint64)]

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    capsule = a.__dlpack__()
    t = DLTensor.from_address(get(capsule, b"dltensor"))
    assert t.data == iface["data"][0] and (t.device_type, t.ndim) == (2, 2)
    assert (t.code, t.bits, t.lanes) == (2, 32, 1) and [t.shape[0], t.shape[1]] == [2, 3]
    assert not t.strides and t.byte_offset == 0
    del capsule  # unconsumed: freed with the capsule; the array stays valid
    assert np.array_equal(a.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    if not vgkern.build_info()["cuda_emulated"]:
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            t = torch.from_dlpack(a)
            assert t.is_cuda and torch.equal(t.cpu(), torch.arange(6.0).reshape(2, 3))


# --------------------------------------------------------------------------------------------
# Everywhere (no GPU needed)
# --------------------------------------------------------------------------------------------

def test_cublas_candidates_name_the_wheel_and_the_toolkit():
    candidates = _cuda.cublas_candidates()
    soname = _cuda.cublas_soname()
    assert soname.startswith("libcublas.so.")
    assert soname in candidates  # the dynamic loader's own search
    assert all(c.endswith(soname) for c in candidates)


def test_cublas_that_cannot_load_is_a_runtime_error_naming_what_was_tried():
    info = vgkern.build_info()
    if info["cuda"] and (info["cuda_emulated"] or vgkern.cuda_available()):
        pytest.skip("cuBLAS is emulated, or may already be loaded with a GPU present")
    with pytest.raises(RuntimeError) as err:
        _core.load_cublas(["/nonexistent/libcublas.so.13"])
    message = str(err.value)
    if info["cuda"]:
        assert "/nonexistent/libcublas.so.13" in message and "pip install vgkern[cuda]" in message
    else:
        assert "no CUDA support" in message


def test_parameter_list_with_device_copies():
    """The CUDA nets' lists, driven by a fake device: fresh read-only copies on every access,
    writes checked, then handed to the writer with the layer index."""
    device = [np.arange(6.0).reshape(2, 3), np.zeros(4)]
    written = []

    def source():
        copies = [a.copy() for a in device]
        for c in copies:
            c.flags.writeable = False
        return copies

    def write(i, value):
        written.append(i)
        device[i] = value.copy()

    lst = ParameterList("weights", source, write)
    assert len(lst) == 2 and not lst[0].flags.writeable
    lst[-1] = np.ones(4)
    assert written == [1] and np.array_equal(lst[1], np.ones(4))
    lst.assign([np.full((2, 3), 2.0), np.full(4, 3.0)])
    assert written == [1, 0, 1] and np.array_equal(lst[0], np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(2, 3\)"):
        lst.assign([np.zeros((3, 2)), np.zeros(4)])
    assert written == [1, 0, 1]  # nothing written when any entry is refused
    with pytest.raises(TypeError, match="never casts"):
        lst[0] = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize("make", [
    lambda: vgkern.MLP([5, 6, 6, 3], batch_norm=True, seed=3),
    lambda: vgkern.RNN(4, 5, seed=3, dtype="float64"),
], ids=["mlp-bn", "rnn"])
def test_state_round_trip_on_the_cpu(make):
    """state() / load_state() on every device; here CPU to CPU (the CUDA case is above)."""
    a, b = make(), make()
    a.params = a.params * 2
    if isinstance(a, vgkern.MLP):
        a.step(np.ones((4, 5), np.float32) * np.arange(5, dtype=np.float32), np.zeros((4, 3),
                                                                                  np.float32))
        assert set(a.state()) == {"params", "running_means", "running_vars"}
    b.load_state(a.state())
    assert all(np.array_equal(v, a.state()[k]) for k, v in b.state().items())
    with pytest.raises(TypeError, match="state must be a dict"):
        b.load_state([a.params])
