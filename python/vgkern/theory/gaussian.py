"""Gaussian expectations of the activations: E[f(u)] for u ~ N(0, q), and E[f(u1) g(u2)] for a
pair with variance q and correlation c -- the integrals of mean-field theory.

Quadrature: composite 16-point Gauss-Legendre over z in [-12, 12] (the tail beyond has mass
2 Phi(-12) = 3.6e-33), panels narrow enough that both the Gaussian and f(sqrt(q) z) change by
O(1) per panel whatever q is (see nodes), and z = 0 a panel boundary, so that the kinks of relu
and elu at 0 sit between panels and each panel's integrand is analytic. Relative accuracy 1e-12
or better for the activations here at any q (tests/test_theory.py checks it against closed
forms, adaptive quadrature and Monte Carlo). Plain Gauss-Hermite is exact for polynomials but
loses digits fast once q >> 1 (E[tanh'^2] at q = 10 is off by 1e-3 with 200 nodes), and across
a kink it converges slowly.
"""
from __future__ import annotations

from typing import Callable, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "elu")

_Z = 12.0
_U = 40.0
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def phi(activation: str, u: ArrayLike, alpha: float = 1.0
        ) -> Tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """u: (any shape) -> (phi(u), phi'(u), phi''(u)) of an activation, elementwise: each of
    them (any shape), u's (relu and elu: one-sided derivatives at 0 are never needed: 0 is a panel
    boundary, never a node)."""
    u = np.asarray(u, dtype=np.float64)
    if activation == "identity":
        return u, np.ones_like(u), np.zeros_like(u)
    if activation == "sigmoid":
        s = special.expit(u)
        d = s * (1.0 - s)
        return s, d, d * (1.0 - 2.0 * s)
    if activation == "tanh":
        t = np.tanh(u)
        d = 1.0 - t * t
        return t, d, -2.0 * t * d
    if activation == "relu":
        pos = u > 0
        return np.where(pos, u, 0.0), pos.astype(np.float64), np.zeros_like(u)
    if activation == "elu":
        pos = u > 0
        e = alpha * np.exp(np.minimum(u, 0.0))
        return np.where(pos, u, alpha * np.expm1(np.minimum(u, 0.0))), np.where(pos, 1.0, e), \
            np.where(pos, 0.0, e)
    raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                     f"got {activation!r}")


def nodes(q: float) -> Tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Returns (z, w), nodes z: (n,) and weights w: (n,): E[f(sqrt(q) z)] = w @ f(sqrt(q) z)
    for z ~ N(0, 1), f one of the activations or a product of them and their derivatives.
    Panel edges: the integers in [-12, 12] (the Gaussian's scale) and k / sqrt(q) for
    |k| <= 40 (the activation's scale: beyond |u| = 40 sigmoid, tanh and elu are constant or
    linear to double precision), so at most 104 panels whatever q is, with 0 an edge."""
    edges = np.arange(-_Z, _Z + 1.0)
    if q > 0:
        fine = np.arange(-_U, _U + 1.0) / np.sqrt(q)
        edges = np.union1d(edges, fine[np.abs(fine) < _Z])
    mid, h = (edges[:-1] + edges[1:]) / 2, (edges[1:] - edges[:-1]) / 2
    z = (mid[:, None] + h[:, None] * _GL_X[None, :]).ravel()
    w = (h[:, None] * _GL_W[None, :]).ravel() * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    return z, w


def expectation(f: Callable[[NDArray[np.float64]], NDArray[np.float64]], q: float) -> float:
    """E[f(u)], u ~ N(0, q), for a vectorised f; q = 0 gives the mean of f(0-) and f(0+)
    (the q -> 0 limit for a function with a jump at 0, such as relu')."""
    if q == 0:
        tiny = np.array([-1e-300, 1e-300])
        return float(np.mean(f(tiny)))
    z, w = nodes(q)
    return float(w @ f(np.sqrt(q) * z))


def moments(activation: str, q: float, alpha: float = 1.0) -> Tuple[float, float, float]:
    """(E[phi^2], E[phi'^2], E[phi phi'']) at u ~ N(0, q): the length map, chi1 / sigma_w^2 and
    the q-stability term of xi_q. Closed forms for identity and relu; q = inf gives the limits
    of identity, relu and elu (elu: those of relu), NaN for bounded ones (q* is finite there)."""
    if activation == "identity":
        return q, 1.0, 0.0
    if activation == "relu":
        return q / 2.0, 0.5, 0.0
    if np.isinf(q):
        return (np.inf, 0.5, 0.0) if activation == "elu" else (np.nan, np.nan, np.nan)
    if q == 0:
        values = [phi(activation, np.array([s]), alpha) for s in (-1e-300, 1e-300)]
        f, d, dd = (np.mean([v[k][0] for v in values]) for k in range(3))
        return f * f, 0.5 * (values[0][1][0] ** 2 + values[1][1][0] ** 2), f * dd
    z, w = nodes(q)
    f, d, dd = phi(activation, np.sqrt(q) * z, alpha)
    return float(w @ (f * f)), float(w @ (d * d)), float(w @ (f * dd))


def _normal_elu_means(m, s, alpha):
    """E[elu(X)], E[elu'(X)] for X ~ N(m, s^2) elementwise (s > 0), in closed form:
    E[X+] = m Phi(m/s) + s pdf(m/s); E[e^X 1{X<0}] = exp(m + s^2/2) Phi(-(m + s^2)/s)."""
    r = m / s
    exp_part = np.exp(m + s * s / 2 + special.log_ndtr(-(m + s * s) / s))
    pos = m * special.ndtr(r) + s * np.exp(-r * r / 2) / np.sqrt(2 * np.pi)
    return pos + alpha * (exp_part - special.ndtr(-r)), special.ndtr(r) + alpha * exp_part


def pair_moments(activation: str, q: float, c: float, alpha: float = 1.0
                 ) -> Tuple[float, float]:
    """(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) for (u1, u2) Gaussian, variances q,
    correlation c in [0, 1): the correlation map and its slope. relu: the arc-cosine kernel;
    elu: outer quadrature over u1 (kink at 0 a panel boundary) of the inner closed form given
    u1; sigmoid, tanh: the tensor-product quadrature (u2 = sqrt(q) (c z1 + sqrt(1-c^2) z2))."""
    if not 0 <= c < 1:
        raise ValueError(f"pair_moments: c must be in [0, 1), got {c!r}")
    s = np.sqrt(1.0 - c * c)
    if activation == "identity":
        return q * c, 1.0
    if activation == "relu":
        theta = np.arccos(c)
        return q / (2 * np.pi) * (s + (np.pi - theta) * c), (np.pi - theta) / (2 * np.pi)
    z, w = nodes(q)
    u1 = np.sqrt(q) * z
    f1, d1, _ = phi(activation, u1, alpha)
    if activation == "elu":
        f2, d2 = _normal_elu_means(c * u1, np.sqrt(q) * s, alpha)
        return float(w @ (f1 * f2)), float(w @ (d1 * d2))
    f2, d2, _ = phi(activation, np.sqrt(q) * (c * z[:, None] + s * z[None, :]), alpha)
    return float(w @ (f2 @ w * f1)), float(w @ (d2 @ w * d1))
