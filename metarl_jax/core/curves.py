"""Adaptation curves: what every learner's ``evaluate`` returns.

An :class:`AdaptationCurves` carries its own x axis (the values and what
they count: inner gradient steps, episodes of a trial, environment steps),
the learner's per-task curve and the baselines' curves on the same tasks, so
the runner, the logs and the plots never have to guess what a point means.
It is a pytree (the arrays are leaves, the axis is static), so ``evaluate``
can be ``jit``-compiled and returns it as it is.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import jax
from flax import struct


@struct.dataclass
class AdaptationCurves(Mapping):
    """Per-task curves ``{name: [tasks, points]}`` over one x axis.

    ``curves`` holds the learner's own curve under ``learner`` and the
    baselines' (pretrained, random initialisation, ...) under their names.
    It reads as a mapping (``curves["maml"]``, ``.items()``), the learner's
    curve first and then the baselines by name (a pytree dict comes back
    from ``jit`` with sorted keys, so no other order would survive).
    """

    curves: dict[str, jax.Array]
    x: tuple = struct.field(pytree_node=False)       # point i is at x[i]
    xlabel: str = struct.field(pytree_node=False)     # what x counts
    learner: str = struct.field(pytree_node=False)    # the learner's own curve

    @property
    def baselines(self) -> tuple[str, ...]:
        """Names of the curves other than the learner's own."""
        return tuple(sorted(name for name in self.curves if name != self.learner))

    def __getitem__(self, name: str) -> jax.Array:
        return self.curves[name]

    def __iter__(self) -> Iterator[str]:
        return iter((self.learner,) + self.baselines)

    def __len__(self) -> int:
        return len(self.curves)


def make_curves(curves: Mapping[str, Any], x: Sequence, xlabel: str,
                learner: str | None = None) -> AdaptationCurves:
    """:class:`AdaptationCurves` from ``{name: [tasks, points]}``; the first name is
    the learner's own curve unless ``learner`` says otherwise."""
    curves, x = dict(curves), tuple(x)
    if not curves:
        raise ValueError("an adaptation curve needs at least one curve")
    learner = next(iter(curves)) if learner is None else learner
    if learner not in curves:
        raise ValueError(f"curves {sorted(curves)} lack the learner's own curve {learner!r}")
    for name, values in curves.items():
        shape = getattr(values, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != len(x):
            raise ValueError(f"curve {name!r} has shape {shape}; expected [tasks, {len(x)}] "
                             f"for {len(x)} x values")
    return AdaptationCurves(curves, x, xlabel, learner)
