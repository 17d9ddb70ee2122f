"""The rollout engine: fixed-shape trajectories collected with ``lax.scan``.

Three modes, one per kind of meta-learner:

* **independent episodes** (:func:`rollout`, MAML and other gradient-based
  learners): ``num_episodes`` episodes of one task, each from its own reset;
* **trials** (:func:`run_trial` / :func:`run_trials`, RL², VariBAD):
  ``num_episodes`` consecutive episodes of one task played by a policy whose
  state (memory, posterior) is carried across episode boundaries and reset
  only at the trial's start. The meta-RL inputs (previous action, reward and
  done, ``t / T``, privileged task features) are assembled here, in one place
  (:class:`MetaInputs`);
* **windowed episodes** (:func:`run_windowed`, off-policy context learners,
  online model adaptation): the policy acts on the last ``W`` transitions of
  the trial, kept as a fixed-size masked window, and each step's full
  transition (with ``terminated`` apart from truncation, for bootstrapping)
  is returned for a replay buffer; play stops exactly at an episode's end and
  can continue from there.

``rollout`` runs ``num_episodes`` independent episodes of one task for exactly
``horizon`` steps each and returns a :class:`Trajectory` of shape
``[episodes, time, ...]``. Steps after an episode ended are kept (so shapes
never change) but marked ``valid = False``; every loss and return in
``metarl_jax.rl`` respects that mask. Callers ``vmap`` over tasks, and one
compile serves any batch of tasks of the same shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.envs.environment import Environment, require_positive
from metarl_jax.nn.spaces import ActionSpec
from metarl_jax.sharding import shard_tasks

# policy_fn(policy_params, obs, key) -> action  or  (action, log_prob)
PolicyFn = Callable[[Any, jax.Array, jax.Array], Any]


@struct.dataclass
class Trajectory:
    """A batch of fixed-length episodes of one task.

    Shapes (``E`` episodes, ``T`` time steps):

    * ``obs``: ``[E, T, *obs_shape]``, the observation the action was taken in
    * ``action``: ``[E, T, *action_shape]``
    * ``reward``: ``[E, T]`` float32
    * ``terminated``, ``truncated``: ``[E, T]`` bool; ``truncated`` is also set
      on the last step of the horizon when the episode is still running
    * ``valid``: ``[E, T]`` bool, True for steps inside the episode
    * ``log_prob``: ``[E, T]`` float32, log-probability of ``action`` under the
      behaviour policy (zeros if the policy gives none)
    * ``next_obs``: ``[E, T, *obs_shape]``, observation after the step (the true
      final observation at the end of an episode, for bootstrapping)
    * ``info``: ``{name: [E, T, ...]}``, the env's ``info`` entries the caller
      asked for (``rollout(info_keys=...)``; empty by default)
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    valid: jax.Array
    log_prob: jax.Array
    next_obs: jax.Array
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def episode_returns(self) -> jax.Array:
        """Undiscounted return of each episode, ``[E]``."""
        return jnp.sum(self.reward * self.valid, axis=-1)

    @property
    def episode_lengths(self) -> jax.Array:
        """Number of valid steps of each episode, ``[E]``."""
        return jnp.sum(self.valid, axis=-1)


def _split_policy_output(out):
    if isinstance(out, tuple):
        action, log_prob = out
    else:
        action, log_prob = out, jnp.zeros((), jnp.float32)
    return action, jnp.asarray(log_prob, jnp.float32)


