"""RL² Tables 1 and 2: our reference players beside the published baselines.

Duan et al. 2016 (arXiv:1611.02779). Table 1: Bernoulli bandits, arms
``p_i ~ U[0, 1]``, ``n`` pulls of ``k`` arms. Table 2: random tabular MDPs
(S = 10, A = 5, T = 10, mean rewards ~ N(1, 1) with N(0, 1) noise, flat
Dirichlet transitions), ``n`` episodes. Every cell is the mean total reward
over 1,000 held-out instances ± one standard error.

Protocol (RL² tuned its baselines' hyperparameters; so do we, on separate
instances): for every ``k`` (bandits) and for the MDPs, one set of tuning
instances (the family's ``train`` split) and one set of test instances (its
``test`` split) are drawn from the task family with different keys, and every
player plays them on the real env through the shared rollout engine. Each
hyperparameter value is played on the tuning set, the best value is picked
per cell, and only that value is played on the test set. None of the players
except the Bayes-optimal one knows ``n``, so a trial of ``n`` pulls (episodes)
is the first ``n`` pulls of the longest trial: one run of ``max n`` per
player, read at every ``n`` (cells of one ``k`` share test instances). The
exact Bayes-optimal policy is run separately per ``n`` where its dynamic
programme is tractable, and its exact value is shown beside the simulation.

Usage::

    python benchmarks/baselines_tables.py            # full tables (minutes on 2 CPU cores)
    python benchmarks/baselines_tables.py --quick    # smaller grids and sets, < 2 minutes

Writes ``benchmarks/results/baselines_tables.json`` (``--quick``:
``baselines_tables_quick.json``) and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
from metarl_jax.players.published import (
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
from metarl_jax.players import bandits, mdp
from metarl_jax.training.report import format_mean_se, machine_metadata, mean_and_se

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# ---------------------------------------------------------------- hyperparameter grids
BANDIT_GRIDS = {
    "epsilon_greedy": ("epsilon", (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)),
    "ucb1": ("exploration", (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)),
    "gittins": ("discount", (0.8, 0.9, 0.95, 0.98, 0.99, 0.995)),
}
BANDIT_GRIDS_QUICK = {
    "epsilon_greedy": ("epsilon", (0.02, 0.1)),
    "ucb1": ("exploration", (0.1, 0.3)),
    "gittins": ("discount", (0.9, 0.98)),
}
MDP_GRIDS = {
    "epsilon_greedy": ("epsilon", (0.0, 0.01, 0.03, 0.1, 0.3)),
    "beb": ("bonus", (0.1, 0.3, 1.0, 3.0)),
}
MDP_GRIDS_QUICK = {"epsilon_greedy": ("epsilon", (0.03, 0.1)), "beb": ("bonus", (0.3, 1.0))}


def totals_at(per_step: np.ndarray, lengths) -> dict[int, np.ndarray]:
    """``{n: total of the first n steps}`` from ``per_step: [instances, max n]``."""
    cumulative = np.cumsum(np.asarray(per_step, np.float64), axis=-1)
    return {n: cumulative[:, n - 1] for n in lengths}


def tuned_totals(play, grid, tune_key, test_key, lengths) -> tuple[dict, dict]:
    """Pick the best grid value per ``n`` on tuning instances, play it on test instances.

    ``play(value, split, key) -> [instances, max n]`` per-step rewards.
    Returns ``({n: test totals}, {n: chosen value})``.
    """
    tuning_means = {}
    for value in grid:
        totals = totals_at(play(value, "tune", tune_key), lengths)
        tuning_means[value] = {n: float(totals[n].mean()) for n in lengths}
    chosen = {n: max(grid, key=lambda v: tuning_means[v][n]) for n in lengths}
    test = {}
    for value in sorted(set(chosen.values())):
        totals = totals_at(play(value, "test", test_key), lengths)
        test.update({n: totals[n] for n in lengths if chosen[n] == value})
    return test, chosen


def play_all(names, evaluate, sets, play_keys, grids, lengths, on_played=None):
    """Totals of every player at every length, tuning those with a grid.

    ``evaluate(name, instances, key, **hyperparameters) -> [instances, max n]``
    per-step rewards; ``sets``: ``{"test": ..., "tune": ...}`` instances;
    ``grids``: ``{name: (field, values)}``. Calls ``on_played(name)`` after
    each player. Returns ``({name: {n: test totals}}, {name: {n: chosen value}})``.
    """
    totals, chosen = {}, {}
    for name in names:
        if name in grids:
            field, grid = grids[name]

            def play(value, split, k, name=name, field=field):
                return np.asarray(evaluate(name, sets[split], k, **{field: value}))

            tune_key, test_key = jax.random.split(play_keys[name])
            totals[name], chosen[name] = tuned_totals(play, grid, tune_key, test_key, lengths)
        else:
            totals[name] = totals_at(evaluate(name, sets["test"], play_keys[name]), lengths)
        if on_played is not None:
            on_played(name)
    return totals, chosen


# ---------------------------------------------------------------- Table 1
def bandit_table(pulls, arms, instances, tuning_instances, grids, seed) -> list[dict]:
    cells = []
    max_pulls = max(pulls)
    for num_arms in arms:
        start = time.perf_counter()
        key = jax.random.fold_in(jax.random.PRNGKey(seed), num_arms)
        key_test, key_tune, key_play = jax.random.split(key, 3)
        sets = {
            "test": bandits.sample_instances(key_test, instances, num_arms, "test"),
            "tune": bandits.sample_instances(key_tune, tuning_instances, num_arms, "train"),
        }
        play_keys = dict(zip(BANDIT_PLAYERS, jax.random.split(key_play, len(BANDIT_PLAYERS))))

        def evaluate(name, instances, k, **hyperparameters):
            return bandits.evaluate(
                name, instances, k, num_pulls=max_pulls, per_pull=True, **hyperparameters
            )

        totals, chosen = play_all(BANDIT_PLAYERS, evaluate, sets, play_keys, grids, pulls)
        for num_pulls in pulls:
            cell = {
                "n": num_pulls,
                "k": num_arms,
                "instances": instances,
                "published": published_row(
                    BANDIT_COLUMNS, BANDIT_PUBLISHED.get((num_pulls, num_arms), ())
                ),
                "ours": {name: mean_and_se(totals[name][num_pulls]) for name in totals},
                "hyperparameters": {
                    name: {grids[name][0]: chosen[name][num_pulls]} for name in chosen
                },
                "oracle_expected": bandits.oracle_value(num_pulls, num_arms),
            }
            states = bandits.count_posterior_states(num_pulls, num_arms)
            cell["bayes_optimal_states"] = states
            if states <= bandits.DEFAULT_MAX_DP_STATES:
                policy = bandits.bayes_optimal_policy(num_pulls, num_arms)
                simulated = bandits.evaluate(
                    "bayes_optimal",
                    sets["test"],
                    jax.random.fold_in(key_play, num_pulls),
                    num_pulls=num_pulls,
                )
                cell["bayes_optimal_value"] = policy.value
                cell["ours"]["bayes_optimal"] = mean_and_se(simulated)
            cells.append(cell)
        print(f"  bandits k={num_arms}: {time.perf_counter() - start:.0f} s", flush=True)
    return cells


# ---------------------------------------------------------------- Table 2
def mdp_table(episodes, instances, tuning_instances, grids, opsrl_samples, seed) -> list[dict]:
    start = time.perf_counter()
    key_test, key_tune, key_play = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    sets = {
        "test": mdp.sample_instances(key_test, instances, split="test"),
        "tune": mdp.sample_instances(key_tune, tuning_instances, split="train"),
    }
    max_episodes = max(episodes)
    play_keys = dict(zip(MDP_PLAYERS, jax.random.split(key_play, len(MDP_PLAYERS))))

    def evaluate(name, instances, k, **hyperparameters):
        if name == "optimistic_psrl":
            hyperparameters.setdefault("num_samples", opsrl_samples)
        return mdp.evaluate(
            name,
            instances,
            k,
            num_episodes=max_episodes,
            episode_length=MDP_EPISODE_LENGTH,
            per_episode=True,
            **hyperparameters,
        )

    def on_played(name):
        print(f"    {name}: {time.perf_counter() - start:.0f} s", flush=True)

    totals, chosen = play_all(MDP_PLAYERS, evaluate, sets, play_keys, grids, episodes, on_played)
    exact = np.asarray(mdp.optimal_value(sets["test"], episode_length=MDP_EPISODE_LENGTH))
    cells = []
    for n in episodes:
        cell = {
            "n": n,
            "instances": instances,
            "published": published_row(MDP_COLUMNS, MDP_PUBLISHED.get(n, ())),
            "ours": {name: mean_and_se(totals[name][n]) for name in totals},
            "hyperparameters": {name: {grids[name][0]: chosen[name][n]} for name in chosen},
            "known_mdp_exact": mean_and_se(n * exact),
        }
        cell["hyperparameters"]["optimistic_psrl"] = {"num_samples": opsrl_samples}
        cells.append(cell)
    print(f"  MDPs: {time.perf_counter() - start:.0f} s", flush=True)
    return cells


# ---------------------------------------------------------------- output
def _cell(ours: dict | None, published: float | None) -> str:
    text = "—" if ours is None else format_mean_se(ours)
    return text if published is None else f"{text} ({published:.1f})"


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}. Mean total reward over {results['instances']} "
        "held-out instances ± one standard error; published RL² value in parentheses.",
        "",
        "**Table 1, Bernoulli bandits** (n pulls, k arms)",
        "",
        "| n,k | " + " | ".join(BANDIT_HEADERS) + " | Bayes-opt sim (exact DP) | Oracle "
        "(n k/(k+1)) | RL² (published) |",
        "|---|" + "---|" * (len(BANDIT_HEADERS) + 3),
    ]
    bandit_cells = sorted(results["bandits"], key=lambda cell: (cell["n"], cell["k"]))
    for cell in bandit_cells:
        row = [_cell(cell["ours"][c], cell["published"].get(c)) for c in BANDIT_COLUMNS]
        if "bayes_optimal_value" in cell:
            bayes = (
                f"{_cell(cell['ours']['bayes_optimal'], None)} ({cell['bayes_optimal_value']:.3f})"
            )
        else:
            bayes = f"intractable ({cell['bayes_optimal_states']:.1e} states)"
        oracle = f"{_cell(cell['ours']['oracle'], None)} ({cell['oracle_expected']:.2f})"
        rl2 = cell["published"].get("rl2")
        lines.append(
            f"| {cell['n']},{cell['k']} | "
            + " | ".join(row)
            + f" | {bayes} | {oracle} | {'—' if rl2 is None else rl2} |"
        )
    lines += [
        "",
        "Tuned hyperparameters (picked on separate tuning instances):",
        "",
        "| n,k | " + " | ".join(f"{n} {f}" for n, (f, _) in results["bandit_grids"].items()) + " |",
        "|---|" + "---|" * len(results["bandit_grids"]),
    ]
    for cell in bandit_cells:
        values = [
            str(cell["hyperparameters"][n][f]) for n, (f, _) in results["bandit_grids"].items()
        ]
        lines.append(f"| {cell['n']},{cell['k']} | " + " | ".join(values) + " |")
    lines += [
        "",
        "**Table 2, random tabular MDPs** (S=10, A=5, T=10, n episodes)",
        "",
        "| n | " + " | ".join(MDP_HEADERS) + " | Known MDP sim (exact VI) | RL² (published) |",
        "|---|" + "---|" * (len(MDP_HEADERS) + 2),
    ]
    for cell in results["mdps"]:
        row = [_cell(cell["ours"].get(c), cell["published"].get(c)) for c in MDP_COLUMNS]
        known = (
            f"{_cell(cell['ours']['known_mdp_optimum'], None)} "
            f"({cell['known_mdp_exact']['mean']:.1f})"
        )
        rl2 = cell["published"].get("rl2")
        lines.append(
            f"| {cell['n']} | " + " | ".join(row) + f" | {known} | {'—' if rl2 is None else rl2} |"
        )
    lines += [
        "",
        "Tuned hyperparameters:",
        "",
        "| n | "
        + " | ".join(f"{n} {f}" for n, (f, _) in results["mdp_grids"].items())
        + " | OPSRL samples |",
        "|---|" + "---|" * (len(results["mdp_grids"]) + 1),
    ]
    for cell in results["mdps"]:
        values = [str(cell["hyperparameters"][n][f]) for n, (f, _) in results["mdp_grids"].items()]
        lines.append(
            f"| {cell['n']} | "
            + " | ".join(values)
            + f" | {cell['hyperparameters']['optimistic_psrl']['num_samples']} |"
        )
    lines += [
        "",
        "UCRL2 is not implemented (—). "
        f"Wall time {results['wall_s'] / 60:.1f} min including compilation.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids, sets and tables")
    parser.add_argument("--instances", type=int, default=None, help="test instances per cell")
    parser.add_argument("--tuning-instances", type=int, default=None)
    parser.add_argument("--opsrl-samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    instances = args.instances or (200 if args.quick else 1000)
    tuning = args.tuning_instances or (200 if args.quick else 500)
    if args.quick:
        pulls, arms, episodes = (10, 100), (5, 10), (10, 25)
        bandit_grids, mdp_grids = BANDIT_GRIDS_QUICK, MDP_GRIDS_QUICK
    else:
        pulls, arms, episodes = (10, 100, 500), (5, 10, 50), (10, 25, 50, 75, 100)
        bandit_grids, mdp_grids = BANDIT_GRIDS, MDP_GRIDS
    start = time.perf_counter()
    print(f"Table 1 (bandits), {instances} test / {tuning} tuning instances", flush=True)
    bandit_cells = bandit_table(pulls, arms, instances, tuning, bandit_grids, args.seed)
    print(f"Table 2 (MDPs), {instances} test / {tuning} tuning instances", flush=True)
    mdp_cells = mdp_table(episodes, instances, tuning, mdp_grids, args.opsrl_samples, args.seed)
    results = {
        **machine_metadata(),
        "quick": args.quick,
        "instances": instances,
        "tuning_instances": tuning,
        "seed": args.seed,
        "bandit_grids": {n: [f, list(g)] for n, (f, g) in bandit_grids.items()},
        "mdp_grids": {n: [f, list(g)] for n, (f, g) in mdp_grids.items()},
        "bandits": bandit_cells,
        "mdps": mdp_cells,
        "wall_s": time.perf_counter() - start,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    name = "baselines_tables_quick.json" if args.quick else "baselines_tables.json"
    with open(os.path.join(RESULTS_DIR, name), "w") as f:
        json.dump(results, f, indent=1)
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
