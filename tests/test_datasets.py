"""vgkern.datasets.digits (the fixed stratified split, standardised with the training split's
statistics, the row-by-row sequence form), net.evaluate (held-out loss and accuracy against a
NumPy float64 reference, without side effects) and the error messages of the two traps (a
float64 x into a float32 net, integer labels with loss="mse")."""
import numpy as np
import pytest

import vgkern
from vgkern import datasets
from vgkern._evaluation import cross_entropy_accuracy

sklearn = pytest.importorskip("sklearn")


def _raw_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


def test_the_split_is_fixed_stratified_and_standardised_with_training_statistics():
    x, y = datasets.digits("train", dtype="float64")
    xt, yt = datasets.digits("test", dtype="float64")
    assert x.shape == (1437, 64) and xt.shape == (360, 64)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    assert (datasets.DIGITS_TRAIN_EXAMPLES, datasets.DIGITS_TEST_EXAMPLES) == (1437, 360)
    # stratified: every class in both splits in the proportions of the whole set
    raw, labels = _raw_digits()
    whole = np.bincount(labels) / len(labels)
    assert np.abs(np.bincount(yt, minlength=10) / len(yt) - whole).max() < 0.01
    # the training split is standardised; its statistics (not the test split's) scale both
    std = x.std(0)
    assert np.abs(x.mean(0)).max() < 1e-12
    assert np.allclose(std[std > 0], 1.0) and (x[:, std == 0] == 0).all()  # constant pixels: 0
    from sklearn.model_selection import train_test_split

    r_train, r_test, _, _ = train_test_split(raw, labels, test_size=0.2, random_state=0,
                                             stratify=labels)
    mean, sd = r_train.mean(0), r_train.std(0)
    sd[sd == 0] = 1.0
    np.testing.assert_array_equal(xt, (r_test - mean) / sd)
    assert np.abs(xt.mean(0)).max() > 1e-3  # not re-standardised with its own statistics
    # the whole set, once: no example in both splits
    assert len(y) + len(yt) == len(labels)


def test_same_seed_same_split_other_seed_other_split_and_dtypes_agree():
    a, la = datasets.digits("test", seed=0)
    b, lb = datasets.digits("test", seed=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, lc = datasets.digits("test", seed=1)
    assert not np.array_equal(la, lc)
    assert a.dtype == np.float32
    x64, _ = datasets.digits("test", dtype="float64")
    np.testing.assert_array_equal(a, x64.astype(np.float32))
    a[...] = 0  # the caller's copy: the cache is untouched
    assert not np.array_equal(datasets.digits("test")[0], a)


def test_sequence_form_reads_each_image_row_by_row():
    x, y = datasets.digits("train")
    xs, ys = datasets.digits("train", sequence=True)
    assert xs.shape == (8, 1437, 8) and xs.flags.c_contiguous
    np.testing.assert_array_equal(ys, y)
    for t in (0, 3, 7):
        np.testing.assert_array_equal(xs[t], x[:, 8 * t:8 * t + 8])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 64\)"):
        datasets.as_sequence(np.zeros((3, 63)))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(split="validation"), ValueError, r"split must be one of 'train', 'test'"),
    (dict(seed=-1), ValueError, r"seed must be an integer >= 0"),
    (dict(dtype="float16"), ValueError, r"dtype must be 'float32' or 'float64'"),
    (dict(sequence="yes"), TypeError, r"sequence must be True or False"),
])
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.digits(**kwargs)


def _reference_metrics(logits, labels):
    """NumPy float64 cross entropy (log-sum-exp in the textbook form, shifted) and accuracy."""
    z = np.asarray(logits, np.float64)
    loss = 0.0
    for row, label in zip(z, labels):
        m = max(row)
        loss += m + np.log(sum(np.exp(v - m) for v in row)) - row[label]
    return loss / len(z), float(np.mean(z.argmax(1) == labels))


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30, 1e37])
def test_cross_entropy_and_accuracy_match_the_float64_reference(scale):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((17, 5)) * scale).astype(np.float32)
    labels = rng.integers(0, 5, 17)
    loss, acc = cross_entropy_accuracy(logits, labels, "test")
    want_loss, want_acc = _reference_metrics(logits, labels)
    assert acc == want_acc
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-300)