def rollout(
    env,
    policy_fn: PolicyFn,
    policy_params: Any,
    env_params: Any,
    key: jax.Array,
    num_episodes: int,
    horizon: int,
    info_keys: tuple[str, ...] = (),
) -> Trajectory:
    """Collect ``num_episodes`` episodes of ``horizon`` steps from one task.

    Args:
      env: a metarl_jax (or gymnax-compatible) environment.
      policy_fn: ``policy_fn(policy_params, obs, key)`` for a single
        observation, returning an action or ``(action, log_prob)``.
      policy_params: pytree of policy parameters (differentiable: gradients
        flow into ``log_prob``).
      env_params: params of one task (no leading task axis).
      key: PRNG key; split internally, never reused.
      num_episodes, horizon: static sizes.
      info_keys: entries of the env's step ``info`` to keep (``Trajectory.info``);
        a ``KeyError`` names one the env does not report.

    Returns:
      :class:`Trajectory` with leading axes ``[num_episodes, horizon]``.
    """
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("horizon", horizon, integer=True)
    # not getattr: a gymnax wrapper forwards step_no_reset to the env it wraps, skipping itself
    step_fn = env.step_no_reset if isinstance(env, Environment) else env.step
    reset_key, scan_key = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_episodes), env_params
    )

    def one_step(obs, state, alive, key, is_last):
        policy_key, env_key = jax.random.split(key)
        action, log_prob = _split_policy_output(policy_fn(policy_params, obs, policy_key))
        next_obs, next_state, reward, terminated, truncated, info = step_fn(
            env_key, state, action, env_params
        )
        truncated = jnp.logical_and(
            jnp.logical_or(truncated, is_last), jnp.logical_not(terminated)
        )
        still_alive = alive & ~(terminated | truncated)
        final_obs = info.get("final_observation", next_obs)
        missing = [name for name in info_keys if name not in info]
        if missing:
            raise KeyError(f"rollout: the env's info has no {missing} (it has {sorted(info)})")
        out = (obs, action, jnp.asarray(reward, jnp.float32), terminated, truncated,
               alive, log_prob, final_obs, {name: info[name] for name in info_keys})
        return (next_obs, next_state, still_alive), out

    def scan_body(carry, inputs):
        obs, state, alive = carry
        key, is_last = inputs
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(one_step, in_axes=(0, 0, 0, 0, None))(obs, state, alive, keys, is_last)

    alive = jnp.ones((num_episodes,), bool)
    is_last = jnp.arange(horizon) == horizon - 1
    _, outs = jax.lax.scan(
        scan_body, (obs, state, alive), (jax.random.split(scan_key, horizon), is_last)
    )
    # scan stacks time first: [T, E, ...] -> [E, T, ...]
    outs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    return Trajectory(*outs)


# -- trials: consecutive episodes of one task with a carried policy state -----------

# policy_step(params, state, inputs [in]) -> (state', dist, value)
PolicyStep = Callable[[Any, Any, jax.Array], tuple[Any, Any, jax.Array]]


def task_features(task_params) -> jax.Array:
    """The task's parameters as one float32 vector (the privileged input).

    Every floating-point leaf of the env params, flattened in pytree order, except
    ``max_steps_in_episode`` (the horizon, the same for every task of a learner):
    one task's params give ``[F]`` (``vmap`` it over a batch).
    """
    leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(task_params)
              if "max_steps_in_episode" not in jax.tree_util.keystr(path)
              and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    if not leaves:
        raise TypeError("privileged inputs need env params with floating-point fields "
                        f"(the task's parameters), got {type(task_params).__name__}")
    return jnp.concatenate([jnp.ravel(jnp.asarray(x, jnp.float32)) for x in leaves])


@dataclasses.dataclass(frozen=True)
class MetaInputs:
    """Which meta-RL inputs a trial policy sees, concatenated in this order.

    ``[obs_t, (obs_{t-1}), (obs'_{t-1}), a_{t-1}, r_{t-1}, d_{t-1}, (t / T), (task features)]``:
    the observation, the observation ``a_{t-1}`` was taken in
    (``previous_obs``), the observation ``a_{t-1}`` led to (``final_obs``:
    ``obs_t`` itself inside an episode, the env's pre-reset
    ``info["final_observation"]`` when ``a_{t-1}`` ended one, so a learner
    that counts transitions sees the last one of every episode), the previous action (:meth:`ActionSpec.encode`), reward
    and episode-done flag (Duan et al. 2016, Fig. 1; all zero at a trial's
    start), the fraction of the trial played (``time``) and the task's
    parameters (``privileged``: for an asymmetric critic, always last so a
    network can split them off).
    """

    previous_obs: bool = False
    time: bool = False
    privileged: bool = False
    final_obs: bool = False

    def size(self, obs_dim: int, action_dim: int) -> int:
        """Length of the inputs without the privileged features."""
        return (obs_dim * (1 + int(self.previous_obs) + int(self.final_obs)) + action_dim + 2
                + int(self.time))


