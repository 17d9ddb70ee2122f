"""Off-policy learners' speed: PEARL against a same-run PyTorch PEARL, and Meta-Q-Learning.

Rows, each at three sizes (PEARL's reference networks: encoder 3x200, actor
and critics 3x300, 16 tasks x 256 transitions, context 64, latent 5; the CPU
sizes of ``pearl_navigation.py``: 64-64 everywhere, 16 x 64; and a small
setting, 32 / 32-32, 16 x 32, where per-operation overhead dominates):

* **PEARL gradient steps / s**: ``learner.train_step`` (buffer sampling for
  16 tasks, the whole loss, Adam, the target update) scanned over 50 steps in
  one compiled call, against ``benchmarks/torch_pearl_reference.py`` (the same
  step in PyTorch, tested equal in ``tests/test_torch_pearl_reference.py``)
  on pre-drawn tensors: the PyTorch side does not sample a buffer, so the
  ratio favours it;
* **PEARL env steps / s**: ``learner.collect``, one posterior episode on each
  of 64 train tasks (inference, actor, point-robot env, buffer writes);
* **metaq gradient steps / s** and **env steps / s** (``learner.update``'s
  two halves: 50 double-DQN steps of 8 tasks x 32 windows of 10, and
  epsilon-greedy trials on 64 CartPole tasks).

Method: compile apart (timed), ``block_until_ready``, each call's output
feeds the next (nothing can be deleted), median of ``--repeats``. Results:
``benchmarks/results/offpolicy_speed.json``.

    python benchmarks/offpolicy_speed.py [--repeats 5] [--quick] [--no-torch]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import time

import jax
import jax.numpy as jnp

import metarl_jax
from metarl_jax.algorithms import metaq, pearl
from metarl_jax.training.report import machine_metadata, update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SIZES = {
    "reference": dict(encoder_hidden_sizes=(200, 200, 200), hidden_sizes=(300, 300, 300),
                      batch_size=256),
    "cpu": dict(encoder_hidden_sizes=(64, 64), hidden_sizes=(64, 64), batch_size=64),
    "small": dict(encoder_hidden_sizes=(32,), hidden_sizes=(32, 32), batch_size=32),
}
STEPS = 50          # gradient steps per timed call


def timed(fn, carry, repeats):
    """Median seconds of ``carry = fn(carry)`` and the compile seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(carry).compile()
    compile_s = time.perf_counter() - start
    carry = jax.block_until_ready(compiled(carry))          # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        carry = jax.block_until_ready(compiled(carry))
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_s


def pearl_rows(size: str, repeats: int, quick: bool, torch_ref) -> dict:
    fields = dict(SIZES[size], num_train_tasks=64, meta_batch_size=16, context_batch_size=64,
                  num_initial_steps=400, replay_capacity=2000, num_tasks_sample=64,
                  num_train_steps=STEPS)
    if quick:
        fields.update(encoder_hidden_sizes=(8,), hidden_sizes=(8,), batch_size=8,
                      context_batch_size=8, num_train_tasks=4, num_tasks_sample=4,
                      num_initial_steps=40, replay_capacity=100)
    config = pearl.Config(**fields)
    family = metarl_jax.make("point-robot")
    learner = pearl.make(config, family)
    state = learner.init(jax.random.PRNGKey(0))
    carry0 = (state.params, state.target_critic, state.opt_state, state.replay,
              state.encoder_replay)

    def train(c):
        carry, key = c
        key, sub = jax.random.split(key)
        carry, _ = jax.lax.scan(learner.train_step, carry, jax.random.split(sub, STEPS))
        return carry, key

    train_s, train_compile = timed(train, (carry0, jax.random.PRNGKey(1)), repeats)
    ids = jnp.arange(config.num_tasks_sample)

    def collect(c):
        buffers, key = c
        key, sub = jax.random.split(key)
        buffers, _, _ = learner.collect(state.params, buffers, state.train_tasks, ids, sub, 1,
                                        True, False, config.context_batch_size)
        return buffers, key

    collect_s, collect_compile = timed(collect, ((state.replay, state.encoder_replay),
                                                 jax.random.PRNGKey(2)), repeats)
    horizon = int(state.train_tasks.max_steps_in_episode[0])
    row = {"config": {k: v for k, v in dataclasses.asdict(config).items() if k in fields},
           "jax_gradient_steps_per_s": STEPS / train_s, "jax_train_compile_s": train_compile,
           "jax_env_steps_per_s": config.num_tasks_sample * horizon / collect_s,
           "jax_collect_compile_s": collect_compile}
    if torch_ref is not None:
        row.update(torch_ref.time_steps(config.encoder_hidden_sizes, config.hidden_sizes,
                                        config.meta_batch_size, config.batch_size,
                                        config.context_batch_size, config.latent_dim, STEPS,
                                        repeats, config.learning_rate))
        row["speedup"] = row["jax_gradient_steps_per_s"] / row["torch_gradient_steps_per_s"]
    return row


