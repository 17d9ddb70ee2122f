"""RL² Table 2 rebuilt (random tabular MDPs), and RL² on the CartPole family.

Duan et al. 2016 (arXiv:1611.02779), Sec. 5.2 / Table 2: ``|S| = 10``,
``|A| = 5``, episodes of ``T = 10`` steps starting in state 0, mean rewards
``N(1, 1)`` with ``N(0, 1)`` noise per step, flat-Dirichlet transitions; a
trial is ``n`` episodes of one MDP; total reward over 1,000 MDPs. For every
``n`` this script draws ``--instances`` held-out MDPs from the family's *test*
split, plays our reference players (``metarl_jax.players.mdp`` with the
hyperparameters ``benchmarks/baselines_tables.py`` tuned per cell, defaults
where it has not run; UCRL2 is not implemented) and the known-MDP optimum on
exactly those MDPs, meta-trains RL² on the *train* split with the library's
training loop (``metarl_jax.training.runner.train``, one run directory per
cell; ``--minutes``, ``--run-dir``, ``--checkpoint-dir`` and ``--set`` as in
``metarl_jax.training.tables``) and plays it on the same MDPs, and prints the
published row beside ours (mean ± one standard error), RL²'s paired
difference to PSRL, training time and env steps/s.

``--cartpole`` instead meta-trains RL² on the ``cartpole`` family (pole
length and mass, cart mass and push force vary, and with
``random_push_direction`` the actuator is reversed in half the tasks) with
trials of several episodes and reports the return of each episode of a trial
on held-out variants: later episodes should beat the first.
``--cartpole-fixed-direction`` keeps every actuator the right way round (a
policy then balances every variant from the first episode on).

Results are merged into ``benchmarks/results/rl2_mdp.json`` /
``rl2_mdp_transformer.json`` / ``rl2_cartpole.json``.

Usage::

    python benchmarks/rl2_mdp.py --episodes 10 25 [--minutes 30] [--iterations N]
    python benchmarks/rl2_mdp.py --memory transformer --episodes 10   # attention memory
    python benchmarks/rl2_mdp.py --memory transformer --episodes 25 --minutes 240 \
        --checkpoint-dir ckpt   # rerun to continue; --minutes counts the whole run
    python benchmarks/rl2_mdp.py --quick
    python benchmarks/rl2_mdp.py --cartpole [--minutes 10]

The settings and every run so far, with what was and was not adopted:
``docs/notes/rl2_mdp.md``.
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import rl2
from metarl_jax.players import mdp as mdp_players
from metarl_jax.players.published import (MDP_COLUMNS, MDP_EPISODE_LENGTH, MDP_HEADERS,
                                          MDP_PLAYERS, MDP_PUBLISHED, published_row)
from metarl_jax.training.logging import read_csv
from metarl_jax.training.report import (format_mean_se, machine_description, mean_and_se,
                                        side_by_side_markdown, update_json)
from metarl_jax.training.tables import (add_training_arguments, apply_overrides,
                                        default_scratch, rl2_evaluator, run_cells, train_cell,
                                        tuned_hyperparameters)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TUNED_BASELINES = os.path.join(RESULTS, "baselines_tables.json")
CARTPOLE_PROGRESS_TASKS = 200  # test variants of the per-episode curve during training


def rl2_config(num_episodes: int, quick: bool, memory: str = "gru") -> rl2.Config:
    """RL² settings: GRU 128 on 256 trials, rewards scaled by 0.1 for learning, BPTT
    through the whole trial at every n; ``memory="transformer"``: 2 layers of width 64
    with 4 heads whose tokens carry the whole last transition (``previous_obs_input``).
    ``quick``: 128 trials. Why: ``docs/notes/rl2_mdp.md``."""
    if memory == "transformer":
        return rl2.Config(trial_episodes=num_episodes, meta_batch_size=128 if quick else 256,
                          memory="transformer", hidden_size=64, num_layers=2, num_heads=4,
                          previous_obs_input=True, learning_rate=1e-3, gamma=0.99,
                          gae_lambda=0.95, reward_scale=0.1, entropy_coef=0.01)
    if quick:
        return rl2.Config(trial_episodes=num_episodes, meta_batch_size=128, hidden_size=128,
                          learning_rate=3e-3, gae_lambda=0.95, reward_scale=0.1,
                          entropy_coef=0.003)
    return rl2.Config(trial_episodes=num_episodes, meta_batch_size=256, hidden_size=128,
                      learning_rate=2e-3, gamma=0.99, gae_lambda=0.95, reward_scale=0.1,
                      entropy_coef=0.01)


def cartpole_config() -> rl2.Config:
    """RL² on CartPole variants: GRU 64, 64 trials, 50-step truncated BPTT."""
    return rl2.Config(trial_episodes=3, meta_batch_size=64, hidden_size=64, bptt_length=50,
                      learning_rate=1e-3, gamma=0.99, gae_lambda=0.95, reward_scale=0.1,
                      entropy_coef=0.003)


def run_cell(num_episodes: int, args) -> dict:
    """One row of Table 2: the players and RL² on the same held-out MDPs."""
    family = metarl_jax.make("tabular-mdp", episode_length=MDP_EPISODE_LENGTH)
    tasks = family.sample(jax.random.PRNGKey(args.seed), args.instances, "test")
    baseline_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed + 7))
    hyperparameters = tuned_hyperparameters(TUNED_BASELINES, "mdps", n=num_episodes)
    totals = {}
    for name, sub in zip(MDP_PLAYERS, jax.random.split(baseline_key, len(MDP_PLAYERS))):
        totals[name] = np.asarray(mdp_players.evaluate(
            name, tasks, sub, num_episodes=num_episodes, episode_length=MDP_EPISODE_LENGTH,
            **hyperparameters.get(name, {})))
    config = apply_overrides(rl2_config(num_episodes, args.quick, args.memory), args.overrides)
    trained, record = train_cell(f"n={num_episodes}", config, "tabular-mdp",
                                 {"episode_length": MDP_EPISODE_LENGTH}, args, args.scratch)
    curve = rl2_evaluator(config, family)(trained.state, tasks, eval_key)
    totals["rl2"] = curve.sum(axis=1)
    return {
        "n": num_episodes, "instances": args.instances,
        "published": published_row(MDP_COLUMNS, MDP_PUBLISHED[num_episodes]),
        "baseline_hyperparameters": hyperparameters,
        "ours": {name: mean_and_se(x) for name, x in totals.items()},
        "rl2_minus_psrl": mean_and_se(totals["rl2"] - totals["psrl"]),
        "rl2_per_episode_mean": [float(v) for v in curve.mean(axis=0)],
        **record, "quick": args.quick,
    }


def markdown(cells: dict) -> str:
    """Table 2's rows, published beside ours."""
    def extra(cell):
        return [format_mean_se(cell["ours"]["known_mdp_optimum"], 1),
                format_mean_se(cell["rl2_minus_psrl"], 1, signed=True)]

    return side_by_side_markdown(
        cells, caption="Mean total reward over held-out MDPs ± one standard error; ours are "
        "played on the same MDPs (UCRL2: not implemented).", key_header="n",
        columns=MDP_COLUMNS + ("rl2",), headers=MDP_HEADERS + ("RL²",),
        extra_headers=("known MDP", "RL² − PSRL"), extra=extra, sort_key=int, digits=1)


