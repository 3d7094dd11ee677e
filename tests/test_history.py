"""vgkern.History: the per-step record of a net's reports equals the straightforward
concatenation of every step's rep.to_pandas() (same values, bit for bit), for MLP (per layer,
with and without the optimizer's update statistics, log-scale) and LSTM/RNN (per time step plus
the per-network scalars); its growth, its checks, and the rows a sweep stores."""
import math
import pickle

import numpy as np
import pytest

import vgkern
from vgkern.history import TEST_COLUMNS, History

pd = pytest.importorskip("pandas")


def _concatenated(frames, index):
    """The reference: rep.to_pandas() of every step with a step column, one table."""
    out = []
    for step, frame, test in frames:
        frame = frame.rename(columns={"step": index} if index == "t" else {})
        frame.insert(0, "step", np.int64(step))
        frame["test_loss"], frame["test_accuracy"] = test
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def _assert_bitwise(got, want):
    assert list(got.columns) == list(want.columns)
    for name in want.columns:
        a, b = got[name].to_numpy(), want[name].to_numpy()
        assert a.dtype == b.dtype, name
        assert a.tobytes() == b.tobytes(), name  # NaN patterns and -0.0 included


def _mlp_run(steps, optimizer, log_scale=False, batch_norm=False, dtype="float32"):
    rng = np.random.default_rng(1)
    net = vgkern.MLP([6, 5, 5, 4], activation="tanh", dtype=dtype, seed=3,
                     batch_norm=batch_norm)
    opt = vgkern.optim.Adam(net, lr=1e-2) if optimizer else None
    hist, frames = History(net, capacity=1), []  # capacity 1: grows at every power of two
    for s in range(steps):
        x = rng.standard_normal((8, 6)).astype(dtype)
        labels = rng.integers(0, 4, 8)
        rep = net.step(x, labels, loss="cross_entropy", log_scale=log_scale)
        if opt is not None:
            opt.step(rep)
        test = (rng.standard_normal(), rng.uniform()) if s % 3 == 0 else (math.nan, math.nan)
        hist.record(10 * s, rep, *test)  # step numbers need not be consecutive
        frames.append((10 * s, rep.to_pandas(), test))
    return hist, frames


@pytest.mark.parametrize("optimizer, log_scale, batch_norm, dtype", [
    (False, False, False, "float32"),
    (True, False, False, "float64"),
    (True, True, False, "float32"),
    (True, False, True, "float32"),
])
def test_mlp_history_equals_the_per_step_tables(optimizer, log_scale, batch_norm, dtype):
    hist, frames = _mlp_run(13, optimizer, log_scale, batch_norm, dtype)
    table = hist.to_pandas()
    _assert_bitwise(table, _concatenated(frames, "layer"))
    assert len(hist) == 13 and hist.steps.tolist() == [10 * s for s in range(13)]
    assert hist.columns == vgkern.GradReport.fields + TEST_COLUMNS
    if optimizer:  # the update statistics opt.step wrote into the report are recorded
        assert np.isfinite(table["weight_change"]).all()


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_sequence_history_equals_the_per_step_tables(kind):
    rng = np.random.default_rng(2)
    net = vgkern.LSTM(3, 4, seed=1) if kind == "lstm" else vgkern.RNN(3, 4, seed=1)
    opt = vgkern.optim.SGD(net, lr=0.1, momentum=0.9)
    hist, frames = History(net, capacity=2), []
    for s in range(9):
        rep = net.step(rng.standard_normal((5, 2, 3)).astype(np.float32),
                       rng.standard_normal((2, 4)).astype(np.float32))
        opt.step(rep)
        hist.record(s, rep)
        frames.append((s, rep.to_pandas(), (math.nan, math.nan)))
    table = hist.to_pandas()
    _assert_bitwise(table, _concatenated(frames, "t"))
    assert hist.index == "t" and hist.num_rows == 5
    # per-network scalars repeat on every time step of their record
    per_step = table.groupby("step")["weight_ih_change"].nunique()
    assert (per_step == 1).all() and np.isfinite(table["weight_ih_change"]).all()
    assert hist.column("weight_ih_change").shape == (9,)
    assert hist.column("x_grad_norm").shape == (9, 5)


def test_column_and_rows_read_the_records():
    hist, frames = _mlp_run(5, optimizer=True)
    want = np.stack([f["log10_preact_grad_norm"].to_numpy() for _, f, _ in frames])
    assert hist.column("log10_preact_grad_norm").tobytes() == want.tobytes()
    assert hist.column("loss").tolist() == [f["loss"].iloc[0] for _, f, _ in frames]
    rows = hist.rows(("loss", "no_such_column", "weight_grad_norm"))
    assert rows.shape == (5 * 3, 3) and np.isnan(rows[:, 1]).all()
    assert rows[:, 2].tobytes() == hist.to_pandas()["weight_grad_norm"].to_numpy().tobytes()
    with pytest.raises(KeyError, match="no column 'nope'"):
        hist.column("nope")


def test_the_columns_keep_earlier_records_when_they_grow():
    net = vgkern.MLP([3, 3, 2], seed=0)
    hist = History(net, capacity=1)
    x = np.ones((4, 3), np.float32)
    losses = []
    for s in range(70):  # grows at 1, 2, 4, ..., 64
        rep = net.step(x * s, np.zeros(4, np.int64), loss="cross_entropy")
        losses.append(rep.loss)
        hist.record(s, rep)
    assert hist.column("loss").tolist() == losses
    assert len(hist._steps) == 128  # amortised doubling, not one allocation per record


def test_empty_history_and_pickling():
    net = vgkern.MLP([3, 2], seed=0)
    hist = History(net)
    assert len(hist) == 0 and hist.columns == () and len(hist.to_pandas()) == 0
    assert hist.rows(("loss",)).shape == (0, 1)
    rep = net.step(np.ones((2, 3), np.float32), np.zeros(2, np.int64), loss="cross_entropy")
    hist.record(0, rep)
    copy = pickle.loads(pickle.dumps(hist))
    copy.record(1, rep)
    _assert_bitwise(copy.to_pandas().iloc[:1], hist.to_pandas())
    assert "History(MLP, records=1" in repr(hist)


def test_wrong_reports_and_arguments_are_refused():
    mlp = vgkern.MLP([3, 2], seed=0)
    lstm = vgkern.LSTM(2, 3)
    hist = History(mlp)
    seq_rep = lstm.step(np.ones((4, 1, 2), np.float32), np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match="rep must be the GradReport of this MLP"):
        hist.record(0, seq_rep)
    rep = mlp.step(np.ones((2, 3), np.float32), np.zeros(2, np.int64), loss="cross_entropy")
    with pytest.raises(TypeError, match="step must be an integer, got 1.5"):
        hist.record(1.5, rep)
    with pytest.raises(TypeError, match="net must be a vgkern.MLP, LSTM or RNN"):
        History(np.zeros(3))
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        History(mlp, capacity=0)
    seq = History(lstm)
    seq.record(0, seq_rep)
    other = lstm.step(np.ones((6, 1, 2), np.float32), np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="rep has 6 rows"):
        seq.record(1, other)
    assert len(seq) == 1  # a refused record leaves the history as it was
