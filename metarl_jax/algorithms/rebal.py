"""ReBAL: a recurrent dynamics model that adapts in its hidden state (a GRU over the last
M transitions), with MPC (Nagabandi, Clavera et al. 2019).

A preset of :mod:`metarl_jax.algorithms.model_based` (read it for the
algorithm): ``adaptation='recurrent'``.
"""

from __future__ import annotations

import dataclasses

from metarl_jax.algorithms import model_based

HYPERPARAMETERS = model_based.HYPERPARAMETERS


@dataclasses.dataclass(frozen=True)
class Config(model_based.Config):
    """:class:`metarl_jax.algorithms.model_based.Config` with ``adaptation='recurrent'``."""

    adaptation: str = 'recurrent'

    def __post_init__(self):
        super().__post_init__()
        if self.adaptation != 'recurrent' or self.policy is not False:
            raise ValueError("rebal is model_based with adaptation='recurrent', policy=False; "
                             "use model_based.Config for other combinations")


def make(config: Config, family, mesh=None) -> model_based.Learner:
    """Build rebal for ``family`` (see :func:`metarl_jax.algorithms.model_based.make`)."""
    return model_based.make(config, family, mesh, name='rebal')
