"""Any gymnax environment plus a parameter sampler as a metarl_jax task family.

``from_gymnax("Acrobot-v1", sampler)`` wraps the gymnax env in
:class:`GymnaxEnvironment`, which reuses the gymnax dynamics (``step_env``,
``reset_env``) unchanged and adds this package's mechanics on top: action
shape/dtype checks, ``step_no_reset`` for fixed-horizon rollouts, and the
same six-value ``step`` (gymnax 1.0.1 also returns ``obs, state, reward,
terminated, truncated, info``). Our own environments are used as they are.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import gymnax
import jax
from gymnax.environments import environment as gymnax_environment

from metarl_jax.envs.environment import Environment
from metarl_jax.tasks import SPLITS, TaskFamily


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


def _resolve_env(env_or_id) -> Environment:
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


def _takes_split(sample_params: Callable) -> bool:
    """Whether ``sample_params`` is ``f(key, split)`` rather than ``f(key)``.

    It takes the split if it has a parameter named ``split`` or two required
    positional parameters.
    """
    try:
        signature = inspect.signature(sample_params)
    except (TypeError, ValueError):
        raise TypeError("sample_params must be a callable with an inspectable signature") from None
    parameters = list(signature.parameters.values())
    positional = [
        p for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    if "split" in signature.parameters or len(required) >= 2:
        return True
    if len(positional) >= 1:
        return False
    raise TypeError(
        "sample_params must accept (key, split) or (key), got signature "
        f"{signature}"
    )


def from_gymnax(
    env_or_id,
    sample_params: Callable,
    name: str | None = None,
    ranges: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
) -> TaskFamily:
    """Make a :class:`~metarl_jax.tasks.TaskFamily` from any gymnax environment.

    Args:
      env_or_id: a gymnax id such as ``"Acrobot-v1"`` (``gymnax.make``), a
        gymnax environment instance, or a metarl_jax environment.
      sample_params: ``sample_params(key, split) -> params`` or
        ``sample_params(key) -> params`` for one task; params must have the
        pytree structure of the env's ``default_params``.
      name: family name (default: the env's name).
      ranges: description of the varied fields per split, as in
        ``TaskFamily.ranges``; an ``"ood"`` entry enables the ``"ood"`` split,
        which needs a sampler that takes the split.
      description: one line for listings.

    Raises:
      ValueError: unknown gymnax id (the message lists the valid ids), unknown
        split in ``ranges``, or an ``"ood"`` range with a split-blind sampler.
      TypeError: ``sample_params`` is not a sampler of the env's params.
    """
    env = _resolve_env(env_or_id)
    ranges = dict(ranges or {})
    unknown = [split for split in ranges if split not in SPLITS]
    if unknown:
        raise ValueError(f"ranges has unknown split(s) {unknown}; expected keys among {SPLITS}")
    if _takes_split(sample_params):
        sample_fn = sample_params
    else:
        if "ood" in ranges:
            raise ValueError(
                "ranges declares an 'ood' split but sample_params(key) takes no "
                "split argument; use sample_params(key, split)"
            )

        def sample_fn(key, split):
            del split  # train and test differ by their key streams only
            return sample_params(key)

    family = TaskFamily(
        name=name or env.name,
        env=env,
        sample_fn=sample_fn,
        ranges=ranges,
        description=description,
    )
    expected = jax.tree.structure(env.default_params)
    for split in family.splits:
        sampled = jax.eval_shape(
            lambda key, split=split: family.sample_params(key, split), jax.random.PRNGKey(0)
        )
        if jax.tree.structure(sampled) != expected:
            raise TypeError(
                f"sample_params({split!r}) returned a pytree of structure "
                f"{jax.tree.structure(sampled)}, expected the structure of "
                f"{env.name}'s default_params {expected}"
            )
    return family
