"""vgkern.theory against closed forms, Monte Carlo and vgkern's own measurements."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, special

import vgkern
from vgkern import theory
from vgkern.theory import gaussian

ACTS = theory.ACTIVATIONS


# ---------------------------------------------------------------------------------------------
# closed forms

@pytest.mark.parametrize("sigma_w", [0.3, 0.9, 1.0, 1.7])
@pytest.mark.parametrize("sigma_b", [0.0, 0.4])
def test_identity_and_relu_closed_forms(sigma_w, sigma_b):
    ident = theory.mean_field("identity", sigma_w, sigma_b)
    assert ident.chi1 == pytest.approx(sigma_w ** 2, rel=1e-15)
    relu = theory.mean_field("relu", sigma_w, sigma_b)
    assert relu.chi1 == pytest.approx(sigma_w ** 2 / 2, rel=1e-15)
    assert relu.gain == pytest.approx(sigma_w / math.sqrt(2), rel=1e-15)
    # q* = sigma_b^2 / (1 - slope of the linear length map), inf past it
    # (at slope 1 and sigma_b = 0 every q is fixed: q* is where q starts, 1 by default)
    for mf, slope in ((ident, sigma_w ** 2), (relu, sigma_w ** 2 / 2)):
        if slope < 1:
            assert mf.q_star == pytest.approx(sigma_b ** 2 / (1 - slope), rel=1e-15)
        else:
            assert mf.q_star == (1.0 if slope == 1 and sigma_b == 0 else math.inf)
    assert theory.mean_field("relu", 1.0, sigma_b).xi_grad == pytest.approx(-1 / math.log(0.5))


def test_critical_sigma_w_closed_forms():
    assert theory.critical_sigma_w("relu") == math.sqrt(2)
    assert theory.critical_sigma_w("relu", 0.3) == math.sqrt(2)
    assert theory.critical_sigma_w("identity", 0.3) == 1.0
    # odd activations with phi'(0) = 1 and sigma_b = 0: q* = 0 below sigma_w = 1, chi1 = sigma_w^2
    assert theory.critical_sigma_w("tanh") == pytest.approx(1.0, abs=1e-9)
    assert theory.critical_sigma_w("elu") == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu"])
def test_at_the_edge_of_chaos_chi1_is_one(act):
    s = theory.critical_sigma_w(act, 0.05)
    mf = theory.mean_field(act, s, 0.05)
    assert mf.chi1 == pytest.approx(1.0, abs=1e-12)
    assert abs(mf.xi_grad) > 1e10  # -1 / ln chi1 diverges
    below, above = (theory.mean_field(act, f * s, 0.05).chi1 for f in (0.9, 1.1))
    assert below < 1 < above
    # q* is a fixed point of the length map
    assert theory.length_map(act, s, 0.05, mf.q_star) == pytest.approx(mf.q_star, rel=1e-13)
    assert theory.mean_field("identity", 1.0, 0.0).xi_grad == math.inf


def test_tanh_edge_of_chaos_published_value():
    # Schoenholz et al. 2017 (Fig. 1) / Poole et al. 2016: tanh at sigma_b = 0.05 turns chaotic
    # near sigma_w ~ 1.1
    assert 1.10 < theory.critical_sigma_w("tanh", 0.05) < 1.15


# ---------------------------------------------------------------------------------------------
# quadrature: closed forms, adaptive quadrature, Monte Carlo

def elu_closed_forms(q, a=1.0):
    """(E[elu^2], E[elu'^2], E[elu elu'']) at u ~ N(0, q) from int_{-inf}^0 e^{bz} pdf(z) dz =
    e^{b^2/2} Phi(-b) = erfcx(b / sqrt 2) / 2."""
    r = math.sqrt(q)
    e1, e2 = special.erfcx(r / math.sqrt(2)) / 2, special.erfcx(2 * r / math.sqrt(2)) / 2
    return (q / 2 + a * a * (e2 - 2 * e1 + 0.5), 0.5 + a * a * e2, a * a * (e2 - e1))


@pytest.mark.parametrize("q", [1e-6, 0.01, 0.3, 1.0, 4.0, 30.0, 1e3, 1e6])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_quadrature_matches_closed_forms(q, alpha):
    got = gaussian.moments("elu", q, alpha)
    want = elu_closed_forms(q, alpha)
    # abs: the closed form adds and subtracts O(alpha^2) terms (rounding ~1e-16 each), which
    # is all the precision it has where the result is small (q = 1e-6)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
@pytest.mark.parametrize("q", [0.05, 1.0, 10.0, 100.0, 1e4])
def test_smooth_quadrature_matches_adaptive_quadrature(act, q):
    # where Gauss-Hermite with 200 nodes is off by 1e-3 (tanh' at q = 10) or worse
    def ref(k):
        f = lambda u: (gaussian.phi(act, u)[k] ** 2 * np.exp(-u * u / (2 * q))
                       / math.sqrt(2 * math.pi * q))
        pieces = [(-40.0, 40.0), (-12 * math.sqrt(q), -40.0), (40.0, 12 * math.sqrt(q))]
        return sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=400)[0]
                   for a, b in pieces if b > a)
    e_phi2, e_dphi2, _ = gaussian.moments(act, q)
    assert e_phi2 == pytest.approx(ref(0), rel=1e-12)
    assert e_dphi2 == pytest.approx(ref(1), rel=1e-12)


@pytest.fixture(scope="module")
def normals():
    return np.random.default_rng(20).standard_normal(10 ** 7)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "elu"])
def test_moments_match_monte_carlo(act, normals):
    # 10^7 samples; each mean is within 5 standard errors (std / sqrt(N), estimated from the
    # samples) of the quadrature: a false failure has probability ~6e-7 per comparison.
    for q in (0.1, 1.0, 5.0):
        f, d, _ = gaussian.phi(act, math.sqrt(q) * normals)
        e_phi2, e_dphi2, _ = gaussian.moments(act, q)
        for samples, value in ((f * f, e_phi2), (d * d, e_dphi2)):
            se = samples.std() / math.sqrt(samples.size)
            assert abs(samples.mean() - value) < 5 * se, (act, q)


@pytest.mark.parametrize("act", ["tanh", "elu", "relu", "sigmoid"])
def test_pair_moments_match_monte_carlo(act, normals):
    q, c = 2.0, 0.6
    z1, z2 = normals[: 5 * 10 ** 6], normals[5 * 10 ** 6:]
    f1, d1, _ = gaussian.phi(act, math.sqrt(q) * z1)
    f2, d2, _ = gaussian.phi(act, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2))
    for samples, value in zip((f1 * f2, d1 * d2), gaussian.pair_moments(act, q, c)):
        assert abs(samples.mean() - value) < 5 * samples.std() / math.sqrt(samples.size)


@pytest.mark.parametrize("act", ["tanh", "elu", "sigmoid"])
def test_chaotic_phase_correlation_map(act):
    # c* is a fixed point of the correlation map, and chi_c (which defines xi_c) is its slope
    # there: sigma_w^2 E[phi'(u1) phi'(u2)] = dC/dc by a central difference of E[phi(u1) phi(u2)]
    # (elu: q* is finite only below sigma_w ~ sqrt(2), where it behaves like relu)
    factor = 1.15 if act == "elu" else 1.6
    s = factor * theory.critical_sigma_w(act, 0.05)
    mf = theory.mean_field(act, s, 0.05)
    assert mf.chi1 > 1 and 0 < mf.c_star < 1
    C = lambda c: (s ** 2 * gaussian.pair_moments(act, mf.q_star, c)[0] + 0.05 ** 2) / mf.q_star
    assert C(mf.c_star) == pytest.approx(mf.c_star, abs=1e-12)
    h = 1e-4
    chi_c = s ** 2 * gaussian.pair_moments(act, mf.q_star, mf.c_star)[1]
    assert (C(mf.c_star + h) - C(mf.c_star - h)) / (2 * h) == pytest.approx(chi_c, rel=1e-6)
    assert mf.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-12)
    # ordered phase: c* = 1 and xi_c = xi_grad
    low = theory.mean_field(act, 0.7 * s / factor, 0.05)
    assert low.c_star == 1.0 and low.xi_c == low.xi_grad


# ---------------------------------------------------------------------------------------------
# inits and errors

def test_init_sigmas():
    assert theory.init_sigmas("he_normal") == (math.sqrt(2), 0.0)
    assert theory.init_sigmas("he_uniform") == (math.sqrt(2), 0.0)
    assert theory.init_sigmas("lecun_normal") == (1.0, 0.0)
    assert theory.init_sigmas("xavier_normal", gain=1.5) == (1.5, 0.0)
    assert theory.init_sigmas("xavier_uniform", fan_in=100, fan_out=300) == (math.sqrt(0.5), 0.0)
    assert theory.init_sigmas("scaled_normal", sigma_w=2.0, sigma_b=0.1) == (2.0, 0.1)
    with pytest.raises(ValueError, match="orthogonal.*outside the Gaussian"):
        theory.init_sigmas("orthogonal")
    with pytest.raises(ValueError, match="bias_init.*got 0.5"):
        theory.init_sigmas("he_normal", bias_init=0.5)
    with pytest.raises(ValueError, match="init must be one of.*got 'kaiming'"):
        theory.init_sigmas("kaiming")


def test_init_sigmas_match_vgkern_weights():
    # the empirical variance of vgkern's weights times fan_in is sigma_w^2
    for init in ("he_normal", "he_uniform", "lecun_normal", "xavier_normal", "xavier_uniform"):
        net = vgkern.MLP([400, 400], init=init, dtype="float64", seed=1)
        sigma_w, _ = theory.init_sigmas(init)
        assert net.weights[0].var() * 400 == pytest.approx(sigma_w ** 2, rel=0.02)


@pytest.mark.parametrize("call, message", [
    (lambda: theory.mean_field("softplus", 1.0), "activation must be one of.*got 'softplus'"),
    (lambda: theory.mean_field("tanh", -1.0), "sigma_w must be a finite number >= 0.*got -1.0"),
    (lambda: theory.mean_field("tanh", 1.0, math.nan), "sigma_b must be a finite number.*nan"),
    (lambda: theory.mean_field("tanh", 1.0, q0=1.0), "q0 needs depth="),
    (lambda: theory.mean_field("tanh", 1.0, q0=1.0, depth=0),
     "depth must be an integer >= 1.*got 0"),
    (lambda: theory.mean_field("tanh", 1.0, q0=-1.0, depth=3), "q0 must be a finite number >= 0"),
    (lambda: theory.critical_sigma_w("relu6"), "activation must be one of.*got 'relu6'"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    with pytest.raises(TypeError, match="sigma_w must be a number, got '1'"):
        theory.mean_field("tanh", "1")


def test_result_is_frozen_and_profile_shape():
    mf = theory.mean_field("tanh", 1.3, 0.05, q0=1.0, depth=7)
    assert mf.q_layers.shape == mf.chi1_layers.shape == mf.log10_profile.shape == (7,)
    assert mf.log10_profile[-1] == 0.0 and mf.q_layers[0] == pytest.approx(1.3 ** 2 + 0.05 ** 2)
    with pytest.raises(Exception):
        mf.chi1 = 2.0
    with pytest.raises(ValueError):
        mf.log10_profile[0] = 1.0
    at_fixed_point = theory.mean_field("tanh", 1.3, 0.05, depth=30)
    assert at_fixed_point.profile_gain == pytest.approx(at_fixed_point.gain, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# prediction vs vgkern's measurement
#
# Tolerance from finite-width fluctuations. One backward layer multiplies ||dL/dZ||^2 (the
# batch's) by R = (1/n) sum_j Xbar_j Y_j, with Xbar_j = mean over the batch of
# (delta_b W)_j^2 / E and Y_j = phi'(z_j)^2 / E[phi'^2]. The upstream gradients are independent
# across the B examples (as in these tests), so Xbar_j averages B independent chi^2_1:
# E Xbar^2 = 1 + 2/B. The forward z_j are correlated across examples (fully, in the ordered
# phase), so Y_j is not averaged (worst case): E Y^2 = kappa = E[phi'^4] / E[phi'^2]^2 at that
# layer's q (same quadrature). Hence Var R = ((1 + 2/B) kappa - 1) / n, and the log10 of the
# norm moves by log10(R) / 2 with std s = sqrt(Var R) / (2 ln 10). Layers are independent, so the
# profile at layer l (k = L-1-l steps from the last) has std sqrt(sum of s^2) per seed, divided
# by sqrt(S) for the mean over S seeds; we allow 4 of those plus a bias of 1/n per step
# (log10 of the norm): E[log R] = -Var R / 2 and the gradient-independence assumption are both
# O(1/n) (relu: measured ~0.4/n per step at n = 1024).

WIDTH, BATCH, DEPTH, SEEDS = 1024, 256, 10, (0, 1, 2)
SIGMA_B = 0.05


def measured_profiles(act, sigma_w, sigma_b=SIGMA_B, depth=DEPTH, width=WIDTH, batch=BATCH,
                      data_seed=1000, **options):
    """log10 ||dL/dz_l|| - log10 ||dL/dz_{L-1}|| per seed (S, L) for standard-normal inputs
    (q0 = 1) and upstream gradients drawn from seed data_seed + seed."""
    out = []
    for seed in SEEDS:
        net = vgkern.MLP([width] * (depth + 1), activation=act, init="scaled_normal",
                         sigma_w=sigma_w, sigma_b=sigma_b, seed=seed, **options)
        rng = np.random.default_rng(data_seed + seed)
        net.forward(rng.standard_normal((batch, width), dtype=np.float32))
        y = net.backward(rng.standard_normal((batch, width), dtype=np.float32),
                         log_scale=True).log10_preact_grad_norm
        out.append(y - y[-1])
    return np.array(out)


def profile_tolerance(mf, width=WIDTH, batch=BATCH, seeds=len(SEEDS)):
    """The allowance described above for the seed-mean profile: (per layer (L,), per step
    from layer l+1 to l (L-1,))."""
    kappa = np.array([gaussian.expectation(lambda u: gaussian.phi(mf.activation, u)[1] ** 4, q)
                      / gaussian.moments(mf.activation, q)[1] ** 2 for q in mf.q_layers])
    var = ((1 + 2 / batch) * kappa[:-1] - 1) / width  # of R at the step from layer l+1 to l
    step_sd = np.sqrt(var) / (2 * math.log(10))
    cumulative = lambda v: np.append(np.cumsum(v[::-1])[::-1], 0.0)
    bias = np.full(len(var), 1.0 / width)
    per_layer = 4 * np.sqrt(cumulative(step_sd ** 2)) / math.sqrt(seeds) + cumulative(bias)
    return per_layer, 4 * step_sd / math.sqrt(seeds) + bias


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("where", [0.7, 1.0, 1.4])  # sigma_w / critical sigma_w
def test_prediction_matches_measurement(act, where):
    sigma_w = where * theory.critical_sigma_w(act, SIGMA_B)
    mf = theory.mean_field(act, sigma_w, SIGMA_B, q0=1.0, depth=DEPTH)
    measured = measured_profiles(act, sigma_w)
    tol, step_tol = profile_tolerance(mf)
    # the layer-by-layer profile of a shallow net (q_l still moving towards q*)
    err = measured.mean(0) - mf.log10_profile
    assert np.all(np.abs(err) <= tol), (err, tol)
    # the per-layer log-gain, fitted as sweep_summary fits it, against the same fit of the
    # prediction; the fit's error is at most the largest profile error over the span / (L-1)
    # times 6 / (L + 1) (the least-squares weights), bounded here by max(tol) * 2 / (L - 1)
    layers = np.arange(DEPTH)
    fitted = -np.polyfit(layers, measured.mean(0), 1)[0]
    assert abs(fitted - math.log10(mf.profile_gain)) <= 2 * tol.max() / (DEPTH - 1)
    # where q has (nearly) reached q*, chi1(q_l) within 1% of chi1(q*), each step is the
    # predicted gain sqrt(chi1(q*)) up to step_tol and the remaining gap |log10 chi1(q_l)/chi1| / 2
    gap = 0.5 * np.abs(np.log10(mf.chi1_layers[:-1] / mf.chi1))
    settled = np.flatnonzero(gap < 0.5 * math.log10(1.01))
    steps = measured.mean(0)[settled] - measured.mean(0)[settled + 1]
    assert np.all(np.abs(steps - math.log10(mf.gain)) <= step_tol[settled] + gap[settled])
    if act in ("identity", "relu", "sigmoid"):  # those reach q* (or need none) within 3 layers
        assert len(settled) >= 6, settled


# ---------------------------------------------------------------------------------------------
# batch norm (large batch, large width) and the vanilla RNN

def test_batch_norm_closed_forms():
    assert theory.batch_norm_chi("relu") == math.pi / (math.pi - 1)  # Yang et al. 2019
    assert theory.batch_norm_chi("identity") == 1.0
    # the general quadrature path gives relu's closed form too: E[relu'^2] = 1/2,
    # Var relu = 1/2 - 1/(2 pi)
    mean = gaussian.expectation(lambda u: gaussian.phi("relu", u)[0], 1.0)
    assert mean == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-14)
    # every nonlinearity explodes (Gaussian Poincare inequality)
    for act in ("sigmoid", "tanh", "elu"):
        assert theory.batch_norm_chi(act) > 1.0
    # steps of log10(lambda) / 2 between hidden layers, log10(E[relu'^2] / input_var) / 2 into
    # layer 0
    lam = math.pi / (math.pi - 1)
    assert theory.batch_norm_profile("relu", 4, input_var=2.0).tolist() == pytest.approx(
        [0.5 * math.log10(0.25) + math.log10(lam), math.log10(lam), 0.5 * math.log10(lam), 0.0])
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        theory.batch_norm_profile("tanh", 0)


def measured_bn_profiles(act, batch, depth=DEPTH, width=WIDTH):
    return measured_profiles(act, 1.0, None, depth, width, batch, data_seed=2000,
                             batch_norm=True)


@pytest.mark.parametrize("act", ACTS)
def test_batch_norm_prediction_matches_measurement_at_large_batch(act):
    # width 1024, batch 512, seeds 0-2. Tolerance per step: the finite-width one above (kappa at
    # x_hat ~ N(0, 1)) plus the neglected O(1/B) terms (the rank-2 projection, the batch-variance
    # estimate in 1/std), allowed as log10(1 + 10/B) / 2 = 0.0042 per step at B = 512 (measured:
    # ~0.001 per hidden step, 0.0043 on the step below the output layer for identity).
    batch = 512
    predicted = theory.batch_norm_profile(act, DEPTH)
    measured = measured_bn_profiles(act, batch).mean(0)
    kappa = gaussian.expectation(lambda u: gaussian.phi(act, u)[1] ** 4, 1.0) \
        / gaussian.moments(act, 1.0)[1] ** 2
    step_sd = math.sqrt(((1 + 2 / batch) * kappa - 1) / WIDTH) / (2 * math.log(10))
    k = np.arange(DEPTH)[::-1]  # steps from the last layer
    tol = 4 * step_sd * np.sqrt(k) / math.sqrt(len(SEEDS)) \
        + k * (1 / WIDTH + 0.5 * math.log10(1 + 10 / batch))
    assert np.all(np.abs(measured - predicted) <= tol), (measured - predicted, tol)
    # the hidden layers' mean step is the batch-norm gain
    step = np.mean(measured[1:-1] - measured[2:])
    step_tol = (4 * step_sd / math.sqrt(len(SEEDS) * (DEPTH - 2)) + 1 / WIDTH
                + 0.5 * math.log10(1 + 10 / batch))
    assert abs(step - math.log10(theory.batch_norm_gain(act))) <= step_tol


def test_batch_norm_prediction_fails_at_small_batch():
    # what the docstring and README say: at B = 8 the gradient grows faster than the
    # large-batch rate (relu: measured ~0.12 log10 per layer against 0.083)
    step = np.mean(np.diff(measured_bn_profiles("relu", 8).mean(0)[1:]) * -1)
    assert step > math.log10(theory.batch_norm_gain("relu")) + 0.02


RNN_H, RNN_I, RNN_B, RNN_T = 512, 128, 128, 10


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("sigma_w", [0.7, 1.3])
def test_rnn_prediction_matches_measurement(act, sigma_w):
    # vgkern.RNN with Gaussian weights set by hand (its own init is torch's uniform one):
    # weight_hh N(0, sigma_w^2 / H), weight_ih N(0, 1 / I), bias N(0, 0.1^2), inputs N(0, 1),
    # loss on the last hidden state. Tolerance: the MLP's finite-width one with n = H (the
    # weights are tied across time, which Chen et al. show does not change the wide limit).
    sigma_b = 0.1
    mf = theory.rnn_mean_field(act, sigma_w, sigma_b, sigma_v=1.0, input_q=1.0, steps=RNN_T)
    profiles = []
    for seed in SEEDS:
        net = vgkern.RNN(RNN_I, RNN_H, nonlinearity=act, seed=seed)
        rng = np.random.default_rng(3000 + seed)
        net.weight_hh = (sigma_w / math.sqrt(RNN_H)
                         * rng.standard_normal((RNN_H, RNN_H))).astype(np.float32)
        net.weight_ih = (rng.standard_normal((RNN_H, RNN_I)) / math.sqrt(RNN_I)).astype(np.float32)
        net.bias = (sigma_b * rng.standard_normal(RNN_H)).astype(np.float32)
        net.forward(rng.standard_normal((RNN_T, RNN_B, RNN_I), dtype=np.float32))
        grad_hT = rng.standard_normal((RNN_B, RNN_H), dtype=np.float32)
        y = net.backward(grad_hT=grad_hT).log10_x_grad_norm
        profiles.append(y - y[-1])
    tol, _ = profile_tolerance(mf, width=RNN_H, batch=RNN_B)
    err = np.mean(profiles, 0) - mf.log10_profile
    assert np.all(np.abs(err) <= tol), (err, tol)
    assert mf.q_layers[0] == pytest.approx(1.0 + sigma_b ** 2)  # h_{-1} = 0: input and bias only


def test_rnn_errors():
    with pytest.raises(ValueError, match="nonlinearity must be one of 'tanh', 'relu', got 'elu'"):
        theory.rnn_mean_field("elu", 1.0)
    with pytest.raises(ValueError, match="sigma_v must be a finite number >= 0"):
        theory.rnn_mean_field("tanh", 1.0, sigma_v=-1)


def test_theory_needs_numpy_and_scipy_only():
    code = ("import sys, vgkern.theory as t; t.mean_field('tanh', 1.5, 0.05, q0=1.0, depth=5); "
            "t.critical_sigma_w('elu'); bad = {'pandas', 'matplotlib', 'pyarrow', 'dask', "
            "'sklearn', 'torch'} & set(sys.modules); assert not bad, bad")
    # the vgkern under test (installed, or a source tree with its build)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(vgkern.__file__))}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("act", ["tanh", "elu"])
def test_deep_ordered_net_gain_is_sqrt_chi1_at_q_star(act):
    # tanh and elu reach q* slowly (q_l -> q* ~ geometrically at rate chi1), so a deeper net:
    # over the layers where chi1(q_l) is within 1e-3 of chi1(q*), the mean step of the measured
    # profile is log10 sqrt(chi1(q*)) within 4 standard errors (s / sqrt(S * k) for k steps,
    # s as in profile_tolerance) plus the 1/n bias and the remaining gap
    depth = 24
    sigma_w = 0.7 * theory.critical_sigma_w(act, SIGMA_B)
    mf = theory.mean_field(act, sigma_w, SIGMA_B, q0=1.0, depth=depth)
    measured = measured_profiles(act, sigma_w, depth=depth).mean(0)
    gap = 0.5 * np.abs(np.log10(mf.chi1_layers[:-1] / mf.chi1))
    settled = np.flatnonzero(gap < 0.5 * math.log10(1.001))
    assert len(settled) >= 5, settled
    _, step_tol = profile_tolerance(mf)
    step_sd = (step_tol - 1 / WIDTH) / 4 * math.sqrt(len(SEEDS))  # back to one seed, one step
    steps = measured[settled] - measured[settled + 1]
    tol = 4 * step_sd[settled].max() / math.sqrt(len(SEEDS) * len(settled)) + 1 / WIDTH \
        + gap[settled].max()
    assert abs(steps.mean() - math.log10(mf.gain)) <= tol, (steps.mean(), math.log10(mf.gain), tol)
