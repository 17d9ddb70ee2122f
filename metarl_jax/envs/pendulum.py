"""Pendulum-v1 (inverted pendulum swing-up) exactly as Gymnasium defines it.

A rigid pendulum of mass ``m`` and length ``l`` under gravity ``g`` with a
torque ``u in [-max_torque, max_torque]`` (semi-implicit Euler, step ``dt``)::

    thdot' = clip(thdot + (3 g / (2 l) sin(th) + 3 / (m l^2) u) dt, -max_speed, max_speed)
    th'    = th + thdot' dt

Reward ``-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)`` of the state
before the step; observation ``[cos th, sin th, thdot]``; no termination,
truncation after 200 steps. Reset: ``th ~ U(-pi, pi)``, ``thdot ~ U(-1, 1)``.
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
class PendulumState:
    """Angle (0 = upright), angular velocity, last applied torque (for rendering)."""

    theta: jax.Array
    theta_dot: jax.Array
    last_u: jax.Array
    time: jax.Array


@struct.dataclass
class PendulumParams:
    """Gymnasium ``Pendulum-v1`` constants."""

    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    g: float = 10.0
    m: float = 1.0
    l: float = 1.0  # noqa: E741  (Gymnasium's name)
    max_steps_in_episode: int = 200


# reset: theta ~ U(-pi, pi), theta_dot ~ U(-1, 1)
RESET_HIGH = np.array([np.pi, 1.0], np.float32)


def angle_normalize(x: jax.Array) -> jax.Array:
    """Wrap an angle to ``[-pi, pi)``."""
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


class Pendulum(Environment):
    """Gymnasium ``Pendulum-v1``: swing the pendulum up and hold it; action ``[1]`` torque."""

    step_uses_key = False
    obs_from_state = True
    has_observation_reward = True

    @property
    def name(self) -> str:
        return "Pendulum-v1"

    @property
    def num_actions(self) -> int:
        return 1

    @property
    def default_params(self) -> PendulumParams:
        return PendulumParams()

    def step_env(self, key, state: PendulumState, action, params: PendulumParams):
        """Gymnasium ``PendulumEnv.step`` (module docstring)."""
        del key  # deterministic dynamics
        u = jnp.clip(action[0], -params.max_torque, params.max_torque)
        costs = (
            angle_normalize(state.theta) ** 2 + 0.1 * state.theta_dot**2 + 0.001 * u**2
        )
        theta_dot = state.theta_dot + (
            3 * params.g / (2 * params.l) * jnp.sin(state.theta)
            + 3.0 / (params.m * params.l**2) * u
        ) * params.dt
        theta_dot = jnp.clip(theta_dot, -params.max_speed, params.max_speed)
        state = PendulumState(
            theta=state.theta + theta_dot * params.dt,
            theta_dot=theta_dot,
            last_u=u,
            time=state.time + 1,
        )
        terminated = jnp.zeros((), jnp.bool_)
        return self.get_obs(state), state, (-costs).astype(jnp.float32), terminated, {}

    def observation_reward(self, obs, action, next_obs, params: PendulumParams) -> jax.Array:
        """The step's reward from the observation *before* the step.

        ``theta = atan2(sin, cos)`` of ``obs`` recovers the angle up to float32
        rounding (the cost wraps it anyway), so this equals the step reward to
        about 1e-6.
        """
        del next_obs  # Pendulum's cost is on the state the torque is applied in
        obs = jnp.asarray(obs, jnp.float32)
        u = jnp.clip(jnp.asarray(action, jnp.float32)[0], -params.max_torque, params.max_torque)
        theta = jnp.arctan2(obs[1], obs[0])
        costs = angle_normalize(theta) ** 2 + 0.1 * obs[2] ** 2 + 0.001 * u**2
        return (-costs).astype(jnp.float32)

    def reset_env(self, key, params: PendulumParams):
        """``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)`` (Gymnasium's reset)."""
        del params
        init = reset_uniform(key, (2,), -RESET_HIGH, RESET_HIGH)
        state = PendulumState(
            theta=init[0],
            theta_dot=init[1],
            last_u=jnp.zeros((), jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state), state

    def get_obs(self, state: PendulumState, params=None, key=None) -> jax.Array:
        """``[cos theta, sin theta, theta_dot]`` float32."""
        return jnp.stack(
            [jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot]
        ).astype(jnp.float32)

    def is_terminated(self, state: PendulumState, params: PendulumParams) -> jax.Array:
        """Never: Pendulum episodes only end by truncation."""
        return jnp.zeros((), jnp.bool_)

    def action_space(self, params: PendulumParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        return spaces.Box(-params.max_torque, params.max_torque, (1,), jnp.float32)

    def observation_space(self, params: PendulumParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        high = jnp.array([1.0, 1.0, params.max_speed], jnp.float32)
        return spaces.Box(-high, high, (3,), jnp.float32)

    def state_space(self, params: PendulumParams | None = None) -> spaces.Dict:
        params = self.default_params if params is None else params
        finite = jnp.finfo(jnp.float32).max
        return spaces.Dict(
            {
                "theta": spaces.Box(-finite, finite, (), jnp.float32),
                "theta_dot": spaces.Box(-params.max_speed, params.max_speed, (), jnp.float32),
                "last_u": spaces.Box(-params.max_torque, params.max_torque, (), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode),
            }
        )

    def validate_params(self, params: PendulumParams) -> None:
        """Raise ``ValueError`` naming the first non-positive constant."""
        require_positive_params(
            self.name,
            params,
            ("max_speed", "max_torque", "dt", "g", "m", "l", "max_steps_in_episode"),
        )
