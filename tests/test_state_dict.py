"""state_dict() / load_state_dict() of MLP, LSTM and RNN: torch's keys and shapes (those of
to_torch()'s module), numpy values, torch tensors accepted on load, strict checks."""
import numpy as np
import pytest

import vgkern

torch = pytest.importorskip("torch")

MLP_CASES = {
    "plain": dict(sizes=[4, 6, 6, 3], activation="relu"),
    "bn": dict(sizes=[4, 6, 6, 3], activation="tanh", batch_norm=True),
    "bn_no_affine": dict(sizes=[4, 6, 3], activation="elu", batch_norm=True, bn_affine=False),
    "identity": dict(sizes=[4, 6, 3], activation="identity", output_activation="sigmoid"),
}


def make_net(case, dtype="float64"):
    if case in ("LSTM", "RNN"):
        return getattr(vgkern, case)(3, 5, dtype=dtype, seed=1)
    return vgkern.MLP(dtype=dtype, seed=1, **MLP_CASES[case])


def randomize(module):
    """Every floating entry of the module's state to fresh random values (variances > 0)."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.1)


CASES = list(MLP_CASES) + ["LSTM", "RNN"]


@pytest.mark.parametrize("case", CASES)
def test_keys_and_shapes_are_to_torchs(case):
    net = make_net(case)
    ours, theirs = net.state_dict(), net.to_torch().state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        assert isinstance(value, np.ndarray) and value.shape == tuple(theirs[key].shape), key


@pytest.mark.parametrize("case", CASES)
def test_vgkern_to_torch_module_without_code(case):
    net = make_net(case)
    module = net.to_torch()
    randomize(module)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), net.state_dict()[key], err_msg=key)


@pytest.mark.parametrize("case", CASES)
def test_torch_module_to_vgkern_without_code(case):
    net = make_net(case)
    module = net.to_torch()
    randomize(module)
    assert net.load_state_dict(module.state_dict()) is net  # torch tensors, as they come
    ours = net.state_dict()
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key == "bias_ih_l0":  # vgkern's one bias is their sum
            expected = value + module.state_dict()["bias_hh_l0"]
            np.testing.assert_array_equal(ours[key], expected.numpy())
            np.testing.assert_array_equal(net.bias, expected.numpy())
        elif key == "bias_hh_l0":
            assert not ours[key].any()
        else:
            np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


def test_state_dict_values_are_copies():
    net = make_net("bn")
    state = net.state_dict()
    state["0.weight"][...] = 0
    state["1.running_mean"][...] = 5
    assert net.weights[0].any() and not net.running_means[0].any()


@pytest.mark.parametrize("case", ["bn", "LSTM"])
def test_load_checks_every_entry_before_writing(case):
    net = make_net(case)
    before = net.state_dict()
    state = {k: v + 1 if v.dtype.kind == "f" else v for k, v in before.items()}
    last = list(state)[-2]
    state[last] = np.zeros(state[last].shape + (2,))
    with pytest.raises(ValueError, match=rf"state\['{last}'\] must have shape"):
        net.load_state_dict(state)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_names_missing_and_unexpected_keys():
    net = make_net("plain")
    state = net.state_dict()
    del state["2.bias"]
    state["2.gamma"] = np.zeros(6)
    with pytest.raises(KeyError, match=r"missing keys \['2.bias'\], unexpected keys \['2.gamma'\]"):
        net.load_state_dict(state)


def test_load_refuses_other_dtypes_and_non_mappings():
    net = make_net("LSTM")
    state = {k: v.astype(np.float32) for k, v in net.state_dict().items()}
    with pytest.raises(TypeError, match=r"state\['weight_ih_l0'\] must have dtype float64, got float32"):
        net.load_state_dict(state)
    with pytest.raises(TypeError, match="state must be a mapping of names to arrays, got list"):
        net.load_state_dict([1, 2])


def test_num_batches_tracked_is_an_integer_scalar():
    net = make_net("bn")
    state = net.state_dict()
    assert state["1.num_batches_tracked"].dtype == np.int64
    state["1.num_batches_tracked"] = np.array(3)
    net.load_state_dict(state)  # read and ignored
    state["1.num_batches_tracked"] = np.array([1.5])
    with pytest.raises(ValueError, match=r"state\['1.num_batches_tracked'\] must be an integer scalar"):
        net.load_state_dict(state)


def test_float32_nets_move_both_ways():
    net = make_net("bn", dtype="float32")
    module = net.to_torch()
    assert module[0].weight.dtype == torch.float32
    randomize(module)
    net.load_state_dict(module.state_dict())
    np.testing.assert_array_equal(net.weights[1], module[3].weight.detach().numpy())
