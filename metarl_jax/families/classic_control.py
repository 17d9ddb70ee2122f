"""Classic-control task families: Gymnasium's physics with varied constants.

Each task is one set of physical constants; everything else is the
Gymnasium environment unchanged. Every listed parameter is drawn
independently and uniformly from its range. ``"train"`` and ``"test"`` share
the ranges (separate key streams); ``"ood"`` draws every parameter from a
range disjoint from the training one (touching at most at an endpoint), so an
out-of-distribution task differs from every training task in all varied
parameters.

=========================  ====================  ==================  ===================
family                     parameter (default)   train / test        ood
=========================  ====================  ==================  ===================
``cartpole``               length (0.5)          [0.25, 1.0]         [1.0, 2.0]
                           masspole (0.1)        [0.05, 0.5]         [0.5, 1.0]
                           masscart (1.0)        [0.5, 2.0]          [2.0, 3.0]
                           force_mag (10.0)      [5.0, 15.0]         [15.0, 20.0]
``mountaincar``            force (0.001)         [0.0008, 0.0015]    [0.0015, 0.002]
                           gravity (0.0025)      [0.002, 0.003]      [0.003, 0.0035]
``mountaincar-continuous`` power (0.0015)        [0.001, 0.002]      [0.002, 0.0025]
                           gravity (0.0025)      [0.002, 0.003]      [0.003, 0.0035]
``pendulum``               m (1.0)               [0.5, 1.5]          [1.5, 2.0]
                           l (1.0)               [0.5, 1.5]          [1.5, 2.0]
=========================  ====================  ==================  ===================

(CartPole's ``length`` is half the pole's length, as in Gymnasium.) The
training ranges bracket each default; the ood ranges lie above them.

Every factory takes ``max_steps_in_episode`` (default: Gymnasium's time
limit) and ``ranges`` (replacing the table's ranges, same format); ranges are
checked with the environment's ``validate_params`` at construction, so a
range that would produce an invalid task raises ``ValueError`` naming it.

Changing dynamics: every family here also takes ``change_every``/``change_prob``/``num_pieces``
(:func:`metarl_jax.tasks.changing_dynamics_family`). A task is then
``num_pieces`` sets of constants switched within the episode: piece 0 is a
task of the split, every later piece redraws all varied constants from the
split's ranges (a cartpole with ``random_push_direction`` redraws its push
direction too), so a pendulum's mass and length jump mid-episode.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping

import jax
import jax.numpy as jnp

from metarl_jax.envs.cartpole import CartPole
from metarl_jax.envs.environment import Environment, require_positive
from metarl_jax.envs.mountain_car import MountainCar, MountainCarContinuous
from metarl_jax.envs.pendulum import Pendulum
from metarl_jax.tasks import (
    TaskFamily,
    changing_dynamics_family,
    register,
    uniform_params_sampler,
)

Ranges = Mapping[str, Mapping[str, tuple[float, float]]]

CARTPOLE_RANGES: Ranges = {
    "train": {
        "length": (0.25, 1.0),
        "masspole": (0.05, 0.5),
        "masscart": (0.5, 2.0),
        "force_mag": (5.0, 15.0),
    },
    "ood": {
        "length": (1.0, 2.0),
        "masspole": (0.5, 1.0),
        "masscart": (2.0, 3.0),
        "force_mag": (15.0, 20.0),
    },
}

MOUNTAINCAR_RANGES: Ranges = {
    "train": {"force": (0.0008, 0.0015), "gravity": (0.002, 0.003)},
    "ood": {"force": (0.0015, 0.002), "gravity": (0.003, 0.0035)},
}

MOUNTAINCAR_CONTINUOUS_RANGES: Ranges = {
    "train": {"power": (0.001, 0.002), "gravity": (0.002, 0.003)},
    "ood": {"power": (0.002, 0.0025), "gravity": (0.003, 0.0035)},
}

PENDULUM_RANGES: Ranges = {
    "train": {"m": (0.5, 1.5), "l": (0.5, 1.5)},
    "ood": {"m": (1.5, 2.0), "l": (1.5, 2.0)},
}


def physics_family(
    name: str,
    env: Environment,
    ranges: Ranges,
    max_steps_in_episode: int,
    description: str,
) -> TaskFamily:
    """A :class:`TaskFamily` drawing each field of ``ranges`` uniformly.

    Validates ``max_steps_in_episode`` and ``ranges``: known fields,
    ``low <= high``, and every corner of each split's box of ranges must pass
    ``env.validate_params``.
    """
    require_positive("max_steps_in_episode", max_steps_in_episode, integer=True)
    if "train" not in ranges:
        raise ValueError(f"{name}: ranges need a 'train' split, got {sorted(ranges)}")
    defaults = env.default_params.replace(max_steps_in_episode=int(max_steps_in_episode))
    sampler = uniform_params_sampler(defaults, ranges)
    for split, fields in ranges.items():
        names = sorted(fields)
        # the constraints are monotone in each field: checking the corners of
        # the box of ranges checks every task the split can draw
        for corner in itertools.product(*(fields[field] for field in names)):
            try:
                env.validate_params(defaults.replace(**dict(zip(names, corner))))
            except ValueError as error:
                raise ValueError(
                    f"{name}: {split!r} ranges give invalid tasks at "
                    f"{dict(zip(names, corner))}: {error}"
                ) from None
    return TaskFamily(
        name=name,
        env=env,
        sample_fn=sampler,
        ranges={split: dict(fields) for split, fields in ranges.items()},
        description=description,
    )


def redraw_varied(family: TaskFamily, ranges: Ranges):
    """``perturb(key, params, split)``: ``params`` with the varied fields of a fresh task.

    The fresh task is ``family.sample_fn(key, split)``, so any rule of the
    family's sampler (cartpole's random push direction) applies to it too.
    """

    def perturb(key, params, split):
        fresh = family.sample_fn(key, split)
        fields = ranges.get(split, ranges["train"])
        return params.replace(**{field: getattr(fresh, field) for field in fields})

    return perturb


def with_changes(family, ranges, max_steps_in_episode, change_every, change_prob,
                 num_pieces) -> TaskFamily:
    """``family`` unchanged, or with changing dynamics if a change option is given."""
    describe = {split: "later pieces redraw " + ", ".join(sorted(fields)) + " from these ranges"
                for split, fields in ranges.items()}
    changing = changing_dynamics_family(
        family, redraw_varied(family, ranges), max_steps_in_episode,
        change_every, change_prob, num_pieces, describe)
    return family if changing is None else changing


@register("cartpole")
def cartpole(
    max_steps_in_episode: int = 500,
    ranges: Ranges | None = None,
    random_push_direction: bool = False,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
) -> TaskFamily:
    """CartPole-v1 with varied pole half-length, pole mass, cart mass and push force.

    With ``random_push_direction=True`` each task also reverses the actuator
    with probability 1/2 (``force_mag`` negated: action 1 pushes left). The
    physical variations alone leave one robust policy near-optimal on every
    task; a hidden push direction cannot be handled without adapting, which is
    what MAML's inner steps and RL²'s hidden state are for.

    ``change_every``/``change_prob``/``num_pieces``: dynamics that change
    within an episode (module docstring).
    """
    if not isinstance(random_push_direction, bool):
        raise ValueError(
            f"random_push_direction must be a bool, got {random_push_direction!r}")
    ranges = CARTPOLE_RANGES if ranges is None else ranges
    family = physics_family(
        "cartpole",
        CartPole(),
        ranges,
        max_steps_in_episode,
        "CartPole-v1, pole length/mass, cart mass, force ~ U (ood: above train)",
    )
    if random_push_direction:
        family = _random_push_direction(family)
    return with_changes(family, ranges, max_steps_in_episode, change_every, change_prob,
                        num_pieces)


def _random_push_direction(family: TaskFamily) -> TaskFamily:
    """``family`` with ``force_mag`` negated with probability 1/2 per task."""
    physics_sample = family.sample_fn

    def sample_fn(key, split):
        physics_key, direction_key = jax.random.split(key)
        params = physics_sample(physics_key, split)
        sign = jnp.where(jax.random.bernoulli(direction_key), -1.0, 1.0).astype(jnp.float32)
        return params.replace(force_mag=sign * params.force_mag)

    return dataclasses.replace(
        family, sample_fn=sample_fn,
        description=family.description + "; push direction reversed with p=1/2")


@register("mountaincar")
def mountaincar(
    max_steps_in_episode: int = 200,
    ranges: Ranges | None = None,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
) -> TaskFamily:
    """MountainCar-v0 with varied engine force and gravity.

    ``change_every``/``change_prob``/``num_pieces``: dynamics that change
    within an episode (module docstring).
    """
    ranges = MOUNTAINCAR_RANGES if ranges is None else ranges
    family = physics_family(
        "mountaincar",
        MountainCar(),
        ranges,
        max_steps_in_episode,
        "MountainCar-v0, force/gravity ~ U (ood: above train)",
    )
    return with_changes(family, ranges, max_steps_in_episode, change_every, change_prob,
                        num_pieces)


@register("mountaincar-continuous")
def mountaincar_continuous(
    max_steps_in_episode: int = 999,
    ranges: Ranges | None = None,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
) -> TaskFamily:
    """MountainCarContinuous-v0 with varied engine power and gravity.

    ``change_every``/``change_prob``/``num_pieces``: dynamics that change
    within an episode (module docstring).
    """
    ranges = MOUNTAINCAR_CONTINUOUS_RANGES if ranges is None else ranges
    family = physics_family(
        "mountaincar-continuous",
        MountainCarContinuous(),
        ranges,
        max_steps_in_episode,
        "MountainCarContinuous-v0, power/gravity ~ U (ood: above train)",
    )
    return with_changes(family, ranges, max_steps_in_episode, change_every, change_prob,
                        num_pieces)


@register("pendulum")
def pendulum(
    max_steps_in_episode: int = 200,
    ranges: Ranges | None = None,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
) -> TaskFamily:
    """Pendulum-v1 with varied pendulum mass and length.

    ``change_every``/``change_prob``/``num_pieces``: dynamics that change
    within an episode (module docstring).
    """
    ranges = PENDULUM_RANGES if ranges is None else ranges
    family = physics_family(
        "pendulum",
        Pendulum(),
        ranges,
        max_steps_in_episode,
        "Pendulum-v1, m/l ~ U[0.5, 1.5] (ood: U[1.5, 2.0])",
    )
    return with_changes(family, ranges, max_steps_in_episode, change_every, change_prob,
                        num_pieces)
