"""Populations in one compiled program: MAML seeds on navigation2d, one program vs one run each.

Two settings of ``maml.update`` on navigation2d: **reference**, the MAML
paper's (meta-batch 20 goals x 20 trajectories of 100 steps, one inner
policy-gradient step, 2x100 ReLU policy, TRPO outer step), and **small**
(meta-batch 2 x 5 trajectories, 2x64 tanh), where one member's kernels are
too small to keep the cores busy. Measured on this machine:

1. **16 seeds, one program against 16 runs**, in both settings, with the
   TRPO outer step and with Adam (under ``vmap`` TRPO's line search runs
   until every member has accepted a step, and its branches become selects
   that compute both sides, so Adam isolates what batching costs). The
   population of 16 members (``core.population.make_population``, one
   ``vmap`` over members inside the compiled step) against the same 16 seeds
   run one after another with the plain learner. The sequential side gets its
   best case: one compile shared by all 16 seeds in one process (separate
   processes would each compile too; that cost is reported apart as
   ``compile_s``). Ratio = sequential seconds per iteration of all 16 seeds /
   population seconds per iteration.
2. **Time per iteration against population size** (1 to 256, small
   setting): seconds per meta-iteration of the whole population and per
   member, and the compiled program's peak memory from XLA's memory analysis
   (arguments + outputs + temporaries). The reference setting's peak memory
   for the same sizes comes from compiling alone (``--reference-memory``).

Every timing compiles first (ahead of time, reported apart), blocks on the
result, feeds each iteration's state into the next (so no work can be
dropped), repeats and reports the median. Writes
``results/population_speed.json`` (machine and load named) and prints a
table; ``docs/results/populations.md`` is generated from it.

Usage: ``python benchmarks/population_speed.py [--quick] [--repeats 2]
[--sizes 1 2 4 ... 256] [--reference-memory]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import metarl_jax
from metarl_jax.algorithms import maml
from metarl_jax.core.population import make_population, population_members
from metarl_jax.training.report import update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# the MAML paper's navigation setting (benchmarks/maml_navigation.py)
REFERENCE = dict(meta_batch_size=20, inner_episodes=20, horizon=100, num_inner_steps=1,
                 inner_lr=0.1, hidden_sizes=(100, 100), activation="relu",
                 outer_optimizer="trpo", train_pretrained=False)
SMALL = dict(REFERENCE, meta_batch_size=2, inner_episodes=5, hidden_sizes=(64, 64),
             activation="tanh")
QUICK = dict(REFERENCE, meta_batch_size=2, inner_episodes=2, horizon=10, hidden_sizes=(16,))


def _peak_bytes(compiled) -> int | None:
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - getattr(memory, "alias_size_in_bytes", 0))


def _timed(compiled, state, keys_at, repeats: int, iterations: int):
    """Median seconds per iteration of ``compiled`` (state carried through)."""
    state, metrics = compiled(state, keys_at(0))  # warm-up
    jax.block_until_ready((state, metrics))
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(iterations):
            state, metrics = compiled(state, keys_at(1 + r * iterations + i))
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - start) / iterations)
    return statistics.median(times), state


def compile_population(config, family, size: int):
    population = make_population(maml, config, family, population_members(size))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(size)])
    state = population.init(keys)
    start = time.perf_counter()
    compiled = jax.jit(population.update).lower(state, keys).compile()
    return compiled, state, keys, time.perf_counter() - start


def time_population(config, family, seeds: int, repeats: int, iterations: int) -> dict:
    compiled, state, keys, compile_s = compile_population(config, family, seeds)
    per_iteration, state = _timed(
        compiled, state, lambda i: jax.vmap(jax.random.fold_in, (0, None))(keys, i),
        repeats, iterations)
    return {"members": seeds, "compile_s": compile_s, "s_per_iteration": per_iteration,
            "s_per_member_iteration": per_iteration / seeds, "peak_bytes": _peak_bytes(compiled),
            "iterations_done": int(jnp.min(state.members.step))}


def time_sequential(config, family, seeds: int, repeats: int, iterations: int) -> dict:
    learner = maml.make(config, family)
    start = time.perf_counter()
    compiled = jax.jit(learner.update).lower(learner.init(jax.random.PRNGKey(0)),
                                             jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - start
    total = 0.0
    for seed in range(seeds):  # one seed after another, as separate runs would go
        key = jax.random.PRNGKey(seed)
        seconds, _ = _timed(compiled, learner.init(key),
                            lambda i, key=key: jax.random.fold_in(key, i), repeats, iterations)
        total += seconds
    return {"seeds": seeds, "compile_s": compile_s, "s_per_iteration_all_seeds": total,
            "s_per_seed_iteration": total / seeds, "peak_bytes": _peak_bytes(compiled)}


def compare(config, family, seeds: int, repeats: int, iterations: int) -> dict:
    sequential = time_sequential(config, family, seeds, repeats, iterations)
    print(f"  {seeds} sequential runs: {sequential['s_per_iteration_all_seeds']:.3f} s per "
          f"iteration of all seeds (compile {sequential['compile_s']:.1f} s)", flush=True)
    together = time_population(config, family, seeds, repeats, iterations)
    ratio = sequential["s_per_iteration_all_seeds"] / together["s_per_iteration"]
    print(f"  one population of {seeds}: {together['s_per_iteration']:.3f} s per iteration "
          f"(compile {together['compile_s']:.1f} s): {ratio:.2f}x", flush=True)
    return {"sequential": sequential, "population": together, "ratio": ratio}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny config (tests)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1, help="iterations per repeat")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--reference-memory", action="store_true",
                        help="also compile the reference setting at every size for its memory")
    parser.add_argument("--out", default=os.path.join(RESULTS, "population_speed.json"))
    args = parser.parse_args()
    for name in ("repeats", "iterations", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if any(s < 1 for s in args.sizes):
        parser.error("--sizes must be >= 1")
    family = metarl_jax.make("navigation2d")
    settings = ({"quick": QUICK} if args.quick else
                {"reference": REFERENCE, "reference, Adam": dict(REFERENCE, outer_optimizer="adam"),
                 "small": SMALL, "small, Adam": dict(SMALL, outer_optimizer="adam")})
    comparisons = {}
    for name, fields in settings.items():
        print(f"{name} setting:", flush=True)
        comparisons[name] = {"config": {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in fields.items()},
                             **compare(maml.Config(**fields), family, args.seeds, args.repeats,
                                       args.iterations)}
    sweep_name = "quick" if args.quick else "small"
    sweep_config = maml.Config(**settings[sweep_name])
    sizes = []
    for size in sorted(set(args.sizes)):
        row = time_population(sweep_config, family, size, args.repeats, args.iterations)
        if args.reference_memory and not args.quick:
            compiled, _, _, _ = compile_population(maml.Config(**REFERENCE), family, size)
            row["reference_peak_bytes"] = _peak_bytes(compiled)
        sizes.append(row)
        peak = row["peak_bytes"]
        print(f"population {size:>4}: {row['s_per_iteration']:8.3f} s/it, "
              f"{row['s_per_member_iteration']:.4f} s per member, compile {row['compile_s']:.1f} "
              f"s, peak {'?' if peak is None else f'{peak / 2**20:.1f} MiB'}", flush=True)
    update_json(args.out, {
        "quick": args.quick, "repeats": args.repeats, "iterations_per_repeat": args.iterations,
        "seeds": args.seeds, "comparisons": comparisons, "sizes_setting": sweep_name,
        "sizes": sizes, "load_average": list(os.getloadavg()),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
