"""The statistics schema (csrc/core/report.h): the Python reports' fields and docstrings come from
the native table, keep today's names and order, and every column lands where its name says."""

import inspect

import numpy as np
import pytest

import vgkern
from vgkern import _core
from vgkern import report as R

# The fields as they have always been (sweep tables and user code key on these names and order).
GRAD_REPORT_FIELDS = (
    "weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm", "gamma_grad_norm",
    "beta_grad_norm", "log10_weight_grad_norm", "log10_bias_grad_norm", "log10_preact_grad_norm",
    "log10_act_grad_norm", "log10_gamma_grad_norm", "log10_beta_grad_norm", "preact_mean",
    "preact_std", "saturated_fraction", "zero_fraction", "dead_fraction", "grad_log2_scale")
SEQUENCE_REPORT_FIELDS = (
    "h_grad_norm", "c_grad_norm", "x_grad_norm", "log10_h_grad_norm", "log10_c_grad_norm",
    "log10_x_grad_norm", "forget_gate_mean", "saturated_fraction", "weight_ih_grad_norm",
    "weight_hh_grad_norm", "bias_grad_norm", "log10_weight_ih_grad_norm",
    "log10_weight_hh_grad_norm", "log10_bias_grad_norm")
# The optimizer's statistics (vgkern.optim, issue 19), appended after the fields above (whose
# names and order stay), then "loss" as before.
_UPDATE = ("update_norm", "update_ratio", "norm", "change")
GRAD_REPORT_UPDATE_FIELDS = tuple(f"{t}_{s}" for t in ("weight", "bias") for s in _UPDATE)
SEQUENCE_REPORT_UPDATE_FIELDS = tuple(f"{t}_{s}" for t in ("weight_ih", "weight_hh", "bias")
                                      for s in _UPDATE)
GRAD_REPORT_FIELDS += (GRAD_REPORT_UPDATE_FIELDS
                       + tuple("log10_" + f for f in GRAD_REPORT_UPDATE_FIELDS) + ("loss",))
SEQUENCE_REPORT_FIELDS += (SEQUENCE_REPORT_UPDATE_FIELDS
                           + tuple("log10_" + f for f in SEQUENCE_REPORT_UPDATE_FIELDS) + ("loss",))


def test_report_fields_keep_their_names_and_order():
    assert R.GradReport.fields == GRAD_REPORT_FIELDS
    assert R.SequenceReport.fields == SEQUENCE_REPORT_FIELDS


def test_report_fields_are_the_native_schema():
    docs = _core.REPORT_DOCS
    assert set(docs) == {"mlp", "recurrent_step", "recurrent_network"}
    assert list(R.FIELDS) == list(_core.REPORT_COLUMNS) == list(docs["mlp"])
    assert list(R.SEQUENCE_FIELDS) == list(_core.SEQUENCE_COLUMNS) == list(docs["recurrent_step"])
    network = list(docs["recurrent_network"])
    assert list(R.WEIGHT_FIELDS) == list(_core.SEQUENCE_WEIGHT_COLUMNS) == network[:3]
    assert network[3:6] == ["log10_" + f for f in R.WEIGHT_FIELDS]
    assert list(R.SEQUENCE_UPDATE_FIELDS) == list(_core.SEQUENCE_UPDATE_COLUMNS) == network[6:18]
    assert network[18:] == ["log10_" + f for f in R.SEQUENCE_UPDATE_FIELDS]
    assert R.GradReport.fields == R.FIELDS + ("loss",)
    assert R.SequenceReport.fields == R.SEQUENCE_FIELDS + tuple(network) + ("loss",)


@pytest.mark.parametrize("docs", ["mlp", "recurrent_step", "recurrent_network"])
def test_every_statistic_has_a_one_line_meaning(docs):
    for name, meaning in _core.REPORT_DOCS[docs].items():
        assert isinstance(meaning, str) and meaning.strip(), name
        assert "\n" not in meaning, name
        if name.startswith("log10_"):
            assert name[len("log10_"):] in meaning, name


@pytest.mark.parametrize("cls, docs", [
    (R.GradReport, ["mlp"]),
    (R.SequenceReport, ["recurrent_step", "recurrent_network"]),
])
def test_docstring_lists_every_field_with_its_meaning(cls, docs):
    lines = inspect.getdoc(cls).splitlines()
    meanings = {name: m for key in docs for name, m in _core.REPORT_DOCS[key].items()}
    meanings["loss"] = R.LOSS_DOC
    for name in cls.fields:
        documented = [line for line in lines if line.split(maxsplit=1)[:1] == [name]]
        assert len(documented) == 1, f"{cls.__name__} docstring: no line for {name!r}"
        assert documented[0].split(maxsplit=1)[1] == meanings[name]
    if cls is R.GradReport:  # the batch-norm norms were once missing from the hand-written docs
        text = inspect.getdoc(cls)
        for name in ("gamma_grad_norm", "beta_grad_norm", "log10_gamma_grad_norm",
                     "log10_beta_grad_norm"):
            assert f"\n{name} " in text