@struct.dataclass
class TrialBatch:
    """Trials in chunks: ``B`` trials, ``K`` chunks of ``C`` steps (one trial: no ``B``).

    ``K * C >= num_episodes * horizon``; steps after the trial's last episode
    ended are padding with ``valid == False``. Chunks are what truncated BPTT
    trains on, each restarted from the policy state it had at its start.

    * ``chunk_state``: the policy state at the start of each chunk, leading
      ``[B, K]`` (the trial-start state for the first chunk)
    * ``inputs``: ``[B, K, C, in]`` the policy inputs (:class:`MetaInputs`)
    * ``action``: ``[B, K, C, *action_shape]``
    * ``log_prob``, ``value``, ``reward``: ``[B, K, C]`` float32 (behaviour policy)
    * ``done``: ``[B, K, C]`` bool, the step ended an inner episode
    * ``valid``: ``[B, K, C]`` bool, the step belongs to the trial
    * ``episode``: ``[B, K, C]`` int32, index of the episode within the trial
    * ``learning_reward``: ``[B, K, C]`` float32, ``reward`` itself or, with
      ``expected_reward=True``, the env's ``info["expected_reward"]``
    """

    chunk_state: Any
    inputs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array
    episode: jax.Array
    learning_reward: jax.Array

    def flat(self, x: jax.Array) -> jax.Array:
        """``[B, K, C, ...] -> [B, K * C, ...]``: the trial as one time axis."""
        return x.reshape(x.shape[:1] + (-1,) + x.shape[3:])


def episode_horizon(family, horizon: int | None, learner: str) -> int:
    """``horizon``, or the family's own episode length when it is ``None``.

    Raises ``TypeError`` naming ``learner`` when the family's env params have no
    ``max_steps_in_episode`` field (the horizon a trial learner truncates at).
    """
    params = family.sample_params(jax.random.PRNGKey(0))
    if not hasattr(params, "max_steps_in_episode"):
        raise TypeError(f"family {family.name!r}: {learner} needs env params with a "
                        "max_steps_in_episode field (the episode horizon)")
    return horizon or int(params.max_steps_in_episode)


def with_horizon(task_params, horizon: int):
    """Task params whose episodes are truncated after exactly ``horizon`` steps."""
    return task_params.replace(max_steps_in_episode=jnp.full_like(
        jnp.asarray(task_params.max_steps_in_episode), horizon))


