"""2D point navigation of MAML (Finn et al. 2017, arXiv:1703.03400, Sec. 5.3).

A point starts at the origin; the action is its velocity, clipped to
[-0.1, 0.1] per coordinate; the reward is minus the Euclidean distance from the
new position to the goal; the episode ends when the point is within 0.01 of the
goal in both coordinates, or after 100 steps. Matches pytorch-maml-rl's
``2DNavigation-v0`` (``Navigation2DEnv.step``), which follows the authors'
``point_env_randgoal.py``. The goal is the task and lives in ``params``.
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
    """The task: ``goal: [2]``; horizon 100 as in MAML."""

    goal: jax.Array
    max_steps_in_episode: int = 100


class Navigation2D(Environment):
    """MAML's 2D navigation: observation = position ``[2]``, action = velocity ``[2]``."""

    @property
    def default_params(self) -> NavigationParams:
        return NavigationParams(goal=jnp.zeros((2,), jnp.float32))

    def step_env(self, key, state, action, params):
        """Move by the clipped velocity; reward ``-||position - goal||_2`` after the move."""
        position = state.position + jnp.clip(action, -MAX_SPEED, MAX_SPEED)
        reward = -jnp.sqrt(jnp.sum((position - params.goal) ** 2))
        state = NavigationState(position=position, time=state.time + 1)
        return self.get_obs(state, params), state, reward, self.is_terminated(state, params), {}

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
        return spaces.Box(-MAX_SPEED, MAX_SPEED, (2,), jnp.float32)

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
