"""Populations: many seeds and hyperparameter settings of one learner in one program.

A population is a list of :class:`Member` s (a seed and per-member values of
some config fields). :func:`make_population` turns any learner module into
one learner whose state has a leading ``members`` axis and whose ``update``
is ``vmap`` of the member's update, so every member trains inside the same
compiled step (as rejax makes hyperparameters pytree leaves, and purejaxrl
runs ``jit(vmap(train))`` over seeds).

Only fields that do not change shapes or the compiled program can differ
between members. Each algorithm module lists them in ``HYPERPARAMETERS``
(floats its ``make`` uses only arithmetically); :func:`check_sweep` says
which requested field is unknown and which is static. A swept field reaches
the member's ``make`` as a traced scalar: the config is copied with the
field set to a tracer *after* the concrete values were validated by the
config's ``__post_init__`` (so validation never sees a tracer).

Members whose state or metrics turn non-finite are frozen at their last
finite state inside the compiled step (``alive`` turns false); the runner
decides whether that stops the run or drops the member.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.core.curves import AdaptationCurves
from metarl_jax.sharding import MEMBER_AXIS
from metarl_jax.utils import check_int_at_least, tree_all_finite



@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a population: its seed and its swept config values."""

    seed: int
    values: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def label(self) -> str:
        parts = [f"seed={self.seed}"] + [f"{k}={v:g}" for k, v in self.values.items()]
        return ", ".join(parts)


def population_members(seeds: int | Sequence[int], sweep: Mapping[str, Sequence[float]] | None = None,
                       base_seed: int = 0) -> list[Member]:
    """The grid ``seeds x sweep[field_1] x sweep[field_2] ...`` as a member list.

    ``seeds`` is a count (seeds ``base_seed .. base_seed + n - 1``) or the seeds
    themselves. The seed varies slowest, so members ``0..len(grid)-1`` share
    the first seed.
    """
    if isinstance(seeds, bool):
        raise TypeError("seeds must be a count or a sequence of seeds, got a bool")
    if isinstance(seeds, int):
        check_int_at_least("seeds", seeds, 1)
        check_int_at_least("seed", base_seed, 0)
        seeds = list(range(base_seed, base_seed + seeds))
    seeds = list(seeds)
    if not seeds:
        raise ValueError("a population needs at least one seed")
    for s in seeds:
        check_int_at_least("seed", s, 0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat in {seeds}: members with one seed would be identical")
    sweep = dict(sweep or {})
    grids = []
    for name, values in sweep.items():
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"sweep over {name!r} has no values")
        if len(set(values)) != len(values):
            raise ValueError(f"sweep over {name!r} repeats a value: {values}")
        grids.append(values)
    names = list(sweep)
    return [Member(seed, dict(zip(names, combo)))
            for seed in seeds for combo in itertools.product(*grids)]


def sweepable_fields(module) -> tuple[str, ...]:
    """The config fields ``module`` lets a population give per member."""
    return tuple(getattr(module, "HYPERPARAMETERS", ()))


def check_sweep(module, config, fields: Sequence[str]) -> None:
    """Raise ``ValueError`` for a field ``config`` lacks or ``module`` keeps static."""
    known = [f.name for f in dataclasses.fields(config)]
    sweepable = sweepable_fields(module)
    name = getattr(module, "__name__", "the algorithm").rsplit(".", 1)[-1]
    for field in fields:
        if field not in known:
            raise ValueError(f"unknown config field {field!r} for {name}; its fields: "
                             f"{', '.join(known)}")
        if field not in sweepable:
            raise ValueError(
                f"{name}'s {field!r} cannot differ between members: it changes array shapes "
                f"or the compiled program, so it stays one value for the whole population. "
                f"Fields that can differ: {', '.join(sweepable) or 'none (seeds only)'}")


def with_values(config, values: Mapping[str, Any]):
    """``config`` with ``values`` (possibly tracers) set, bypassing validation.

    Validation is done on concrete values by :func:`make_population`; the
    copy exists only while one member's learner is being traced.
    """
    config = copy.copy(config)
    for name, value in values.items():
        object.__setattr__(config, name, value)
    return config


