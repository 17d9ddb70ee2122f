"""What the RL² table benchmarks share: published values, the machine, formatting.

Duan et al. 2016 (arXiv:1611.02779). Table 1: Bernoulli bandits, ``(n, k)``
(pulls, arms) -> mean total reward of ``BANDIT_COLUMNS`` and then RL². Table 2:
random tabular MDPs, ``n`` (episodes) -> ``MDP_COLUMNS`` and then RL². Used by
``baselines_tables.py``, ``rl2_bandits.py`` and ``rl2_mdp.py`` (run as scripts,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import datetime
import math
import platform
from typing import Callable, Iterable, Sequence

import jax
import numpy as np

MACHINE = "2-core x86-64 CPU, no GPU (shared with other jobs)"

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
BANDIT_PLAYERS = BANDIT_COLUMNS + ("oracle",)  # ours, in the order their keys are split

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
# ours (UCRL2 is not implemented), in the order their keys are split
MDP_PLAYERS = ("random", "psrl", "optimistic_psrl", "beb", "epsilon_greedy", "greedy",
               "known_mdp_optimum")


def published_row(columns: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """``{column: value}`` of one published row, RL² under ``"rl2"`` (``{}`` for no row)."""
    return dict(zip(tuple(columns) + ("rl2",), values))


# ---------------------------------------------------------------- statistics and formatting
def mean_and_se(x) -> dict[str, float]:
    """``{"mean", "se"}``: the mean and its standard error (sample std, ddof=1, / sqrt(count))."""
    x = np.asarray(x, np.float64)
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / math.sqrt(x.size))}


def format_mean_se(stats: dict, digits: int = 2, signed: bool = False) -> str:
    """``mean ± se`` of a ``mean_and_se`` dict, ``digits`` decimals, a signed mean if ``signed``."""
    sign = "+" if signed else ""
    return f"{stats['mean']:{sign}.{digits}f} ± {stats['se']:.{digits}f}"


def machine_metadata() -> dict:
    """Machine, platform, versions, devices and date, recorded with every result."""
    return {
        "machine": MACHINE,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def side_by_side_markdown(
    cells: dict,
    *,
    caption: str,
    key_header: str,
    columns: Sequence[str],
    headers: Iterable[str],
    extra_headers: Sequence[str],
    extra: Callable[[dict], list[str]],
    sort_key: Callable[[str], object],
    digits: int,
) -> str:
    """The published row of each cell beside ours, then RL²'s training time and speed.

    ``cells``: ``{key: cell}`` with ``published`` (``{column: value}``), ``ours``
    (``{column: mean_and_se dict}``), ``quick``, ``train_s``, ``iterations`` and
    ``env_steps_per_s``. Columns: ``columns`` under ``headers`` (ours as
    ``mean ± se`` with ``digits`` decimals, "—" where we have none), then
    ``extra_headers`` with ``extra(cell)`` in our row (empty in the published
    row), then the training time and env steps/s.
    """
    headers = tuple(headers) + tuple(extra_headers) + ("RL² train time", "env steps/s")
    lines = [
        f"Machine: {MACHINE}. {caption}",
        "",
        f"| {key_header} | source | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(headers),
    ]
    for key in sorted(cells, key=sort_key):
        cell = cells[key]
        pub = " | ".join(f"{cell['published'][c]:.1f}" for c in columns)
        lines.append(f"| {key} | published | {pub} |" + " |" * (len(headers) - len(columns)))
        ours = [
            format_mean_se(cell["ours"][c], digits) if c in cell["ours"] else "—" for c in columns
        ]
        ours += extra(cell)
        ours += [
            f"{cell['train_s'] / 60:.1f} min ({cell['iterations']} it)",
            f"{cell['env_steps_per_s']:,.0f}",
        ]
        tag = " (quick)" if cell["quick"] else ""
        lines.append(f"| {key} | ours{tag} | " + " | ".join(ours) + " |")
    return "\n".join(lines)
