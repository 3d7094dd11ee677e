"""Mean-field theory of deep random MLPs (Poole et al. 2016; Schoenholz et al. 2017): the length
map, its fixed point q*, chi1, the depth scales, the edge of chaos, and the predicted per-layer
gradient profile in vgkern's layer indexing.

Setting (vgkern.MLP with init="scaled_normal"): layer l = 0 .. L-1 computes
z_l = h_{l-1} W_l^T + b_l, h_l = phi(z_l), h_{-1} = x, W_l (d_{l+1}, d_l) with entries
N(0, sigma_w^2 / d_l), b_l entries N(0, sigma_b^2); the last layer's activation is the output's.
In the wide limit each z_l is Gaussian with variance

    q_0 = sigma_w^2 q_in + sigma_b^2,  q_in = mean square of the input's entries (x: q0 argument)
    q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2,

and (gradient independence) backpropagation from layer l+1 to layer l multiplies
||dL/dz||^2 by chi1(q_l) = sigma_w^2 E[phi'(sqrt(q_l) z)^2].
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Optional

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from . import gaussian

_RTOL = 4 * np.finfo(float).eps


def _number(what, value, *, low=0.0, allow_equal=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    x = float(value)
    if not math.isfinite(x) or x < low or (x == low and not allow_equal):
        bound = f">= {low}" if allow_equal else f"> {low}"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")
    return x


def check_activation(what, activation):
    if activation not in gaussian.ACTIVATIONS:
        raise ValueError(f"{what}: activation must be one of "
                         f"{', '.join(map(repr, gaussian.ACTIVATIONS))}, got {activation!r}")
    return activation


def _readonly(a):
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare arrays
class MeanField:
    """The mean-field prediction for one (activation, sigma_w, sigma_b).

    q_star: the stable fixed point of the length map (0 where the map contracts to 0, inf where
        q grows without bound: identity with sigma_w >= 1, relu with sigma_w >= sqrt(2), elu
        with large sigma_w, when sigma_b > 0 or q starts > 0).
    chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], the factor of ||dL/dz||^2 per layer at q* (the
        q -> inf limit where q* = inf). gain = sqrt(chi1): the factor of ||dL/dz|| per layer of
        backpropagation, < 1 vanishing, > 1 exploding (what sweep_summary's `gain` measures).
    c_star: the stable fixed point of the correlation map (1 in the ordered phase chi1 <= 1);
        c_star and xi_c are computed when first read.
    xi_q = -1 / ln(chi1 + sigma_w^2 E[phi'' phi]) (q converging to q*), xi_c = -1 / ln chi_c
        with chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at (q*, c*) (= chi1 in the ordered phase),
        xi_grad = -1 / ln chi1: the depth over which ||dL/dz||^2 changes by e (negative where it
        grows, inf at criticality). NaN where q* is 0 or inf (no finite-depth scale of that
        kind), as for xi_q of identity/relu whose length map is linear.
    With q0 and depth (else None): q_layers (depth,): the variance of z_l, layer 0 = input side;
        chi1_layers (depth,): chi1(q_l); log10_profile (depth,): predicted
        log10 ||dL/dz_l|| - log10 ||dL/dz_{L-1}||, in GradReport's order (layer 0 = input side,
        last entry 0): sum over k = l .. L-2 of log10 chi1(q_k) / 2. Compare it with
        report.log10_preact_grad_norm - report.log10_preact_grad_norm[-1].
    """

    activation: str
    sigma_w: float
    sigma_b: float
    elu_alpha: float
    q_star: float
    chi1: float
    gain: float
    xi_q: float
    xi_grad: float
    q0: Optional[float] = None
    depth: Optional[int] = None
    q_layers: Optional[NDArray[np.float64]] = None
    chi1_layers: Optional[NDArray[np.float64]] = None
    log10_profile: Optional[NDArray[np.float64]] = None

    @functools.cached_property
    def c_star(self) -> float:
        """The correlation map's stable fixed point (computed on first access: in the chaotic
        phase it takes a two-dimensional quadrature per step of a root search)."""
        if not 0 < self.q_star < math.inf:
            return math.nan
        if self.chi1 <= 1:
            return 1.0
        return _correlation_fixed_point(self.activation, self.sigma_w, self.sigma_b,
                                        self.elu_alpha, self.q_star)

    @functools.cached_property
    def xi_c(self) -> float:
        """-1 / ln chi_c at (q*, c*) (computed on first access, as c_star)."""
        c_star = self.c_star
        if math.isnan(c_star):
            return math.nan
        chi_c = self.chi1 if c_star == 1.0 else self.sigma_w ** 2 * gaussian.pair_moments(
            self.activation, self.q_star, c_star, self.elu_alpha)[1]
        return _depth_scale(chi_c)

    @property
    def profile_gain(self) -> float:
        """10 ** -(least-squares slope of log10_profile against the layer index): the gain that
        sweep_summary would fit to the predicted profile (sqrt(chi1) once q has reached q*)."""
        if self.log10_profile is None:
            raise ValueError("MeanField.profile_gain needs a profile: call mean_field with depth=")
        assert self.depth is not None  # set with log10_profile
        if self.depth < 2:
            return float("nan")
        slope = np.polyfit(np.arange(self.depth, dtype=np.float64), self.log10_profile, 1)[0]
        return float(10.0 ** -slope)

    @property
    def log10_ratio_first_last(self) -> float:
        """Predicted log10 ||dL/dz_0|| / ||dL/dz_{L-1}|| (as sweep_summary's column)."""
        if self.log10_profile is None:
            raise ValueError("MeanField.log10_ratio_first_last needs depth=")
        return float(self.log10_profile[0])


def length_map(activation: str, sigma_w: float, sigma_b: float, q: float,
               alpha: float = 1.0) -> float:
    """q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2 (z ~ N(0, 1))."""
    return sigma_w ** 2 * gaussian.moments(activation, q, alpha)[0] + sigma_b ** 2


def _fixed_point(activation, sigma_w, sigma_b, alpha, q_start):
    """The stable fixed point q* of the length map reached from q_start > 0."""
    if activation in ("identity", "relu"):  # linear map q -> a q + sigma_b^2
        a = sigma_w ** 2 * (1.0 if activation == "identity" else 0.5)
        if a < 1:
            return sigma_b ** 2 / (1 - a)
        if a == 1 and sigma_b == 0:
            return q_start  # every q is fixed
        return math.inf
    g = lambda q: length_map(activation, sigma_w, sigma_b, q, alpha) - q
    lo = 0.0
    if g(0.0) <= 0:  # q = 0 is fixed: stable when the map contracts near it
        lo = 1e-12
        if g(lo) <= 0:
            return 0.0
    hi = max(1.0, 2.0 * (g(lo) + lo))
    while g(hi) > 0:
        hi *= 4.0
        if hi > 1e15:
            return math.inf
    return optimize.brentq(g, lo, hi, xtol=1e-300, rtol=_RTOL, maxiter=500)


def _correlation_fixed_point(activation, sigma_w, sigma_b, alpha, q_star):
    """c* in [0, 1) of the correlation map c -> (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*
    in the chaotic phase (its map is convex on [0, 1] with slope chi1 > 1 at c = 1, so it has
    exactly one root there), or 1.0 where none is found (numerically critical)."""
    F = lambda c: (sigma_w ** 2 * gaussian.pair_moments(activation, q_star, c, alpha)[0]
                   + sigma_b ** 2) / q_star - c
    top = 1.0 - 1e-4
    if F(0.0) <= 0:
        return 0.0
    if F(top) >= 0:
        return 1.0
    return optimize.brentq(F, 0.0, top, xtol=1e-15, rtol=_RTOL)


def _depth_scale(chi):
    """-1 / ln chi: inf at chi = 1, NaN for chi NaN / <= 0."""
    if not chi > 0:
        return math.nan
    return math.inf if chi == 1 else -1.0 / math.log(chi)


def _trajectory(activation, sigma_w, sigma_b, alpha, q_first, depth):
    """(q_l, chi1(q_l), predicted log10 profile), each (depth,), from q_0 = q_first."""
    q = np.empty(depth)
    q[0] = q_first
    for l in range(1, depth):
        q[l] = length_map(activation, sigma_w, sigma_b, q[l - 1], alpha)
    chi = np.array([sigma_w ** 2 * gaussian.moments(activation, v, alpha)[1] for v in q])
    steps = 0.5 * np.log10(chi[:-1])  # layer l+1 -> l multiplies ||dL/dz|| by sqrt(chi_l)
    return q, chi, np.append(np.cumsum(steps[::-1])[::-1], 0.0)


def gradient_profile(activation: str, sigma_w: float, sigma_b: float = 0.0, *, q0: float = 1.0,
                     depth: int, elu_alpha: float = 1.0) -> NDArray[np.float64]:
    """mean_field(...).log10_profile alone (no fixed points or depth scales: cheap, for
    tables): returns profile: (depth,), the predicted log10 ||dL/dz_l|| - log10
    ||dL/dz_{L-1}||, layer 0 first."""
    activation = check_activation("gradient_profile", activation)
    sigma_w = _number("gradient_profile: sigma_w", sigma_w)
    sigma_b = _number("gradient_profile: sigma_b", sigma_b)
    q0 = _number("gradient_profile: q0", q0)
    elu_alpha = _number("gradient_profile: elu_alpha", elu_alpha)
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"gradient_profile: depth must be an integer >= 1, got {depth!r}")
    return _trajectory(activation, sigma_w, sigma_b, elu_alpha, sigma_w ** 2 * q0 + sigma_b ** 2,
                       int(depth))[2]


