"""Multi-armed bandits whose arms are the task (RL², Duan et al. 2016, Sec. 4.1).

A bandit *instance* is its vector of arm means, held in ``params``: it is drawn
once per trial by the task family and never changes on reset (gymnax's own
bandits redraw their arms at every reset, which would make a trial of several
episodes a sequence of different tasks). With the default
``max_steps_in_episode = 1`` each pull is an episode of length one, RL²'s
convention; a trial of ``n`` pulls is then ``n`` episodes of the same params.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import EnvState, Environment, require_positive


@struct.dataclass
class BernoulliBanditParams:
    """One Bernoulli bandit: ``arm_means: [k]`` success probabilities in [0, 1]."""

    arm_means: jax.Array
    max_steps_in_episode: int = 1


@struct.dataclass
class GaussianBanditParams:
    """One Gaussian bandit: reward of arm ``a`` is ``N(arm_means[a], arm_stds[a]^2)``."""

    arm_means: jax.Array  # [k]
    arm_stds: jax.Array  # [k]
    max_steps_in_episode: int = 1


class _Bandit(Environment):
    """Shared mechanics of the k-armed bandits: a constant observation, Discrete(k)."""

    step_uses_key = True

    def __init__(self, num_arms: int):
        super().__init__()
        require_positive("num_arms", num_arms, integer=True, minimum=2)
        self.num_arms = int(num_arms)

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def draw_reward(self, key, action, params) -> jax.Array:
        """Float32 reward of pulling arm ``action`` (scalar)."""
        raise NotImplementedError

    def step_env(self, key, state, action, params):
        """Pull arm ``action``: the reward depends only on ``params``, never on the state.

        ``info["expected_reward"]`` is the pulled arm's mean, ``E[reward]``.
        """
        reward = self.draw_reward(key, action, params)
        state = EnvState(time=state.time + 1)
        info = {"expected_reward": jnp.asarray(params.arm_means[action], jnp.float32)}
        return self.get_obs(state, params), state, reward, jnp.array(False), info

    def reset_env(self, key, params):
        """Start an episode; the arms (``params``) are left untouched."""
        state = EnvState(time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        """A constant ``[1]`` float32 dummy: everything informative is in the rewards."""
        return jnp.zeros((1,), jnp.float32)

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.array(False)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, 0.0, (1,), jnp.float32)

    def _check_arm_vector(self, field: str, value) -> np.ndarray:
        value = np.asarray(value)
        if value.ndim < 1 or value.shape[-1] != self.num_arms:
            raise ValueError(
                f"{self.name}: {field} must have shape [..., {self.num_arms}] "
                f"(one entry per arm), got {value.shape}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{self.name}: {field} must be finite")
        return value

    def _check_horizon(self, params) -> None:
        if not np.all(np.asarray(params.max_steps_in_episode) >= 1):
            raise ValueError(f"{self.name}: max_steps_in_episode must be >= 1")


class BernoulliBandit(_Bandit):
    """k-armed Bernoulli bandit (RL² Sec. 4.1): arm ``a`` pays 1 w.p. ``arm_means[a]``."""

    @property
    def default_params(self) -> BernoulliBanditParams:
        return BernoulliBanditParams(arm_means=jnp.full((self.num_arms,), 0.5, jnp.float32))

    def draw_reward(self, key, action, params) -> jax.Array:
        return jax.random.bernoulli(key, params.arm_means[action]).astype(jnp.float32)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field unless arm means lie in [0, 1].

        Accepts one task or a batch with leading task axes.
        """
        means = self._check_arm_vector("arm_means", params.arm_means)
        if np.any(means < 0.0) or np.any(means > 1.0):
            raise ValueError(f"{self.name}: arm_means must lie in [0, 1], got {means}")
        self._check_horizon(params)


class GaussianBandit(_Bandit):
    """k-armed Gaussian bandit: arm ``a`` pays ``N(arm_means[a], arm_stds[a]^2)``."""

    @property
    def default_params(self) -> GaussianBanditParams:
        return GaussianBanditParams(
            arm_means=jnp.zeros((self.num_arms,), jnp.float32),
            arm_stds=jnp.ones((self.num_arms,), jnp.float32),
        )

    def draw_reward(self, key, action, params) -> jax.Array:
        noise = jax.random.normal(key, (), jnp.float32)
        return params.arm_means[action] + params.arm_stds[action] * noise

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field on wrong shapes or negative ``arm_stds``."""
        self._check_arm_vector("arm_means", params.arm_means)
        stds = self._check_arm_vector("arm_stds", params.arm_stds)
        if np.any(stds < 0.0):
            raise ValueError(f"{self.name}: arm_stds must be >= 0, got {stds}")
        self._check_horizon(params)