def test_mlp_evaluate_is_a_forward_without_side_effects():
    x, y = datasets.digits("test")
    net = vgkern.MLP([64, 32, 32, 10], activation="relu", init="he_normal", seed=0,
                     batch_norm=True)
    xb, yb = datasets.digits("train")
    for s in range(3):  # running statistics and gradients that are not the initial ones
        net.step(xb[32 * s:32 * s + 32], yb[32 * s:32 * s + 32], loss="cross_entropy")
    before = {k: np.array(v) for k, v in net.state().items() if k != "optimizer"}
    grads = net.grads.copy()
    loss, acc = net.evaluate(x, y)
    after = {k: np.array(v) for k, v in net.state().items() if k != "optimizer"}
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    np.testing.assert_array_equal(grads, net.grads)
    assert net.training and net.stats  # switches restored
    net.eval()
    want = _reference_metrics(net.forward(x), y)  # eval mode: the running statistics
    net.train()
    assert acc == want[1]
    np.testing.assert_allclose(loss, want[0], rtol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_recurrent_evaluate_classifies_with_a_readout_on_the_last_hidden_state(kind):
    xs, y = datasets.digits("test", sequence=True)
    net = vgkern.LSTM(8, 12, seed=0) if kind == "lstm" else vgkern.RNN(8, 12, seed=0)
    readout = vgkern.MLP([12, 10], activation="identity", seed=1)
    params = net.params.copy()
    loss, acc = net.evaluate(xs, y, readout)
    h_last = net.forward(xs)[1]
    h_last = h_last[0] if kind == "lstm" else h_last
    want = _reference_metrics(readout.forward(np.ascontiguousarray(h_last)), y)
    assert acc == want[1]
    np.testing.assert_allclose(loss, want[0], rtol=1e-12)
    np.testing.assert_array_equal(params, net.params)
    assert net.stats and readout.stats
    with pytest.raises(ValueError, match=r"readout.sizes\[0\] must be 12, got 5"):
        net.evaluate(xs, y, vgkern.MLP([5, 10]))
    with pytest.raises(TypeError, match="readout must be a vgkern.MLP"):
        net.evaluate(xs, y, None)


@pytest.mark.parametrize("labels, error, message", [
    (np.zeros(4, np.float32), TypeError, "labels must hold integer class labels"),
    (np.zeros(3, np.int64), ValueError, r"labels must have shape \(4,\)"),
    (np.array([0, 1, 2, 10]), ValueError, r"labels must be in \[0, 10\).*got 10"),
    ([0, 1, 2, 3], TypeError, "labels must be a numpy.ndarray"),
])
def test_evaluate_refuses_bad_labels(labels, error, message):
    net = vgkern.MLP([64, 10], seed=0)
    with pytest.raises(error, match=message):
        net.evaluate(np.zeros((4, 64), np.float32), labels)


def test_float64_data_into_a_float32_net_says_how_to_cast():
    x, y = datasets.digits("train", dtype="float64")
    net = vgkern.MLP([64, 16, 10], seed=0)
    fix = r'cast it with x\.astype\(np\.float32\), or build the net with dtype="float64"'
    for call in (lambda: net.forward(x[:8]), lambda: net.step(x[:8], y[:8], loss="cross_entropy"),
                 lambda: net.evaluate(x, y), lambda: net.forward(x[:8, ::-1])):
        with pytest.raises(TypeError, match=r"x must have dtype float32, got float64.*" + fix):
            call()
    xs, ys = datasets.digits("train", dtype="float64", sequence=True)
    lstm = vgkern.LSTM(8, 4)
    with pytest.raises(TypeError, match=r"x_seq must have dtype float32, got float64 .*"
                                        r"x_seq\.astype\(np\.float32\)"):
        lstm.forward(xs)
    # and the cast it suggests works
    net.step(x[:8].astype(np.float32), y[:8], loss="cross_entropy")


def test_integer_labels_with_mse_suggest_cross_entropy():
    x, y = datasets.digits("train")
    net = vgkern.MLP([64, 16, 10], seed=0)
    with pytest.raises(ValueError, match=r'target holds integer class labels .*loss="mse" .*'
                                         r'pass loss="cross_entropy"'):
        net.step(x[:8], y[:8])  # loss="mse" is the default
    net.step(x[:8], y[:8], loss="cross_entropy")


def test_evaluate_and_history_on_either_device(device):
    """evaluate and History read the same on CUDA as on the CPU (float32 tolerance: the
    devices' GEMMs round differently)."""
    x, y = datasets.digits("train")
    xt, yt = datasets.digits("test")
    results = []
    for where in ("cpu", device):
        net = vgkern.MLP([64, 32, 10], activation="relu", init="he_normal", seed=0,
                         device=where, batch_norm=True)
        opt = vgkern.optim.SGD(net, lr=0.05)
        hist = vgkern.History(net)
        for s in range(5):
            rep = net.step(x[32 * s:32 * s + 32], y[32 * s:32 * s + 32], loss="cross_entropy")
            opt.step(rep)
            hist.record(s, rep, *net.evaluate(xt, yt))
        assert net.training and net.stats
        results.append(hist.to_pandas())
    cpu, other = results
    for name in ("loss", "test_loss", "test_accuracy", "weight_change", "preact_grad_norm"):
        np.testing.assert_allclose(other[name], cpu[name], rtol=1e-4, atol=1e-6, err_msg=name)
    xs, ys = datasets.digits("test", sequence=True)
    metrics = [vgkern.LSTM(8, 16, device=where).evaluate(
        xs, ys, vgkern.MLP([16, 10], activation="identity", device=where))
        for where in ("cpu", device)]
    np.testing.assert_allclose(metrics[1], metrics[0], rtol=1e-5)
