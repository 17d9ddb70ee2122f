"""PEARL sample efficiency: held-out return against real environment steps.

PEARL (``metarl_jax.algorithms.pearl``) is meta-trained on a family for a
wall-clock budget and evaluated every ``--eval-every`` iterations on the same
held-out tasks (test split, fixed key): the return of each episode of
accumulated context (episode 1 with ``z`` from the prior, later ones by
posterior sampling) and of the no-inference ``prior_z`` baseline. On
``navigation2d`` MAML-TRPO's result (``benchmarks/results/maml_navigation.json``,
the same family) is read back with the environment steps its run used, so the
JSON holds both curves on one axis of real environment steps. Results:
``benchmarks/results/pearl_<family>.json``.

    python benchmarks/pearl_navigation.py [--family navigation2d] [--minutes 15]
    python benchmarks/pearl_navigation.py --family point-robot-sparse --minutes 10
    python benchmarks/pearl_navigation.py --quick          # a smoke run (tests)
    python benchmarks/pearl_navigation.py --family point-robot --maml-only   # MAML beside it
    python benchmarks/pearl_navigation.py --family point-robot --variant 80tasks  # attempt 3

On other families than navigation2d, ``--maml-only`` trains MAML-TRPO there
(the settings of ``maml_navigation.py``: 20 tasks x 20 episodes per
iteration, one inner step of 0.1, 100-100 ReLU policy, TRPO) for
``--maml-iterations`` iterations and records its held-out return before and
after adaptation on the same tasks, with the env steps it used.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import maml, pearl, rl2
from metarl_jax.core.rollout import episode_horizon
from metarl_jax.training.report import (machine_metadata, maml_navigation_reference,
                                        mean_and_ci95, read_json, update_json)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def config(family: str, quick: bool) -> pearl.Config:
    """The reference's per-iteration schedule at CPU network sizes (64-64, 16 x 64 batches)."""
    horizon = 100 if family == "navigation2d" else 20
    fields = dict(num_train_tasks=40, encoder_hidden_sizes=(64, 64), hidden_sizes=(64, 64),
                  num_initial_steps=2 * horizon, num_steps_prior=2 * horizon,
                  num_extra_rl_steps_posterior=2 * horizon, num_tasks_sample=5,
                  num_train_steps=500, meta_batch_size=16, batch_size=64,
                  context_batch_size=64, replay_capacity=20_000, gamma=0.9,
                  reward_scale=10.0, learn_alpha=True, eval_episodes=3)
    if family == "point-robot":
        # 20-step episodes: collect in oyster's point-robot proportions (initial 1,000,
        # prior 400, extra posterior 600 in 200-step units) scaled to a tenth
        fields.update(num_initial_steps=5 * horizon, num_steps_prior=2 * horizon,
                      num_extra_rl_steps_posterior=3 * horizon)
    if family == "point-robot-sparse":
        # oyster's sparse-point-robot: critic on the dense reward, context on the sparse
        # one, gamma 0.9, KL weight 1, more posterior collection, 5 exploration episodes
        fields.update(critic_reward="dense", kl_weight=1.0, num_initial_steps=10 * horizon,
                      num_steps_prior=5 * horizon,
                      num_steps_posterior=20 * horizon, num_extra_rl_steps_posterior=0,
                      context_batch_size=256, eval_episodes=10, num_exploration_episodes=5)
    if quick:
        fields.update(num_train_tasks=6, num_train_steps=5, hidden_sizes=(16,),
                      encoder_hidden_sizes=(16,), batch_size=16, context_batch_size=8,
                      replay_capacity=1000)
    return pearl.Config(**fields)


# later attempts at the 20x goal, each its own results file beside the first run's
VARIANTS = {
    # oyster's point-robot task count (80 training goals; 40 leaves held-out goals far from
    # every training goal) and two gradient steps per env step: env steps are the currency
    "80tasks": {"num_train_tasks": 80, "num_train_steps": 1000},
}