def metaq_rows(repeats: int, quick: bool) -> dict:
    fields = dict(num_train_tasks=64, context_length=10, num_tasks_sample=64,
                  num_train_steps=STEPS, meta_batch_size=8, batch_size=32,
                  replay_capacity=2000)
    horizon = 200
    if quick:
        fields.update(num_train_tasks=4, num_tasks_sample=4, context_length=4, batch_size=8,
                      hidden_sizes=(8,), context_size=4, replay_capacity=200)
        horizon = 20
    config = metaq.Config(**fields)
    family = metarl_jax.make("cartpole", max_steps_in_episode=horizon,
                             random_push_direction=True)
    learner = metaq.make(config, family)
    state = learner.init(jax.random.PRNGKey(0))
    carry0 = (state.params, state.target_params, state.opt_state, state.replay)
    train_step = learner.train_step

    def train(c):
        carry, key = c
        key, sub = jax.random.split(key)
        carry, _ = jax.lax.scan(train_step, carry, jax.random.split(sub, STEPS))
        return carry, key

    train_s, train_compile = timed(train, (carry0, jax.random.PRNGKey(1)), repeats)

    def play(c):
        total, key = c
        key, sub = jax.random.split(key)
        played = learner.play(state.params, state.train_tasks, sub, 1, 0.1)
        return total + jnp.sum(played.valid), key

    start_steps = jnp.zeros((), jnp.int32)
    play_s, play_compile = timed(play, (start_steps, jax.random.PRNGKey(2)), repeats)
    # every step of the fixed-length scan is computed, whether or not the episode is over
    return {"config": {k: v for k, v in dataclasses.asdict(config).items() if k in fields},
            "jax_gradient_steps_per_s": STEPS / train_s, "jax_train_compile_s": train_compile,
            "jax_env_steps_per_s": config.num_tasks_sample * horizon / play_s,
            "jax_play_compile_s": play_compile, "horizon": horizon}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "offpolicy_speed.json"))
    args = parser.parse_args(argv)
    torch_ref = None
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "torch_pearl_reference.py")
        spec = importlib.util.spec_from_file_location("torch_pearl_reference", path)
        torch_ref = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(torch_ref)
    result = {"steps_per_call": STEPS, "repeats": args.repeats, "quick": args.quick,
              "pearl": {size: pearl_rows(size, args.repeats, args.quick, torch_ref)
                        for size in SIZES},
              "metaq": metaq_rows(args.repeats, args.quick), **machine_metadata()}
    update_json(args.out, result)
    for size, row in result["pearl"].items():
        print(f"PEARL {size}: {row['jax_gradient_steps_per_s']:.0f} gradient steps/s"
              + (f", torch {row['torch_gradient_steps_per_s']:.0f} ({row['speedup']:.1f}x)"
                 if "speedup" in row else "")
              + f", {row['jax_env_steps_per_s']:,.0f} env steps/s")
    row = result["metaq"]
    print(f"metaq: {row['jax_gradient_steps_per_s']:.0f} gradient steps/s, "
          f"{row['jax_env_steps_per_s']:,.0f} env steps/s")
    return result


if __name__ == "__main__":
    main()
