"""2D point navigation of MAML (Finn et al. 2017, arXiv:1703.03400, Sec. 5.3).

A point starts at the origin; the action is its velocity, clipped to
[-0.1, 0.1] per coordinate; the reward is minus the Euclidean distance from the
new position to the goal; the episode ends when the point is within 0.01 of the
goal in both coordinates, or after 100 steps. Matches pytorch-maml-rl's
``2DNavigation-v0`` (``Navigation2DEnv.step``), which follows the authors'
``point_env_randgoal.py``. The goal is the task and lives in ``params``.

``params.velocity_scale`` (``[2]``, default ``None`` = ones, the env above)
multiplies the clipped velocity per axis: a scale in ``[0, 1)`` cripples an
axis, a negative one reverses it. It is how the ``navigation2d`` family's
changing dynamics (``change_every``/``change_prob``) break a motor mid-episode;
the default leaves the params pytree (and every compiled step) as before.

``Navigation2D(normalized_actions=True)`` is the env as the MAML authors ran it:
their experiment wraps it in rllab's ``normalize``, so the policy acts in
``[-1, 1]^2`` and the env moves by ``0.1 * clip(action, -1, 1)``. The
dynamics are the same; what changes is the scale the policy's outputs (and its
initial exploration noise, std 1) live on: relative to the step size, ten times
less noise than a std-1 Gaussian clipped to ``[-0.1, 0.1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment

MAX_SPEED = 0.1  # per-coordinate velocity clip
GOAL_TOLERANCE = 0.01  # per-coordinate distance that counts as reaching the goal


@struct.dataclass
class NavigationState:
    """Position ``[2]`` of the point and the step count ``time``."""

    position: jax.Array
    time: jax.Array


@struct.dataclass
class NavigationParams:
    """The task: ``goal: [2]``; horizon 100 as in MAML.

    ``velocity_scale``: ``[2]`` per-axis factor on the clipped velocity, or
    ``None`` (the default) for ones: no leaf, so default params batch with
    ``vmap`` exactly as before the field existed.
    """

    goal: jax.Array
    max_steps_in_episode: int = 100
    velocity_scale: jax.Array | None = None


class Navigation2D(Environment):
    """MAML's 2D navigation: observation = position ``[2]``, action = velocity ``[2]``.

    Args:
      normalized_actions: if ``True`` the action space is ``[-1, 1]^2`` and an
        action ``a`` moves the point by ``0.1 * clip(a, -1, 1)`` (rllab's
        ``normalize``, as in the authors' code); if ``False`` (pytorch-maml-rl's
        ``2DNavigation-v0``) the action is the velocity, clipped to ``[-0.1, 0.1]``.
    """

    has_observation_reward = True

    def __init__(self, normalized_actions: bool = False):
        super().__init__()
        if not isinstance(normalized_actions, bool):
            raise ValueError(f"normalized_actions must be a bool, got {normalized_actions!r}")
        self.normalized_actions = normalized_actions

    @property
    def default_params(self) -> NavigationParams:
        return NavigationParams(goal=jnp.zeros((2,), jnp.float32))

    def step_env(self, key, state, action, params):
        """Move by the clipped (scaled) velocity; reward ``-||position - goal||_2`` after it."""
        if self.normalized_actions:
            velocity = MAX_SPEED * jnp.clip(action, -1.0, 1.0)
        else:
            velocity = jnp.clip(action, -MAX_SPEED, MAX_SPEED)
        if params.velocity_scale is not None:
            velocity = velocity * params.velocity_scale
        position = state.position + velocity
        state = NavigationState(position=position, time=state.time + 1)
        reward = self._reward(position, params)
        return self.get_obs(state, params), state, reward, self.is_terminated(state, params), {}

    def observation_reward(self, obs, action, next_obs, params) -> jax.Array:
        """``-||next_obs - goal||_2``: the observation is the position."""
        del obs, action
        return self._reward(jnp.asarray(next_obs, jnp.float32), params)

    @staticmethod
    def _reward(position, params) -> jax.Array:
        return -jnp.sqrt(jnp.sum((position - params.goal) ** 2))

    def reset_env(self, key, params):
        """Every episode starts at the origin (the key is unused: the start is fixed)."""
        state = NavigationState(
            position=jnp.zeros((2,), jnp.float32), time=jnp.zeros((), jnp.int32)
        )
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return state.position

    def is_terminated(self, state, params) -> jax.Array:
        """Reached: within ``GOAL_TOLERANCE`` of the goal in both coordinates."""
        return jnp.all(jnp.abs(state.position - params.goal) < GOAL_TOLERANCE)

    def action_space(self, params=None) -> spaces.Box:
        bound = 1.0 if self.normalized_actions else MAX_SPEED
        return spaces.Box(-bound, bound, (2,), jnp.float32)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field on a malformed goal or horizon.

        Accepts one task or a batch with leading task axes.
        """
        goal = np.asarray(params.goal)
        if goal.ndim < 1 or goal.shape[-1] != 2:
            raise ValueError(f"{self.name}: goal must have shape [..., 2], got {goal.shape}")
        if not np.all(np.isfinite(goal)):
            raise ValueError(f"{self.name}: goal must be finite")
        if not np.all(np.asarray(params.max_steps_in_episode) >= 1):
            raise ValueError(f"{self.name}: max_steps_in_episode must be >= 1")
        if params.velocity_scale is not None:
            self._validate_velocity_scale(np.asarray(params.velocity_scale))

    def _validate_velocity_scale(self, scale: np.ndarray) -> None:
        """Shape ``[..., 2]`` and finite; any sign (negative reverses an axis)."""
        if scale.ndim < 1 or scale.shape[-1] != 2:
            raise ValueError(
                f"{self.name}: velocity_scale must have shape [..., 2], got {scale.shape}")
        if not np.all(np.isfinite(scale)):
            raise ValueError(f"{self.name}: velocity_scale must be finite")
