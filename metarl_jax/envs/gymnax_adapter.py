"""Any gymnax environment seen as a metarl_jax environment.

:class:`GymnaxEnvironment` reuses the gymnax dynamics (``step_env``,
``reset_env``) unchanged and adds this package's mechanics on top: action
shape/dtype checks, ``step_no_reset`` for fixed-horizon rollouts, and the
same six-value ``step`` (gymnax 1.0.1 also returns ``obs, state, reward,
terminated, truncated, info``). Our own environments are used as they are.
"""

from __future__ import annotations

from typing import Any

import gymnax
import jax
from gymnax.environments import environment as gymnax_environment

from metarl_jax.envs.environment import Environment


class GymnaxEnvironment(Environment):
    """A gymnax environment seen through the metarl_jax base class.

    Every gymnax env draws its step key (e.g. Acrobot's torque noise), so the
    base class splits the key between the step and the auto-reset.
    """

    step_uses_key = True

    def __init__(self, gymnax_env: gymnax_environment.Environment):
        super().__init__()
        self.gymnax_env = gymnax_env

    @property
    def name(self) -> str:
        return self.gymnax_env.name

    @property
    def num_actions(self) -> int:
        return self.gymnax_env.num_actions

    @property
    def default_params(self) -> Any:
        return self.gymnax_env.default_params

    def step_env(self, key, state, action, params):
        return self.gymnax_env.step_env(key, state, action, params)

    def reset_env(self, key, params):
        return self.gymnax_env.reset_env(key, params)

    def get_obs(self, state, params=None, key=None):
        return self.gymnax_env.get_obs(state, params=params, key=key)

    def is_terminated(self, state, params):
        return self.gymnax_env.is_terminated(state, params)

    def is_truncated(self, state, params):
        return self.gymnax_env.is_truncated(state, params)

    def action_space(self, params=None):
        return self.gymnax_env.action_space(self.default_params if params is None else params)

    def observation_space(self, params=None):
        return self.gymnax_env.observation_space(self.default_params if params is None else params)

    def state_space(self, params=None):
        return self.gymnax_env.state_space(self.default_params if params is None else params)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` unless ``params`` has the fields of the gymnax params."""
        expected = jax.tree.structure(self.default_params)
        got = jax.tree.structure(params)
        if got != expected:
            raise ValueError(
                f"{self.name}: params have structure {got}, expected the "
                f"gymnax params structure {expected}"
            )


def as_environment(env_or_id) -> Environment:
    """The metarl_jax environment for a gymnax id, gymnax env or metarl_jax env."""
    if isinstance(env_or_id, str):
        if env_or_id not in gymnax.registered_envs:
            raise ValueError(
                f"unknown gymnax environment id {env_or_id!r}; valid ids: "
                f"{', '.join(gymnax.registered_envs)}"
            )
        env_or_id, _ = gymnax.make(env_or_id)
    if isinstance(env_or_id, Environment):
        return env_or_id
    if isinstance(env_or_id, gymnax_environment.Environment):
        return GymnaxEnvironment(env_or_id)
    raise TypeError(
        "env_or_id must be a gymnax environment id (str) or a gymnax/metarl_jax "
        f"Environment instance, got {type(env_or_id).__name__}"
    )
