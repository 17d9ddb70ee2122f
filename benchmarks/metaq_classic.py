"""Meta-Q-Learning on CartPole and MountainCar families: against a per-task DQN and RL².

``metaq`` (``metarl_jax.algorithms.metaq``) is meta-trained on a family for a
wall-clock budget and evaluated every ``--eval-every`` iterations on the same
held-out tasks (test split, fixed key): greedy return per episode with the
context (``metaq``), after MQL's adaptation step (``mql``) and with an empty
context (``no_context``). At the end it is measured on ``--eval-tasks`` test
and out-of-range (ood) tasks. On the same tasks:

* **per-task DQN** (:func:`metaq.per_task_dqn`): a plain double DQN trained
  from scratch on each task, vmapped over the tasks, for as many env steps
  per task as ``metaq`` used in all of meta-training (a return-vs-steps curve);
* **PEARL**'s discrete-action variant (``--pearl-only``, added to the same
  file) trained with ``metaq``'s total env steps;
* **RL²** trained with ``metaq``'s total env steps (its CartPole config,
  read from ``rl2_cartpole.json``), and RL²'s converged result from that file
  with the env steps it used.

Families: ``cartpole`` with a random push direction (a task is the physics
and whether the actuator is reversed; horizon 200) and ``mountaincar``
(varied force and gravity; horizon 200). Results:
``benchmarks/results/metaq_<family>.json``.

    python benchmarks/metaq_classic.py --family cartpole --minutes 4
    python benchmarks/metaq_classic.py --family mountaincar --minutes 10
    python benchmarks/metaq_classic.py --family cartpole --pearl-only   # PEARL beside it
    python benchmarks/metaq_classic.py --quick          # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import metaq, pearl, rl2
from metarl_jax.training.config import config_from_dict
from metarl_jax.training.report import (machine_metadata, mean_and_ci95, read_json,
                                        update_json)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILIES = {"cartpole": {"max_steps_in_episode": 200, "random_push_direction": True},
            "mountaincar": {"max_steps_in_episode": 200}}


def config(family: str, quick: bool) -> metaq.Config:
    """CPU sizes: 64-64 Q-network, a GRU of 32 over the last 10 transitions; Adam 3e-4
    and a slow target (tau 0.005), since 1e-3 / 0.01 peaked and then collapsed
    (docs/notes/metaq.md)."""
    fields = dict(num_train_tasks=40, context_length=10, num_tasks_sample=4,
                  num_train_steps=50, meta_batch_size=8, batch_size=32, replay_capacity=10_000,
                  learning_rate=3e-4, tau=0.005, epsilon_decay_iterations=100,
                  eval_episodes=2, adapt_steps=10)
    if family == "mountaincar":
        # a sparse -1-per-step task: exploration needs the slower anneal
        fields.update(epsilon_decay_iterations=300, num_initial_trials=5)
    if quick:
        fields.update(num_train_tasks=6, num_tasks_sample=2, num_train_steps=3,
                      hidden_sizes=(16,), context_size=8, context_length=4, batch_size=8,
                      replay_capacity=2000, adapt_steps=2, adapt_old_size=16,
                      propensity_steps=10)
    return metaq.Config(**fields)


def rl2_reference() -> dict | None:
    """RL²'s CartPole run (random push direction) as recorded: config and result."""
    data = read_json(os.path.join(RESULTS, "rl2_cartpole.json"))
    return (data or {}).get("cartpole_random_push_direction")


def train_rl2(family, env_steps: int, tasks: dict, key, quick: bool) -> dict:
    """RL² with ``env_steps`` real steps (at least one iteration), evaluated on ``tasks``."""
    reference = rl2_reference()
    if reference is not None and not quick:
        cfg = config_from_dict(rl2.Config, reference["rl2_config"])
    else:
        cfg = rl2.Config(trial_episodes=3, meta_batch_size=4 if quick else 64,
                         hidden_size=8 if quick else 64)
    learner = rl2.make(cfg, family)
    state = learner.init(jax.random.PRNGKey(0))
    update = jax.jit(learner.update)
    evaluate = jax.jit(learner.evaluate)
    steps, iteration, tick = 0, 0, time.perf_counter()
    while steps < env_steps or iteration == 0:
        state, metrics = update(state, jax.random.fold_in(key, iteration))
        steps += int(metrics["env_steps"])
        iteration += 1
    out = {"config": dataclasses.asdict(cfg), "iterations": iteration, "env_steps": steps,
           "wall_s": time.perf_counter() - tick}
    for split, task_params in tasks.items():
        out[split] = mean_and_ci95(np.asarray(evaluate(state, task_params, key)["rl2"]))
    return out


