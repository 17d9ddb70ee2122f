"""Dynamics that change within an episode: a wrapper switching between task params.

Meta-RL usually holds the task fixed for a whole trial. Model-based meta-RL
for changing environments (GrBAL/ReBAL, Nagabandi et al. 2019,
arXiv:1803.11347) instead adapts online, from the last few transitions,
because the dynamics may change *during* an episode: a motor breaks, a load is
picked up. :class:`ChangingDynamics` makes any of our environments such a
task. Its params are ``num_pieces`` params of the inner env (``pieces``, a
leading ``[num_pieces]`` axis on every leaf); at every step the *piece in
force* is one of them, chosen by

* ``change_every=n``: a schedule, piece ``min(t // n, num_pieces - 1)`` on the
  step from in-episode time ``t`` (steps ``0 .. n - 1`` use piece 0), or
* ``change_prob=p``: a Markov chain, after every step the piece advances to
  ``(piece + 1) % num_pieces`` with probability ``p``.

Every episode starts in piece 0. The piece is hidden from the agent (the
observation is the inner env's) and reported in ``info["piece"]`` for
analysis: inferring it from transitions is the learner's job.

Task families build these params with their ``change_every``/``change_prob``
options (see :func:`metarl_jax.tasks.changing_dynamics_family`).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl_jax.envs.environment import (
    Environment,
    require_positive,
    require_positive_params,
    reset_uniform,
    split_key,
)


@struct.dataclass
class ChangingParams:
    """``pieces``: inner params, every leaf with a leading ``[num_pieces]`` axis."""

    pieces: object
    max_steps_in_episode: int = 1


@struct.dataclass
class ChangingState:
    """Inner state, the piece in force for the next step (int32), in-episode time."""

    inner: object
    piece: jax.Array
    time: jax.Array


def check_change_options(change_every, change_prob) -> None:
    """Raise ``ValueError`` unless exactly one valid change option is given."""
    if (change_every is None) == (change_prob is None):
        raise ValueError(
            "give exactly one of change_every (steps per piece) or change_prob "
            f"(per-step probability of a change), got change_every={change_every!r}, "
            f"change_prob={change_prob!r}"
        )
    if change_every is not None:
        require_positive("change_every", change_every, integer=True)
        return
    if isinstance(change_prob, bool) or not isinstance(change_prob, numbers.Real):
        raise ValueError(f"change_prob must be a number in (0, 1], got {change_prob!r}")
    if not 0.0 < float(change_prob) <= 1.0:
        raise ValueError(f"change_prob must lie in (0, 1], got {change_prob!r}")


def piece_of(params, piece) -> object:
    """The inner params of piece ``piece`` (``x[piece]`` on every leaf)."""
    return jax.tree.map(lambda x: x[piece], params.pieces)


class ChangingDynamics(Environment):
    """``env`` whose params switch between ``num_pieces`` pieces within an episode.

    Args:
      env: the inner environment (one of ours, with gymnax signatures).
      num_pieces: number of params pieces (>= 1).
      change_every: steps per piece (piece ``min(t // change_every,
        num_pieces - 1)`` at time ``t``), or
      change_prob: probability in ``(0, 1]`` of advancing to the next piece
        (cyclically) after each step. Exactly one of the two.

    Params are :class:`ChangingParams`, state is :class:`ChangingState`; obs,
    actions and spaces are the inner env's (spaces with piece 0's params).
    """

    def __init__(self, env: Environment, num_pieces: int, change_every: int | None = None,
                 change_prob: float | None = None):
        super().__init__()
        if not isinstance(env, Environment):
            raise TypeError(f"env must be a metarl_jax Environment, got {type(env).__name__}")
        require_positive("num_pieces", num_pieces, integer=True)
        check_change_options(change_every, change_prob)
        self.env = env
        self.num_pieces = int(num_pieces)
        self.change_every = None if change_every is None else int(change_every)
        self.change_prob = None if change_prob is None else float(change_prob)
        # a random change needs the step key; the base class then splits it
        self.step_uses_key = env.step_uses_key or self.change_prob is not None
        self.obs_from_state = env.obs_from_state

    # -- identity and spaces -------------------------------------------------------

    @property
    def name(self) -> str:
        return f"Changing{self.env.name}"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    @property
    def has_observation_reward(self) -> bool:
        return self.env.has_observation_reward

    @property
    def default_params(self) -> ChangingParams:
        """Every piece the inner env's default params (so nothing changes)."""
        inner = self.env.default_params
        pieces = jax.tree.map(
            lambda x: jnp.broadcast_to(jnp.asarray(x), (self.num_pieces,) + jnp.shape(x)), inner)
        return ChangingParams(pieces=pieces, max_steps_in_episode=inner.max_steps_in_episode)

    def _first_piece(self, params):
        return None if params is None else piece_of(params, 0)

    def action_space(self, params: ChangingParams | None = None):
        return self.env.action_space(self._first_piece(params))

    def observation_space(self, params: ChangingParams | None = None):
        return self.env.observation_space(self._first_piece(params))

    # -- the piece in force ----------------------------------------------------------

    def _piece_in_force(self, state: ChangingState) -> jax.Array:
        """Piece of the step from ``state``: by the schedule, or the chain's current one."""
        if self.change_every is not None:
            return jnp.minimum(state.inner.time // self.change_every,
                               self.num_pieces - 1).astype(jnp.int32)
        return state.piece

    def current_params(self, state: ChangingState, params: ChangingParams):
        """The inner params in force for the next step from ``state``."""
        return piece_of(params, self._piece_in_force(state))

    def _next_piece(self, key, piece, inner_state) -> jax.Array:
        """The piece in force after the step (``inner_state`` is the stepped one)."""
        if self.change_every is not None:
            return jnp.minimum(inner_state.time // self.change_every,
                               self.num_pieces - 1).astype(jnp.int32)
        # one fused hash per step (environment.reset_uniform), not a Threefry loop
        change = reset_uniform(key, ()) < self.change_prob
        return jnp.where(change, (piece + 1) % self.num_pieces, piece).astype(jnp.int32)

    # -- dynamics ----------------------------------------------------------------------

    def step_env(self, key, state: ChangingState, action, params: ChangingParams):
        """The inner step with the piece in force; then maybe change piece."""
        if self.change_prob is not None and self.env.step_uses_key:
            key_inner, key_change = split_key(key)
        else:  # at most one of the two consumers draws from the key
            key_inner = key_change = key
        piece = self._piece_in_force(state)
        obs, inner, reward, terminated, info = self.env.step_env(
            key_inner, state.inner, action, piece_of(params, piece))
        state = ChangingState(inner=inner, piece=self._next_piece(key_change, piece, inner),
                              time=inner.time)
        return obs, state, reward, terminated, {**info, "piece": piece}

    def reset_env(self, key, params: ChangingParams):
        """The inner reset with piece 0's params; every episode starts in piece 0."""
        obs, inner = self.env.reset_env(key, piece_of(params, 0))
        return obs, ChangingState(inner=inner, piece=jnp.zeros((), jnp.int32), time=inner.time)

    def get_obs(self, state: ChangingState, params: ChangingParams | None = None, key=None):
        params = self.default_params if params is None else params
        return self.env.get_obs(state.inner, self.current_params(state, params))

    def is_terminated(self, state: ChangingState, params: ChangingParams) -> jax.Array:
        return self.env.is_terminated(state.inner, self.current_params(state, params))

    def observation_reward(self, obs, action, next_obs, params: ChangingParams) -> jax.Array:
        """The inner env's reward of observations, with piece 0's params.

        The piece is not observed, so the reward must not depend on it: in
        the shipped families it never does (the changing fields are physical
        constants and velocity scales; goals and reward constants are shared
        by all pieces), and it then equals the wrapper's step reward.
        """
        if not self.has_observation_reward:
            return super().observation_reward(obs, action, next_obs, params)  # raises
        return self.env.observation_reward(obs, action, next_obs, piece_of(params, 0))

    # -- checks --------------------------------------------------------------------------

    def validate_params(self, params: ChangingParams) -> None:
        """Raise ``ValueError`` on a wrong piece axis, a bad piece or a horizon mismatch.

        Accepts one task or a batch with leading task axes (those of
        ``params.max_steps_in_episode``); the piece axis follows them.
        """
        require_positive_params(self.name, params, ("max_steps_in_episode",))
        horizon = np.asarray(params.max_steps_in_episode)
        axis = horizon.ndim
        for leaf in jax.tree.leaves(params.pieces):
            shape = np.shape(leaf)
            if len(shape) <= axis or shape[axis] != self.num_pieces:
                raise ValueError(
                    f"{self.name}: params.pieces leaves need a piece axis of size "
                    f"{self.num_pieces} after the task axes {horizon.shape}, got shape {shape}")
        for k in range(self.num_pieces):
            piece = jax.tree.map(lambda x, k=k: np.take(np.asarray(x), k, axis=axis),
                                 params.pieces)
            self.env.validate_params(piece)
            if not np.all(np.asarray(piece.max_steps_in_episode) == horizon):
                raise ValueError(
                    f"{self.name}: piece {k}'s max_steps_in_episode differs from "
                    f"params.max_steps_in_episode {horizon}")
