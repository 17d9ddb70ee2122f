"""The published RL² tables the reference players are compared with.

Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement
Learning" (arXiv:1611.02779), as listed in ``shared/REFERENCE.md``:

* Table 1, Bernoulli bandits (arms ``p_i ~ U[0, 1]``): ``(n, k)`` (pulls,
  arms) -> mean total reward of :data:`BANDIT_COLUMNS`, then RL²;
* Table 2, random tabular MDPs (``|S| = 10``, ``|A| = 5``, episodes of
  :data:`MDP_EPISODE_LENGTH` steps): ``n`` (episodes per trial) ->
  :data:`MDP_COLUMNS`, then RL².

The column names are the players' names in :mod:`metarl_jax.players.bandits`
and :mod:`metarl_jax.players.mdp` (UCRL2 has no player here). Data only: this
module imports nothing.
"""

from __future__ import annotations

from typing import Sequence

# ---------------------------------------------------------------- Table 1
BANDIT_COLUMNS = (
    "random",
    "gittins",
    "thompson_sampling",
    "optimistic_thompson_sampling",
    "ucb1",
    "epsilon_greedy",
    "greedy",
)
BANDIT_HEADERS = ("Random", "Gittins", "TS", "OTS", "UCB1", "eps-Greedy", "Greedy")
BANDIT_PUBLISHED = {  # (n, k) -> BANDIT_COLUMNS, then RL²
    (10, 5): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
    (10, 50): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
    (100, 5): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
    (100, 10): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
    (100, 50): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
    (500, 5): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
    (500, 10): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
    (500, 50): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9),
}
# our bandit players, in the order their keys are split (Table 1's and the oracle)
BANDIT_PLAYERS = BANDIT_COLUMNS + ("oracle",)

# ---------------------------------------------------------------- Table 2
MDP_COLUMNS = ("random", "psrl", "optimistic_psrl", "ucrl2", "beb", "epsilon_greedy", "greedy")
MDP_HEADERS = ("Random", "PSRL", "OPSRL", "UCRL2", "BEB", "eps-Greedy", "Greedy")
MDP_PUBLISHED = {  # n -> MDP_COLUMNS, then RL²
    10: (100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2),
    25: (250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7),
    50: (499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1),
    75: (749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8),
    100: (999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7),
}
MDP_EPISODE_LENGTH = 10  # T of Table 2
# our MDP players (UCRL2 is not implemented), in the order their keys are split
MDP_PLAYERS = ("random", "psrl", "optimistic_psrl", "beb", "epsilon_greedy", "greedy",
               "known_mdp_optimum")


def published_row(columns: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """``{column: value}`` of one published row, RL² under ``"rl2"`` (``{}`` for no row)."""
    columns = tuple(columns) + ("rl2",)
    if values and len(values) != len(columns):
        raise ValueError(f"a published row of {len(values)} values for the {len(columns)} "
                         f"columns {columns}")
    return dict(zip(columns, values))
