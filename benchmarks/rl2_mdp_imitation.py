"""Can the RL² network *represent* a good tabular-MDP learner? An imitation diagnostic.

RL² stays at 123–127 on the n=10 tabular MDPs of Table 2 (published 156.2),
while the myopic player of ``metarl_jax.players.mdp`` — keep each
(state, action) pair's posterior-mean reward, take the best one in the current
state — scores 155. This script separates "the network cannot hold that
memory" from "PPO does not find it": it trains the *same* RL² network
(``rl2.make``, same inputs, same GRU) by supervised imitation of a myopic
teacher, then plays it as an RL² policy on held-out MDPs.

Training is DAgger without mixing: the student plays its own trials (sampling
its actions), and every step is labelled with the teacher's choice given that
very history, so the student learns on the states its own actions reach. The
teacher's target is uniform over the actions with the highest posterior-mean
reward in the current state (Normal prior N(1, 1), unit reward noise, updated
after every step); the loss is the cross-entropy through the whole trial
(BPTT over all ``n * T`` steps, the GRU state starting at zero).

If imitation reaches the teacher's level, the gap of RL² is in optimisation
(the outer RL), not in what the network can represent.

Usage::

    python benchmarks/rl2_mdp_imitation.py [--minutes 20] [--hidden-size 128] [--set KEY=VALUE]

Each run is merged into ``benchmarks/results/rl2_mdp_imitation.json`` (one
entry per network and ``n``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rl2_bandits import apply_overrides  # noqa: E402
from rl2_tables import format_mean_se, machine_metadata, mean_and_se  # noqa: E402

import metarl_jax  # noqa: E402
from metarl_jax.algorithms import rl2  # noqa: E402
from metarl_jax.players import mdp as mdp_baselines  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
EPISODE_LENGTH = 10


def myopic_targets(trials, num_states: int, num_actions: int) -> jax.Array:
    """Teacher's action distribution at every step of ``trials``, ``[B, T, A]``.

    The posterior-mean reward of (s, a) from the rewards seen *before* step t, as
    ``mdp.myopic`` computes it (prior N(1, 1), noise variance 1:
    ``(1 + sum) / (1 + count)``); the target is uniform over the current state's
    best actions.
    """
    inputs = trials.flat(trials.inputs)
    state = inputs[..., :num_states]                                   # [B, T, S] one-hot
    action = jax.nn.one_hot(trials.flat(trials.action), num_actions)   # [B, T, A]
    reward = trials.flat(trials.reward)                                # [B, T]
    visit = state[..., :, None] * action[..., None, :]                 # [B, T, S, A]

    def before(x):  # sums over earlier steps only
        return jnp.cumsum(x, axis=1) - x

    prior_mean = mdp_baselines.REWARD_PRIOR_MEAN  # the same Normal posterior as mdp.myopic
    prior, noise = mdp_baselines.REWARD_PRIOR_PRECISION, mdp_baselines.REWARD_NOISE_PRECISION
    mean = ((prior * prior_mean + noise * before(visit * reward[..., None, None]))
            / (prior + noise * before(visit)))
    q = jnp.einsum("bts,btsa->bta", state, mean)
    best = (q >= jnp.max(q, axis=-1, keepdims=True) - 1e-6).astype(jnp.float32)
    return best / jnp.sum(best, axis=-1, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="n: episodes per trial")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256, help="trials per gradient step")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override an rl2.Config field (the network's options, "
                                         "e.g. --set previous_obs_input=true)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "rl2_mdp_imitation.json"))
    args = parser.parse_args()

    family = metarl_jax.make("tabular-mdp", episode_length=EPISODE_LENGTH)
    num_states, num_actions = family.env.num_states, family.env.num_actions
    config = apply_overrides(rl2.Config(trial_episodes=args.episodes, meta_batch_size=args.batch,
                                        hidden_size=args.hidden_size), args.overrides)
    learner = rl2.make(config, family)
    params = learner.init(jax.random.PRNGKey(args.seed)).params
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.learning_rate))
    opt_state = optimizer.init(params)

    def loss_fn(params, trials, target):
        inputs = trials.flat(trials.inputs)                            # [B, T, in]
        hidden = learner.network.init_state(inputs.shape[:1])
        dist, _ = learner.sequence(params, hidden, inputs)              # the trial from its start
        log_p = jax.nn.log_softmax(dist.logits)                        # [B, T, A]
        valid = trials.flat(trials.valid)
        cross_entropy = -jnp.sum(target * log_p, axis=-1)
        agree = jnp.sum(target * jax.nn.one_hot(jnp.argmax(log_p, -1), num_actions), -1) > 0
        return (jnp.sum(cross_entropy * valid) / jnp.sum(valid),
                jnp.sum(agree * valid) / jnp.sum(valid))

    @jax.jit
    def train_step(params, opt_state, key):
        task_key, trial_key = jax.random.split(key)
        tasks = family.sample(task_key, args.batch, "train")
        trials = learner.run_trials(params, tasks, trial_key, args.episodes)
        target = myopic_targets(trials, num_states, num_actions)
        (loss, agree), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, trials, target)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        total = jnp.mean(jnp.sum(trials.flat(trials.reward), axis=1))
        return optax.apply_updates(params, updates), opt_state, loss, agree, total

    test_tasks = family.sample(jax.random.PRNGKey(args.seed + 100), args.instances, "test")
    play = jax.jit(learner.run_trials, static_argnums=(3, 4))

    def play_total(params, deterministic):
        trials = play(params, test_tasks, jax.random.PRNGKey(args.seed + 200), args.episodes,
                      deterministic)
        return mean_and_se(jnp.sum(trials.flat(trials.reward), axis=1))

    teacher = mean_and_se(mdp_baselines.evaluate(
        "myopic", test_tasks, jax.random.PRNGKey(args.seed + 300), num_episodes=args.episodes,
        episode_length=EPISODE_LENGTH))
    print(f"myopic teacher (per-episode replanning) on the same MDPs: "
          f"{format_mean_se(teacher, 1)}", flush=True)

    keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.steps)
    start = time.perf_counter()
    train_step = train_step.lower(params, opt_state, keys[0]).compile()
    compile_s = time.perf_counter() - start
    history, done = [], 0
    start = time.perf_counter()
    for key in keys:
        params, opt_state, loss, agree, total = train_step(params, opt_state, key)
        done += 1
        if done % 100 == 0:
            elapsed = time.perf_counter() - start
            history.append({"step": done, "loss": float(loss), "agreement": float(agree),
                            "train_return": float(total), "seconds": elapsed})
            print(f"  step {done}: cross-entropy {float(loss):.3f}, agreement "
                  f"{float(agree):.3f}, own-trial return {float(total):.1f}, {elapsed:.0f} s",
                  flush=True)
            if elapsed > 60 * args.minutes:
                break
    train_s = time.perf_counter() - start
    sample, mode = play_total(params, False), play_total(params, True)
    result = {
        "n": args.episodes, "instances": args.instances, "network": {
            name: getattr(config, name) for name in (
                "memory", "hidden_size", "head_hidden_sizes", "embed_hidden_sizes",
                "previous_obs_input", "separate_value")
            + (("num_layers", "num_heads") if config.memory == "transformer" else ())},
        "batch": args.batch, "learning_rate": args.learning_rate, "steps": done,
        "compile_s": compile_s, "train_s": train_s,
        "student_sample": sample, "student_mode": mode, "myopic_teacher": teacher,
        "history": history, **machine_metadata(),
    }
    print(f"\nimitation, n={args.episodes}, {result['network']}, {done} steps in "
          f"{train_s / 60:.1f} min: RL² network playing alone {format_mean_se(sample, 1)} "
          f"(sampling), {format_mean_se(mode, 1)} (most likely action); "
          f"teacher {format_mean_se(teacher, 1)}")
    save(result, args.out)


def save(result: dict, path: str) -> None:
    """Merge ``result`` into ``path``'s ``runs``: runs of other networks or n accumulate, a
    rerun of the same network and n replaces its earlier entry."""
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f).get("runs", [])
    key = json.dumps([result["n"], result["network"]])  # tuples and lists alike
    runs = [run for run in runs if json.dumps([run.get("n"), run.get("network")]) != key]
    runs.append(result)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
