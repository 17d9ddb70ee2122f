"""Meta-learners, one module each, all with the same contract.

Each module ``metarl_jax.algorithms.NAME`` provides a frozen dataclass
``Config`` and ``make(config, family, mesh=None) -> Learner`` where the learner
is a named tuple of pure functions ``init(key)``, ``update(state, key)`` and
``evaluate(state, task_params, key, num_steps)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ALGORITHMS = {
    "es_maml": "metarl_jax.algorithms.es_maml",
    "grbal": "metarl_jax.algorithms.grbal",
    "maml": "metarl_jax.algorithms.maml",
    "mb": "metarl_jax.algorithms.mb",
    "mb_de": "metarl_jax.algorithms.mb_de",
    "mbml_policy": "metarl_jax.algorithms.mbml_policy",
    "metaq": "metarl_jax.algorithms.metaq",
    "pearl": "metarl_jax.algorithms.pearl",
    "rebal": "metarl_jax.algorithms.rebal",
    "reptile": "metarl_jax.algorithms.reptile",
    "rl2": "metarl_jax.algorithms.rl2",
    "varibad": "metarl_jax.algorithms.varibad",
}


def list_algorithms() -> list[str]:
    """Names accepted by :func:`get` and ``metarl train``."""
    return sorted(ALGORITHMS)


def get(name: str) -> ModuleType:
    """The module of algorithm ``name`` (has ``Config`` and ``make``)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {', '.join(list_algorithms())}")
    return importlib.import_module(ALGORITHMS[name])
