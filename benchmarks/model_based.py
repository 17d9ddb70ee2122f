"""Model-based meta-RL on changing-dynamics families: MB, MB+DE, GrBAL, ReBAL, mbml_policy.

Each learner (``metarl_jax.algorithms.model_based`` presets) is trained for
``--iterations`` iterations with the same sizes, seed and task keys, and
evaluated every ``--eval-every`` iterations on the same ``--eval-tasks``
held-out tasks (test split, fixed key: common random numbers): the return of
one episode with its controller, against the real env steps it has used. At
the end each is measured on test and out-of-range (ood) tasks with all its
curves (``no_adaptation``: the same controller with online adaptation off;
``policy``: mbml_policy's policy alone; ``random``: uniform actions).

Families (dynamics redrawn every ``change_every`` steps of an episode):

* ``pendulum``: Pendulum-v1 whose mass and length jump every 50 steps
  (4 pieces per 200-step episode); planning on the **learned** reward.
* ``pendulum-wide``: the same with mass, length and gravity redrawn every 25
  steps from wider ranges (m, l ~ U[0.4, 1.6], g ~ U[4, 16]; ood above them).
* ``pendulum-wide-known``: the same, planning on the env's known reward.
* ``pendulum-known``: ``pendulum`` planning on the env's known reward.
* ``navigation2d``: MAML's point robot with one velocity axis crippled
  (scale U(0, 0.5); ood: reversed) from step 25 on, redrawn every 25 steps;
  planning on the **known** reward (the goal is the task, as in the
  reference code, which plans with the true reward).

    python benchmarks/model_based.py --family pendulum
    python benchmarks/model_based.py --family navigation2d
    python benchmarks/model_based.py --quick          # a smoke run (tests)

Results: ``benchmarks/results/model_based_<family>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import model_based
from metarl_jax.rl.planners import PlannerConfig
from metarl_jax.training.report import machine_metadata, mean_and_ci95, read_json, update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILIES = {
    "pendulum": {"options": {"change_every": 50}, "reward": "learned", "horizon": 15},
    "navigation2d": {"options": {"change_every": 25}, "reward": "known", "horizon": 10},
    # wider pieces that change twice as often: mass, length *and* gravity, so that one
    # model fitted to every piece is further from each (the ordering's second attempt)
    "pendulum-wide": {"family": "pendulum", "reward": "learned", "horizon": 15,
                      "options": {"change_every": 25, "ranges": {
                          "train": {"m": (0.4, 1.6), "l": (0.4, 1.6), "g": (4.0, 16.0)},
                          "ood": {"m": (1.6, 2.0), "l": (1.6, 2.0), "g": (16.0, 20.0)}}}},
}
# attempt 3: the same pendulum planned with the env's own reward, as the reference code
# plans, so that only the dynamics model (what adaptation changes) decides the ranking
FAMILIES["pendulum-wide-known"] = {**FAMILIES["pendulum-wide"], "reward": "known"}
# the 100x sample-efficiency goal's second attempt: the first pendulum (whose MAML-TRPO and
# RL² runs are recorded) planned with the env's reward, as the reference plans
FAMILIES["pendulum-known"] = {**FAMILIES["pendulum"], "family": "pendulum", "reward": "known"}
LEARNERS = {"mb": dict(adaptation="none"), "mb_de": dict(adaptation="finetune"),
            "grbal": dict(adaptation="gradient"), "rebal": dict(adaptation="recurrent"),
            "mbml_policy": dict(adaptation="gradient", policy=True)}


# planners: random shooting (the reference's), or CEM with three refits of the same number of
# candidates per refit (3x the imagined steps per action)
PLANNERS = {"rs": dict(kind="rs"), "cem": dict(kind="cem", iterations=3, num_elites=25)}


def config(family: str, learner: str, quick: bool, planner: str = "rs") -> model_based.Config:
    """CPU sizes: a 2 x 128 model (the reference's is 3 x 512), 256 candidates (random
    shooting, or CEM's per refit), M = K = 16, one inner step of 0.01 whose size GrBAL
    meta-learns."""
    spec = FAMILIES[family]
    fields = dict(hidden_sizes=(128, 128), tasks_per_iteration=4, train_steps=200,
                  batch_size=64, replay_capacity=8000, past_length=16, future_length=16,
                  inner_lr=0.01, learn_inner_lr=True, reward=spec["reward"],
                  planner=PlannerConfig(num_candidates=256, horizon=spec["horizon"],
                                        **PLANNERS[planner]),
                  **LEARNERS[learner])
    if learner != "grbal" and learner != "mbml_policy":
        fields["learn_inner_lr"] = False   # MB+DE's dynamic evaluation uses the fixed step
    if quick:
        fields.update(hidden_sizes=(16,), tasks_per_iteration=2, train_steps=3, batch_size=8,
                      replay_capacity=400, past_length=4, future_length=4,
                      planner=PlannerConfig(**{**PLANNERS[planner], "num_candidates": 8,
                                               "horizon": 3, "num_elites": 2}),
                      policy_train_steps=2, context_size=4)
    return model_based.Config(**fields)


def run_learner(name, family, tasks, args) -> dict:
    cfg = config(args.family, name, args.quick, args.planner)
    learner = model_based.make(cfg, family, name=name)
    key = jax.random.PRNGKey(args.seed)
    eval_key = jax.random.PRNGKey(args.seed + 2)
    tick = time.perf_counter()
    state = jax.jit(learner.init)(key)
    update = jax.jit(learner.update).lower(state, key).compile()
    mode = "policy_mpc" if cfg.policy else "mpc"
    play = jax.jit(lambda s, t, k: learner.play(s, t, k, 1, mode).returns)
    evaluate = jax.jit(learner.evaluate)
    jax.block_until_ready(play(state, tasks["test"], eval_key))
    compile_s = time.perf_counter() - tick

    def record(iteration, train_s):
        returns = np.asarray(play(state, tasks["test"], eval_key))
        row = {"iteration": iteration, "env_steps": int(state.env_steps), "train_s": train_s,
               "return": mean_and_ci95(returns)}
        print(f"{name} iteration {iteration}: {row['env_steps']} env steps, {train_s:.0f} s, "
              f"return {row['return']['mean'][0]:.1f}", flush=True)
        return row

    history, train_s = [record(0, 0.0)], 0.0
    for iteration in range(1, args.iterations + 1):
        tick = time.perf_counter()
        state, metrics = update(state, jax.random.fold_in(key, iteration))
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            history.append(record(iteration, train_s))
    final = {}
    tick = time.perf_counter()
    for split, task_params in tasks.items():
        curves = evaluate(state, task_params, eval_key)
        final[split] = {curve: mean_and_ci95(np.asarray(curves[curve])) for curve in curves}
        # every learner plays the same tasks with the same keys, so per-task returns give
        # paired differences between learners, far tighter than either return's CI
        final[split]["per_task"] = np.asarray(curves[name])[:, 0].tolist()
    return {"config": dataclasses.asdict(cfg), "compile_s": compile_s, "train_s": train_s,
            "eval_s": time.perf_counter() - tick, "env_steps": int(state.env_steps),
            "inner_lr": float(np.exp(np.asarray(state.model["log_inner_lr"]))),
            "final_model_loss": float(metrics["final_model_loss"]),
            "history": history, "final": final}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="pendulum")
    parser.add_argument("--learners", default=",".join(LEARNERS))
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--planner", choices=sorted(PLANNERS), default="rs",
                        help="rs (default) or cem; a cem run writes its own results file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.eval_every, args.eval_tasks = 2, 1, 3
    suffix = "" if args.planner == "rs" else f"_{args.planner}"
    out = args.out or os.path.join(
        RESULTS, f"model_based_{args.family.replace('-', '_')}{suffix}.json")
    options = dict(FAMILIES[args.family]["options"])
    if args.quick:
        options = {"max_steps_in_episode": 20, "change_every": 10}
    family = metarl_jax.make(FAMILIES[args.family].get("family", args.family), **options)
    tasks = {split: family.sample(jax.random.PRNGKey(args.seed + 1), args.eval_tasks, split)
             for split in ("test", "ood")}
    result = {"family": args.family, "family_options": options,
              "reward": FAMILIES[args.family]["reward"], "eval_tasks": args.eval_tasks,
              "planner": args.planner,
              "iterations": args.iterations, "quick": args.quick,
              # a run of some learners keeps the others' recorded results
              "learners": dict(read_json(out, {}).get("learners", {}))}
    for name in args.learners.split(","):
        if name not in LEARNERS:
            raise SystemExit(f"unknown learner {name!r}; choose from {sorted(LEARNERS)}")
        result["learners"][name] = run_learner(name, family, tasks, args)
        update_json(out, {**result, **machine_metadata()})
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
