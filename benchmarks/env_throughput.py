"""Environment steps per second: metarl_jax vs gymnax 1.0.1 vs Gymnasium's NumPy vector env.

Every registered task family's env (default params) at batch sizes from 1 to
65,536, in the same run as gymnax's env of the same name (where gymnax has
one) and Gymnasium's vectorized ``CartPoleVectorEnv`` (the only classic-control
env Gymnasium vectorizes in NumPy).

The loop is the same for both JAX libraries: ``jit`` of a ``lax.scan`` over
steps of ``vmap(env.step)`` with auto-reset, a cheap deterministic policy of
the observation (discrete: ``(n - 1) * [sum(obs) > 0]``; continuous: the
clipped ``sum(obs)``), and the returned summed reward and final observation
depending on every step (nothing can be deleted by XLA). Per-env step keys
come in two schemes, applied identically to both libraries and giving both
the very same keys:

* ``split``: ``jax.random.split(key_t, num_envs)`` every step, what a user
  writes. On CPU it is a rolled Threefry loop over all envs that XLA cannot
  fuse, about as costly as a whole CartPole step, paid equally by both.
* ``xor``: one key per step, env ``i`` gets that key's data with ``i``
  xor-ed into the low word: free, so the table shows the envs' own cost.
  (Fusible Threefry, :func:`metarl_jax.envs.environment.split_key`, would
  give ``split``'s keys, but XLA:CPU recomputes a fused producer inside every
  consumer: each of CartPole's four state updates would rerun the split.)

Gymnasium runs the same policy in a Python loop over ``envs.step`` (NumPy,
auto-reset on the next step, its default).

Method: compile separately (reported), ``block_until_ready``, repeat with the
variants interleaved (so load changes hit all of them alike), report the
median. Results go to ``benchmarks/results/env_throughput.json`` and a
markdown table is printed, naming the machine.

On a small shared CPU, XLA's splitting of each kernel over all cores can cost
more than it gains (a kernel waits for its slowest part); ``taskset -c 0
python benchmarks/env_throughput.py --output ..._1core.json`` measures every
library on one core, and the machine line says so.

Usage::

    python benchmarks/env_throughput.py [--quick] [--batch-sizes 1,64,8192]
        [--steps N] [--repeats R] [--envs cartpole,pendulum]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

import metarl_jax

DEFAULT_BATCH_SIZES = (1, 16, 256, 4096, 8192, 65536)
QUICK_BATCH_SIZES = (1, 256, 8192)
KEY_SCHEMES = ("split", "xor")
RESULTS = Path(__file__).parent / "results" / "env_throughput.json"
GYMNAX_VERSION = importlib.metadata.version("gymnax")


def machine_description() -> str:
    """``"2-core x86_64 CPU (AMD EPYC), no GPU"``-style description of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    devices = {d.platform for d in jax.devices()}
    accelerator = "no GPU" if devices == {"cpu"} else ", ".join(sorted(devices))
    usable = len(os.sched_getaffinity(0))
    pinned = "" if usable == os.cpu_count() else f", run pinned to {usable} of its cores"
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({model}), {accelerator}{pinned}"


