"""CartPole-v1 (Barto, Sutton & Anderson 1983) exactly as Gymnasium defines it.

Euler integration of the cart-pole equations of motion (Florian 2007, "Correct
equations for the dynamics of the cart-pole system", eqs. 23-24 with friction
zero), termination when the pole leaves +-12 degrees or the cart +-2.4, reward
1 on every step (including the terminating one), truncation after 500 steps.

Every physical constant is a task parameter; the derived constants
(``total_mass``, ``polemass_length``) are computed from them in each step so
that a sampled ``masspole`` or ``length`` can never disagree with them.
State field names are gymnax's, so states convert in both directions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment, require_positive_params, reset_uniform


@struct.dataclass
class CartPoleState:
    """Cart position/velocity, pole angle (radians, 0 = upright)/angular velocity."""

    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


@struct.dataclass
class CartPoleParams:
    """Gymnasium ``CartPole-v1`` constants; ``length`` is half the pole's length."""

    gravity: float = 9.8
    masscart: float = 1.0
    masspole: float = 0.1
    length: float = 0.5
    force_mag: float = 10.0
    tau: float = 0.02
    theta_threshold_radians: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    max_steps_in_episode: int = 500


# reset draws every state variable from U(-RESET_BOUND, RESET_BOUND)
RESET_BOUND = 0.05


class CartPole(Environment):
    """Gymnasium ``CartPole-v1``: push the cart left (0) or right (1) to balance the pole."""

    step_uses_key = False
    obs_from_state = True
    has_observation_reward = True

    @property
    def name(self) -> str:
        return "CartPole-v1"

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def default_params(self) -> CartPoleParams:
        return CartPoleParams()

    def step_env(self, key, state: CartPoleState, action, params: CartPoleParams):
        """One Euler step of the cart-pole ODE (Gymnasium ``CartPoleEnv.step``)."""
        del key  # deterministic dynamics
        total_mass = params.masspole + params.masscart
        polemass_length = params.masspole * params.length
        force = jnp.where(action == 1, params.force_mag, -params.force_mag)
        costheta = jnp.cos(state.theta)
        sintheta = jnp.sin(state.theta)
        temp = (force + polemass_length * state.theta_dot**2 * sintheta) / total_mass
        thetaacc = (params.gravity * sintheta - costheta * temp) / (
            params.length * (4.0 / 3.0 - params.masspole * costheta**2 / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        state = CartPoleState(
            x=state.x + params.tau * state.x_dot,
            x_dot=state.x_dot + params.tau * xacc,
            theta=state.theta + params.tau * state.theta_dot,
            theta_dot=state.theta_dot + params.tau * thetaacc,
            time=state.time + 1,
        )
        terminated = self.is_terminated(state, params)
        reward = jnp.ones((), jnp.float32)
        return self.get_obs(state), state, reward, terminated, {}

    def observation_reward(self, obs, action, next_obs, params: CartPoleParams) -> jax.Array:
        """1 on every step, the terminating one included (as Gymnasium)."""
        del obs, action, next_obs, params
        return jnp.ones((), jnp.float32)

    def reset_env(self, key, params: CartPoleParams):
        """All four state variables ~ U(-0.05, 0.05), as Gymnasium's reset."""
        del params
        init = reset_uniform(key, (4,), -RESET_BOUND, RESET_BOUND)
        state = CartPoleState(
            x=init[0],
            x_dot=init[1],
            theta=init[2],
            theta_dot=init[3],
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state), state

    def get_obs(self, state: CartPoleState, params=None, key=None) -> jax.Array:
        """``[x, x_dot, theta, theta_dot]`` float32."""
        return jnp.stack([state.x, state.x_dot, state.theta, state.theta_dot]).astype(
            jnp.float32
        )

    def is_terminated(self, state: CartPoleState, params: CartPoleParams) -> jax.Array:
        """Cart beyond ``x_threshold`` or pole beyond ``theta_threshold_radians``."""
        return (
            (state.x < -params.x_threshold)
            | (state.x > params.x_threshold)
            | (state.theta < -params.theta_threshold_radians)
            | (state.theta > params.theta_threshold_radians)
        )

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: CartPoleParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        finite = jnp.finfo(jnp.float32).max
        high = jnp.array(
            [params.x_threshold * 2, finite, params.theta_threshold_radians * 2, finite],
            jnp.float32,
        )
        return spaces.Box(-high, high, (4,), jnp.float32)

    def state_space(self, params: CartPoleParams | None = None) -> spaces.Dict:
        params = self.default_params if params is None else params
        finite = jnp.finfo(jnp.float32).max
        return spaces.Dict(
            {
                "x": spaces.Box(-2 * params.x_threshold, 2 * params.x_threshold, (), jnp.float32),
                "x_dot": spaces.Box(-finite, finite, (), jnp.float32),
                "theta": spaces.Box(
                    -2 * params.theta_threshold_radians,
                    2 * params.theta_threshold_radians,
                    (),
                    jnp.float32,
                ),
                "theta_dot": spaces.Box(-finite, finite, (), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode),
            }
        )

    def validate_params(self, params: CartPoleParams) -> None:
        """Raise ``ValueError`` naming the first invalid constant.

        Every constant must be positive except ``force_mag``, which must be
        non-zero and finite: a negative ``force_mag`` reverses the actuator
        (action 1 pushes left), the task variation of the ``cartpole`` family's
        ``random_push_direction`` option.
        """
        require_positive_params(
            self.name,
            params,
            (
                "gravity",
                "masscart",
                "masspole",
                "length",
                "tau",
                "theta_threshold_radians",
                "x_threshold",
                "max_steps_in_episode",
            ),
        )
        force = np.asarray(params.force_mag)
        if not np.all(np.isfinite(force) & (force != 0)):
            raise ValueError(
                f"{self.name}: params.force_mag must be non-zero and finite, got {force!r}")
