"""Discounted returns, generalised advantage estimation and masked statistics.

All functions take arrays shaped ``[..., T]`` (any leading batch axes, time
last) together with the ``valid`` mask of :class:`metarl_jax.rollout.Trajectory`
and return zeros on steps that are not valid. An episode ends at the last
valid step before a step with ``valid == False`` (or at the end of the
horizon); nothing flows back across that boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_same_shape(**arrays) -> None:
    """Raise ``ValueError`` naming the arguments unless all shapes are equal."""
    shapes = {name: jnp.shape(x) for name, x in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed} must all have the same shape")
    for name, shape in shapes.items():
        if len(shape) == 0:
            raise ValueError(f"{name} must have a time axis [..., T], got a scalar")


def check_discount(name: str, value) -> None:
    """Raise ``ValueError`` if a concrete ``value`` lies outside ``[0, 1]``.

    Traced values (sweeps vmap over hyperparameters) are not checked.
    """
    if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _continues(valid: jax.Array) -> jax.Array:
    """``[..., T]`` bool: step ``t + 1`` belongs to the same episode as ``t``."""
    nxt = jnp.concatenate([valid[..., 1:], jnp.zeros_like(valid[..., :1])], axis=-1)
    return jnp.logical_and(valid, nxt)


def _reverse_discounted_sum(deltas: jax.Array, factors: jax.Array) -> jax.Array:
    """``y_t = deltas_t + factors_t * y_{t+1}`` (``y_T = 0``) over the last axis."""

    def body(carry, inputs):
        delta, factor = inputs
        carry = delta + factor * carry
        return carry, carry

    deltas_t = jnp.moveaxis(deltas, -1, 0)  # [T, ...]
    factors_t = jnp.moveaxis(factors, -1, 0)
    _, ys = jax.lax.scan(body, jnp.zeros_like(deltas_t[0]), (deltas_t, factors_t), reverse=True)
    return jnp.moveaxis(ys, 0, -1)


def discounted_returns(rewards: jax.Array, valid: jax.Array, gamma: float) -> jax.Array:
    """Reward-to-go ``R_t = sum_{k>=0} gamma^k r_{t+k}`` within each episode.

    Args:
      rewards: ``[..., T]`` float.
      valid: ``[..., T]`` bool mask of steps inside the episode.
      gamma: discount factor in ``[0, 1]`` (may be traced).

    Returns:
      ``[..., T]`` float32, zero where not valid. No bootstrapping: this is
      the Monte-Carlo return used by REINFORCE (Williams 1992) and by the
      linear feature baseline fit of rllab / pytorch-maml-rl.
    """
    check_same_shape(rewards=rewards, valid=valid)
    check_discount("gamma", gamma)
    valid = jnp.asarray(valid, bool)
    rewards = jnp.where(valid, jnp.asarray(rewards, jnp.float32), 0.0)
    factors = jnp.asarray(gamma, jnp.float32) * _continues(valid)
    return _reverse_discounted_sum(rewards, factors)


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    valid: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)`` and
    ``A_t = delta_t + gamma lambda A_{t+1}``, where the recursion stops at the
    end of each episode (``terminated_t`` or ``valid_{t+1} == False``). A
    truncated episode still bootstraps from ``next_values_t``; a terminated
    one does not.

    Args:
      rewards: ``[..., T]``.
      values: ``[..., T]``, ``V(obs_t)``.
      next_values: ``[..., T]``, ``V(next_obs_t)`` (ignored where terminated).
      terminated: ``[..., T]`` bool.
      valid: ``[..., T]`` bool.
      gamma, gae_lambda: in ``[0, 1]`` (may be traced).

    Returns:
      ``(advantages, returns)`` each ``[..., T]`` float32, zero where not
      valid; ``returns = advantages + values`` is the ``TD(lambda)`` target.
    """
    check_same_shape(rewards=rewards, values=values, next_values=next_values,
                     terminated=terminated, valid=valid)
    check_discount("gamma", gamma)
    check_discount("gae_lambda", gae_lambda)
    valid = jnp.asarray(valid, bool)
    not_terminated = jnp.logical_not(jnp.asarray(terminated, bool))
    gamma = jnp.asarray(gamma, jnp.float32)
    values = jnp.where(valid, jnp.asarray(values, jnp.float32), 0.0)
    next_values = jnp.where(not_terminated, jnp.asarray(next_values, jnp.float32), 0.0)
    deltas = jnp.where(valid, jnp.asarray(rewards, jnp.float32) + gamma * next_values - values, 0.0)
    factors = gamma * jnp.asarray(gae_lambda, jnp.float32) * (_continues(valid) & not_terminated)
    advantages = _reverse_discounted_sum(deltas, factors)
    return advantages, jnp.where(valid, advantages + values, 0.0)


def masked_mean(x: jax.Array, valid: jax.Array, axis=None) -> jax.Array:
    """Mean of ``x`` over the entries where ``valid`` (broadcast against ``x``).

    Returns 0 where no entry is valid (rather than NaN).
    """
    x = jnp.asarray(x)
    try:
        weights = jnp.broadcast_to(jnp.asarray(valid, x.dtype), x.shape)
    except ValueError as err:
        raise ValueError(
            f"masked_mean: valid of shape {jnp.shape(valid)} does not broadcast to x of shape {x.shape}"
        ) from err
    total = jnp.sum(x * weights, axis=axis)
    count = jnp.sum(weights, axis=axis)
    return total / jnp.maximum(count, 1.0)


def normalize_advantages(adv: jax.Array, valid: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(adv - mean) / (std + eps)`` with mean and std over the valid entries.

    The statistics are over all valid steps of the arrays given (callers
    ``vmap`` to normalise per task); with equal episode lengths this is
    pytorch-maml-rl's ``weighted_normalize``. Returns zeros where not valid.
    """
    check_same_shape(adv=adv, valid=valid)
    valid = jnp.asarray(valid, bool)
    adv = jnp.asarray(adv, jnp.float32)
    mean = masked_mean(adv, valid)
    centred = jnp.where(valid, adv - mean, 0.0)
    std = jnp.sqrt(masked_mean(jnp.square(centred), valid))
    return centred / (std + eps)


def trial_gae(rewards: jax.Array, values: jax.Array, valid: jax.Array, gamma: float,
              gae_lambda: float, normalize: bool = True) -> tuple[jax.Array, jax.Array]:
    """GAE over whole trials ``[B, T]``: bootstrapping is cut only at each trial's end.

    The trial is the "episode" of a meta-learner that adapts inside it (RL²,
    Duan et al. 2016, Sec. 2.2; VariBAD's BAMDP): the inner episode
    boundaries are ordinary steps, and nothing follows the trial's last
    valid step. With ``normalize`` the advantages are normalised over the
    valid steps of the whole batch (:func:`normalize_advantages`).
    """
    check_same_shape(rewards=rewards, values=values, valid=valid)
    valid = jnp.asarray(valid, bool)
    next_values = jnp.concatenate([values[..., 1:], jnp.zeros_like(values[..., :1])], axis=-1)
    trial_end = valid & ~_continues(valid)
    adv, returns = gae(rewards, values, next_values, trial_end, valid, gamma, gae_lambda)
    if normalize:
        adv = normalize_advantages(adv, valid)
    return adv, returns
