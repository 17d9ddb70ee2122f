"""Base class for metarl_jax environments.

Every environment is a pure function pair with gymnax 1.0 signatures::

    reset(key, params)                -> (obs, state)
    step(key, state, action, params)  -> (obs, state, reward, terminated, truncated, info)

Subclasses write only their dynamics (``step_env``, ``reset_env``, ``get_obs``,
``is_terminated``); this base class owns truncation, auto-reset, action checks
and the ``info`` dictionary, so every env gets the same cheap mechanics.

Our ``Environment`` subclasses gymnax's, so our envs are accepted wherever
gymnax envs are (``isinstance`` checks, gymnax wrappers such as ``LogWrapper``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment as gymnax_environment
from gymnax.environments import spaces


@struct.dataclass
class EnvState:
    """Common state fields: ``time`` counts steps in the current episode."""

    time: jax.Array


@struct.dataclass
class EnvParams:
    """Common task parameters; ``max_steps_in_episode`` sets truncation."""

    max_steps_in_episode: int = 1


class Environment(gymnax_environment.Environment):
    """Auto-resetting, gymnax-compatible environment base class.

    Class attributes subclasses may set:

    * ``step_uses_key``: ``True`` if ``step_env`` draws random numbers. When
      ``False`` (deterministic dynamics, e.g. CartPole) the step key is handed
      whole to the reset branch instead of being split first: the key is still
      used exactly once, and one ``jax.random.split`` per step is saved, which
      is a large share of a simple env's cost on CPU.
    """

    step_uses_key: bool = False

    # -- public API -----------------------------------------------------------

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: Any,
        action: int | float | jax.Array,
        params: Any | None = None,
    ) -> tuple[Any, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """Step the environment, resetting it when the episode ends.

        On ``terminated or truncated`` the returned ``obs`` and ``state`` are
        those of a fresh episode; the pre-reset observation (needed to
        bootstrap a value on truncation) is ``info["final_observation"]``.
        """
        if params is None:
            params = self.default_params
        action = self.check_action(action, params)
        if self.step_uses_key:
            key_step, key_reset = jax.random.split(key)
        else:
            key_step = key_reset = key
        obs_st, state_st, reward, terminated, info = self.step_env(
            key_step, state, action, params
        )
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key_reset, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        obs = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), obs_re, obs_st)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_st,
        }
        return obs, state, reward, terminated, truncated, info

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any | None = None) -> tuple[Any, Any]:
        """Start a new episode of the task described by ``params``."""
        if params is None:
            params = self.default_params
        return self.reset_env(key, params)

    def step_no_reset(self, key, state, action, params=None):
        """One transition without auto-reset (for fixed-horizon rollouts).

        Returns the same six values as :meth:`step`; after the episode ended
        the state simply keeps evolving and callers mask those steps.
        """
        if params is None:
            params = self.default_params
        action = self.check_action(action, params)
        obs, state, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = self.is_truncated(state, params)
        info = {**info, "terminated": terminated, "truncated": truncated,
                "final_observation": obs}
        return obs, state, reward, terminated, truncated, info

    # -- checks ---------------------------------------------------------------

    def check_action(self, action, params):
        """Validate an action's shape and dtype at trace time.

        A wrong shape would otherwise broadcast silently through the dynamics
        (e.g. a ``[2]`` action into CartPole gives a ``[2]``-shaped state).
        """
        space = self.action_space(params)
        action = jnp.asarray(action)
        shape = tuple(space.shape)
        if action.shape != shape:
            raise ValueError(
                f"{self.name}: action has shape {action.shape}, expected {shape} "
                f"(action space {space!r}). Batch over environments with jax.vmap."
            )
        if isinstance(space, spaces.Discrete):
            if not jnp.issubdtype(action.dtype, jnp.integer):
                raise TypeError(
                    f"{self.name}: discrete action must have an integer dtype, "
                    f"got {action.dtype}"
                )
            return action.astype(jnp.int32)
        if isinstance(space, spaces.Box):
            if not jnp.issubdtype(action.dtype, jnp.floating):
                raise TypeError(
                    f"{self.name}: continuous action must have a floating dtype, "
                    f"got {action.dtype}"
                )
            return action.astype(jnp.float32)
        return action

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field if concrete ``params`` are invalid.

        Subclasses override; called by task families on their sampling ranges
        and available to users constructing params by hand.
        """

    # -- to be provided by subclasses ------------------------------------------

    def step_env(self, key, state, action, params):
        """Dynamics: ``(obs, state, reward, terminated, info)`` without reset."""
        raise NotImplementedError

    def reset_env(self, key, params):
        """Initial ``(obs, state)`` of an episode."""
        raise NotImplementedError

    def is_truncated(self, state, params) -> jax.Array:
        return state.time >= params.max_steps_in_episode


def require_positive(name: str, value, *, integer: bool = False, minimum=None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a valid size.

    Used for constructor sizes (arms, states, horizons) and batch sizes.
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            hasattr(value, "__index__")
        ):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    low = 1 if minimum is None else minimum
    if not value >= low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
