"""Performance-weighted ensembles against their best member and the uniform mixture.

Two settings, each a population trained in one compiled program
(:mod:`metarl_jax.core.population`) within a wall-clock budget, then
ensembled with :func:`metarl_jax.training.ensemble.from_population` and
evaluated by :func:`metarl_jax.training.ensemble.evaluate_ensemble`:

* ``navigation2d``: MAML members (2 seeds x inner step sizes 0.03 / 0.1 /
  0.3, TRPO, meta-batch 10), each adapting with its own inner step;
* ``bandit``: RL² members on ``bandit-bernoulli`` with 5 arms and trials of
  10 pulls (2 seeds x learning rates 3e-4 / 3e-3, GRU 64, 256 trials per
  iteration).

Members are validated on tasks of the train split (two sets: one measures
each member, the other chooses Hedge's eta), then the Hedge ensemble, the best
member, the uniform mixture, the online selector (ESBAS) and every member
play the same held-out test tasks with the same keys. Mean ± 95% CI over
test tasks; results (and the machine) go to ``benchmarks/results/ensembles.json``.

Usage::

    python benchmarks/ensembles.py              # about 7 minutes on 2 CPU cores
    python benchmarks/ensembles.py --quick      # a smoke run, about 2 minutes
"""

from __future__ import annotations

import argparse
import os
import time

import jax

import metarl_jax
from metarl_jax.algorithms import maml, rl2
from metarl_jax.core.population import make_population, population_members
from metarl_jax.training.ensemble import (METHODS, evaluate_ensemble, format_table,
                                          from_population)
from metarl_jax.training.logging import write_json
from metarl_jax.training.report import machine_metadata

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def train_population(module, config, family, members, seconds: float, max_iterations: int,
                     seed: int):
    """Train ``members`` in one vmapped program until ``seconds`` or ``max_iterations``."""
    population = make_population(module, config, family, members)
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    state = population.init(jax.random.split(init_key, len(members)))
    update = jax.jit(population.update)
    start, iterations, compile_s = time.perf_counter(), 0, None
    while iterations < max_iterations:
        key, sub = jax.random.split(key)
        state, metrics = update(state, jax.random.split(sub, len(members)))
        jax.block_until_ready(metrics)
        iterations += 1
        if compile_s is None:
            compile_s = time.perf_counter() - start
        if time.perf_counter() - start > seconds:
            break
    return population, state, {"iterations": iterations,
                               "train_seconds": time.perf_counter() - start,
                               "first_call_seconds": compile_s}


def summary(result: dict) -> dict:
    """The result without per-task values (the JSON stays small)."""
    def strip(stats):
        return {k: v for k, v in stats.items() if k != "per_task"}

    out = {k: v for k, v in result.items() if k not in ("test", "paired", "members")}
    out["test"] = {name: strip(s) for name, s in result["test"].items()}
    out["paired"] = {name: strip(s) for name, s in result["paired"].items()}
    out["members"] = [{**{k: v for k, v in m.items() if k != "test"}, "test": strip(m["test"])}
                      for m in result["members"]]
    return out


def navigation(args) -> dict:
    family = metarl_jax.make("navigation2d")
    config = maml.Config(train_pretrained=False)
    members = population_members(2, {"inner_lr": [0.03, 0.1, 0.3]})
    if args.quick:
        config = maml.Config(meta_batch_size=4, inner_episodes=4, horizon=20,
                             hidden_sizes=(16,), train_pretrained=False)
        members = population_members(1, {"inner_lr": [0.03, 0.3]})
    population, state, training = train_population(
        maml, config, family, members, args.nav_minutes * 60, args.max_iterations, args.seed)
    ensemble = from_population(population, state)
    result = evaluate_ensemble(ensemble, num_tasks=args.num_tasks, num_episodes=args.nav_episodes,
                               seed=args.seed)
    return {"setting": "MAML members on navigation2d", "config": {
        "meta_batch_size": config.meta_batch_size, "inner_episodes": config.inner_episodes,
        "horizon": config.horizon, "hidden_sizes": list(config.hidden_sizes),
        "outer_optimizer": config.outer_optimizer, "num_inner_steps": config.num_inner_steps},
        "training": training, **summary(result)}


def bandit(args) -> dict:
    family = metarl_jax.make("bandit-bernoulli", arms=5)
    config = rl2.Config(trial_episodes=10, meta_batch_size=256, hidden_size=64, gamma=1.0,
                        gae_lambda=0.95, entropy_coef=0.003)
    members = population_members(2, {"learning_rate": [3e-4, 3e-3]})
    if args.quick:
        config = rl2.Config(trial_episodes=10, meta_batch_size=32, hidden_size=16, gamma=1.0,
                            gae_lambda=0.95, entropy_coef=0.003)
        members = population_members(1, {"learning_rate": [3e-4, 3e-3]})
    population, state, training = train_population(
        rl2, config, family, members, args.bandit_minutes * 60, args.max_iterations, args.seed)
    ensemble = from_population(population, state)
    result = evaluate_ensemble(ensemble, num_tasks=args.num_tasks, seed=args.seed)
    return {"setting": "RL² members on bandit-bernoulli, 5 arms, 10 pulls", "config": {
        "trial_episodes": config.trial_episodes, "meta_batch_size": config.meta_batch_size,
        "hidden_size": config.hidden_size}, "training": training, **summary(result)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny members, a smoke run")
    parser.add_argument("--nav-minutes", type=float, default=3.5,
                        help="training budget of the navigation population (default 3.5)")
    parser.add_argument("--bandit-minutes", type=float, default=2.0,
                        help="training budget of the bandit population (default 2)")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--num-tasks", type=int, default=100,
                        help="test tasks, and tasks per validation set (default 100)")
    parser.add_argument("--nav-episodes", type=int, default=20,
                        help="episodes per navigation task after adaptation (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "ensembles.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.nav_minutes, args.bandit_minutes = min(args.nav_minutes, 0.3), min(
            args.bandit_minutes, 0.3)
        args.num_tasks = min(args.num_tasks, 10)
        args.nav_episodes = min(args.nav_episodes, 4)
    start = time.perf_counter()
    settings = {}
    for name, fn in (("navigation2d", navigation), ("bandit", bandit)):
        settings[name] = fn(args)
        print(format_table(settings[name]), flush=True)
        print({m: round(settings[name]["test"][m]["mean"], 3) for m in METHODS})
    data = {**machine_metadata(), "quick": args.quick, "seed": args.seed,
            "wall_seconds": time.perf_counter() - start,
            "load_average": list(os.getloadavg()), "settings": settings}
    write_json(args.out, data)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
