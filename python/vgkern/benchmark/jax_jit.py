"""The JAX baseline of an MLP step: loss, gradients and the same float64 norms in one jitted
function. Pre-activation gradients come from zero "probes" added to each z_l (d loss / d probe_l
= dL/dz_l); batch norm is written out (train mode, running statistics fed back)."""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .configs import MlpConfig
from .vgkern_steps import BN_EPS, BN_MOMENTUM

__all__ = ["import_jax", "make_mlp"]


def import_jax(cores: Optional[int] = None) -> tuple[Any, Optional[int]]:
    """(jax, the cores XLA's CPU pool was sized for, or None when it was not set here), with jax
    configured for float64 norms on the CPU (arrays stay in their dtype); raises ImportError
    when JAX is not installed.

    XLA sizes its thread pool from the process's CPU affinity when its CPU backend starts, and
    neither XLA_FLAGS (--xla_cpu_multi_thread_eigen, intra_op_parallelism_threads: still 1.9
    cores busy with jaxlib 0.10) nor anything later changes it. With `cores` (fewer than this
    process may use, backend not yet started) the backend is started with this thread pinned
    to its first `cores` CPUs, then the affinity is restored: XLA's pool threads keep that
    pinning, every other library's threads start from the full set."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    try:
        from jax._src import xla_bridge  # backends_are_initialized: not public API
        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        started = True  # cannot tell: leave the pool as XLA sizes it
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if cores is None or started or cores < 1 or not allowed:
        return jax, None
    if cores >= len(allowed):
        return jax, len(allowed)  # XLA sizes its pool from all of them
    os.sched_setaffinity(0, sorted(allowed)[:cores])
    try:
        jax.devices()  # starts the CPU backend: its pool sized from this affinity
    finally:
        os.sched_setaffinity(0, allowed)
    return jax, cores


def make_mlp(jax: Any, cfg: MlpConfig, x: np.ndarray, target: np.ndarray,
             weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
             gammas: Sequence[np.ndarray] = (), betas: Sequence[np.ndarray] = ()
             ) -> Callable[[], tuple]:
    """step() -> (loss, ||dW_l||, ||db_l||, ||dL/dz_l||[, ||dgamma_l||, ||dbeta_l||]) as
    numpy_loop.make_mlp; x, target: (B, W); weights[l]: (out, in); biases[l]: (out,)."""
    jnp = jax.numpy
    L, B = cfg.layers, cfg.batch
    H = L - 1 if cfg.batch_norm else 0  # layers 0 .. H-1 have BN (and no bias)
    acts = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "elu": jax.nn.elu,
            "identity": lambda z: z}
    act = acts[cfg.activation]

    def loss_fn(params, probes, x, t):
        h, batch_stats = x, []
        for l, w in enumerate(params["w"]):
            if l < H:  # y = gamma * (z - mu) * rstd + beta, z without bias
                z = h @ w.T + probes[l]
                mu = jnp.mean(z, axis=0)
                var = jnp.mean(jnp.square(z - mu), axis=0)  # biased, for normalising
                y = (params["gamma"][l] * (z - mu) * jax.lax.rsqrt(var + BN_EPS)
                     + params["beta"][l])
                batch_stats.append((mu, var))
            else:
                y = h @ w.T + params["b"][l - H] + probes[l]
            h = act(y) if l < L - 1 else y
        d = h - t
        return 0.5 * jnp.sum(d * d) / B, batch_stats

    def norm64(g):
        g = g.astype(jnp.float64)
        return jnp.sqrt(jnp.sum(g * g))

    @jax.jit
    def jit_step(params, running, probes, x, t):
        (loss, batch_stats), (g_params, g_probes) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(params, probes, x, t)
        wn = jnp.stack([norm64(g) for g in g_params["w"]])
        bn = jnp.stack([norm64(g) for g in g_params["b"]])
        pn = jnp.stack([norm64(g) for g in g_probes])
        if not H:
            return (loss, wn, bn, pn), running
        gn = jnp.stack([norm64(g) for g in g_params["gamma"]])
        betan = jnp.stack([norm64(g) for g in g_params["beta"]])
        m = BN_MOMENTUM
        running = [((1 - m) * rm + m * mu, (1 - m) * rv + (m * B / (B - 1)) * var)
                   for (rm, rv), (mu, var) in zip(running, batch_stats)]
        return (loss, wn, bn, pn, gn, betan), running

    params = {"w": [jnp.asarray(w) for w in weights],
              "b": [jnp.asarray(b) for b in biases[H:]],
              "gamma": [jnp.asarray(g) for g in gammas[:H]],
              "beta": [jnp.asarray(b) for b in betas[:H]]}
    running = [(jnp.zeros_like(g), jnp.ones_like(g)) for g in params["gamma"]]
    probes = [jnp.zeros((B, w.shape[0]), dtype=x.dtype) for w in weights]
    xj, tj = jnp.asarray(x), jnp.asarray(target)

    def step():
        nonlocal running
        result, running = jax.block_until_ready(jit_step(params, running, probes, xj, tj))
        return result

    return step