def default_steps(num_envs: int) -> int:
    """Steps per timed run: about 0.5M env steps, at least 64, at most 1,000."""
    return int(max(64, min(1000, 2**19 // num_envs)))


def _observation_sum(obs) -> jax.Array:
    """Sum of every observation entry, written as elementwise adds.

    ``jnp.sum`` over a vmapped ``[envs, 4]`` observation is a separate
    reduction kernel (plus a layout transpose) in every step on CPU; a chain
    of adds of the entries fuses into the env's own step kernels. Same value,
    same policy for every library; it only keeps the harness out of the way.
    """
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree.leaves(obs):
        flat = jnp.ravel(leaf).astype(jnp.float32)
        for i in range(flat.shape[0]):
            total = total + flat[i]
    return total


def make_policy(action_space):
    """A cheap deterministic function of one observation onto the action space."""
    if isinstance(action_space, spaces.Discrete):
        top = action_space.n - 1

        def policy(obs):
            return (_observation_sum(obs) > 0).astype(jnp.int32) * top

        return policy
    if isinstance(action_space, spaces.Box):

        def policy(obs):
            action = jnp.broadcast_to(_observation_sum(obs), action_space.shape)
            return jnp.clip(action.astype(jnp.float32), action_space.low, action_space.high)

        return policy
    raise TypeError(f"no benchmark policy for action space {action_space!r}")


def env_keys(key: jax.Array, num_envs: int, scheme: str) -> jax.Array:
    """Per-env keys ``[num_envs]`` for one step (module docstring)."""
    if scheme == "split":
        return jax.random.split(key, num_envs)
    data = jax.random.key_data(key)
    index = jnp.arange(num_envs, dtype=jnp.uint32)
    return jax.random.wrap_key_data(
        jnp.stack([jnp.broadcast_to(data[0], index.shape), data[1] ^ index], axis=-1)
    )


def make_run(env, params, num_envs: int, num_steps: int, scheme: str):
    """``run(key) -> (summed reward, final obs)``: ``num_steps`` auto-reset steps."""
    policy = jax.vmap(make_policy(env.action_space(params)))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    reset = jax.vmap(env.reset, in_axes=(0, None))

    def run(key):
        key_reset, key_steps = jax.random.split(key)
        obs, state = reset(jax.random.split(key_reset, num_envs), params)

        def body(carry, step_key):
            obs, state, total = carry
            obs, state, reward, _, _, _ = step(
                env_keys(step_key, num_envs, scheme), state, policy(obs), params
            )
            # per-env running sums (elementwise, fused); one reduction at the end
            return (obs, state, total + reward.astype(jnp.float32)), None

        init = (obs, state, jnp.zeros((num_envs,), jnp.float32))
        (obs, _, total), _ = jax.lax.scan(body, init, jax.random.split(key_steps, num_steps))
        return jnp.sum(total), obs

    return jax.jit(run)


class JaxVariant:
    """A compiled ``run`` of one library, env, batch size and key scheme."""

    def __init__(self, env, params, num_envs, num_steps, scheme):
        key = jax.random.key(0)
        start = time.perf_counter()
        self.compiled = make_run(env, params, num_envs, num_steps, scheme).lower(key).compile()
        self.compile_s = time.perf_counter() - start
        self.key = key
        jax.block_until_ready(self.compiled(key))  # warm-up

    def time_once(self) -> float:
        start = time.perf_counter()
        jax.block_until_ready(self.compiled(self.key))
        return time.perf_counter() - start


class GymnasiumCartPole:
    """Gymnasium's NumPy ``CartPoleVectorEnv`` driven by the same policy."""

    compile_s = 0.0

    def __init__(self, num_envs, num_steps):
        import gymnasium

        self.envs = gymnasium.make_vec(
            "CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point"
        )
        self.num_steps = num_steps

    def time_once(self) -> float:
        obs, _ = self.envs.reset(seed=0)
        total = 0.0
        start = time.perf_counter()
        for _ in range(self.num_steps):
            action = (obs.sum(axis=1) > 0).astype(np.int64)
            obs, reward, _, _, _ = self.envs.step(action)
            total += float(reward.sum())
        elapsed = time.perf_counter() - start
        assert np.isfinite(total)
        return elapsed


def gymnax_equivalent(env):
    """gymnax's env and default params of the same name, or ``None``."""
    if env.name not in gymnax.registered_envs:
        return None
    return gymnax.make(env.name)


def benchmark_env(name, batch_sizes, steps, repeats, log):
    """Rows of results for one family's env at every batch size."""
    try:
        env = metarl_jax.make(name).env
    except Exception as error:  # a family whose env is not there yet
        log(f"skip {name}: {type(error).__name__}: {error}")
        return []
    params = env.default_params
    theirs = gymnax_equivalent(env)
    rows = []
    for num_envs in batch_sizes:
        num_steps = steps or default_steps(num_envs)
        variants = {}
        for scheme in KEY_SCHEMES:
            variants[("metarl_jax", scheme)] = JaxVariant(env, params, num_envs, num_steps, scheme)
            if theirs is not None:
                variants[("gymnax", scheme)] = JaxVariant(*theirs, num_envs, num_steps, scheme)
        if env.name == "CartPole-v1":
            variants[("gymnasium", "numpy")] = GymnasiumCartPole(num_envs, num_steps)
        times = {variant: [] for variant in variants}
        for _ in range(repeats):
            for variant, runner in variants.items():
                times[variant].append(runner.time_once())
        for (library, scheme), runner in variants.items():
            median = statistics.median(times[(library, scheme)])
            rows.append(
                dict(
                    family=name, env=env.name, library=library, key_scheme=scheme,
                    num_envs=num_envs, num_steps=num_steps,
                    steps_per_s=num_envs * num_steps / median,
                    median_s=median, times_s=times[(library, scheme)],
                    compile_s=runner.compile_s,
                )
            )
        summary = ", ".join(
            f"{lib}/{scheme} {row['steps_per_s'] / 1e6:.2f}M"
            for row in rows[-len(variants):]
            for lib, scheme in [(row["library"], row["key_scheme"])]
        )
        log(f"{name} n={num_envs} steps={num_steps}: {summary}")
    return rows


def markdown_table(rows, machine) -> str:
    """One line per env and batch size: steps/s of each library and our ratios."""
    by_key = {(r["family"], r["num_envs"], r["library"], r["key_scheme"]): r for r in rows}
    lines = [
        f"Env steps per second (median), {machine}; M = million.",
        "",
        "| env | envs | ours (split) | gymnax (split) | x gymnax | ours (xor) | "
        "gymnax (xor) | x gymnax | Gymnasium vec | ours (split) / Gymnasium | "
        "ours (xor) / Gymnasium |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    seen = []
    for r in rows:
        if (r["family"], r["num_envs"]) not in seen:
            seen.append((r["family"], r["num_envs"]))

    def rate(family, n, library, scheme):
        row = by_key.get((family, n, library, scheme))
        return None if row is None else row["steps_per_s"]

    def fmt(value):
        return "—" if value is None else f"{value / 1e6:.3g}M"

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a / b:.2f}"

    for family, n in seen:
        ours = {s: rate(family, n, "metarl_jax", s) for s in KEY_SCHEMES}
        theirs = {s: rate(family, n, "gymnax", s) for s in KEY_SCHEMES}
        gym = rate(family, n, "gymnasium", "numpy")
        lines.append(
            f"| {family} | {n} | {fmt(ours['split'])} | {fmt(theirs['split'])} | "
            f"{ratio(ours['split'], theirs['split'])} | {fmt(ours['xor'])} | "
            f"{fmt(theirs['xor'])} | {ratio(ours['xor'], theirs['xor'])} | {fmt(gym)} | "
            f"{ratio(ours['split'], gym)} | {ratio(ours['xor'], gym)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed run (default: about 0.5M env steps, 64..1000)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--envs", type=lambda s: s.split(","), default=None,
                        help="family names (default: every registered family)")
    parser.add_argument("--quick", action="store_true",
                        help=f"batch sizes {QUICK_BATCH_SIZES}, 3 repeats, classic control only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    batch_sizes = args.batch_sizes or (QUICK_BATCH_SIZES if args.quick else DEFAULT_BATCH_SIZES)
    repeats = 3 if args.quick and args.repeats == 7 else args.repeats
    names = args.envs or (
        ["cartpole", "mountaincar", "pendulum"] if args.quick else metarl_jax.list_families()
    )
    unknown = [n for n in names if n not in metarl_jax.list_families()]
    if unknown:
        parser.error(f"unknown env families {unknown}; known: {metarl_jax.list_families()}")
    machine = machine_description()
    print(f"# env throughput on {machine}; jax {jax.__version__}, gymnax {GYMNAX_VERSION}",
          flush=True)

    rows = []
    started = time.perf_counter()
    load_start = os.getloadavg()
    for name in names:
        rows += benchmark_env(name, batch_sizes, args.steps, repeats,
                              lambda message: print(message, flush=True))
    table = markdown_table(rows, machine)
    print()
    print(table)
    print(f"\n1-minute load average: {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")

    import gymnasium

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        dict(
            benchmark="env_throughput", machine=machine, jax=jax.__version__,
            gymnax=GYMNAX_VERSION, gymnasium=gymnasium.__version__,
            numpy=np.__version__, repeats=repeats, batch_sizes=list(batch_sizes),
            key_schemes=dict(
                split="jax.random.split(key_t, num_envs) every step (both JAX libraries)",
                xor="one key per step, env index xor-ed into its low word (both)",
            ),
            policy=("discrete: (n-1)*[sum(obs)>0]; continuous: clip(sum(obs)); sum written as "
                    "elementwise adds; reward summed per env, reduced once at the end"),
            wall_s=time.perf_counter() - started,
            # the machine is shared: 1-minute load averages when the run began and ended
            load_average=[load_start[0], os.getloadavg()[0]],
            results=rows, table=table,
        ),
        indent=1,
    ))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