def run_cartpole(args) -> dict:
    """RL² on CartPole variants: return of each episode of a trial on held-out variants.

    The runner also evaluates the per-episode curve every 10 iterations during
    training (on 200 test variants; the run's ``eval.csv``), since a trained
    policy may balance every variant from the first episode on, leaving
    nothing to adapt; at the end it is measured on ``--instances`` test and
    out-of-distribution variants.
    """
    options = {"max_steps_in_episode": args.cartpole_horizon,
               "random_push_direction": not args.cartpole_fixed_direction}
    family = metarl_jax.make("cartpole", **options)
    config = apply_overrides(cartpole_config(), [f"trial_episodes={args.cartpole_episodes}"]
                             + list(args.overrides))
    trained, record = train_cell("cartpole", config, "cartpole", options, args, args.scratch,
                                 eval_every=10, eval_num_tasks=CARTPOLE_PROGRESS_TASKS)
    eval_columns = read_csv(trained.run.run_dir / "eval.csv")
    episodes = range(1, config.trial_episodes + 1)
    during_training = [
        {"iteration": int(iteration),
         "per_episode_mean": [float(eval_columns[f"rl2_{e}_mean"][i]) for e in episodes]}
        for i, iteration in enumerate(eval_columns["iteration"])]
    result = {"family": "cartpole", "horizon": args.cartpole_horizon,
              "random_push_direction": not args.cartpole_fixed_direction,
              "instances": args.instances}
    play = rl2_evaluator(config, family)
    for split in ("test", "ood"):
        tasks = family.sample(jax.random.PRNGKey(args.seed), args.instances, split)
        curve = play(trained.state, tasks, jax.random.PRNGKey(7))
        result[split] = {
            "per_episode": [mean_and_se(curve[:, i]) for i in range(curve.shape[1])],
            "last_minus_first": mean_and_se(curve[:, -1] - curve[:, 0]),
        }
    return {**result, "during_training": during_training, **record,
            "machine": machine_description()}


