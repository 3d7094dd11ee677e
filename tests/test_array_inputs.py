"""Array inputs other than numpy (vgkern._checks.as_array, the one place): CPU torch tensors and
anything exposing __dlpack__ or __array__ are taken wherever numpy arrays are, without a copy
where dtype and layout allow, with the same refusals as numpy arrays (no silent casts)."""
import copy

import numpy as np
import pytest

import vgkern
from vgkern import _checks

torch = pytest.importorskip("torch")


class DLPackOnly:
    """An array that offers DLPack and nothing else (no __array__)."""

    def __init__(self, a, device=(1, 0)):
        self.a, self.device = a, device

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device


class ArrayOnly:
    """An array that offers __array__ only (as pandas, xarray, PIL do)."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


def rng_array(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("wrap", [torch.from_numpy, DLPackOnly, ArrayOnly],
                         ids=["torch", "dlpack", "array"])
def test_host_arrays_are_read_without_a_copy(wrap):
    a = rng_array((4, 3))
    got = _checks.array_input(wrap(a), "x", dtype=np.float32)
    assert isinstance(got, np.ndarray) and np.shares_memory(got, a)
    t = torch.from_numpy(a)
    assert _checks.array_input(t, "x").ctypes.data == t.data_ptr()


def test_non_contiguous_tensors_are_copied_after_the_checks():
    a = rng_array((3, 4))
    t = torch.from_numpy(a).T  # (4, 3), not C-contiguous
    got = _checks.array_input(t, "x", dtype=np.float32, shape=(None, 3))
    assert got.flags.c_contiguous and not np.shares_memory(got, a)
    np.testing.assert_array_equal(got, a.T)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 5\), got \(4, 3\)"):
        _checks.array_input(t, "x", dtype=np.float32, shape=(None, 5))


def error_of(fn, *args):
    with pytest.raises(Exception) as err:
        fn(*args)
    return type(err.value), str(err.value)


@pytest.mark.parametrize("contiguous", [True, False])
def test_no_silent_casts_same_message_as_numpy(contiguous):
    net = vgkern.MLP([3, 5, 2])
    x64 = rng_array((4, 3), np.float64) if contiguous else rng_array((3, 4), np.float64).T
    as_numpy = error_of(net.forward, x64)
    assert as_numpy[0] is TypeError and "never casts silently" in as_numpy[1]
    assert error_of(net.forward, torch.from_numpy(x64)) == as_numpy
    assert error_of(net.forward, DLPackOnly(x64)) == as_numpy
    assert error_of(net.forward, torch.from_numpy(x64).to(torch.float16)) == error_of(
        net.forward, x64.astype(np.float16))


def test_tensors_that_require_grad_are_refused_and_detach_works():
    net = vgkern.MLP([3, 5, 2])
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"MLP.forward: x requires grad.*\.detach\(\).*"
                                         r"vgkern.torch.Module"):
        net.forward(x)
    np.testing.assert_array_equal(net(x.detach()), net.forward(x.detach().numpy()))


def test_lists_and_device_arrays_are_refused_on_a_cpu_net():
    net = vgkern.MLP([3, 5, 2])
    with pytest.raises(TypeError, match=r"MLP.forward: x must be a numpy.ndarray, got list"):
        net.forward([[1.0, 2.0, 3.0]])
    on_gpu = DLPackOnly(rng_array((4, 3)), device=(2, 0))  # kDLCUDA
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray or another array in host "
                                        r"memory, got a DLPackOnly on DLPack device type 2"):
        net.forward(on_gpu)
    with pytest.raises(TypeError, match="cannot read the DLPackOnly through DLPack"):
        net.forward(DLPackOnly(torch.zeros(4, 3, dtype=torch.bfloat16)))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_forward_step_backward_take_tensors(batch_norm):
    net = vgkern.MLP([6, 8, 3], batch_norm=batch_norm, dtype="float64", seed=3)
    twin = copy.deepcopy(net)
    x, target = rng_array((5, 6), np.float64), rng_array((5, 3), np.float64, seed=1)
    np.testing.assert_array_equal(net(torch.from_numpy(x)), twin(x))
    rep = net.step(torch.from_numpy(x), torch.from_numpy(target), compute_input_grad=True)
    ref = twin.step(x, target, compute_input_grad=True)
    assert rep.loss == ref.loss
    np.testing.assert_array_equal(net.grads, twin.grads)
    np.testing.assert_array_equal(net.input_grad, twin.input_grad)
    labels = np.arange(5) % 3
    rep = net.step(torch.from_numpy(x), torch.from_numpy(labels), loss="cross_entropy")
    assert rep.loss == twin.step(x, labels, loss="cross_entropy").loss
    g = rng_array((5, 3), np.float64, seed=2)
    net.forward(ArrayOnly(x)), twin.forward(x)
    rep = net.backward(torch.from_numpy(g).T.contiguous().T)  # non-contiguous grad_out
    np.testing.assert_array_equal(rep.weight_grad_norm, twin.backward(g).weight_grad_norm)
    np.testing.assert_array_equal(net.grads, twin.grads)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_recurrent_nets_take_tensors(kind):
    cls = vgkern.LSTM if kind == "lstm" else vgkern.RNN
    net = cls(3, 4, dtype="float32", seed=1)
    twin = copy.deepcopy(net)
    x, h0 = rng_array((5, 2, 3)), rng_array((2, 4), seed=1)
    states = (h0, rng_array((2, 4), seed=2)) if kind == "lstm" else (h0,)
    t = torch.from_numpy
    out, ref = net.forward(t(x), *map(t, states)), twin.forward(x, *states)
    np.testing.assert_array_equal(out[0], ref[0])
    g = rng_array((5, 2, 4), seed=3)
    rep, ref_rep = net.backward(t(g)), twin.backward(g)
    np.testing.assert_array_equal(rep.h_grad_norm, ref_rep.h_grad_norm)
    np.testing.assert_array_equal(net.grads, twin.grads)
    target = rng_array((5, 2, 4), seed=4)
    rep = net.step(DLPackOnly(x), t(target), loss="mse_sequence", h0=t(h0))
    assert rep.loss == twin.step(x, target, loss="mse_sequence", h0=h0).loss
    np.testing.assert_array_equal(net.input_grad, twin.input_grad)
    with pytest.raises(TypeError, match="never casts silently"):
        net.forward(t(x.astype(np.float64)))


def test_ops_take_tensors():
    x, w, b = rng_array((4, 3)), rng_array((5, 3), seed=1), rng_array((5,), seed=2)
    t = torch.from_numpy
    for got, ref in zip(vgkern.ops.dense_forward(t(x), t(w), t(b), "tanh"),
                        vgkern.ops.dense_forward(x, w, b, "tanh")):
        np.testing.assert_array_equal(got, ref)
    labels = torch.tensor([0, 2, 2, 1])
    loss, _ = vgkern.ops.cross_entropy_loss(t(w[:4]), labels)
    assert loss == vgkern.ops.cross_entropy_loss(w[:4], labels.numpy())[0]
    # running statistics given as tensors are updated in place, as numpy arrays are
    mean, var = torch.zeros(3), torch.ones(3)
    vgkern.ops.batchnorm_forward(t(x), None, None, mean, var, momentum=0.5)
    np.testing.assert_allclose(mean.numpy(), 0.5 * x.mean(0), rtol=1e-6)
    assert vgkern.ops.sum_squares_norm(torch.tensor(-3.0, dtype=torch.float64)) == 3.0
    with pytest.raises(ValueError, match="dense_forward: w requires grad"):
        vgkern.ops.dense_forward(t(x), t(w).requires_grad_(), t(b))


needs_cuda = pytest.mark.skipif(not vgkern.cuda_available(),
                                reason="no CUDA GPU visible (and no emulated build)")


class DeviceArrayRequiringGrad:
    """A device array (__cuda_array_interface__) flagged requires_grad, as a torch CUDA tensor
    in a graph is (whose interface torch itself refuses to give)."""

    requires_grad = True

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("torch: Can't get __cuda_array_interface__ on Variable that requires "
                           "grad")


@needs_cuda
def test_cuda_nets_take_cpu_tensors_and_refuse_device_tensors_that_require_grad():
    net = vgkern.MLP([3, 5, 2], device="cuda")
    host = vgkern.MLP([3, 5, 2])
    host.params = net.params
    x = rng_array((4, 3))
    np.testing.assert_allclose(net.forward(torch.from_numpy(x)), host.forward(x), rtol=1e-6)
    with pytest.raises(ValueError, match="MLP.forward: x requires grad"):
        net.forward(DeviceArrayRequiringGrad())
