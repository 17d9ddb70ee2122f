"""Policy-gradient surrogate losses: REINFORCE, DiCE, PPO-clip, mean KL.

Every loss takes per-step arrays ``[..., T]`` (leading axes are episodes,
and anything else the caller stacks) with the ``valid`` mask of a
:class:`metarl_jax.rollout.Trajectory`, and returns a scalar to *minimise*.
``log_prob`` is the differentiable ``log pi_theta(a_t | s_t)``; advantages,
rewards and baselines are treated as constants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metarl_jax.rl.returns import check_discount, check_same_shape, masked_mean


def vpg_loss(
    log_prob: jax.Array,
    advantages: jax.Array,
    valid: jax.Array,
    per_episode: bool = False,
) -> jax.Array:
    """REINFORCE / vanilla policy gradient surrogate (Williams 1992).

    ``-sum(log_prob * stop_gradient(adv) * valid) / sum(valid)``: the mean of
    ``log_prob * adv`` over all valid steps, as in rllab's MAML inner loss.
    With ``per_episode=True`` each episode (last axis) is averaged over its
    own valid steps first and the episodes are then averaged, which is
    pytorch-maml-rl's ``weighted_mean`` normalisation; the two agree when all
    episodes have the same length.

    Args:
      log_prob, advantages: ``[..., T]`` float.
      valid: ``[..., T]`` bool.

    Returns:
      scalar loss whose gradient is minus the policy-gradient estimate.
    """
    check_same_shape(log_prob=log_prob, advantages=advantages, valid=valid)
    surrogate = log_prob * jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    if per_episode:
        return -jnp.mean(masked_mean(surrogate, valid, axis=-1))
    return -masked_mean(surrogate, valid)


def magic_box(x: jax.Array) -> jax.Array:
    """DiCE's magic box ``exp(x - stop_gradient(x))`` (Foerster et al. 2018, eq. 5).

    Evaluates to 1 while ``d/dx magic_box(x) = magic_box(x)`` to every order.
    """
    return jnp.exp(x - jax.lax.stop_gradient(x))


def dice_loss(
    log_prob: jax.Array,
    rewards: jax.Array,
    valid: jax.Array,
    gamma: float,
    baseline: jax.Array | None = None,
) -> jax.Array:
    """DiCE surrogate (Foerster et al. 2018, "DiCE: The Infinitely Differentiable
    Monte-Carlo Estimator", eq. 6), optionally with the baseline of Mao et al.
    2019 / Farquhar et al. 2019 ("loaded DiCE").

    Per episode, with ``w_t = log_prob_t`` summed causally within the episode,

    ``L = sum_t gamma^t [ box(w_{<=t}) r_t + (box(w_{<t}) - box(w_{<=t})) b_t ]``

    where ``box`` is :func:`magic_box`. ``L`` evaluates to the discounted
    return, and its derivatives of every order are unbiased estimates of the
    derivatives of the expected discounted return (the baseline term is zero
    in value and in expectation, and removes ``b_t`` from the first-order
    score-function weights). Returns ``-mean over episodes of L``.

    Args:
      log_prob: ``[..., T]`` differentiable log-probabilities.
      rewards: ``[..., T]``.
      valid: ``[..., T]`` bool; invalid steps contribute nothing.
      gamma: discount in ``[0, 1]``.
      baseline: optional ``[..., T]`` state values ``b_t`` (e.g. the linear
        feature baseline of the discounted returns); no gradient flows into it.

    Returns:
      scalar loss (averaged over all leading axes).
    """
    check_discount("gamma", gamma)
    arrays = dict(log_prob=log_prob, rewards=rewards, valid=valid)
    if baseline is not None:
        arrays["baseline"] = baseline
    check_same_shape(**arrays)
    valid = jnp.asarray(valid, bool)
    horizon = valid.shape[-1]
    discounts = jnp.asarray(gamma, jnp.float32) ** jnp.arange(horizon, dtype=jnp.float32)
    log_prob = jnp.where(valid, log_prob, 0.0)
    cum_log_prob = jnp.cumsum(log_prob, axis=-1)  # w_{<=t}
    box_upto = magic_box(cum_log_prob)
    rewards = jnp.where(valid, jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32)), 0.0)
    objective = box_upto * rewards
    if baseline is not None:
        baseline = jnp.where(valid, jax.lax.stop_gradient(jnp.asarray(baseline, jnp.float32)), 0.0)
        box_before = magic_box(cum_log_prob - log_prob)  # w_{<t}
        objective = objective + (box_before - box_upto) * baseline
    return -jnp.mean(jnp.sum(discounts * objective, axis=-1))


def ppo_clip_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    valid: jax.Array,
    clip_eps: float = 0.2,
) -> jax.Array:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), negated.

    ``-mean_valid min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)`` with
    ``ratio = exp(log_prob - old_log_prob)``; ``old_log_prob`` and ``A`` are
    constants.

    Args:
      log_prob, old_log_prob, advantages: ``[..., T]``.
      valid: ``[..., T]`` bool.
      clip_eps: clipping range ``eps > 0``.

    Returns:
      scalar loss (mean over valid steps).
    """
    check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob,
                     advantages=advantages, valid=valid)
    if isinstance(clip_eps, (int, float)) and not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps!r}")
    advantages = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    ratio = jnp.exp(log_prob - jax.lax.stop_gradient(old_log_prob))
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
    return -masked_mean(surrogate, valid)


def mean_kl(old_dist, new_dist, valid: jax.Array) -> jax.Array:
    """Mean ``KL(old || new)`` over valid steps; the TRPO constraint (Schulman
    et al. 2015, eq. 12).

    ``old_dist`` is held constant (``stop_gradient``), so the result and its
    gradient are zero at ``new_dist == old_dist`` and its Hessian there is
    the Fisher information matrix.

    Args:
      old_dist, new_dist: distributions from :mod:`metarl_jax.networks` with
        batch shape ``[..., T]``.
      valid: ``[..., T]`` bool.
    """
    kl = jax.lax.stop_gradient(old_dist).kl(new_dist)
    check_same_shape(kl=kl, valid=valid)
    return masked_mean(kl, valid)


def actor_critic_ppo_loss(dist, value: jax.Array, action: jax.Array, old_log_prob: jax.Array,
                          advantages: jax.Array, returns: jax.Array, valid: jax.Array, *,
                          clip_eps: float, value_coef: float, entropy_coef: float):
    """PPO's actor-critic objective on the outputs of a policy (Schulman et al. 2017, eq. 9).

    ``dist`` and ``value`` are the current policy's outputs at the steps where
    ``action`` was taken (batch shape ``[..., T]``); returns ``(loss, aux)``:
    the clipped surrogate (:func:`ppo_clip_loss`) plus ``value_coef`` times
    half the squared error of ``value`` against ``returns``, minus
    ``entropy_coef`` times the entropy, and in ``aux`` each term with the
    approximate KL to the behaviour policy and the fraction of clipped ratios.
    """
    log_prob = dist.log_prob(action)
    policy_loss = ppo_clip_loss(log_prob, old_log_prob, advantages, valid, clip_eps)
    value_loss = 0.5 * masked_mean(jnp.square(value - returns), valid)
    entropy = masked_mean(dist.entropy(), valid)
    total = policy_loss + value_coef * value_loss - entropy_coef * entropy
    log_ratio = log_prob - old_log_prob
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, valid),
        "clip_fraction": masked_mean(jnp.abs(log_ratio) > jnp.log1p(clip_eps), valid),
    }
    return total, aux