def run_trial(env, policy_step: PolicyStep, init_state: Any, params: Any, env_params: Any,
              key: jax.Array, *, num_episodes: int, horizon: int, action_spec: ActionSpec,
              inputs: MetaInputs = MetaInputs(), chunk_length: int | None = None,
              deterministic: bool = False, expected_reward: bool = False) -> TrialBatch:
    """One trial of ``num_episodes`` episodes of one task (``env_params``, no task axis).

    The policy state starts at ``init_state`` and is carried through every
    step of the trial, episode boundaries included; the env's auto-reset
    starts each new episode (episodes end after ``env_params``' horizon:
    pass params through :func:`with_horizon`). The policy samples its action,
    or takes the most likely one with ``deterministic``. Returns a
    :class:`TrialBatch` without the ``B`` axis, in ``chunk_length``-step
    chunks (``None``: one chunk).
    """
    total = num_episodes * horizon
    chunk = chunk_length or total
    num_chunks = -(-total // chunk)
    privileged = [task_features(env_params)] if inputs.privileged else []
    reset_key, scan_key = jax.random.split(key)
    obs, env_state = env.reset(reset_key, env_params)
    flat_obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
    carry = (obs, env_state, init_state,
             jnp.zeros((action_spec.dim,), jnp.float32), jnp.zeros((), jnp.float32),
             jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
             jnp.zeros_like(flat_obs), jnp.zeros((), jnp.int32), jnp.zeros_like(flat_obs))

    def step(carry, step_key):
        (obs, env_state, state, prev_action, prev_reward, prev_done, episode,
         prev_obs, t, prev_final) = carry
        flat_obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        # prev_obs: the observation a_prev was taken in; prev_final: the one it led to
        # (zeros at the trial's start)
        obs_part = ([flat_obs] + ([prev_obs] if inputs.previous_obs else [])
                    + ([prev_final] if inputs.final_obs else []))
        elapsed = [(t.astype(jnp.float32) / total)[None]] if inputs.time else []
        x = jnp.concatenate(obs_part + [prev_action, prev_reward[None], prev_done[None]]
                            + elapsed + privileged)
        state, dist, value = policy_step(params, state, x)
        policy_key, env_key = jax.random.split(step_key)
        action = dist.mode() if deterministic else dist.sample(policy_key)
        obs, env_state, reward, terminated, truncated, info = env.step(
            env_key, env_state, action, env_params)
        reward = jnp.asarray(reward, jnp.float32)
        signal = (jnp.asarray(info["expected_reward"], jnp.float32)
                  if expected_reward else reward)
        done = jnp.logical_or(terminated, truncated)
        out = (x, action, dist.log_prob(action), value, reward, done,
               episode < num_episodes, episode, signal)
        final = jnp.reshape(info.get("final_observation", obs), (-1,)).astype(jnp.float32)
        carry = (obs, env_state, state, action_spec.encode(action), reward,
                 done.astype(jnp.float32), episode + done.astype(jnp.int32), flat_obs, t + 1,
                 final)
        return carry, out

    def run_chunk(carry, chunk_keys):
        chunk_start_state = carry[2]
        carry, outs = jax.lax.scan(step, carry, chunk_keys)
        return carry, (chunk_start_state, outs)

    keys = jax.random.split(scan_key, num_chunks * chunk).reshape(
        (num_chunks, chunk) + scan_key.shape)
    _, (chunk_state, outs) = jax.lax.scan(run_chunk, carry, keys)
    return TrialBatch(chunk_state, *outs)


def run_trials(env, policy_step: PolicyStep, init_state: Any, params: Any, task_params: Any,
               key: jax.Array, *, horizon: int, mesh=None, **kwargs) -> TrialBatch:
    """:func:`run_trial` on each task of ``task_params`` (leading axis ``B``).

    Episodes are truncated after ``horizon`` steps; the task axis is sharded
    over ``mesh`` when one is given. ``kwargs`` are :func:`run_trial`'s.
    """
    task_params = with_horizon(task_params, horizon)
    num_tasks = jax.tree.leaves(task_params)[0].shape[0]
    keys = shard_tasks(jax.random.split(key, num_tasks), mesh)
    trials = jax.vmap(lambda p, k: run_trial(env, policy_step, init_state, params, p, k,
                                             horizon=horizon, **kwargs))(task_params, keys)
    return shard_tasks(trials, mesh)


def episode_returns(trials: TrialBatch, num_episodes: int) -> jax.Array:
    """Undiscounted return of each episode of each trial, ``[B, num_episodes]``."""
    reward = trials.flat(trials.reward)
    episode = jnp.where(trials.flat(trials.valid), trials.flat(trials.episode), num_episodes)

    def per_trial(r, e):  # [T], [T] -> [num_episodes]; padding lands in the extra segment
        return jax.ops.segment_sum(r, e, num_segments=num_episodes + 1)[:num_episodes]

    return jax.vmap(per_trial)(reward, episode)


# -- windowed episodes: acting on the last W transitions of the trial ------------------------

# act(params, obs [o], window [W, d], mask [W], key) -> action
WindowPolicy = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def transition_vector(item: dict, action_spec: ActionSpec) -> jax.Array:
    """A transition as one window entry ``[..., d]`` = ``[s, a, r, s', done]``
    (``a`` encoded by ``action_spec``: one-hot, or the clipped continuous action)."""
    action = item["action"]
    encoded = (jax.nn.one_hot(action, action_spec.dim, dtype=jnp.float32) if action_spec.discrete
               else jnp.clip(action.astype(jnp.float32), action_spec.low, action_spec.high))
    return jnp.concatenate([item["obs"], encoded, item["reward"][..., None], item["next_obs"],
                            item["done"][..., None]], axis=-1)


def window_dim(obs_dim: int, action_spec: ActionSpec) -> int:
    """Length ``d`` of a :func:`transition_vector`."""
    return 2 * obs_dim + action_spec.dim + 2


def push_transition(window: jax.Array, mask: jax.Array, vector: jax.Array, keep=True):
    """The window ``[W, d]`` and mask ``[W]`` after appending ``vector`` (the oldest entry
    drops out), or unchanged where ``keep`` is False; a ``W = 0`` window stays empty."""
    if not window.shape[0]:
        return window, mask
    new_window = jnp.concatenate([window[1:], vector[None]], axis=0)
    new_mask = jnp.concatenate([mask[1:], jnp.ones((1,), bool)])
    return jnp.where(keep, new_window, window), jnp.where(keep, new_mask, mask)


class WindowCarry(NamedTuple):
    """Where windowed play stands: the env, the context window and the trial's counters."""

    obs: jax.Array
    env_state: Any
    window: jax.Array      # [W, d], oldest first
    mask: jax.Array        # [W]
    episode: jax.Array     # episodes finished since the first call
    t: jax.Array           # transitions of the current trial so far


@struct.dataclass
class WindowedEpisodes:
    """What :func:`run_windowed` played on one task (``T = num_episodes * horizon`` steps).

    * ``items``: ``{"obs", "action", "reward", "next_obs", "terminated", "done", "t"}``,
      leaves ``[T, ...]``: each step's transition (``next_obs`` is the real final
      observation at an episode's end; ``t`` counts the trial's earlier transitions)
    * ``window``, ``mask``: ``[T, W, d]``, ``[T, W]``, the context the action was chosen on
    * ``valid``: ``[T]``, the step belongs to the requested episodes
    * ``returns``: ``[num_episodes]`` undiscounted return of each episode
    * ``carry``: a :class:`WindowCarry`, where play stopped (the last episode's end);
      pass it as ``start`` to continue
    """

    items: dict
    window: jax.Array
    mask: jax.Array
    valid: jax.Array
    returns: jax.Array
    carry: Any


def run_windowed(env, act: WindowPolicy, params: Any, env_params: Any, key: jax.Array, *,
                 num_episodes: int, horizon: int, window: int, action_spec: ActionSpec,
                 trial_episodes: int = 1, start: Any = None,
                 use_context: bool = True) -> WindowedEpisodes:
    """``num_episodes`` episodes of one task played on a sliding window of recent transitions.

    The policy sees the observation and the last ``window`` transitions of the
    current *trial* (``trial_episodes`` consecutive episodes; the window is
    emptied when a trial ends), oldest first, as :func:`transition_vector`
    entries with a mask (``use_context=False`` masks them all: the same policy
    without context). Episodes end at termination or after ``env_params``'
    horizon (pass params through :func:`with_horizon`); ``horizon`` sizes the
    fixed-length scan. Play stops exactly at the last episode's end, so a later
    call with ``start=result.carry`` continues the same trial there (after an
    adaptation step, say). The context learners (Meta-Q-Learning) and online
    model adaptation act through this.
    """
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("horizon", horizon, integer=True)
    require_positive("trial_episodes", trial_episodes, integer=True)
    k_reset, k_steps = jax.random.split(key)
    if start is None:
        obs, env_state = env.reset(k_reset, env_params)
        obs_dim = int(jnp.size(obs))
        start = WindowCarry(obs, env_state,
                            jnp.zeros((window, window_dim(obs_dim, action_spec)), jnp.float32),
                            jnp.zeros((window,), bool), jnp.zeros((), jnp.int32),
                            jnp.zeros((), jnp.int32))
    limit = start.episode + num_episodes

    def step(carry: WindowCarry, key):
        obs, env_state, win, mask, episode, t = carry
        k_act, k_env = jax.random.split(key)
        flat = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        seen = mask & use_context
        action = act(params, flat, win, seen, k_act)
        next_obs, next_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, action, env_params)
        final = jnp.reshape(info.get("final_observation", next_obs), (-1,)).astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        valid = episode < limit
        item = {"obs": flat, "action": action, "reward": jnp.asarray(reward, jnp.float32),
                "next_obs": final, "terminated": terminated.astype(jnp.float32),
                "done": done.astype(jnp.float32), "t": t}
        out = (item, win, seen, valid)
        win, mask = push_transition(win, mask, transition_vector(item, action_spec), valid)
        ends_trial = done & ((episode + 1) % trial_episodes == 0)
        mask = jnp.where(ends_trial, jnp.zeros_like(mask), mask)
        new = WindowCarry(next_obs, next_state, win, mask, episode + done.astype(jnp.int32),
                          jnp.where(ends_trial, 0, t + 1))
        # frozen after the last episode, so the carry is exactly where play stopped
        return jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, carry), out

    carry, (items, wins, seens, valid) = jax.lax.scan(
        step, start, jax.random.split(k_steps, num_episodes * horizon))
    episode = jnp.where(valid, jnp.cumsum(items["done"]) - items["done"], num_episodes)
    returns = jax.ops.segment_sum(items["reward"] * valid, episode.astype(jnp.int32),
                                  num_segments=num_episodes + 1)[:num_episodes]
    return WindowedEpisodes(items=items, window=wins, mask=seens, valid=valid, returns=returns,
                            carry=carry)
