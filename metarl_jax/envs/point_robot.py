"""PEARL's point robot (Rakelly et al. 2019, reference code ``katerakelly/oyster``).

A point on the plane moves by ``0.1 * clip(action, -1, 1)`` per step (the
reference env's velocity bound ``[-0.1, 0.1]`` behind rlkit's
``NormalizedBoxEnv``, so the policy acts in ``[-1, 1]^2``); episodes never
terminate and last 20 steps; the goal is the task.

* dense (``PointRobot()``, oyster's ``point-robot``): each episode starts at a
  uniform random position in ``[-1, 1]^2``; the reward is minus the distance
  to the goal after the move.
* sparse (``PointRobot(sparse=True)``, oyster's ``sparse-point-robot``): every
  episode starts at the origin; the reward is ``1 - distance`` within
  ``goal_radius`` (0.2) of the goal and 0 elsewhere. The dense reward is also
  reported, as ``info["dense_reward"]``: the reference trains its critic on
  the dense reward and infers the task from the sparse one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment, reset_uniform

MAX_SPEED = 0.1          # per-coordinate displacement per step at |action| = 1
START_HALF_WIDTH = 1.0   # dense: the start is uniform on [-1, 1]^2


@struct.dataclass
class PointRobotState:
    """Position ``[2]`` of the point and the step count ``time``."""

    position: jax.Array
    time: jax.Array


@struct.dataclass
class PointRobotParams:
    """The task: ``goal [2]``; the sparse reward's ``goal_radius``; 20-step episodes."""

    goal: jax.Array
    goal_radius: float = 0.2
    max_steps_in_episode: int = 20


class PointRobot(Environment):
    """Observation = position ``[2]``, action = scaled velocity ``[2]`` in ``[-1, 1]``.

    Args:
      sparse: oyster's ``sparse-point-robot`` (start at the origin, reward
        ``1 - d`` inside the goal radius, 0 outside) instead of ``point-robot``
        (random start, reward ``-d``).
    """

    obs_from_state = True

    def __init__(self, sparse: bool = False):
        super().__init__()
        if not isinstance(sparse, bool):
            raise ValueError(f"sparse must be a bool, got {sparse!r}")
        self.sparse = sparse

    @property
    def name(self) -> str:
        return "PointRobotSparse" if self.sparse else "PointRobot"

    @property
    def default_params(self) -> PointRobotParams:
        return PointRobotParams(goal=jnp.zeros((2,), jnp.float32))

    def step_env(self, key, state, action, params):
        """Move; the reward is computed at the new position."""
        position = state.position + MAX_SPEED * jnp.clip(action, -1.0, 1.0)
        distance = jnp.sqrt(jnp.sum((position - params.goal) ** 2))
        dense = -distance
        reward = jnp.where(distance <= params.goal_radius, 1.0 - distance, 0.0) \
            if self.sparse else dense
        state = PointRobotState(position=position, time=state.time + 1)
        info = {"dense_reward": dense} if self.sparse else {}
        return self.get_obs(state, params), state, reward, jnp.zeros((), bool), info

    def reset_env(self, key, params):
        if self.sparse:
            position = jnp.zeros((2,), jnp.float32)
        else:
            position = reset_uniform(key, (2,), -START_HALF_WIDTH, START_HALF_WIDTH)
        state = PointRobotState(position=position, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return state.position

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.zeros((), bool)

    def action_space(self, params=None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field on a malformed goal, radius or horizon."""
        goal = np.asarray(params.goal)
        if goal.ndim < 1 or goal.shape[-1] != 2:
            raise ValueError(f"{self.name}: goal must have shape [..., 2], got {goal.shape}")
        if not np.all(np.isfinite(goal)):
            raise ValueError(f"{self.name}: goal must be finite")
        if not np.all(np.asarray(params.goal_radius) > 0):
            raise ValueError(f"{self.name}: goal_radius must be > 0, got {params.goal_radius!r}")
        if not np.all(np.asarray(params.max_steps_in_episode) >= 1):
            raise ValueError(f"{self.name}: max_steps_in_episode must be >= 1")
