"""Trust region policy optimisation (Schulman et al. 2015, appendix C).

Pure, jittable and pytree-aware: parameters, gradients and search directions
are pytrees of the same structure (any flax params), never flattened.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from metarl_jax.utils import check_int_at_least, tree_axpy, tree_vdot

Params = Any


def _require_range(name: str, value, low: float, high: float | None) -> None:
    """Check a concrete Python number; traced values are left to the caller."""
    if isinstance(value, (int, float)):
        if not value > low or (high is not None and not value < high):
            bound = f"in ({low}, {high})" if high is not None else f"> {low}"
            raise ValueError(f"{name} must be {bound}, got {value!r}")


def conjugate_gradient(
    matvec: Callable[[Params], Params],
    b: Params,
    num_iters: int = 10,
    residual_tol: float = 1e-10,
) -> Params:
    """Solve ``A x = b`` by conjugate gradients (Hestenes & Stiefel 1952).

    ``A`` is symmetric positive definite, given as ``matvec(v) = A v`` on
    pytrees shaped like ``b``. Runs exactly ``num_iters`` iterations (a static
    ``fori_loop``, so it is jittable and reverse-differentiable); once the
    squared residual norm falls below ``residual_tol`` the remaining
    iterations leave ``x`` unchanged, like the early ``break`` of the rllab /
    pytorch-maml-rl implementation. Starts from ``x = 0``.
    """
    check_int_at_least("num_iters", num_iters, 1)
    zeros = jax.tree.map(jnp.zeros_like, b)
    rdotr = tree_vdot(b, b)
    tol = jnp.asarray(residual_tol, jnp.float32)

    def body(_, carry):
        x, r, p, rdotr = carry
        done = rdotr < tol
        ap = matvec(p)
        p_ap = tree_vdot(p, ap)
        # Safe denominators: a finished solve has p = 0 and p.Ap = 0.
        alpha = jnp.where(done, 0.0, rdotr / jnp.where(done, 1.0, p_ap))
        x = tree_axpy(alpha, p, x)
        r = tree_axpy(-alpha, ap, r)
        new_rdotr = tree_vdot(r, r)
        beta = jnp.where(done, 0.0, new_rdotr / jnp.where(done, 1.0, rdotr))
        p = jax.tree.map(lambda pi, ri: jnp.where(done, pi, ri + beta * pi), p, r)
        rdotr = jnp.where(done, rdotr, new_rdotr)
        return x, r, p, rdotr

    x, *_ = jax.lax.fori_loop(0, num_iters, body, (zeros, b, b, rdotr))
    return x


def hessian_vector_product(f: Callable[[Params], jax.Array], params: Params, vector: Params) -> Params:
    """``(d^2 f / d params^2) @ vector`` by forward-over-reverse differentiation.

    ``jvp(grad(f))`` (Pearlmutter 1994): one gradient's cost plus a forward
    pass, no Hessian materialised. ``vector`` has the structure of ``params``.
    """
    return jax.jvp(jax.grad(f), (params,), (vector,))[1]


def trpo_step(
    loss_fn: Callable[[Params], jax.Array],
    kl_fn: Callable[[Params], jax.Array],
    params: Params,
    max_kl: float = 0.01,
    damping: float = 0.1,
    cg_iters: int = 10,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 15,
    line_search: str = "parallel",
    fisher_vector_product: Callable[[Params], Params] | None = None,
) -> tuple[Params, dict[str, jax.Array]]:
    """One TRPO update (Schulman et al. 2015, appendix C).

    1. ``g = grad loss_fn(params)``.
    2. Natural-gradient direction ``s = (H + damping I)^{-1} g`` by
       :func:`conjugate_gradient`, ``H`` the Hessian of ``kl_fn`` at
       ``params`` (the Fisher matrix), via :func:`hessian_vector_product`.
    3. Full step ``beta s`` with ``beta = sqrt(2 max_kl / s^T (H + damping I) s)``
       so the quadratic model of the KL equals ``max_kl``.
    4. Backtracking line search over ``params - backtrack_ratio^k beta s``,
       ``k = 0 .. max_backtracks - 1``: the first candidate with
       ``loss < loss_before`` and ``KL <= max_kl`` is taken; if none is, the
       parameters are returned unchanged.

    Args:
      loss_fn: ``loss_fn(params) -> scalar`` surrogate to minimise.
      kl_fn: ``kl_fn(params) -> scalar`` mean ``KL(old || new)``, zero at
        ``params`` (e.g. :func:`metarl_jax.rl.losses.mean_kl` against the
        distributions of ``params``).
      params: pytree of parameters.
      max_kl, damping, backtrack_ratio: trust-region size, Fisher damping,
        step shrink factor (may be traced).
      cg_iters, max_backtracks: static iteration counts.
      line_search: ``"parallel"`` evaluates all candidates at once with
        ``vmap`` (one wide pass, suited to accelerators); ``"sequential"``
        evaluates them one by one with ``lax.while_loop`` and stops at the
        first acceptable one (least work when the full step is usually
        accepted, as on CPU). Both return the same result; neither is
        reverse-differentiable through the choice of candidate.
      fisher_vector_product: optional ``v -> H v`` (undamped) replacing the
        default forward-over-reverse HVP of ``kl_fn``, e.g. the cheaper
        :func:`gauss_newton_fvp`.

    Returns:
      ``(new_params, info)``; ``info`` holds float32 scalars ``kl`` (KL at
      the new parameters), ``loss_before``, ``loss_after``, ``step_fraction``
      (``backtrack_ratio^k`` of the accepted step, 0 if none) and ``accepted``
      (1.0 or 0.0).
    """
    check_int_at_least("cg_iters", cg_iters, 1)
    check_int_at_least("max_backtracks", max_backtracks, 1)
    _require_range("max_kl", max_kl, 0.0, None)
    _require_range("backtrack_ratio", backtrack_ratio, 0.0, 1.0)
    if isinstance(damping, (int, float)) and damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    if line_search not in ("parallel", "sequential"):
        raise ValueError(f"line_search must be 'parallel' or 'sequential', got {line_search!r}")

    max_kl = jnp.asarray(max_kl, jnp.float32)
    damping = jnp.asarray(damping, jnp.float32)
    loss_before, grads = jax.value_and_grad(loss_fn)(params)

    def fisher_vp(v):
        hv = (fisher_vector_product(v) if fisher_vector_product is not None
              else hessian_vector_product(kl_fn, params, v))
        return tree_axpy(damping, v, hv)

    step_dir = conjugate_gradient(fisher_vp, grads, cg_iters)
    shs = tree_vdot(step_dir, fisher_vp(step_dir))
    # A zero (or numerically non-positive) curvature means no usable step.
    full_scale = jnp.where(shs > 0, jnp.sqrt(2.0 * max_kl / jnp.where(shs > 0, shs, 1.0)), 0.0)
    full_step = jax.tree.map(lambda s: full_scale * s, step_dir)
    fractions = jnp.asarray(backtrack_ratio, jnp.float32) ** jnp.arange(max_backtracks, dtype=jnp.float32)

    def candidate(fraction):
        return tree_axpy(-fraction, full_step, params)

    def evaluate(fraction):
        new_params = candidate(fraction)
        loss, kl = loss_fn(new_params), kl_fn(new_params)
        ok = jnp.isfinite(loss) & jnp.isfinite(kl) & (loss < loss_before) & (kl <= max_kl)
        return ok, loss, kl

    if line_search == "parallel":
        oks, losses, kls = jax.vmap(evaluate)(fractions)
        index = jnp.argmax(oks)
        accepted, loss_new, kl_new = oks[index], losses[index], kls[index]
    else:
        def cond(carry):
            index, ok, *_ = carry
            return jnp.logical_and(~ok, index < max_backtracks)

        def body(carry):
            index = carry[0]
            ok, loss, kl = evaluate(fractions[index])
            return index + 1, ok, loss, kl

        zero = jnp.zeros((), jnp.float32)
        end, accepted, loss_new, kl_new = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), zero, zero)
        )
        index = end - 1

    fraction = jnp.where(accepted, fractions[index], 0.0)
    # select rather than scale by 0, so a non-finite step never leaks into params
    new_params = jax.tree.map(lambda c, p: jnp.where(accepted, c, p), candidate(fraction), params)
    info = {
        "kl": jnp.where(accepted, kl_new, 0.0).astype(jnp.float32),
        "loss_before": jnp.asarray(loss_before, jnp.float32),
        "loss_after": jnp.where(accepted, loss_new, loss_before).astype(jnp.float32),
        "step_fraction": fraction.astype(jnp.float32),
        "accepted": accepted.astype(jnp.float32),
    }
    return new_params, info


def gauss_newton_fvp(
    dist_fn: Callable[[Params], Any],
    kl_of_dist: Callable[[Any], jax.Array],
    params: Params,
) -> Callable[[Params], Params]:
    """Exact Fisher-vector products ``v -> H v`` of ``kl_of_dist(dist_fn(params))``.

    At the old parameters the KL's gradient with respect to the distribution
    parameters vanishes, so its Hessian is exactly the Gauss-Newton matrix
    ``J^T M J`` (``J`` the Jacobian of ``dist_fn``, ``M`` the Hessian of the KL
    in distribution space, cheap and elementwise). ``dist_fn`` is linearised
    once (``jax.linearize``) and each product costs one linear forward and one
    transposed pass, instead of re-running ``dist_fn`` with second-order
    tangents as forward-over-reverse does; this matters when ``dist_fn`` is
    expensive, e.g. the adapted policy of MAML, which contains an inner
    gradient step.

    Args:
      dist_fn: ``params -> distribution pytree`` (e.g. ``DiagGaussian``).
      kl_of_dist: ``distribution -> scalar`` mean ``KL(old || distribution)``,
        minimal (zero) at ``dist_fn(params)``.
      params: the point of linearisation (the old parameters).
    """
    dist, jvp_fn = jax.linearize(dist_fn, params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)

    def fvp(vector):
        tangent = jvp_fn(vector)
        curvature = hessian_vector_product(kl_of_dist, dist, tangent)
        return vjp_fn(curvature)[0]

    return fvp
