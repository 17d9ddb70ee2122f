"""VariBAD on the RL² bandit cells, beside RL² and the exact Bayes-optimal player.

RL²'s Table 1 setting (Duan et al. 2016, Sec. 5.1): ``k``-armed Bernoulli
bandits, ``p_i ~ U[0, 1]``, trials of ``n`` one-pull episodes. VariBAD
(``metarl_jax.algorithms.varibad``, MLP reward decoder on ``(z, s, a, s')``)
is meta-trained with the library's runner for ``--minutes`` per cell and
played on the same held-out instances (test split, same seed and count) as
``benchmarks/rl2_bandits.py``, whose RL² and Bayes-optimal results
(``benchmarks/results/rl2_bandits.json``) are read back beside it. Results:
``benchmarks/results/varibad_bandits.json``.

Usage::

    python benchmarks/varibad_bandits.py --cells 10,5 [10,10 10,50] [--minutes 5]
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import varibad
from metarl_jax.training.report import mean_and_se, read_json
from metarl_jax.training.tables import default_scratch, run_cells, train_rl2

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RL2_RESULTS = os.path.join(RESULTS, "rl2_bandits.json")


def config(num_pulls: int) -> varibad.Config:
    """Whole-trial returns (gamma 1, as the table counts total reward), 256 trials."""
    return varibad.Config(trial_episodes=num_pulls, meta_batch_size=256, gamma=1.0,
                          entropy_coef=0.01, learning_rate=1e-3)


def run_cell(num_pulls: int, num_arms: int, args) -> dict:
    family = metarl_jax.make("bandit-bernoulli", arms=num_arms)
    tasks = family.sample(jax.random.PRNGKey(args.seed), args.instances, "test")
    eval_key = jax.random.split(jax.random.PRNGKey(args.seed + 7))[1]
    cfg = config(num_pulls)
    trained = train_rl2(cfg, "bandit-bernoulli", args.iterations, args.minutes, args.seed,
                        run_dir=args.scratch / f"n{num_pulls}_k{num_arms}",
                        family_options={"arms": num_arms}, algorithm="varibad")
    curve = jax.jit(varibad.make(cfg, family).evaluate)(trained.state, tasks, eval_key)
    rl2_cell = read_json(RL2_RESULTS, {}).get("cells", {}).get(f"{num_pulls},{num_arms}", {})
    same = rl2_cell.get("instances") == args.instances
    return {"n": num_pulls, "k": num_arms, "instances": args.instances,
            "varibad": mean_and_se(np.asarray(curve["varibad"]).sum(axis=1)),
            "rl2": rl2_cell.get("ours", {}).get("rl2") if same else None,
            "bayes_optimal": rl2_cell.get("ours", {}).get("bayes_optimal") if same else None,
            "rl2_train_s": rl2_cell.get("train_s") if same else None,
            "config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
            "iterations": trained.iterations, "train_s": trained.train_s,
            "env_steps": trained.env_steps,
            "env_steps_per_s": trained.env_steps / max(trained.train_s, 1e-9)}


def markdown(cells: dict) -> str:
    lines = ["| n,k | VariBAD | RL² | Bayes-optimal |", "| --- | ---: | ---: | ---: |"]
    for key, c in cells.items():
        fmt = lambda s: f"{s['mean']:.2f} ± {s['se']:.2f}" if s else "—"  # noqa: E731
        lines.append(f"| {key} | {fmt(c['varibad'])} | {fmt(c['rl2'])} | "
                     f"{fmt(c['bayes_optimal'])} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["10,5", "10,10", "10,50"])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "varibad_bandits.json"))
    args = parser.parse_args(argv)
    args.scratch = default_scratch(RESULTS, args.out)
    cells = []
    for cell in args.cells:
        n, k = map(int, cell.split(","))
        cells.append((cell, lambda n=n, k=k: run_cell(n, k, args)))
    return run_cells(args.out, cells, markdown)


if __name__ == "__main__":
    main()
