"""The linear feature baseline of rllab and pytorch-maml-rl (Duan et al. 2016).

A per-task ridge regression of the Monte-Carlo returns on hand-made features
of the observation and the time step, refitted on every batch of episodes.
It is what MAML-TRPO (Finn et al. 2017) uses to compute advantages for both
the inner and the outer loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metarl_jax.rl.returns import check_same_shape

# pytorch-maml-rl raises the ridge coefficient x10 up to 5 times until the
# solve is finite; all five are solved at once here (jit-friendly).
_REG_ESCALATION = 10.0 ** jnp.arange(5, dtype=jnp.float32)


def linear_baseline_features(obs: jax.Array, valid: jax.Array) -> jax.Array:
    """Features ``[obs, obs**2, al, al**2, al**3, 1]`` with ``al = t / 100``.

    Args:
      obs: ``[E, T, *obs_shape]`` (flattened to ``[E, T, D]``).
      valid: ``[E, T]`` bool.

    Returns:
      ``[E, T, 2 D + 4]`` float32, zero rows where not valid.
    """
    obs = jnp.asarray(obs, jnp.float32)
    if obs.ndim < 2 or jnp.shape(valid) != obs.shape[:2]:
        raise ValueError(
            f"obs must be [E, T, *obs_shape] and valid [E, T]; got obs {obs.shape}, "
            f"valid {jnp.shape(valid)}"
        )
    num_episodes, horizon = obs.shape[:2]
    obs = obs.reshape(num_episodes, horizon, -1)
    al = jnp.broadcast_to((jnp.arange(horizon, dtype=jnp.float32) / 100.0)[None, :, None],
                          (num_episodes, horizon, 1))
    features = jnp.concatenate(
        [obs, jnp.square(obs), al, jnp.square(al), al**3, jnp.ones_like(al)], axis=-1
    )
    return features * jnp.asarray(valid, jnp.float32)[..., None]


def solve_small(a: jax.Array, b: jax.Array) -> jax.Array:
    """``x`` with ``a x = b`` for one small square system, ``a [n, n]``, ``b [n]``.

    Gaussian elimination with partial pivoting written in ``jnp`` (a
    ``fori_loop`` over the ``n`` columns, then back substitution), not
    ``jnp.linalg.solve``: on CPU that is a LAPACK custom call that jaxlib
    0.10 spreads over XLA's intra-op thread pool, and two such calls running
    at once on a 2-thread pool wait on each other for ever (both threads in
    ``ParallelBatchMap``, observed in MAML populations and ensembles). The
    systems here are tiny (``2 D + 4`` features), so the loop costs nothing
    that matters. A singular system gives non-finite entries, as LAPACK's does.
    """
    n = a.shape[-1]
    if a.shape != (n, n) or b.shape != (n,):
        raise ValueError(f"solve_small needs a [n, n] and b [n]; got {a.shape} and {b.shape}")
    rows = jnp.arange(n)

    def eliminate(j, carry):
        a, b = carry
        pivot_row = jnp.argmax(jnp.where(rows >= j, jnp.abs(a[:, j]), -1.0))
        swap = jnp.where(rows == j, pivot_row, jnp.where(rows == pivot_row, j, rows))
        a, b = a[swap], b[swap]
        factors = jnp.where(rows > j, a[:, j] / a[j, j], 0.0)
        return a - factors[:, None] * a[j][None, :], b - factors * b[j]

    upper, y = jax.lax.fori_loop(0, n, eliminate, (a, b))

    def substitute(k, x):
        j = n - 1 - k
        rest = jnp.sum(jnp.where(rows > j, upper[j] * x, 0.0))
        return x.at[j].set((y[j] - rest) / upper[j, j])

    return jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(b))


def linear_feature_baseline(
    obs: jax.Array,
    returns: jax.Array,
    valid: jax.Array,
    reg_coeff: float = 1e-5,
) -> jax.Array:
    """Fit and evaluate rllab's ``LinearFeatureBaseline`` on one task's episodes.

    Solves the ridge normal equations
    ``(X^T X + reg I) w = X^T y`` over the valid steps (``X`` from
    :func:`linear_baseline_features`, ``y`` the returns), and predicts
    ``X w`` on the same steps. As in pytorch-maml-rl, if the solve is not
    finite the ridge coefficient is raised x10, up to four times; here the five
    candidate solves are done together and the first finite one is used (if
    none is, the baseline is zero, i.e. no baseline). Products are computed at
    full float32 precision (no TF32 / bfloat16 passes on accelerators).

    No gradient flows through the fit or the prediction.

    Args:
      obs: ``[E, T, *obs_shape]``.
      returns: ``[E, T]`` discounted returns (e.g. from ``discounted_returns``).
      valid: ``[E, T]`` bool.
      reg_coeff: initial ridge coefficient (> 0).

    Returns:
      values ``[E, T]`` float32, zero where not valid. Callers ``vmap`` over
      tasks so that each task gets its own fit.
    """
    check_same_shape(returns=returns, valid=valid)
    if isinstance(reg_coeff, (int, float)) and not reg_coeff > 0:
        raise ValueError(f"reg_coeff must be > 0, got {reg_coeff!r}")
    obs, returns = jax.lax.stop_gradient((obs, returns))
    features = linear_baseline_features(obs, valid)  # [E, T, F]
    num_features = features.shape[-1]
    targets = jnp.where(valid, jnp.asarray(returns, jnp.float32), 0.0)
    hp = jax.lax.Precision.HIGHEST
    gram = jnp.einsum("etf,etg->fg", features, features, precision=hp)  # [F, F]
    moment = jnp.einsum("etf,et->f", features, targets, precision=hp)  # [F]
    regs = jnp.asarray(reg_coeff, jnp.float32) * _REG_ESCALATION  # [5]
    systems = gram[None] + regs[:, None, None] * jnp.eye(num_features, dtype=jnp.float32)
    rhs = jnp.broadcast_to(moment, (regs.shape[0], num_features))  # [5, F]
    weights = jax.vmap(solve_small)(systems, rhs)  # [5, F]
    finite = jnp.all(jnp.isfinite(weights), axis=-1)  # [5]
    chosen = jnp.where(jnp.any(finite), weights[jnp.argmax(finite)], 0.0)
    values = jnp.einsum("etf,f->et", features, chosen, precision=hp)
    return jax.lax.stop_gradient(jnp.where(valid, values, 0.0))