def mean_field(activation: str, sigma_w: float, sigma_b: float = 0.0, *,
               q0: Optional[float] = None, depth: Optional[int] = None,
               elu_alpha: float = 1.0) -> MeanField:
    """Mean-field prediction for an MLP of `activation` with weights N(0, sigma_w^2 / fan_in)
    and biases N(0, sigma_b^2) -> MeanField (see its docstring for every field).

    q0: the input's mean square (||x||^2 / (batch * d_0); 1 for standard-normal inputs) and
    depth: the number of layers L (net.num_layers), for the layer-by-layer trajectory and the
    predicted gradient profile of a finite net, which is exact before q reaches q* (shallow
    nets). depth without q0 starts the trajectory at q*. The output layer's activation does not
    enter (the profile is relative to the last layer's ||dL/dz||).
    Assumptions: infinite width, Gaussian weights independent of the backward signal (gradient
    independence), zero-mean Gaussian biases; batch norm: see vgkern.theory.batch_norm_gain.
    """
    activation = check_activation("mean_field", activation)
    sigma_w = _number("mean_field: sigma_w", sigma_w)
    sigma_b = _number("mean_field: sigma_b", sigma_b)
    elu_alpha = _number("mean_field: elu_alpha", elu_alpha)
    if q0 is not None:
        q0 = _number("mean_field: q0", q0)
        if depth is None:
            raise ValueError("mean_field: q0 needs depth= (the number of layers of the net), "
                             "got depth=None")
    if depth is not None:
        if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral) \
                or depth < 1:
            raise ValueError(f"mean_field: depth must be an integer >= 1 (the number of "
                             f"layers), got {depth!r}")
        depth = int(depth)
    start = 1.0 if q0 is None else sigma_w ** 2 * q0 + sigma_b ** 2
    q_star = _fixed_point(activation, sigma_w, sigma_b, elu_alpha, max(start, 1e-300))
    e_phi2, e_dphi2, e_phi_ddphi = gaussian.moments(activation, q_star, elu_alpha)
    chi1 = sigma_w ** 2 * e_dphi2
    xi_q = math.nan
    if 0 < q_star < math.inf and activation not in ("identity", "relu"):
        xi_q = _depth_scale(chi1 + sigma_w ** 2 * e_phi_ddphi)
    fields = dict(activation=activation, sigma_w=sigma_w, sigma_b=sigma_b, elu_alpha=elu_alpha,
                  q_star=q_star, chi1=chi1, gain=math.sqrt(chi1), xi_q=xi_q,
                  xi_grad=_depth_scale(chi1))
    if depth is not None:
        q, chi, profile = _trajectory(activation, sigma_w, sigma_b, elu_alpha,
                                      q_star if q0 is None else start, depth)
        fields.update(q0=q0, depth=depth, q_layers=_readonly(q), chi1_layers=_readonly(chi),
                      log10_profile=_readonly(profile))
    return MeanField(**fields)


