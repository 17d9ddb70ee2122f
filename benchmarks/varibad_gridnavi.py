"""VariBAD on GridNavi beside RL² at equal env steps and the exact reference players.

Zintgraf et al. 2020, Sec. 5.1: a 5 x 5 grid, 15-step episodes, trials of 4
episodes, the goal uniform over 21 cells. This script

* trains VariBAD (``metarl_jax.algorithms.varibad``, the reference's GridNavi
  settings with PPO) with the library's runner for ``--minutes`` of training
  time, then RL² (GRU 64 on the same inputs, PPO) for the same number of env
  steps;
* plays both, sampling their actions (as trained) and by their most likely
  action ("mode"), on ``--instances`` held-out goals (the test split) and the
  reference players (``metarl_jax.players.gridnavi``: random, the
  belief-greedy player, the exact Bayes-optimal policy, the known-goal oracle)
  on exactly those goals;
* writes the return of each episode 1-4 and of the trial (mean ± one standard
  error over goals), the exact Bayes-optimal value, env steps, training time
  and env steps per second of both learners into
  ``benchmarks/results/varibad_gridnavi.json``.

Usage::

    python benchmarks/varibad_gridnavi.py [--minutes 12] [--size 5]
    python benchmarks/varibad_gridnavi.py --quick     # a 3 x 3 grid, about a minute
    python benchmarks/varibad_gridnavi.py --reuse-runs  # evaluate the last runs again
    # attempt 2: the reference's batch shape and VAE buffer, at attempt 1's env steps,
    # beside attempt 1's RL² (same goals, same keys)
    python benchmarks/varibad_gridnavi.py --variant buffer --env-steps 29306880 --skip-rl2

``--variant buffer`` is the reference repository's GridNavi shape where ours
differed: 16 trials per iteration (its 16 processes x 60 steps), the VAE
trained on 25 trials per step drawn from a buffer of past trials (10,000 here,
100,000 there), entropy 0.1. Its rows are stored beside the default's
(``varibad_buffer``), so both attempts stay on the page.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import rl2, varibad
from metarl_jax.players import gridnavi
from metarl_jax.training.report import machine_description, mean_and_se, read_json, update_json
from metarl_jax.training.runner import load_run
from metarl_jax.training.tables import default_scratch, train_rl2

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PLAYERS = ("random", "belief_greedy", "bayes_optimal", "known_goal")


VARIANTS = ("default", "buffer")


def varibad_config(quick: bool, variant: str = "default") -> varibad.Config:
    if variant == "buffer":
        return varibad.Config(meta_batch_size=16, vae_buffer_trials=10_000, vae_batch_trials=25,
                              entropy_coef=0.1)
    return varibad.Config(meta_batch_size=64)


def rl2_config(quick: bool) -> rl2.Config:
    """RL² with the encoder's memory size (GRU 64), the policy's heads, the same PPO."""
    return rl2.Config(trial_episodes=4, meta_batch_size=64, hidden_size=64,
                      head_hidden_sizes=(32, 32), num_epochs=2, num_minibatches=4,
                      learning_rate=7e-4, max_grad_norm=0.5, gamma=0.95, gae_lambda=0.95,
                      clip_eps=0.1, entropy_coef=0.05)


def summary(per_episode: np.ndarray) -> dict:
    return {"per_episode": [mean_and_se(per_episode[:, i]) for i in range(per_episode.shape[1])],
            "trial": mean_and_se(per_episode.sum(axis=1))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="VariBAD's training time (RL² gets its env steps)")
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--episode-length", type=int, default=15)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 x 3 grid, 6-step episodes")
    parser.add_argument("--out", default=None)
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="VariBAD's settings (module docstring)")
    parser.add_argument("--env-steps", type=float, default=None,
                        help="train VariBAD for this many env steps (--minutes still caps it)")
    parser.add_argument("--skip-rl2", action="store_true",
                        help="keep the recorded RL² run instead of training RL² again")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="evaluate the runs the last invocation trained (same flags) "
                             "instead of training again; training records are kept")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.episode_length, args.minutes = 3, 6, min(args.minutes, 0.5)
    out = args.out or os.path.join(RESULTS, "varibad_gridnavi_quick.json" if args.quick
                                   else "varibad_gridnavi.json")
    scratch = default_scratch(RESULTS, out)
    options = {"size": args.size, "episode_length": args.episode_length}
    family = metarl_jax.make("gridnavi", **options)
    goals = family.sample(jax.random.PRNGKey(args.seed), args.instances, "test")
    play_key, eval_key = jax.random.split(jax.random.PRNGKey(args.seed + 7))
    episodes = 4
    rows = {}
    for name, key in zip(PLAYERS, jax.random.split(play_key, len(PLAYERS))):
        rows[name] = summary(np.asarray(gridnavi.evaluate(
            name, goals, key, size=args.size, episode_length=args.episode_length,
            num_episodes=episodes)))
    exact = gridnavi.bayes_optimal_plan(args.size, args.episode_length, episodes)

    vb_config, r_config = varibad_config(args.quick, args.variant), rl2_config(args.quick)
    vb_name = "varibad" if args.variant == "default" else f"varibad_{args.variant}"
    recorded = read_json(out, {})
    learners = ((vb_name, varibad, vb_config),) + (() if args.skip_rl2 else
                                                   (("rl2", rl2, r_config),))
    if args.skip_rl2 and "rl2" not in recorded.get("training", {}):
        raise SystemExit(f"--skip-rl2: {out} has no recorded RL² run")
    if args.reuse_runs:
        records = dict(recorded["training"])
        states = {name: load_run(scratch / name).state for name, _, _ in learners}
    else:
        records, states = dict(recorded.get("training", {})), {}
        iterations = args.iterations
        if args.env_steps is not None:
            per_iteration = vb_config.meta_batch_size * episodes * args.episode_length
            iterations = max(1, round(args.env_steps / per_iteration))
        vb = train_rl2(vb_config, "gridnavi", iterations, args.minutes, args.seed,
                       run_dir=scratch / vb_name, family_options=options,
                       algorithm="varibad")
        trained_runs = [(vb_name, vb, vb_config)]
        if not args.skip_rl2:
            steps_per_iteration = r_config.meta_batch_size * episodes * args.episode_length
            rl = train_rl2(r_config, "gridnavi",
                           max(1, round(vb.env_steps / steps_per_iteration)),
                           None, args.seed, run_dir=scratch / "rl2", family_options=options)
            trained_runs.append(("rl2", rl, r_config))
        for name, trained, config in trained_runs:
            states[name] = trained.state
            records[name] = {
                "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
                "iterations": trained.iterations, "env_steps": trained.env_steps,
                "train_s": trained.train_s, "compile_s": trained.compile_s,
                "env_steps_per_s": trained.env_steps / max(trained.train_s, 1e-9),
                # each run names its machine: attempts may run on different ones
                "machine": machine_description(),
                "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if args.skip_rl2:   # the recorded RL² rows: the same goals and keys (same seed and flags)
        rows.update({k: v for k, v in recorded["returns"].items() if k.startswith("rl2")})
    for name, module, config in learners:
        for policy, suffix in (("sample", ""), ("mode", "_mode")):
            learner = module.make(dataclasses.replace(config, eval_policy=policy), family)
            curve = jax.jit(learner.evaluate)(states[name], goals, eval_key)
            rows[name + suffix] = summary(np.asarray(curve[module.__name__.rsplit(".", 1)[-1]]))
    # the other variants' rows stay (each attempt keeps its record)
    rows = {**{k: v for k, v in recorded.get("returns", {}).items() if k not in rows}, **rows}
    result = {
        "setting": {"size": args.size, "episode_length": args.episode_length,
                    "trial_episodes": episodes, "instances": args.instances,
                    "goal_cells": int(len(metarl_jax.envs.goal_cells(args.size)))},
        "bayes_optimal_exact": exact.value,
        "returns": rows,
        "training": records,
        "varibad_fraction_of_bayes_optimal": {
            name: row["trial"]["mean"] / exact.value for name, row in rows.items()
            if name.startswith("varibad")},
        "reference_budget_frames": 2e7,
        "machine": machine_description(),
        "quick": args.quick,
    }
    update_json(out, result)
    for name, row in rows.items():
        print(f"{name:>14}: trial {row['trial']['mean']:.3f} ± {row['trial']['se']:.3f}  "
              + " ".join(f"{e['mean']:.2f}" for e in row["per_episode"]))
    print(f"exact Bayes-optimal trial return {exact.value:.4f}")
    return result


if __name__ == "__main__":
    main()