@struct.dataclass
class PopulationState:
    """Member states stacked on a leading axis, and which members are still finite."""

    members: Any
    alive: jax.Array  # bool [M]

    @property
    def step(self):
        return self.members.step


class PopulationLearner(NamedTuple):
    """A learner over a population (keys carry the member axis too).

    ``init(keys[M])``, ``update(state, keys[M]) -> (state, metrics[M])`` and
    ``evaluate(state, task_params, key, num_steps)`` (every member on the
    same tasks with the same key: common random numbers), whose curves have
    a leading member axis. ``member_state(state, i)`` is member ``i``'s state,
    which ``base`` (the unswept learner) can evaluate or act with.
    """

    init: Any
    update: Any
    evaluate: Any
    config: Any
    family: Any
    key_metric: str
    members: tuple[Member, ...]
    base: Any
    member_state: Any


def make_population(module, config, family, members: Sequence[Member], mesh=None
                    ) -> PopulationLearner:
    """Build the population learner of ``module`` (an algorithm module) for ``members``.

    With a ``mesh`` whose axis ``"members"`` exists, the member axis is
    split over it (``vmap(..., spmd_axis_name="members")``: the learners'
    own task-axis constraints gain the member axis), and the population
    size must divide over it.
    """
    members = tuple(members)
    if not members:
        raise ValueError("a population needs at least one member")
    fields = list(members[0].values)
    if any(list(m.values) != fields for m in members):
        raise ValueError("every member must set the same swept fields")
    check_sweep(module, config, fields)
    for m in members:  # the concrete values go through the config's own validation
        dataclasses.replace(config, **m.values)
    spmd_axis = None
    if mesh is not None and MEMBER_AXIS in mesh.shape:
        n = mesh.shape[MEMBER_AXIS]
        if len(members) % n:
            raise ValueError(f"a population of {len(members)} members does not divide over "
                             f"the {n} devices of the 'members' mesh axis; use a multiple of {n}")
        spmd_axis = MEMBER_AXIS
    base = module.make(config, family, mesh=mesh)
    values = {name: jnp.asarray([m.values[name] for m in members], jnp.float32)
              for name in fields}

    def member(member_values):
        if not member_values:  # seeds only: the unswept learner, traced as is
            return base
        # make runs inside the member trace; its host-side set-up on constants (e.g. a
        # sample of env params to read the episode length) must stay concrete
        with jax.ensure_compile_time_eval():
            return module.make(with_values(config, member_values), family, mesh=mesh)

    def vmapped(fn, in_axes):
        if len(members) == 1 and spmd_axis is None:
            # a batch of one would reorder float reductions (batched matmuls): run the
            # member unbatched so a population of one is the plain learner bit for bit
            def single(*args):
                args = [a if ax is None else jax.tree.map(lambda x: x[0], a)
                        for a, ax in zip(args, in_axes)]
                return jax.tree.map(lambda x: jnp.expand_dims(x, 0), fn(*args))
            return single
        return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=spmd_axis)

    def init(keys):
        states = vmapped(lambda v, k: member(v).init(k), (0, 0))(values, keys)
        return PopulationState(members=states, alive=jnp.ones((len(members),), bool))

    def update(state: PopulationState, keys):
        def one(v, s, k, alive):
            new, metrics = member(v).update(s, k)
            ok = alive & tree_all_finite(new) & tree_all_finite(metrics)
            # a member that went non-finite keeps its last finite state
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, s)
            return new, metrics, ok

        new, metrics, alive = vmapped(one, (0, 0, 0, 0))(values, state.members, keys,
                                                         state.alive)
        return PopulationState(members=new, alive=alive), metrics

    def evaluate(state: PopulationState, task_params, key, num_steps=None) -> AdaptationCurves:
        curves = vmapped(lambda v, s: member(v).evaluate(s, task_params, key, num_steps),
                         (0, 0))(values, state.members)
        return curves

    def member_state(state: PopulationState, i: int):
        return jax.tree.map(lambda x: x[i], state.members)

    return PopulationLearner(init=init, update=update, evaluate=evaluate, config=config,
                             family=family, key_metric=base.key_metric, members=members,
                             base=base, member_state=member_state)