def rl2_equal_steps(family, recorded: dict, seed: int, quick: bool) -> dict:
    """RL² (GRU 64, 64 trials of 3 episodes per iteration) trained with the recorded
    PEARL run's env steps, on the same held-out tasks: return per episode of a trial."""
    horizon = recorded["config"]["horizon"] or None
    cfg = rl2.Config(trial_episodes=recorded["config"]["eval_episodes"], horizon=horizon,
                     meta_batch_size=4 if quick else 64, hidden_size=8 if quick else 64)
    learner = rl2.make(cfg, family)
    state = learner.init(jax.random.PRNGKey(seed))
    update, evaluate = jax.jit(learner.update), jax.jit(learner.evaluate)
    steps, iteration, tick = 0, 0, time.perf_counter()
    while steps < recorded["final"]["env_steps"] or iteration == 0:
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(seed), iteration))
        steps += int(metrics["env_steps"])
        iteration += 1
    tasks = family.sample(jax.random.PRNGKey(seed + 1), recorded["eval_tasks"], "test")
    curve = np.asarray(evaluate(state, tasks, jax.random.PRNGKey(seed + 2))["rl2"])
    return {"config": dataclasses.asdict(cfg), "iterations": iteration, "env_steps": steps,
            "wall_s": time.perf_counter() - tick, "rl2": mean_and_ci95(curve)}


