"""VariBAD on navigation2d beside RL² at equal env steps and MAML-TRPO's recorded result.

MAML's 2D navigation (Finn et al. 2017): goals uniform in [-0.5, 0.5]^2, a
100-step episode, reward minus the distance to the goal. VariBAD here reads
trials of ``--episodes`` episodes on one goal, with the MLP reward decoder
``(z, s, a, s') -> r`` and the ELBO taken at ``elbo_terms`` random times of the
trial (decoding all 200 rewards at all 200 times would be 40,000 decoder calls
per trial). This script

* trains VariBAD with the library's runner for ``--minutes`` of training time,
  then RL² (GRU of the encoder's size, the same heads and PPO settings) for
  the same number of env steps;
* plays both on ``--eval-tasks`` held-out goals (test split, the same goals
  and keys for both): the return of each episode of the trial, mean ± 95% CI;
* puts MAML-TRPO's recorded navigation result
  (``benchmarks/results/maml_navigation.json``: return before and after each
  inner gradient step, with the env steps it trained on) beside them.

    python benchmarks/varibad_navigation.py [--minutes 10]
    python benchmarks/varibad_navigation.py --quick

Results: ``benchmarks/results/varibad_navigation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import rl2, varibad
from metarl_jax.training.report import (machine_metadata, maml_navigation_reference,
                                        mean_and_ci95, update_json)
from metarl_jax.training.tables import default_scratch, train_rl2

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PPO = dict(num_epochs=4, num_minibatches=4, learning_rate=3e-4, max_grad_norm=0.5,
           gamma=0.99, gae_lambda=0.95, clip_eps=0.2, entropy_coef=0.0)


def configs(episodes: int, quick: bool) -> dict:
    memory, heads, trials = (8, (8,), 4) if quick else (64, (64, 64), 32)
    return {
        "varibad": varibad.Config(
            trial_episodes=episodes, meta_batch_size=trials, encoder_hidden_size=memory,
            policy_hidden_sizes=heads, decoder_hidden_sizes=heads, reward_decoder="mlp",
            reward_embed=16, elbo_terms=4 if quick else 20, vae_updates=3, **PPO),
        "rl2": rl2.Config(trial_episodes=episodes, meta_batch_size=trials, hidden_size=memory,
                          head_hidden_sizes=heads, **PPO),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="VariBAD's training time (RL² gets its env steps)")
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=2, help="episodes per trial")
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5-step episodes, tiny networks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    options = {}
    if args.quick:
        options, args.minutes = {"max_steps_in_episode": 5}, min(args.minutes, 0.2)
        args.iterations = min(args.iterations, 3)
    out = args.out or os.path.join(RESULTS, "varibad_navigation_quick.json" if args.quick
                                   else "varibad_navigation.json")
    scratch = default_scratch(RESULTS, out)
    family = metarl_jax.make("navigation2d", **options)
    tasks = family.sample(jax.random.PRNGKey(args.seed + 1), args.eval_tasks, "test")
    eval_key = jax.random.PRNGKey(args.seed + 2)
    cfgs = configs(args.episodes, args.quick)
    horizon = options.get("max_steps_in_episode", 100)
    trained = {"varibad": train_rl2(cfgs["varibad"], "navigation2d", args.iterations,
                                    args.minutes, args.seed, run_dir=scratch / "varibad",
                                    family_options=options, algorithm="varibad")}
    per_iteration = cfgs["rl2"].meta_batch_size * args.episodes * horizon
    trained["rl2"] = train_rl2(cfgs["rl2"], "navigation2d",
                               max(1, round(trained["varibad"].env_steps / per_iteration)),
                               None, args.seed, run_dir=scratch / "rl2", family_options=options)
    learners = {}
    for name, module in (("varibad", varibad), ("rl2", rl2)):
        run = trained[name]
        curves = {}
        for policy in ("sample", "mode"):
            learner = module.make(dataclasses.replace(cfgs[name], eval_policy=policy), family)
            curve = jax.jit(learner.evaluate)(run.state, tasks, eval_key)
            curves[policy] = mean_and_ci95(np.asarray(curve[name]))
        learners[name] = {"config": dataclasses.asdict(cfgs[name]), "iterations": run.iterations,
                          "env_steps": run.env_steps, "train_s": run.train_s,
                          "compile_s": run.compile_s,
                          "env_steps_per_s": run.env_steps / max(run.train_s, 1e-9),
                          "return_per_episode": curves}
        print(f"{name}: {run.env_steps:,.0f} env steps, {run.train_s / 60:.1f} min; per episode "
              + " ".join(f"{m:.2f}" for m in curves["sample"]["mean"])
              + " (mode " + " ".join(f"{m:.2f}" for m in curves["mode"]["mean"]) + ")",
              flush=True)
    result = {"family": "navigation2d", "family_options": options, "episodes": args.episodes,
              "eval_tasks": args.eval_tasks, "minutes": args.minutes, "quick": args.quick,
              "learners": learners,
              "maml": None if args.quick else maml_navigation_reference(RESULTS)}
    update_json(out, {**result, **machine_metadata()})
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