def cartpole_markdown(result: dict) -> str:
    """The per-episode returns of a trial, held out and during training."""
    num_episodes = len(result["test"]["per_episode"])
    episodes = " | ".join(f"ep {i + 1}" for i in range(num_episodes))
    lines = [
        f"Machine: {result.get('machine') or machine_description()}. RL² on "
        f"{result['instances']} held-out CartPole variants per "
        f"split (horizon {result['horizon']}"
        f"{', push direction random' if result.get('random_push_direction') else ''}), "
        f"return per episode of a trial ± one standard "
        f"error; trained {result['train_s'] / 60:.1f} min ({result['iterations']} iterations, "
        f"{result['env_steps_per_s']:,.0f} env steps/s).", "",
        f"| split | {episodes} | last − first |", "|---|" + "---|" * (num_episodes + 1)]
    for split in ("test", "ood"):
        values = " | ".join(format_mean_se(e, 1) for e in result[split]["per_episode"])
        diff = format_mean_se(result[split]["last_minus_first"], 1, signed=True)
        lines.append(f"| {split} | {values} | {diff} |")
    lines += ["", f"During training ({CARTPOLE_PROGRESS_TASKS} test variants, mean return "
              "per episode):", "",
              f"| iteration | {episodes} |", "|---|" + "---|" * num_episodes]
    rows = result["during_training"]
    for row in rows:
        if row["iteration"] not in (10, 20, 30, 40, 50, 100, 200, 400) and row is not rows[-1]:
            continue
        values = " | ".join(f"{v:.1f}" for v in row["per_episode_mean"])
        lines.append(f"| {row['iteration']} | {values} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[10],
                        help="n of Table 2 (episodes per trial): 10 25 50 75 100")
    add_training_arguments(parser, 1000, "n=10 only, a small network for 40 iterations")
    parser.add_argument("--cartpole", action="store_true",
                        help="RL² on the cartpole family instead of Table 2")
    parser.add_argument("--cartpole-episodes", type=int, default=3)
    parser.add_argument("--cartpole-horizon", type=int, default=200)
    parser.add_argument("--cartpole-fixed-direction", action="store_true",
                        help="no reversed actuators in the cartpole family")
    parser.add_argument("--memory", choices=rl2.MEMORIES, default="gru",
                        help="RL²'s memory: the paper's GRU, or causal attention over the trial "
                             "(results in rl2_mdp_transformer.json)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/rl2_mdp.json "
                        "(rl2_mdp_transformer.json with --memory transformer, "
                        "rl2_mdp_quick.json with --quick, rl2_cartpole.json with --cartpole)")
    args = parser.parse_args(argv)
    if args.cartpole:
        args.out = args.out or os.path.join(RESULTS, "rl2_cartpole.json")
    else:
        if args.quick:
            args.episodes, args.iterations = [10], min(args.iterations, 40)
        for n in args.episodes:
            if n not in MDP_PUBLISHED:
                parser.error(f"--episodes: {n} is not a row of Table 2 "
                             f"({sorted(MDP_PUBLISHED)})")
        stem = "rl2_mdp" + ("_transformer" if args.memory == "transformer" else "")
        args.out = args.out or os.path.join(RESULTS, stem + ("_quick.json" if args.quick
                                                             else ".json"))
    args.scratch = default_scratch(RESULTS, args.out)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.cartpole:
        result = run_cartpole(args)
        key = "cartpole" if args.cartpole_fixed_direction else "cartpole_random_push_direction"
        update_json(args.out, {key: result})
        print(cartpole_markdown(result), flush=True)
        return result
    return run_cells(args.out, [(str(n), functools.partial(run_cell, n, args))
                                for n in args.episodes], markdown)


if __name__ == "__main__":
    main()
