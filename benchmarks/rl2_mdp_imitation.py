"""Can the RL² network *represent* a good tabular-MDP learner? An imitation diagnostic.

Trains the RL² memory network (``metarl_jax.nn.memory``: the same GRU or
transformer actor-critic, the same meta-RL inputs, the same initialisation as
``rl2.make`` builds) by supervised imitation of the myopic player of
``metarl_jax.players.mdp`` (keep each (state, action) pair's posterior-mean
reward, take the best one in the current state), then plays it alone on
held-out n-episode MDPs of Table 2, beside the teacher on the same MDPs. It
separates "the network cannot hold that memory" from "PPO does not find it".
No RL² learner is built: the trials come from the shared rollout engine
(``metarl_jax.core.rollout.run_trials``) and the loss runs the network over
whole trials (``metarl_jax.nn.memory.sequence``).

Training is DAgger without mixing: the student plays its own trials (sampling
its actions), and every step is labelled with the teacher's choice given that
very history, so the student learns on the states its own actions reach. The
teacher's target is uniform over the actions with the highest posterior-mean
reward in the current state (Normal prior N(1, 1), unit reward noise, updated
after every step); the loss is the cross-entropy through the whole trial
(BPTT over all ``n * T`` steps, the memory starting empty), with Adam and
gradients clipped to norm 1.

Usage::

    python benchmarks/rl2_mdp_imitation.py [--minutes 20] [--hidden-size 128] [--set KEY=VALUE]
    python benchmarks/rl2_mdp_imitation.py --set memory=transformer --set previous_obs_input=true

``--set`` takes the fields of :class:`Network` (the ``rl2.Config`` names of
the network's options). Each run is merged into
``benchmarks/results/rl2_mdp_imitation.json`` (one entry per network and
``n``). What the runs so far found: ``docs/notes/rl2_mdp.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import optax

import metarl_jax
from metarl_jax.core.rollout import MetaInputs, run_trials
from metarl_jax.nn import memory
from metarl_jax.nn.spaces import action_spec
from metarl_jax.players import mdp as mdp_players
from metarl_jax.training.report import format_mean_se, machine_metadata, mean_and_se
from metarl_jax.training.tables import apply_overrides

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
EPISODE_LENGTH = 10


@dataclasses.dataclass(frozen=True)
class Network:
    """The memory network's options, under ``rl2.Config``'s names and defaults
    (``hidden_size`` here defaults to ``--hidden-size``)."""

    memory: str = "gru"                      # "gru" | "transformer"
    hidden_size: int = 128                   # GRU units / transformer width
    head_hidden_sizes: tuple[int, ...] = ()  # ReLU layers of the policy and value heads
    embed_hidden_sizes: tuple[int, ...] = ()  # ReLU layers on the input
    previous_obs_input: bool = False         # also the observation a_{t-1} was taken in
    time_input: bool = False                 # also t / T
    separate_value: bool = False             # the value on its own GRU (GRU only)
    num_layers: int = 2                      # transformer blocks
    num_heads: int = 4                       # attention heads

    def __post_init__(self):
        if self.memory not in memory.MEMORIES:
            raise ValueError(f"memory must be one of {memory.MEMORIES}, got {self.memory!r}")
        if self.memory == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_heads={self.num_heads}")

    def record(self) -> dict:
        """The options as recorded in the results file (the transformer's own, if used)."""
        names = ["memory", "hidden_size", "head_hidden_sizes", "embed_hidden_sizes",
                 "previous_obs_input", "separate_value"]
        if self.time_input:
            names.append("time_input")
        if self.memory == "transformer":
            names += ["num_layers", "num_heads"]
        return {name: getattr(self, name) for name in names}


class Student:
    """The RL² network on ``family``'s env, its trial rollouts and its sequence outputs."""

    def __init__(self, options: Network, family, num_episodes: int):
        env = family.env
        params0 = family.sample_params(jax.random.PRNGKey(0))
        self.env, self.num_episodes, self.horizon = env, num_episodes, EPISODE_LENGTH
        self.spec = action_spec(env.action_space(params0))
        self.inputs = MetaInputs(previous_obs=options.previous_obs_input,
                                 time=options.time_input)
        obs_dim = math.prod(env.observation_space(params0).shape)
        self.input_dim = self.inputs.size(obs_dim, self.spec.dim)
        if options.memory == "transformer":
            self.network = memory.TransformerActorCritic(
                options.hidden_size, options.num_layers, options.num_heads,
                num_episodes * self.horizon, self.spec.dim, self.spec.discrete,
                tuple(options.head_hidden_sizes), tuple(options.embed_hidden_sizes))
        else:
            self.network = memory.GRUActorCritic(
                options.hidden_size, self.spec.dim, self.spec.discrete,
                tuple(options.head_hidden_sizes), tuple(options.embed_hidden_sizes),
                options.separate_value)

    def init(self, key):
        """Initial parameters (``rl2.make(...).init(key).params`` for the same options)."""
        return self.network.init(key, self.network.init_state(),
                                 jnp.zeros((self.input_dim,), jnp.float32))

    def trials(self, params, task_params, key, deterministic: bool = False):
        """One trial of ``num_episodes`` episodes on each task: a ``TrialBatch``."""
        def policy_step(params, hidden, x):
            return memory.step(self.network, params, hidden, x)

        return run_trials(self.env, policy_step, self.network.init_state(), params,
                          task_params, key, horizon=self.horizon,
                          num_episodes=self.num_episodes, action_spec=self.spec,
                          inputs=self.inputs, deterministic=deterministic)

    def log_probs(self, params, trials):
        """Log-probabilities of every action at every step of ``trials``, ``[B, T, A]``."""
        inputs = trials.flat(trials.inputs)
        hidden = self.network.init_state(inputs.shape[:1])
        dist, _ = memory.sequence(self.network, params, hidden, inputs)
        return jax.nn.log_softmax(dist.logits)


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

    prior_mean = mdp_players.REWARD_PRIOR_MEAN  # the same Normal posterior as mdp.myopic
    prior, noise = mdp_players.REWARD_PRIOR_PRECISION, mdp_players.REWARD_NOISE_PRECISION
    mean = ((prior * prior_mean + noise * before(visit * reward[..., None, None]))
            / (prior + noise * before(visit)))
    q = jnp.einsum("bts,btsa->bta", state, mean)
    best = (q >= jnp.max(q, axis=-1, keepdims=True) - 1e-6).astype(jnp.float32)
    return best / jnp.sum(best, axis=-1, keepdims=True)


def imitation_loss(student: Student, params, trials, target):
    """``(cross-entropy, agreement)`` of the student with ``target`` over the valid steps;
    agreement: the student's most likely action is one of the teacher's."""
    log_p = student.log_probs(params, trials)
    valid = trials.flat(trials.valid)
    cross_entropy = -jnp.sum(target * log_p, axis=-1)
    num_actions = log_p.shape[-1]
    agree = jnp.sum(target * jax.nn.one_hot(jnp.argmax(log_p, -1), num_actions), -1) > 0
    return (jnp.sum(cross_entropy * valid) / jnp.sum(valid),
            jnp.sum(agree * valid) / jnp.sum(valid))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="n: episodes per trial")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256, help="trials per gradient step")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--log-every", type=int, default=100,
                        help="steps between progress lines (and the time-budget check)")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override a network option (a field of Network: "
                                         "e.g. --set previous_obs_input=true)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "rl2_mdp_imitation.json"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    family = metarl_jax.make("tabular-mdp", episode_length=EPISODE_LENGTH)
    num_states, num_actions = family.env.num_states, family.env.num_actions
    options = apply_overrides(Network(hidden_size=args.hidden_size), args.overrides)
    student = Student(options, family, args.episodes)
    params = student.init(jax.random.PRNGKey(args.seed))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.learning_rate))
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        task_key, trial_key = jax.random.split(key)
        tasks = family.sample(task_key, args.batch, "train")
        trials = student.trials(params, tasks, trial_key)
        target = myopic_targets(trials, num_states, num_actions)
        (loss, agree), grads = jax.value_and_grad(
            lambda p: imitation_loss(student, p, trials, target), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        total = jnp.mean(jnp.sum(trials.flat(trials.reward), axis=1))
        return optax.apply_updates(params, updates), opt_state, loss, agree, total

    test_tasks = family.sample(jax.random.PRNGKey(args.seed + 100), args.instances, "test")
    play = jax.jit(student.trials, static_argnums=3)

    def play_total(params, deterministic):
        trials = play(params, test_tasks, jax.random.PRNGKey(args.seed + 200), deterministic)
        return mean_and_se(jnp.sum(trials.flat(trials.reward), axis=1))

    teacher = mean_and_se(mdp_players.evaluate(
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
        if done % args.log_every == 0:
            elapsed = time.perf_counter() - start
            history.append({"step": done, "loss": float(loss), "agreement": float(agree),
                            "train_return": float(total), "seconds": elapsed})
            print(f"  step {done}: cross-entropy {float(loss):.3f}, agreement "
                  f"{float(agree):.3f}, own-trial return {float(total):.1f}, {elapsed:.0f} s",
                  flush=True)
            if elapsed > 60 * args.minutes:
                break
    jax.block_until_ready(params)
    train_s = time.perf_counter() - start
    sample, mode = play_total(params, False), play_total(params, True)
    result = {
        "n": args.episodes, "instances": args.instances, "network": options.record(),
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
    return result


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
