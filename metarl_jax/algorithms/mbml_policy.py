"""MBML in its policy form: GrBAL's adapted model plus a parametric policy improved by
gradients through the adapted model's imagined rollouts, acting alone or warm-starting MPC.

A preset of :mod:`metarl_jax.algorithms.model_based` (read it for the
algorithm): ``adaptation='gradient'``, ``policy=True``.
"""

from __future__ import annotations

import dataclasses

from metarl_jax.algorithms import model_based

HYPERPARAMETERS = model_based.HYPERPARAMETERS


@dataclasses.dataclass(frozen=True)
class Config(model_based.Config):
    """:class:`metarl_jax.algorithms.model_based.Config` with ``adaptation='gradient'``."""

    adaptation: str = 'gradient'
    policy: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.adaptation != 'gradient' or self.policy is not True:
            raise ValueError("mbml_policy is model_based with adaptation='gradient', policy=True; "
                             "use model_based.Config for other combinations")


def make(config: Config, family, mesh=None) -> model_based.Learner:
    """Build mbml_policy for ``family`` (see :func:`metarl_jax.algorithms.model_based.make`)."""
    return model_based.make(config, family, mesh, name='mbml_policy')