def _finite(a):
    return np.isfinite(a).all()


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("log_scale", [False, True])
def test_mlp_columns_land_under_their_names(device, batch_norm, log_scale):
    """Which columns a layer has (bias vs gamma/beta), log10_ twins of the linear norms, and the
    log-scale column, through the CPU kernels' structs or the CUDA slots."""
    rng = np.random.default_rng(0)
    net = vgkern.MLP([3, 5, 4, 2], activation="tanh", batch_norm=batch_norm, seed=1,
                     dtype="float64", device=device)
    x = rng.standard_normal((8, 3))
    rep = net.step(x, rng.standard_normal((8, 2)), log_scale=log_scale)
    hidden, last = slice(0, 2), 2
    assert _finite(rep.weight_grad_norm) and _finite(rep.preact_grad_norm)
    assert _finite(rep.act_grad_norm)
    if batch_norm:
        assert np.isnan(rep.bias_grad_norm[hidden]).all()
        assert _finite(rep.gamma_grad_norm[hidden]) and _finite(rep.beta_grad_norm[hidden])
        assert np.isnan([rep.gamma_grad_norm[last], rep.beta_grad_norm[last]]).all()
        assert np.isfinite(rep.bias_grad_norm[last])
    else:
        assert _finite(rep.bias_grad_norm)
        assert np.isnan(rep.gamma_grad_norm).all() and np.isnan(rep.beta_grad_norm).all()
    for name in ("weight", "bias", "preact", "act", "gamma", "beta"):
        linear = getattr(rep, f"{name}_grad_norm")
        with np.errstate(divide="ignore", invalid="ignore"):
            np.testing.assert_allclose(getattr(rep, f"log10_{name}_grad_norm"), np.log10(linear),
                                       rtol=1e-12, err_msg=name)
    # forward statistics of tanh pre-activations: a spread, no zeros, no dead units
    assert (rep.preact_std > 0).all()
    assert (rep.zero_fraction == 0).all() and (rep.dead_fraction == 0).all()
    assert ((rep.saturated_fraction >= 0) & (rep.saturated_fraction <= 1)).all()
    assert (rep.grad_log2_scale == np.round(rep.grad_log2_scale)).all()
    if log_scale:  # this seed's layers are renormalised
        assert (rep.grad_log2_scale != 0).any()
    else:
        assert (rep.grad_log2_scale == 0).all()
    assert np.isfinite(rep.loss)


@pytest.mark.parametrize("cls", ["LSTM", "RNN"])
def test_sequence_columns_land_under_their_names(device, cls):
    rng = np.random.default_rng(0)
    net = getattr(vgkern, cls)(3, 4, dtype="float64", seed=2, device=device)
    rep = net.step(rng.standard_normal((5, 2, 3)), rng.standard_normal((2, 4)))
    assert _finite(rep.h_grad_norm) and _finite(rep.x_grad_norm)
    lstm = cls == "LSTM"
    assert _finite(rep.c_grad_norm) if lstm else np.isnan(rep.c_grad_norm).all()
    if lstm:
        assert ((rep.forget_gate_mean > 0) & (rep.forget_gate_mean < 1)).all()
    else:
        assert np.isnan(rep.forget_gate_mean).all()
    assert ((rep.saturated_fraction >= 0) & (rep.saturated_fraction <= 1)).all()
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in ("h", "c", "x"):
            np.testing.assert_allclose(getattr(rep, f"log10_{name}_grad_norm"),
                                       np.log10(getattr(rep, f"{name}_grad_norm")), rtol=1e-12)
    assert (rep.weight_ih_grad_norm > 0) and (rep.weight_hh_grad_norm > 0)
    assert rep.bias_grad_norm > 0
    # with x = 0, dW_ih = dpre^T x is exactly 0 while dW_hh and db are not: the per-network
    # norms are not swapped
    zero = net.step(np.zeros((5, 2, 3)), rng.standard_normal((2, 4)))
    assert zero.weight_ih_grad_norm == 0 and zero.log10_weight_ih_grad_norm == -np.inf
    assert zero.weight_hh_grad_norm > 0 and zero.bias_grad_norm > 0


@pytest.mark.parametrize("cls", [R.GradReport, R.SequenceReport])
def test_reports_hold_one_table(cls):
    """Each per-row field is a row of one (fields, rows) copy of the native table: writes through
    a field land in the report (vgkern.optim writes its statistics so), pickling and deepcopy
    keep every field, a copy is independent, and a table of the wrong shape is refused."""
    import copy
    import pickle

    names = cls._column_fields
    table = np.arange(3.0 * len(names)).reshape(3, len(names))
    rep = cls(table, loss=2.5) if cls is R.GradReport else cls(table, [1.0, 0.0, 4.0], loss=2.5)
    assert len(rep) == 3
    for j, name in enumerate(names):
        np.testing.assert_array_equal(getattr(rep, name), table[:, j])
    table[:] = -1  # the report holds a copy
    assert getattr(rep, names[0])[1] == len(names)
    getattr(rep, names[1])[...] = 7.0
    setattr(rep, names[2], np.full(3, 8.0))
    for clone in (pickle.loads(pickle.dumps(rep)), copy.deepcopy(rep)):
        assert list(clone.as_dict()) == list(cls.fields)
        for name, value in rep.as_dict().items():
            np.testing.assert_array_equal(getattr(clone, name), value, err_msg=name)
        getattr(clone, names[1])[0] = 0.0
    assert (getattr(rep, names[1]) == 7.0).all() and (getattr(rep, names[2]) == 8.0).all()
    with pytest.raises(ValueError, match=rf"table must have shape \(rows, {len(names)}\)"):
        cls(np.zeros((3, len(names) + 1))) if cls is R.GradReport else cls(
            np.zeros(len(names)), [1.0, 1.0, 1.0])
