"""Soft actor-critic pieces (Haarnoja et al. 2018, arXiv:1801.01290 and 1812.05905).

Pure functions of arrays, shared by the off-policy learners:

* :func:`soft_td_target`: ``r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a' | s'))``
  with ``a' ~ pi(. | s')``, clipped double-Q (Fujimoto et al. 2018) on target critics;
* :func:`discrete_soft_td_target`: the same for a categorical policy, with
  the expectation over next actions taken exactly (Christodoulou 2019,
  soft actor-critic for discrete actions):
  ``r + gamma (1 - terminated) sum_a pi(a | s') (min_j Q'_j(s', a) - alpha log pi(a | s'))``;
* :func:`temperature_loss`: the entropy temperature's loss
  ``-log_alpha (log pi + target_entropy)``, whose gradient raises ``alpha``
  when the policy's entropy is below the target and lowers it above;
* :func:`polyak`: the target networks' soft update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def soft_td_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array,
                   next_log_prob: jax.Array, alpha: jax.Array, gamma: float) -> jax.Array:
    """The soft Bellman target (gradient stopped).

    ``next_q [..., J]`` are the target critics' values of ``(s', a')``; the
    minimum over the last axis is taken. A terminal ``s'`` has no future;
    a truncated one does (the caller passes its real final observation).
    """
    soft_value = jnp.min(next_q, axis=-1) - alpha * next_log_prob
    target = reward + gamma * (1.0 - terminated.astype(reward.dtype)) * soft_value
    return jax.lax.stop_gradient(target)


def discrete_soft_td_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array,
                            next_log_probs: jax.Array, alpha: jax.Array,
                            gamma: float) -> jax.Array:
    """The soft Bellman target for discrete actions (gradient stopped).

    ``next_q [..., A, J]`` are the target critics' values of every next action,
    ``next_log_probs [..., A]`` the policy's log-probabilities at ``s'``.
    """
    probs = jnp.exp(next_log_probs)
    soft_value = jnp.sum(probs * (jnp.min(next_q, axis=-1) - alpha * next_log_probs), axis=-1)
    target = reward + gamma * (1.0 - terminated.astype(reward.dtype)) * soft_value
    return jax.lax.stop_gradient(target)


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: float) -> jax.Array:
    """``mean(-log_alpha * (log pi + target_entropy))`` with ``log pi`` stopped."""
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))


def polyak(target: Any, online: Any, tau: float) -> Any:
    """``(1 - tau) target + tau online``, leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
