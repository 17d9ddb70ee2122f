"""VariBAD's training speed against RL² at the same network sizes, same tasks per iteration.

One row per family (GridNavi 5x5 as in ``varibad_gridnavi.py``; navigation2d
with two 100-step episodes per trial; the 10-arm Bernoulli bandit with 10
pulls): env steps per second of one whole training iteration of each learner
(trials on ``--trials`` tasks, PPO, and for VariBAD the VAE steps), with

* VariBAD: GRU 64 encoder, latent 5, policy 32-32 on ``[obs, mean, logvar]``,
  3 VAE steps decoding every reward of the trial at every ELBO time;
* VariBAD with the VAE buffer (10,000 trials, 25 per VAE step; the
  ``--variant buffer`` settings of ``varibad_gridnavi.py``, at this row's
  trials per iteration);
* RL²: GRU 64 memory with 32-32 heads, the same PPO settings.

Method: compile apart (timed), ``block_until_ready``, each iteration's state
feeds the next (nothing can be deleted), median of ``--repeats`` calls of
``--iterations`` iterations each. Results: ``benchmarks/results/varibad_speed.json``.

    python benchmarks/varibad_speed.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import jax

import metarl_jax
from metarl_jax.algorithms import rl2, varibad
from metarl_jax.training.report import machine_metadata, update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILIES = {   # name: (family options, episodes per trial)
    "gridnavi": ({}, 4),
    "navigation2d": ({}, 2),
    "bandit-bernoulli": ({"arms": 10}, 10),
}


def learners(trial_episodes: int, trials: int, quick: bool) -> dict:
    ppo = dict(num_epochs=2, num_minibatches=4, learning_rate=7e-4, max_grad_norm=0.5,
               gamma=0.95, gae_lambda=0.95, clip_eps=0.1, entropy_coef=0.05)
    memory = 8 if quick else 64
    heads = (8,) if quick else (32, 32)
    vb = varibad.Config(trial_episodes=trial_episodes, meta_batch_size=trials,
                        encoder_hidden_size=memory, policy_hidden_sizes=heads, **ppo)
    return {
        "varibad": (varibad, vb),
        "varibad_buffer": (varibad, dataclasses.replace(
            vb, vae_buffer_trials=max(trials, 100 if quick else 10_000),
            vae_batch_trials=min(trials, 25))),
        "rl2": (rl2, rl2.Config(trial_episodes=trial_episodes, meta_batch_size=trials,
                                hidden_size=memory, head_hidden_sizes=heads, **ppo)),
    }


def time_learner(module, config, family, iterations: int, repeats: int) -> dict:
    learner = module.make(config, family)

    def run(carry):
        def body(carry, _):
            state, key = carry
            key, step_key = jax.random.split(key)
            state, metrics = learner.update(state, step_key)
            return (state, key), metrics["env_steps"]

        carry, steps = jax.lax.scan(body, carry, None, length=iterations)
        return carry, steps.sum()

    carry = (learner.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    start = time.perf_counter()
    compiled = jax.jit(run).lower(carry).compile()
    compile_s = time.perf_counter() - start
    carry, steps = jax.block_until_ready(compiled(carry))       # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        carry, steps = jax.block_until_ready(compiled(carry))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"compile_s": compile_s, "seconds_per_iteration": seconds / iterations,
            "env_steps_per_iteration": float(steps) / iterations,
            "env_steps_per_s": float(steps) / seconds, "times_s": times}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10, help="iterations per timed call")
    parser.add_argument("--trials", type=int, default=64, help="tasks (trials) per iteration")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, GridNavi only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.iterations, args.trials, args.families = 1, 2, 4, "gridnavi"
    out = args.out or os.path.join(RESULTS, "varibad_speed.json")
    rows = {}
    for name in args.families.split(","):
        if name not in FAMILIES:
            raise SystemExit(f"unknown family {name!r}; choose from {sorted(FAMILIES)}")
        options, episodes = FAMILIES[name]
        family = metarl_jax.make(name, **options)
        rows[name] = {learner: time_learner(module, config, family, args.iterations,
                                            args.repeats)
                      for learner, (module, config) in learners(episodes, args.trials,
                                                                args.quick).items()}
        for learner, row in rows[name].items():
            print(f"{name:>16} {learner:>15}: {row['env_steps_per_s']:>10,.0f} env steps/s, "
                  f"{1e3 * row['seconds_per_iteration']:.1f} ms/iteration, "
                  f"compile {row['compile_s']:.1f} s", flush=True)
    result = {"trials_per_iteration": args.trials, "iterations_per_call": args.iterations,
              "repeats": args.repeats, "quick": args.quick, "rows": rows}
    update_json(out, {**result, **machine_metadata()})
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
