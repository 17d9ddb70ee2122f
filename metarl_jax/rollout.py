"""Fixed-shape trajectory collection with ``lax.scan``.

``rollout`` runs ``num_episodes`` independent episodes of one task for exactly
``horizon`` steps each and returns a :class:`Trajectory` of shape
``[episodes, time, ...]``. Steps after an episode ended are kept (so shapes
never change) but marked ``valid = False``; every loss and return in
``metarl_jax.rl`` respects that mask. Callers ``vmap`` over tasks, and one
compile serves any batch of tasks of the same shape.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.envs.environment import Environment, require_positive

# policy_fn(policy_params, obs, key) -> action  or  (action, log_prob)
PolicyFn = Callable[[Any, jax.Array, jax.Array], Any]


@struct.dataclass
class Trajectory:
    """A batch of fixed-length episodes of one task.

    Shapes (``E`` episodes, ``T`` time steps):

    * ``obs``: ``[E, T, *obs_shape]``, the observation the action was taken in
    * ``action``: ``[E, T, *action_shape]``
    * ``reward``: ``[E, T]`` float32
    * ``terminated``, ``truncated``: ``[E, T]`` bool; ``truncated`` is also set
      on the last step of the horizon when the episode is still running
    * ``valid``: ``[E, T]`` bool, True for steps inside the episode
    * ``log_prob``: ``[E, T]`` float32, log-probability of ``action`` under the
      behaviour policy (zeros if the policy gives none)
    * ``next_obs``: ``[E, T, *obs_shape]``, observation after the step (the true
      final observation at the end of an episode, for bootstrapping)
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    valid: jax.Array
    log_prob: jax.Array
    next_obs: jax.Array

    @property
    def episode_returns(self) -> jax.Array:
        """Undiscounted return of each episode, ``[E]``."""
        return jnp.sum(self.reward * self.valid, axis=-1)

    @property
    def episode_lengths(self) -> jax.Array:
        """Number of valid steps of each episode, ``[E]``."""
        return jnp.sum(self.valid, axis=-1)


def _split_policy_output(out):
    if isinstance(out, tuple):
        action, log_prob = out
    else:
        action, log_prob = out, jnp.zeros((), jnp.float32)
    return action, jnp.asarray(log_prob, jnp.float32)


def rollout(
    env,
    policy_fn: PolicyFn,
    policy_params: Any,
    env_params: Any,
    key: jax.Array,
    num_episodes: int,
    horizon: int,
) -> Trajectory:
    """Collect ``num_episodes`` episodes of ``horizon`` steps from one task.

    Args:
      env: a metarl_jax (or gymnax-compatible) environment.
      policy_fn: ``policy_fn(policy_params, obs, key)`` for a single
        observation, returning an action or ``(action, log_prob)``.
      policy_params: pytree of policy parameters (differentiable: gradients
        flow into ``log_prob``).
      env_params: params of one task (no leading task axis).
      key: PRNG key; split internally, never reused.
      num_episodes, horizon: static sizes.

    Returns:
      :class:`Trajectory` with leading axes ``[num_episodes, horizon]``.
    """
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("horizon", horizon, integer=True)
    # not getattr: a gymnax wrapper forwards step_no_reset to the env it wraps, skipping itself
    step_fn = env.step_no_reset if isinstance(env, Environment) else env.step
    reset_key, scan_key = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_episodes), env_params
    )

    def one_step(obs, state, alive, key, is_last):
        policy_key, env_key = jax.random.split(key)
        action, log_prob = _split_policy_output(policy_fn(policy_params, obs, policy_key))
        next_obs, next_state, reward, terminated, truncated, info = step_fn(
            env_key, state, action, env_params
        )
        truncated = jnp.logical_and(
            jnp.logical_or(truncated, is_last), jnp.logical_not(terminated)
        )
        still_alive = alive & ~(terminated | truncated)
        final_obs = info.get("final_observation", next_obs)
        out = (obs, action, jnp.asarray(reward, jnp.float32), terminated, truncated,
               alive, log_prob, final_obs)
        return (next_obs, next_state, still_alive), out

    def scan_body(carry, inputs):
        obs, state, alive = carry
        key, is_last = inputs
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(one_step, in_axes=(0, 0, 0, 0, None))(obs, state, alive, keys, is_last)

    alive = jnp.ones((num_episodes,), bool)
    is_last = jnp.arange(horizon) == horizon - 1
    _, outs = jax.lax.scan(
        scan_body, (obs, state, alive), (jax.random.split(scan_key, horizon), is_last)
    )
    # scan stacks time first: [T, E, ...] -> [E, T, ...]
    outs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    return Trajectory(*outs)
