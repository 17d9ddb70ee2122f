"""Shim for ``baselines_tables.py`` until it imports the library directly: delete with it.

The published RL² tables live in ``metarl_jax.players.published``, the
statistics, machine metadata and markdown in ``metarl_jax.training.report``.
"""

from metarl_jax.players.published import (  # noqa: F401
    BANDIT_COLUMNS,
    BANDIT_HEADERS,
    BANDIT_PLAYERS,
    BANDIT_PUBLISHED,
    MDP_COLUMNS,
    MDP_EPISODE_LENGTH,
    MDP_HEADERS,
    MDP_PLAYERS,
    MDP_PUBLISHED,
    published_row,
)
from metarl_jax.training.report import (  # noqa: F401
    format_mean_se,
    machine_metadata,
    mean_and_se,
    side_by_side_markdown,
)
