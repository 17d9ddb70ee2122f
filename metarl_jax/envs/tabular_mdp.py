"""Random tabular MDPs of RL² (Duan et al. 2016, arXiv:1611.02779, Sec. 4.2).

``S`` states and ``A`` actions (static sizes); the task is the transition table
``transitions[s, a, s']`` and the mean rewards ``mean_rewards[s, a]``, held in
``params``. Every episode starts in state 0 and lasts ``episode_length`` steps;
the reward of taking ``a`` in ``s`` is ``mean_rewards[s, a] + reward_noise_std *
N(0, 1)``. The observation is the one-hot encoding of the current state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment, require_positive

ROW_SUM_TOLERANCE = 1e-4  # float32 rows of a Dirichlet draw sum to 1 within ~1e-6


@struct.dataclass
class TabularMDPState:
    """Current state index ``state`` (int32) and step count ``time``."""

    state: jax.Array
    time: jax.Array


@struct.dataclass
class TabularMDPParams:
    """One MDP: ``transitions: [S, A, S]`` (rows sum to 1), ``mean_rewards: [S, A]``."""

    transitions: jax.Array
    mean_rewards: jax.Array
    reward_noise_std: float = 1.0
    max_steps_in_episode: int = 10


class TabularMDP(Environment):
    """RL²'s random MDP with ``num_states`` states and ``num_actions`` actions."""

    step_uses_key = True

    def __init__(self, num_states: int, num_actions: int, episode_length: int):
        super().__init__()
        require_positive("num_states", num_states, integer=True)
        require_positive("num_actions", num_actions, integer=True)
        require_positive("episode_length", episode_length, integer=True)
        self.num_states = int(num_states)
        self._num_actions = int(num_actions)
        self.episode_length = int(episode_length)

    @property
    def num_actions(self) -> int:
        return self._num_actions

    @property
    def default_params(self) -> TabularMDPParams:
        """Uniform transitions and zero mean rewards (a placeholder task)."""
        s, a = self.num_states, self.num_actions
        return TabularMDPParams(
            transitions=jnp.full((s, a, s), 1.0 / s, jnp.float32),
            mean_rewards=jnp.zeros((s, a), jnp.float32),
            max_steps_in_episode=self.episode_length,
        )

    def step_env(self, key, state, action, params):
        """Reward ``mean_rewards[s, a] + std * N(0, 1)``; next state ``~ transitions[s, a]``.

        ``info["expected_reward"]`` is ``mean_rewards[s, a]``, ``E[reward]``.
        """
        key_next, key_noise = jax.random.split(key)
        s = state.state
        next_s = jax.random.choice(
            key_next, self.num_states, p=params.transitions[s, action]
        ).astype(jnp.int32)
        noise = jax.random.normal(key_noise, (), jnp.float32)
        reward = params.mean_rewards[s, action] + params.reward_noise_std * noise
        state = TabularMDPState(state=next_s, time=state.time + 1)
        info = {"expected_reward": jnp.asarray(params.mean_rewards[s, action], jnp.float32)}
        return self.get_obs(state, params), state, reward, jnp.array(False), info

    def reset_env(self, key, params):
        """Every episode starts in state 0 (the key is unused: the start is fixed)."""
        state = TabularMDPState(
            state=jnp.zeros((), jnp.int32), time=jnp.zeros((), jnp.int32)
        )
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        """One-hot ``[S]`` float32 encoding of the current state."""
        return jax.nn.one_hot(state.state, self.num_states, dtype=jnp.float32)

    def is_terminated(self, state, params) -> jax.Array:
        """Episodes only end by truncation after ``episode_length`` steps."""
        return jnp.array(False)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_states,), jnp.float32)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field on bad shapes, rows or noise.

        Accepts one task or a batch with leading task axes.
        """
        s, a = self.num_states, self.num_actions
        transitions = np.asarray(params.transitions)
        if transitions.shape[-3:] != (s, a, s):
            raise ValueError(
                f"{self.name}: transitions must have shape [..., {s}, {a}, {s}], "
                f"got {transitions.shape}"
            )
        if not np.all(np.isfinite(transitions)) or np.any(transitions < 0.0):
            raise ValueError(f"{self.name}: transitions must be finite and >= 0")
        row_sums = transitions.sum(axis=-1)
        if np.any(np.abs(row_sums - 1.0) > ROW_SUM_TOLERANCE):
            worst = float(np.max(np.abs(row_sums - 1.0)))
            raise ValueError(
                f"{self.name}: every transitions[s, a] row must sum to 1 "
                f"(largest deviation {worst:.3g})"
            )
        mean_rewards = np.asarray(params.mean_rewards)
        if mean_rewards.shape[-2:] != (s, a):
            raise ValueError(
                f"{self.name}: mean_rewards must have shape [..., {s}, {a}], "
                f"got {mean_rewards.shape}"
            )
        if not np.all(np.isfinite(mean_rewards)):
            raise ValueError(f"{self.name}: mean_rewards must be finite")
        if np.any(np.asarray(params.reward_noise_std) < 0.0):
            raise ValueError(f"{self.name}: reward_noise_std must be >= 0")
        if not np.all(np.asarray(params.max_steps_in_episode) >= 1):
            raise ValueError(f"{self.name}: max_steps_in_episode must be >= 1")
