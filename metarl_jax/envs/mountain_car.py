"""MountainCar-v0 and MountainCarContinuous-v0 (Moore 1990) exactly as Gymnasium.

An under-powered car in the valley ``height = sin(3 x)`` must rock back and
forth to reach the flag. Both versions share the physics (Sutton & Barto
2018, Sec. 10.1)::

    v' = clip(v + push - gravity * cos(3 x), -max_speed, max_speed)
    x' = clip(x + v', min_position, max_position);  v' = 0 if x' hits the left wall moving left

with ``push = (action - 1) * force`` for the discrete version (actions 0, 1,
2) and ``push = clip(a, min_action, max_action) * power`` for the continuous
one. Episodes terminate at ``x' >= goal_position and v' >= goal_velocity``.
Rewards: -1 per step (discrete); ``100 * terminated - 0.1 * a**2`` (continuous,
unclipped ``a`` as in Gymnasium). Reset: ``x ~ U(-0.6, -0.4)``, ``v = 0``.
State field names are gymnax's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment, require_positive_params, reset_uniform


@struct.dataclass
class MountainCarState:
    """Car position and velocity."""

    position: jax.Array
    velocity: jax.Array
    time: jax.Array


@struct.dataclass
class MountainCarParams:
    """Gymnasium ``MountainCar-v0`` constants."""

    min_position: float = -1.2
    max_position: float = 0.6
    max_speed: float = 0.07
    goal_position: float = 0.5
    goal_velocity: float = 0.0
    force: float = 0.001
    gravity: float = 0.0025
    max_steps_in_episode: int = 200


@struct.dataclass
class MountainCarContinuousParams:
    """Gymnasium ``MountainCarContinuous-v0`` constants (``gravity`` is its 0.0025)."""

    min_action: float = -1.0
    max_action: float = 1.0
    min_position: float = -1.2
    max_position: float = 0.6
    max_speed: float = 0.07
    goal_position: float = 0.45
    goal_velocity: float = 0.0
    power: float = 0.0015
    gravity: float = 0.0025
    max_steps_in_episode: int = 999


# initial position ~ U(RESET_LOW, RESET_HIGH), initial velocity 0
RESET_LOW, RESET_HIGH = -0.6, -0.4


def _car_physics(state: MountainCarState, push, params) -> MountainCarState:
    """The shared valley dynamics of both MountainCar versions (module docstring)."""
    velocity = state.velocity + push - jnp.cos(3 * state.position) * params.gravity
    velocity = jnp.clip(velocity, -params.max_speed, params.max_speed)
    position = jnp.clip(state.position + velocity, params.min_position, params.max_position)
    at_left_wall = (position == jnp.asarray(params.min_position, position.dtype)) & (velocity < 0)
    velocity = jnp.where(at_left_wall, jnp.zeros_like(velocity), velocity)
    return MountainCarState(position=position, velocity=velocity, time=state.time + 1)


class _MountainCarBase(Environment):
    """Reset, observation, termination and checks common to both versions."""

    step_uses_key = False
    obs_from_state = True

    def reset_env(self, key, params):
        """``position ~ U(-0.6, -0.4)``, ``velocity = 0`` (Gymnasium's reset)."""
        del params
        position = reset_uniform(key, (), RESET_LOW, RESET_HIGH)
        state = MountainCarState(
            position=position,
            velocity=jnp.zeros((), jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state), state

    def get_obs(self, state: MountainCarState, params=None, key=None) -> jax.Array:
        """``[position, velocity]`` float32."""
        return jnp.stack([state.position, state.velocity]).astype(jnp.float32)

    def is_terminated(self, state: MountainCarState, params) -> jax.Array:
        """Reached the flag with at least ``goal_velocity``."""
        return (state.position >= params.goal_position) & (
            state.velocity >= params.goal_velocity
        )

    def observation_space(self, params=None) -> spaces.Box:
        params = self.default_params if params is None else params
        low = jnp.array([params.min_position, -params.max_speed], jnp.float32)
        high = jnp.array([params.max_position, params.max_speed], jnp.float32)
        return spaces.Box(low, high, (2,), jnp.float32)

    def state_space(self, params=None) -> spaces.Dict:
        params = self.default_params if params is None else params
        return spaces.Dict(
            {
                "position": spaces.Box(
                    params.min_position, params.max_position, (), jnp.float32
                ),
                "velocity": spaces.Box(-params.max_speed, params.max_speed, (), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode),
            }
        )

    def _validate_track(self, params, positive_fields) -> None:
        require_positive_params(
            self.name, params, ("max_speed", "gravity", *positive_fields, "max_steps_in_episode")
        )
        low, high = np.asarray(params.min_position), np.asarray(params.max_position)
        if not np.all(low < high):
            raise ValueError(
                f"{self.name}: params.min_position must be < params.max_position, "
                f"got {low} and {high}"
            )
        goal = np.asarray(params.goal_position)
        if not np.all((goal > low) & (goal <= high)):
            raise ValueError(
                f"{self.name}: params.goal_position must lie in (min_position, "
                f"max_position], got {goal}"
            )


class MountainCar(_MountainCarBase):
    """Gymnasium ``MountainCar-v0``: actions push left (0), nothing (1), right (2)."""

    @property
    def name(self) -> str:
        return "MountainCar-v0"

    @property
    def num_actions(self) -> int:
        return 3

    @property
    def default_params(self) -> MountainCarParams:
        return MountainCarParams()

    def step_env(self, key, state: MountainCarState, action, params: MountainCarParams):
        """Gymnasium ``MountainCarEnv.step``: reward -1 per step."""
        del key  # deterministic dynamics
        push = (action - 1).astype(jnp.float32) * params.force
        state = _car_physics(state, push, params)
        terminated = self.is_terminated(state, params)
        reward = jnp.full((), -1.0, jnp.float32)
        return self.get_obs(state), state, reward, terminated, {}

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(3)

    def validate_params(self, params: MountainCarParams) -> None:
        """Raise ``ValueError`` naming the offending field."""
        self._validate_track(params, ("force",))


class MountainCarContinuous(_MountainCarBase):
    """Gymnasium ``MountainCarContinuous-v0``: a force in ``[-1, 1]``, shape ``[1]``."""

    has_observation_reward = True

    @property
    def name(self) -> str:
        return "MountainCarContinuous-v0"

    @property
    def num_actions(self) -> int:
        return 1

    @property
    def default_params(self) -> MountainCarContinuousParams:
        return MountainCarContinuousParams()

    def step_env(
        self, key, state: MountainCarState, action, params: MountainCarContinuousParams
    ):
        """Gymnasium ``Continuous_MountainCarEnv.step``: ``100 * goal - 0.1 a^2``."""
        del key  # deterministic dynamics
        force = jnp.clip(action[0], params.min_action, params.max_action)
        state = _car_physics(state, force * params.power, params)
        terminated = self.is_terminated(state, params)
        return self.get_obs(state), state, self._reward(terminated, action), terminated, {}

    def observation_reward(
        self, obs, action, next_obs, params: MountainCarContinuousParams
    ) -> jax.Array:
        """``100 * terminated(next_obs) - 0.1 a^2``: the flag is read off ``next_obs``."""
        del obs
        next_obs = jnp.asarray(next_obs, jnp.float32)
        reached = MountainCarState(position=next_obs[0], velocity=next_obs[1], time=None)
        action = jnp.asarray(action, jnp.float32)
        return self._reward(self.is_terminated(reached, params), action)

    @staticmethod
    def _reward(terminated, action) -> jax.Array:
        """Gymnasium's reward, on the *unclipped* action."""
        reward = 100.0 * terminated.astype(jnp.float32) - 0.1 * action[0] ** 2
        return reward.astype(jnp.float32)

    def action_space(self, params=None) -> spaces.Box:
        params = self.default_params if params is None else params
        return spaces.Box(params.min_action, params.max_action, (1,), jnp.float32)

    def validate_params(self, params: MountainCarContinuousParams) -> None:
        """Raise ``ValueError`` naming the offending field."""
        self._validate_track(params, ("power",))
        low, high = np.asarray(params.min_action), np.asarray(params.max_action)
        if not np.all(low < high):
            raise ValueError(
                f"{self.name}: params.min_action must be < params.max_action, "
                f"got {low} and {high}"
            )