def maml_same_family(family, recorded: dict, iterations: int, seed: int, quick: bool,
                     eval_every: int = 10) -> dict:
    """MAML-TRPO trained on ``family`` and evaluated on the recorded run's held-out tasks
    every ``eval_every`` iterations: return before and after each inner step, against the
    env steps it trained on (``history``; the last row is the run's end)."""
    cfg = maml.Config(meta_batch_size=20, num_inner_steps=1, inner_lr=0.1, inner_episodes=20,
                      horizon=episode_horizon(family, recorded["config"]["horizon"] or None,
                                              "MAML"),
                      hidden_sizes=(100, 100), outer_optimizer="trpo", eval_episodes=40)
    if quick:
        cfg = dataclasses.replace(cfg, meta_batch_size=2, inner_episodes=2, hidden_sizes=(8,),
                                  eval_episodes=2)
    learner = maml.make(cfg, family)
    state = learner.init(jax.random.PRNGKey(seed))
    update, evaluate = jax.jit(learner.update), jax.jit(learner.evaluate)
    tasks = family.sample(jax.random.PRNGKey(seed + 1), recorded["eval_tasks"], "test")
    # every iteration plays inner_episodes episodes per task before and after each step
    per_iteration = (cfg.meta_batch_size * cfg.inner_episodes
                     * episode_horizon(family, cfg.horizon, "MAML") * (cfg.num_inner_steps + 1))
    history, train_s = [], 0.0
    for iteration in range(1, iterations + 1):
        tick = time.perf_counter()
        state, _ = update(state, jax.random.fold_in(jax.random.PRNGKey(seed), iteration - 1))
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        if iteration % eval_every == 0 or iteration == iterations:
            curve = np.asarray(evaluate(state, tasks, jax.random.PRNGKey(seed + 2))["maml"])
            history.append({"iteration": iteration, "env_steps": iteration * per_iteration,
                            "train_s": train_s, "return_by_inner_step": mean_and_ci95(curve)})
    stats = history[-1]["return_by_inner_step"]
    return {"config": dataclasses.asdict(cfg), "iterations": iterations,
            "env_steps": iterations * per_iteration, "train_s": train_s,
            "return_by_inner_step": stats, "best_after_adaptation": max(stats["mean"][1:]),
            "history": history}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="navigation2d")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rl2-only", action="store_true",
                        help="train RL² with the env steps of the recorded PEARL run in the "
                             "results JSON and add it there (PEARL is not re-run)")
    parser.add_argument("--maml-only", action="store_true",
                        help="train MAML-TRPO on this family and add it to the results JSON "
                             "(PEARL is not re-run; navigation2d reads maml_navigation.json)")
    parser.add_argument("--maml-iterations", type=int, default=200)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="a later attempt's settings, written beside the first run's "
                             "file with _<variant> added; its MAML result is carried over")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    base = args.out or os.path.join(RESULTS, f"pearl_{args.family.replace('-', '_')}.json")
    out = base if args.variant is None else f"{os.path.splitext(base)[0]}_{args.variant}.json"
    family = metarl_jax.make(args.family)
    if args.rl2_only:
        recorded = read_json(out)
        if not recorded:
            parser.error(f"--rl2-only needs a recorded PEARL run in {out}")
        # the file's machine and date stay the PEARL run's; RL²'s are in its own entry
        return update_json(out, {"rl2_equal_steps": {
            **rl2_equal_steps(family, recorded, args.seed, args.quick),
            **machine_metadata()}}, metadata=False)
    if args.maml_only:
        recorded = read_json(out)
        if not recorded:
            parser.error(f"--maml-only needs a recorded PEARL run in {out}")
        iterations = 2 if args.quick else args.maml_iterations
        return update_json(out, {"maml": {
            **maml_same_family(family, recorded, iterations, args.seed, args.quick,
                               1 if args.quick else args.eval_every),
            **machine_metadata()}}, metadata=False)
    cfg = config(args.family, args.quick)
    if args.variant:
        cfg = dataclasses.replace(cfg, **VARIANTS[args.variant])
    learner = pearl.make(cfg, family)
    tasks = family.sample(jax.random.PRNGKey(args.seed + 1), args.eval_tasks, "test")
    eval_key = jax.random.PRNGKey(args.seed + 2)

    tick = time.perf_counter()
    init = jax.jit(learner.init).lower(jax.random.PRNGKey(args.seed)).compile()
    state = init(jax.random.PRNGKey(args.seed))
    update = jax.jit(learner.update).lower(state, jax.random.PRNGKey(0)).compile()
    evaluate = jax.jit(learner.evaluate).lower(state, tasks, eval_key).compile()
    compile_s = time.perf_counter() - tick

    history, train_s, iteration = [], 0.0, 0
    budget = 0.05 if args.quick else args.minutes * 60
    while train_s < budget:
        tick = time.perf_counter()
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(args.seed), iteration))
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        iteration += 1
        if iteration % args.eval_every == 0 or train_s >= budget or iteration == 1:
            curves = evaluate(state, tasks, eval_key)
            row = {"iteration": iteration, "env_steps": int(state.env_steps),
                   "train_s": train_s,
                   # a goal counts as reached when the last episode earned any reward
                   # (the sparse reward is positive only inside the goal radius)
                   "success_last_episode": float(np.mean(np.asarray(curves["pearl"])[:, -1] > 0)),
                   **{name: mean_and_ci95(np.asarray(curves[name])) for name in curves}}
            history.append(row)
            print(f"iteration {iteration}: {row['env_steps']} env steps, "
                  f"{train_s:.0f} s, pearl {np.round(row['pearl']['mean'], 2)}, "
                  f"prior_z {np.round(row['prior_z']['mean'], 2)}", flush=True)
    result = {"family": args.family, "config": dataclasses.asdict(cfg),
              "eval_tasks": args.eval_tasks, "iterations": iteration,
              "compile_s": compile_s, "train_s": train_s,
              "seconds_per_iteration": train_s / iteration,
              "gradient_steps_per_s": iteration * cfg.num_train_steps / train_s,
              "history": history, "final": history[-1], "quick": args.quick,
              "variant": args.variant,
              # navigation2d: the recorded MAML run; elsewhere --maml-only adds one (a
              # variant's file carries over the first run's)
              "maml": (maml_navigation_reference(RESULTS) if args.family == "navigation2d"
                       else read_json(out, {}).get("maml") or read_json(base, {}).get("maml")),
              **machine_metadata()}
    update_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
