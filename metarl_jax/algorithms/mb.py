"""MB: one dynamics model for all training tasks, never adapted, with MPC (the baseline of
Nagabandi, Clavera et al. 2019).

A preset of :mod:`metarl_jax.algorithms.model_based` (read it for the
algorithm): ``adaptation='none'``.
"""

from __future__ import annotations

import dataclasses

from metarl_jax.algorithms import model_based

HYPERPARAMETERS = model_based.HYPERPARAMETERS


@dataclasses.dataclass(frozen=True)
class Config(model_based.Config):
    """:class:`metarl_jax.algorithms.model_based.Config` with ``adaptation='none'``."""

    adaptation: str = 'none'

    def __post_init__(self):
        super().__post_init__()
        if self.adaptation != 'none' or self.policy is not False:
            raise ValueError("mb is model_based with adaptation='none', policy=False; "
                             "use model_based.Config for other combinations")


def make(config: Config, family, mesh=None) -> model_based.Learner:
    """Build mb for ``family`` (see :func:`metarl_jax.algorithms.model_based.make`)."""
    return model_based.make(config, family, mesh, name='mb')
