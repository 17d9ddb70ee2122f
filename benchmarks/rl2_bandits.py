"""RL² Table 1 rebuilt: multi-armed bandits, published values beside ours.

Duan et al. 2016 (arXiv:1611.02779), Sec. 5.1 / Table 1: arms ``p_i ~ U[0, 1]``,
a trial is ``n`` pulls (episodes of length 1) of one ``k``-armed Bernoulli
bandit; total reward averaged over 1,000 bandit instances. For every cell
``(n, k)`` this script

* draws ``--instances`` held-out instances from the family's *test* split,
* plays our reference players (``metarl_jax.players.bandits``, with the
  hyperparameters ``benchmarks/baselines_tables.py`` tuned per cell on separate
  instances, defaults where it has not run) on exactly those instances, plus the
  exact Bayes-optimal policy where its dynamic programme is tractable,
* meta-trains RL² on the *train* split with the library's training loop
  (``metarl_jax.training.runner.train``, one run directory per cell; the flags
  ``--minutes``, ``--run-dir``, ``--checkpoint-dir`` and ``--set`` are described in
  ``metarl_jax.training.tables``), and plays the trained state on the same instances,

and prints the published row beside ours (mean ± one standard error over
instances; RL² acting by sampling, as trained, and by its most likely action,
"mode"), RL²'s paired difference to the best player on the same instances,
its training time (the runner's: compile, evaluation and checkpoints
excluded) and its env steps per second during training. Results are merged
into ``benchmarks/results/rl2_bandits.json`` (cells run separately accumulate).

Usage::

    python benchmarks/rl2_bandits.py --cells 10,5 10,10 [--minutes 30] [--iterations N]
    python benchmarks/rl2_bandits.py --quick          # n=10, k=5, a few minutes
    python benchmarks/rl2_bandits.py --cells 500,10 --minutes 120 --checkpoint-dir ckpt
        # stop any time, rerun to continue; --minutes is the whole run's budget

The settings per trial length and every run so far, with what was and was not
adopted: ``docs/notes/rl2_bandits.md``.
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import rl2
from metarl_jax.players import bandits
from metarl_jax.players.published import (BANDIT_COLUMNS, BANDIT_HEADERS, BANDIT_PLAYERS,
                                          BANDIT_PUBLISHED, published_row)
from metarl_jax.training.report import format_mean_se, mean_and_se, side_by_side_markdown
from metarl_jax.training.tables import (add_training_arguments, apply_overrides,
                                        default_scratch, rl2_evaluator, run_cells, train_cell,
                                        train_rl2, tuned_hyperparameters)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TUNED_BASELINES = os.path.join(RESULTS, "baselines_tables.json")

__all__ = ["main", "markdown", "play_baselines", "rl2_config", "run_cell", "train_rl2"]


def rl2_config(num_pulls: int, quick: bool) -> rl2.Config:
    """RL² settings per trial length: GRU 256, gamma 1 (the table counts total reward),
    lambda 0.95 over whole trials; from n=100 on, rewards scaled by 10 / n for learning.
    Trials per iteration: 1,024 at n <= 10, 256 at n <= 100, 128 beyond. ``quick``: a
    GRU 128 on 256 trials. Why: ``docs/notes/rl2_bandits.md``."""
    if quick:
        return rl2.Config(trial_episodes=num_pulls, meta_batch_size=256, hidden_size=128,
                          learning_rate=3e-3, gamma=1.0, gae_lambda=0.95, entropy_coef=0.003)
    batch = 1024 if num_pulls <= 10 else 256 if num_pulls <= 100 else 128
    return rl2.Config(trial_episodes=num_pulls, meta_batch_size=batch, hidden_size=256,
                      learning_rate=1e-3, gamma=1.0, gae_lambda=0.95, entropy_coef=0.003,
                      reward_scale=1.0 if num_pulls <= 10 else 10.0 / num_pulls)


def play_baselines(arm_means, num_pulls: int, key, hyperparameters) -> dict[str, np.ndarray]:
    """Total reward of every reference player on every instance, ``{name: [instances]}``."""
    names = list(BANDIT_PLAYERS)
    k = arm_means.shape[1]
    if bandits.count_posterior_states(num_pulls, k) <= bandits.DEFAULT_MAX_DP_STATES:
        names.append("bayes_optimal")
    out = {}
    for name, sub in zip(names, jax.random.split(key, len(names))):
        out[name] = np.asarray(bandits.evaluate(name, arm_means, sub, num_pulls=num_pulls,
                                                **hyperparameters.get(name, {})))
    return out


def run_cell(num_pulls: int, num_arms: int, args) -> dict:
    """One cell of Table 1: the players and RL² on the same held-out instances."""
    family = metarl_jax.make("bandit-bernoulli", arms=num_arms)
    tasks = family.sample(jax.random.PRNGKey(args.seed), args.instances, "test")
    baseline_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed + 7))
    hyperparameters = tuned_hyperparameters(TUNED_BASELINES, "bandits", n=num_pulls,
                                            k=num_arms)
    totals = play_baselines(tasks.arm_means, num_pulls, baseline_key, hyperparameters)
    config = apply_overrides(rl2_config(num_pulls, args.quick), args.overrides)
    trained, record = train_cell(f"n={num_pulls}, k={num_arms}", config, "bandit-bernoulli",
                                 {"arms": num_arms}, args, args.scratch)
    curve = rl2_evaluator(config, family)(trained.state, tasks, eval_key)
    totals["rl2"] = curve.sum(axis=1)
    totals["rl2_mode"] = rl2_evaluator(config, family, eval_policy="mode")(
        trained.state, tasks, eval_key).sum(axis=1)
    best = "bayes_optimal" if "bayes_optimal" in totals else "gittins"
    return {
        "n": num_pulls, "k": num_arms, "instances": args.instances,
        "published": published_row(BANDIT_COLUMNS, BANDIT_PUBLISHED[(num_pulls, num_arms)]),
        "baseline_hyperparameters": hyperparameters,
        "ours": {name: mean_and_se(x) for name, x in totals.items()},
        "rl2_minus_best_baseline": {"baseline": best,
                                    **mean_and_se(totals["rl2"] - totals[best])},
        "rl2_per_pull_mean": [float(v) for v in curve.mean(axis=0)],
        **record, "quick": args.quick,
    }


def markdown(cells: dict) -> str:
    """Table 1's cells, published beside ours."""
    def extra(cell):
        bayes = cell["ours"].get("bayes_optimal")
        diff = cell["rl2_minus_best_baseline"]
        return [format_mean_se(cell["ours"]["rl2_mode"]),
                format_mean_se(bayes) if bayes else "—",
                f"{format_mean_se(diff, signed=True)} vs {diff['baseline']}"]

    return side_by_side_markdown(
        cells, caption="Mean total reward over held-out instances ± one standard error; "
        "ours are played on the same instances.", key_header="n,k",
        columns=BANDIT_COLUMNS + ("rl2",), headers=BANDIT_HEADERS + ("RL²",),
        extra_headers=("RL² (mode)", "Bayes-opt", "RL² − best"), extra=extra,
        sort_key=lambda s: tuple(map(int, s.split(","))), digits=2)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["10,5", "10,10", "10,50"],
                        help="n,k pairs from Table 1 (default: the n=10 row)")
    add_training_arguments(parser, 600, "n=10, k=5 only, a small network for 40 iterations")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/"
                        "rl2_bandits.json (rl2_bandits_quick.json with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.iterations = ["10,5"], min(args.iterations, 40)
    if args.out is None:
        args.out = os.path.join(RESULTS, "rl2_bandits_quick.json" if args.quick
                                else "rl2_bandits.json")
    args.scratch = default_scratch(RESULTS, args.out)
    args.cell_pairs = []
    for cell in args.cells:
        n, k = map(int, cell.split(","))
        if (n, k) not in BANDIT_PUBLISHED:
            parser.error(f"--cells: {cell} is not a cell of Table 1 ({sorted(BANDIT_PUBLISHED)})")
        args.cell_pairs.append((n, k))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_cells(args.out, [(f"{n},{k}", functools.partial(run_cell, n, k, args))
                                for n, k in args.cell_pairs], markdown)


if __name__ == "__main__":
    main()