def critical_sigma_w(activation: str, sigma_b: float = 0.0, *, elu_alpha: float = 1.0) -> float:
    """The sigma_w where chi1(q*) = 1 (the edge of chaos) for this sigma_b: the smallest root
    on sigma_w in [0.01, 100] (brentq after a geometric scan). identity: 1, relu: sqrt(2)."""
    activation = check_activation("critical_sigma_w", activation)
    sigma_b = _number("critical_sigma_w: sigma_b", sigma_b)
    elu_alpha = _number("critical_sigma_w: elu_alpha", elu_alpha)
    return _critical_sigma_w(activation, sigma_b, elu_alpha)


@functools.lru_cache(maxsize=256)
def _critical_sigma_w(activation, sigma_b, elu_alpha):
    if activation == "identity":
        return 1.0
    if activation == "relu":
        return math.sqrt(2.0)

    def h(s):
        q_star = _fixed_point(activation, s, sigma_b, elu_alpha, 1.0)
        return s ** 2 * gaussian.moments(activation, q_star, elu_alpha)[1] - 1.0

    grid = np.geomspace(0.01, 100.0, 121)
    values = [h(grid[0])]
    for i in range(1, len(grid)):
        values.append(h(grid[i]))
        if values[-2] < 0 <= values[-1]:
            return optimize.brentq(h, grid[i - 1], grid[i], xtol=1e-14, rtol=_RTOL)
    raise ValueError(f"critical_sigma_w: chi1(q*) does not cross 1 for sigma_w in [0.01, 100] "
                     f"(activation={activation!r}, sigma_b={sigma_b!r})")
