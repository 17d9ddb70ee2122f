"""GrBAL (MAML + model-based meta-learning): a dynamics model meta-trained so that
gradient steps on the last M transitions predict the next K, re-adapted at every step,
with MPC (Nagabandi, Clavera et al. 2019).

A preset of :mod:`metarl_jax.algorithms.model_based` (read it for the
algorithm): ``adaptation='gradient'``.
"""

from __future__ import annotations

import dataclasses

from metarl_jax.algorithms import model_based

HYPERPARAMETERS = model_based.HYPERPARAMETERS


@dataclasses.dataclass(frozen=True)
class Config(model_based.Config):
    """:class:`metarl_jax.algorithms.model_based.Config` with ``adaptation='gradient'``."""

    adaptation: str = 'gradient'

    def __post_init__(self):
        super().__post_init__()
        if self.adaptation != 'gradient' or self.policy is not False:
            raise ValueError("grbal is model_based with adaptation='gradient', policy=False; "
                             "use model_based.Config for other combinations")


def make(config: Config, family, mesh=None) -> model_based.Learner:
    """Build grbal for ``family`` (see :func:`metarl_jax.algorithms.model_based.make`)."""
    return model_based.make(config, family, mesh, name='grbal')
