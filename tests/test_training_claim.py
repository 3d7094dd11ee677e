"""The claim of issue 19, measured: on the digits, the first layers of a deep sigmoid MLP stop
learning, while ReLU (He init), ELU and sigmoid + batch norm at the same depth learn; and the
LSTM against the vanilla RNN on the row-by-row digits.

Setup and learning rates: vgkern.training_demo (20 dense layers of width 64, float32, batch 64,
500 plain SGD steps, seed 0, the sweep's digits recipe). The learning rate of every net was
chosen ONCE by a rule, not toward the thresholds: of LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3,
1.0), the one with the lowest mean training loss over the last 50 steps (diverged runs
excluded). `python -m vgkern.training_demo --select` reruns the rule (about a minute); what it
chose is vgkern.training_demo.LEARNING_RATES: sigmoid 0.003, relu 0.01, elu 0.03,
sigmoid+bn 0.1, lstm 1.0, rnn 1.0.

Measured (CPU, float32; weight_change = ||W - W0|| / ||W0|| after 500 steps):
    net          test acc   first layer   last layer   last/first
    sigmoid      0.103      0 (exactly)   0.086        inf
    relu         0.889      0.094         0.108        1.15
    elu          0.922      0.078         0.110        1.41
    sigmoid+bn   0.972      0.211         1.081        5.12
    lstm / rnn   test acc 0.972 / 0.956; mean ||dL/dx_0|| 0.0133 / 0.0200; weight_ih_change
                 2.30 / 3.57; log10 ||dL/dx_0|| / ||dL/dx_7|| at the initial weights
                 -1.68 / -1.98.

What holds, asserted below with margins: the sigmoid net's first layer moves at least 100x
less than its last (in float32 its updates are below half an ulp of the weights: it does not
move at all) and its accuracy stays near chance; ELU and sigmoid + batch norm reach >= 90 %
and move their first layer within 10x of the last; ReLU moves its first layer within 10x of
the last.

What does not hold at this setup, so it is not asserted (reported instead):
* ReLU (He init) reaches 0.889, not >= 0.90, with its rule-chosen learning rate; asserted is
  what it reaches with a margin (>= 0.85).
* LSTM vs RNN on T = 8 rows: the LSTM's first-step input gradients and its weight_change of
  weight_ih are SMALLER than the RNN's (at the rule's learning rates and at equal ones), since
  eight steps are too few for the tanh RNN's gradient to vanish. What holds is the relative
  form: at the initial weights the LSTM's first-step input gradient relative to its last
  step's is larger (less vanishing through time) than the RNN's.
"""
import math

import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("sklearn")

from vgkern import training_demo  # noqa: E402


@pytest.fixture(scope="module")
def measured():
    return training_demo.measure(training_demo.run(workers=2))


def test_the_settings_are_the_ones_the_rule_chose():
    assert training_demo.LR_GRID == (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    assert training_demo.LEARNING_RATES == {"sigmoid": 0.003, "relu": 0.01, "elu": 0.03,
                                            "sigmoid+bn": 0.1, "lstm": 1.0, "rnn": 1.0}
    g = training_demo.grid("sigmoid", 0.003)
    assert (g["depth"], g["width"], g["batch"], g["steps"], g["dtype"], g["optimizer"]) == (
        20, 64, 64, 500, "float32", "sgd")


def test_deep_sigmoid_first_layer_does_not_learn(measured):
    m = measured["sigmoid"]
    assert m["last_change"] > 0.01  # the last layer does learn
    assert m["first_change"] * 100 <= m["last_change"]
    assert m["test_accuracy"] <= 0.2  # chance is 0.1
    assert m["loss_last"] > 2.2  # ln 10 = 2.303: nothing learned


@pytest.mark.parametrize("name, accuracy", [("elu", 0.90), ("sigmoid+bn", 0.90),
                                            ("relu", 0.85)])  # relu: the claim's 0.90 fails
def test_relu_elu_and_batch_norm_learn_in_every_layer(measured, name, accuracy):
    m = measured[name]
    assert m["test_accuracy"] >= accuracy, m
    assert math.isfinite(m["change_ratio"]) and m["first_change"] > 0
    assert m["last_change"] <= 10 * m["first_change"], m
    assert m["first_change"] >= 10 * measured["sigmoid"]["first_change"]


def test_lstm_gradient_vanishes_less_through_time_than_the_rnn(measured):
    lstm, rnn = measured["lstm"], measured["rnn"]
    # log10 ||dL/dx_0|| - log10 ||dL/dx_7|| at the initial weights: -1.68 vs -1.98
    assert lstm["log10_ratio_init"] >= rnn["log10_ratio_init"] + 0.15
    assert lstm["test_accuracy"] >= 0.9 and rnn["test_accuracy"] >= 0.9