def pearl_config(quick: bool) -> pearl.Config:
    """PEARL's discrete-action variant (soft Q-learning over the actions) at CPU sizes: 64-64
    networks and encoder, 4 tasks x (2 prior + 2 posterior episodes) and 100 gradient
    steps of 8 tasks x 64 transitions per iteration, reward scale 1, learned temperature."""
    if quick:
        return pearl.Config(num_train_tasks=6, encoder_hidden_sizes=(16,), hidden_sizes=(16,),
                            num_initial_steps=20, num_steps_prior=20,
                            num_extra_rl_steps_posterior=20, num_tasks_sample=2,
                            num_train_steps=3, meta_batch_size=2, batch_size=8,
                            context_batch_size=8, replay_capacity=1000)
    return pearl.Config(num_train_tasks=20, encoder_hidden_sizes=(64, 64),
                        hidden_sizes=(64, 64), num_initial_steps=400, num_steps_prior=400,
                        num_extra_rl_steps_posterior=400, num_tasks_sample=4,
                        num_train_steps=100, meta_batch_size=8, batch_size=64,
                        replay_capacity=10_000, reward_scale=1.0, learn_alpha=True)


def train_pearl(family, env_steps: int, tasks: dict, key, quick: bool) -> dict:
    """PEARL's discrete variant with ``env_steps`` real steps (at least one iteration),
    evaluated on ``tasks``: return per episode of accumulated context, and prior-z play."""
    cfg = pearl_config(quick)
    learner = pearl.make(cfg, family)
    state = learner.init(key)
    update, evaluate = jax.jit(learner.update), jax.jit(learner.evaluate)
    iteration, tick = 0, time.perf_counter()
    while int(state.env_steps) < env_steps or iteration == 0:
        state, _ = update(state, jax.random.fold_in(key, iteration))
        iteration += 1
    out = {"config": dataclasses.asdict(cfg), "iterations": iteration,
           "env_steps": int(state.env_steps), "wall_s": time.perf_counter() - tick}
    for split, task_params in tasks.items():
        curves = evaluate(state, task_params, key)
        out[split] = {name: mean_and_ci95(np.asarray(curves[name])) for name in curves}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="cartpole")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the per-task DQN and RL² runs")
    parser.add_argument("--dqn-steps", type=int, default=None,
                        help="env steps per task for the per-task DQN (default: metaq's total)")
    parser.add_argument("--pearl-only", action="store_true",
                        help="train PEARL's discrete variant with the recorded metaq run's env "
                             "steps on the same held-out tasks and add it to the results JSON")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = args.out or os.path.join(RESULTS, f"metaq_{args.family}.json")
    options = FAMILIES[args.family]
    if args.quick:
        options = {**options, "max_steps_in_episode": 20}
    family = metarl_jax.make(args.family, **options)
    if args.pearl_only:
        recorded = read_json(out)
        if not recorded:
            parser.error(f"--pearl-only needs a recorded metaq run in {out}")
        tasks = {split: family.sample(jax.random.PRNGKey(args.seed + 1),
                                      recorded["eval_tasks"], split) for split in ("test", "ood")}
        # the file's machine and date stay the metaq run's; PEARL's are in its own entry
        return update_json(out, {"pearl_equal_steps": {
            **train_pearl(family, recorded["env_steps"], tasks,
                          jax.random.PRNGKey(args.seed + 5), args.quick),
            **machine_metadata()}}, metadata=False)
    cfg = config(args.family, args.quick)
    learner = metaq.make(cfg, family)
    tasks = {split: family.sample(jax.random.PRNGKey(args.seed + 1), args.eval_tasks, split)
             for split in ("test", "ood")}
    eval_key = jax.random.PRNGKey(args.seed + 2)

    tick = time.perf_counter()
    init = jax.jit(learner.init).lower(jax.random.PRNGKey(args.seed)).compile()
    state = init(jax.random.PRNGKey(args.seed))
    update = jax.jit(learner.update).lower(state, jax.random.PRNGKey(0)).compile()
    evaluate = jax.jit(learner.evaluate).lower(state, tasks["test"], eval_key).compile()
    compile_s = time.perf_counter() - tick

    history, train_s, iteration = [], 0.0, 0
    budget = 0.05 if args.quick else args.minutes * 60
    while train_s < budget:
        tick = time.perf_counter()
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(args.seed),
                                                          iteration))
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        iteration += 1
        if iteration % args.eval_every == 0 or train_s >= budget or iteration == 1:
            curves = evaluate(state, tasks["test"], eval_key)
            row = {"iteration": iteration, "env_steps": int(state.env_steps),
                   "train_s": train_s,
                   **{name: mean_and_ci95(np.asarray(curves[name])) for name in curves}}
            history.append(row)
            print(f"iteration {iteration}: {row['env_steps']} env steps, {train_s:.0f} s, "
                  + ", ".join(f"{name} {np.round(row[name]['mean'], 1)}" for name in curves),
                  flush=True)
    final = {}
    for split, task_params in tasks.items():
        curves = evaluate(state, task_params, eval_key)
        final[split] = {name: mean_and_ci95(np.asarray(curves[name])) for name in curves}
    env_steps = int(state.env_steps)
    result = {"family": args.family, "family_options": options,
              "config": dataclasses.asdict(cfg), "eval_tasks": args.eval_tasks,
              "iterations": iteration, "env_steps": env_steps, "compile_s": compile_s,
              "train_s": train_s, "seconds_per_iteration": train_s / iteration,
              "gradient_steps_per_s": iteration * cfg.num_train_steps / train_s,
              "env_steps_per_s": env_steps / train_s,
              "history": history, "final": final, "quick": args.quick}

    if not args.no_baselines:
        # per-task DQN: as many env steps per task as metaq used in all (about; a trial's
        # length varies), from the same number of trials-per-step ratio
        trial_steps = max(1.0, env_steps / (iteration * cfg.num_tasks_sample
                                            + cfg.num_train_tasks * cfg.num_initial_trials))
        blocks = 4 if args.quick else 10
        per_block = max(1, math.ceil((args.dqn_steps or env_steps) / trial_steps / blocks))
        dqn = {"iterations": per_block * blocks, "eval_every": per_block}
        tick = time.perf_counter()
        for split, task_params in tasks.items():
            returns, steps = metaq.per_task_dqn(cfg, family, task_params,
                                                jax.random.PRNGKey(args.seed + 3),
                                                per_block * blocks, per_block)
            returns, steps = np.asarray(returns), np.asarray(steps)
            dqn[split] = {"env_steps_per_task": steps.mean(0).tolist(),
                          "return": mean_and_ci95(returns)}
        dqn["wall_s"] = time.perf_counter() - tick
        result["per_task_dqn"] = dqn
        print(f"per-task DQN: {dqn['test']['return']['mean']}", flush=True)
        result["rl2_equal_steps"] = train_rl2(family, env_steps, tasks,
                                              jax.random.PRNGKey(args.seed + 4), args.quick)
        print(f"RL² at {result['rl2_equal_steps']['env_steps']} env steps: "
              f"{result['rl2_equal_steps']['test']['mean']}", flush=True)
        reference = rl2_reference() if args.family == "cartpole" else None
        if reference is not None:
            result["rl2_converged"] = {
                "env_steps": reference["env_steps"],
                "per_episode": [e["mean"] for e in reference["test"]["per_episode"]],
                "source": "benchmarks/results/rl2_cartpole.json"}
    result.update(machine_metadata())
    update_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
