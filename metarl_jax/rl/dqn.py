"""Deep Q-learning pieces (Mnih et al. 2015; double DQN, van Hasselt et al. 2016).

Pure functions of arrays, shared by the value-based off-policy learners:

* :func:`double_q_target`: ``r + gamma (1 - terminated) Q'(s', argmax_a Q(s', a))``,
  the online network choosing the next action and the target network valuing
  it (``double=False``: ``max_a Q'(s', a)``, the original DQN target). A
  terminal ``s'`` has no future; a truncated one does, so the caller passes
  the episode's real final observation (``info["final_observation"]``) as ``s'``;
* :func:`epsilon_greedy_probs`: the behaviour policy's action probabilities;
* :func:`linear_schedule`: exploration annealed over iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def double_q_target(reward: jax.Array, terminated: jax.Array, next_q_online: jax.Array,
                    next_q_target: jax.Array, gamma: float, double: bool = True) -> jax.Array:
    """The Bellman target ``[...]`` (gradient stopped) from next-state values ``[..., A]``."""
    if double:
        choice = jnp.argmax(next_q_online, axis=-1)
        next_value = jnp.take_along_axis(next_q_target, choice[..., None], axis=-1)[..., 0]
    else:
        next_value = jnp.max(next_q_target, axis=-1)
    target = reward + gamma * (1.0 - terminated.astype(reward.dtype)) * next_value
    return jax.lax.stop_gradient(target)


def epsilon_greedy_probs(q: jax.Array, epsilon: jax.Array) -> jax.Array:
    """``[..., A]`` probabilities: ``1 - epsilon`` on the greedy action, ``epsilon``
    spread uniformly over all ``A`` (ties go to the first maximum)."""
    num = q.shape[-1]
    greedy = jax.nn.one_hot(jnp.argmax(q, axis=-1), num, dtype=jnp.float32)
    epsilon = jnp.asarray(epsilon, jnp.float32)[..., None]
    return (1.0 - epsilon) * greedy + epsilon / num


def linear_schedule(start: float, end: float, steps: int, step: jax.Array) -> jax.Array:
    """``start`` at ``step = 0`` moving linearly to ``end`` at ``step >= steps``."""
    fraction = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps), 1), 0.0, 1.0)
    return jnp.asarray(start + fraction * (end - start), jnp.float32)
