"""Tabular-MDP players of RL² Table 2 (Duan et al. 2016, arXiv:1611.02779, Sec. 5.2).

An instance is a ``tabular-mdp`` task: ``TabularMDPParams`` (from
``metarl_jax.make("tabular-mdp", ...).sample``; :func:`sample_instances` is
that call), or anything with ``transitions: [S, A, S]`` (rows sum to 1) and
``mean_rewards: [S, A]`` fields (an ``MDPInstance``, unit reward noise). A
trial is ``num_episodes`` episodes of ``episode_length`` steps, each starting
in state 0; taking ``a`` in ``s`` pays ``mean_rewards[s, a] +
reward_noise_std * N(0, 1)``. Every player is a trial policy played on the
real :class:`~metarl_jax.envs.TabularMDP` by the shared rollout engine
(:func:`metarl_jax.core.rollout.run_trial`), and returns its total
(realised) reward (or, with ``per_episode=True``, the ``[num_episodes]``
returns: no player knows ``n``, so the first ``m`` episodes of a trial of
``n`` are a trial of ``m``); ``evaluate`` vmaps a named player over a batch
of instances.

Every player is a *planner*: its policy state holds its statistics
(transition counts and reward sums, counted from the previous observation,
action, reward and done inputs), and at each episode start (the done input)
it turns them into non-stationary action values ``q: [episode_length, S,
A]``, kept in its state, and then acts greedily on them (ties broken
uniformly at random, so all-equal values mean a uniformly random action),
optionally with epsilon-random actions. The last transition of an episode is
counted too: the engine's ``final_obs`` input is the state an action led to,
the pre-reset one when it ended the episode. The Bayesian players use the exact
posterior of the RL² task distribution: Dirichlet(1, ..., 1) transitions and
a N(1, 1) prior on each mean reward with known unit noise, so after ``n``
visits with reward sum ``R`` the mean reward is N((1 + R) / (1 + n), 1 / (1 + n)).
(Their posterior assumes unit noise whatever ``reward_noise_std`` the env
draws with: these players are for the RL² distribution.)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metarl_jax.core.rollout import MetaInputs
from metarl_jax.envs.environment import require_positive
from metarl_jax.envs.tabular_mdp import TabularMDPParams
from metarl_jax.families.meta_rl import tabular_mdp
from metarl_jax.players.bandits import sample_gamma
from metarl_jax.players.policy import (
    TrialPolicy,
    any_in_batch,
    dress_player,
    greedy_distribution,
    no_value,
    play_trial,
)

# Prior of the RL² task distribution (Sec. 5.2): mean rewards ~ N(1, 1), unit reward noise.
REWARD_PRIOR_MEAN = 1.0
REWARD_PRIOR_PRECISION = 1.0
REWARD_NOISE_PRECISION = 1.0
ROW_SUM_TOLERANCE = 1e-4  # float32 Dirichlet rows sum to 1 within about 1e-6
DEFAULT_EPISODE_LENGTH = 10
# Tuned by benchmarks/baselines_tables.py: epsilon 0 to 0.03, BEB bonus 1.0 for n >= 25.
DEFAULT_EPSILON = 0.03
DEFAULT_BEB_BONUS = 1.0
DEFAULT_OPSRL_SAMPLES = 3


class MDPInstance(NamedTuple):
    """One random MDP (or a batch, with a leading instance axis)."""

    transitions: jax.Array  # [..., S, A, S], rows sum to 1
    mean_rewards: jax.Array  # [..., S, A]


class Statistics(NamedTuple):
    """What a player has seen so far in the trial."""

    transition_counts: jax.Array  # [S, A, S] float32
    reward_sums: jax.Array  # [S, A] float32


# q = plan(params, statistics, key): [episode_length, S, A]
PlanFn = Callable[[Any, Statistics, Any], jax.Array]


class Plan(NamedTuple):
    """How a player plans: ``plan(params, statistics, key) -> q: [T, S, A]`` at episode starts.

    ``params``: what the player knows before the trial (passed to the engine as
    the policy's params); ``epsilon``: probability of a random action (``None``
    for none); ``random``: ``plan`` draws random numbers (it gets a fresh key).
    """

    plan: PlanFn
    params: Any = None
    epsilon: Any = None
    random: bool = False


# ----------------------------------------------------------------------------
# Input checks and instances


def _fields(mdp: Any) -> tuple[jax.Array, jax.Array]:
    if hasattr(mdp, "transitions") and hasattr(mdp, "mean_rewards"):
        transitions, mean_rewards = mdp.transitions, mdp.mean_rewards
    elif isinstance(mdp, (tuple, list)) and len(mdp) == 2:
        transitions, mean_rewards = mdp
    else:
        raise TypeError(
            "mdp must have fields transitions and mean_rewards, or be a "
            f"(transitions, mean_rewards) pair; got {type(mdp).__name__}"
        )
    return jnp.asarray(transitions, jnp.float32), jnp.asarray(mean_rewards, jnp.float32)


def as_instance(mdp: Any, *, batched: bool = False) -> MDPInstance:
    """``mdp`` as an ``MDPInstance`` of float32 arrays, checked.

    Accepts anything with ``transitions`` and ``mean_rewards`` fields, or a
    ``(transitions, mean_rewards)`` pair. Raises ``ValueError`` naming
    ``transitions`` when its shape does not match ``mean_rewards`` or (for
    concrete arrays) a row is negative or does not sum to 1.
    """
    transitions, mean_rewards = _fields(mdp)
    lead = 1 if batched else 0
    if mean_rewards.ndim != 2 + lead:
        raise ValueError(
            f"mean_rewards must have shape {'[instances, ' if batched else '['}S, A], "
            f"got {mean_rewards.shape}"
        )
    expected = mean_rewards.shape + mean_rewards.shape[lead : lead + 1]
    if transitions.shape != expected:
        raise ValueError(
            f"transitions must have shape {expected} (matching mean_rewards "
            f"{mean_rewards.shape}), got {transitions.shape}"
        )
    if not isinstance(transitions, jax.core.Tracer):
        host = np.asarray(transitions)
        if np.any(host < 0) or np.any(np.isnan(host)):
            raise ValueError("transitions must be non-negative probabilities")
        worst = float(np.max(np.abs(host.sum(-1) - 1.0)))
        if worst > ROW_SUM_TOLERANCE:
            raise ValueError(f"transitions rows must sum to 1 (worst row is off by {worst:.3g})")
    return MDPInstance(transitions, mean_rewards)


def sample_instances(
    key: jax.Array,
    num_instances: int,
    num_states: int = 10,
    num_actions: int = 5,
    split: str = "test",
    *,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
) -> TabularMDPParams:
    """RL² MDPs from the ``tabular-mdp`` family: ``TabularMDPParams`` with an instance axis.

    ``metarl_jax.make("tabular-mdp", states=S, actions=A, episode_length=T).sample(key,
    num_instances, split)``: flat-Dirichlet transitions, mean rewards ~ N(1, 1).
    """
    require_positive("num_instances", num_instances, integer=True)
    family = tabular_mdp(states=num_states, actions=num_actions, episode_length=episode_length)
    return family.sample(key, int(num_instances), split)


# ----------------------------------------------------------------------------
# Planning


def value_iteration(transitions: jax.Array, mean_rewards: jax.Array, horizon: int) -> jax.Array:
    """Finite-horizon optimal action values ``q: [horizon, S, A]`` (Bellman 1957).

    ``q[h, s, a] = r(s, a) + sum_s' P(s' | s, a) max_a' q[h + 1, s', a']`` with
    ``q[horizon] = 0``; step ``h`` of an episode acts on ``q[h]``.
    ``transitions: [S, A, S]``, ``mean_rewards: [S, A]``.
    """
    require_positive("horizon", horizon, integer=True)

    def backup(next_value, _):  # next_value: [S], optimal value with one step fewer to go
        q = mean_rewards + transitions @ next_value  # [S, A]
        return jnp.max(q, axis=-1), q

    num_states = mean_rewards.shape[0]
    _, q = jax.lax.scan(backup, jnp.zeros((num_states,), jnp.float32), None, length=horizon)
    return q[::-1]  # scan produced steps-to-go 1 .. horizon


def optimal_value(mdp: Any, *, episode_length: int = DEFAULT_EPISODE_LENGTH) -> jax.Array:
    """Expected return of one episode from state 0 when the MDP is known: ``max_a q[0, 0, a]``.

    The ceiling of RL² Table 2 (about 21.8 per episode at T = 10 on average).
    Accepts a batch (leading instance axis) too; returns ``[]`` or ``[instances]``.
    """
    batched = _fields(mdp)[1].ndim == 3
    mdp = as_instance(mdp, batched=batched)
    single = lambda p, r: jnp.max(value_iteration(p, r, episode_length)[0, 0])
    return (jax.vmap(single) if batched else single)(mdp.transitions, mdp.mean_rewards)


def _visits(stats: Statistics) -> jax.Array:
    return jnp.sum(stats.transition_counts, axis=-1)  # [S, A]


def _posterior_mean_mdp(stats: Statistics) -> MDPInstance:
    """Posterior-mean MDP: Dirichlet(1 + counts) mean, Normal posterior mean of rewards."""
    counts = stats.transition_counts + 1.0
    precision = REWARD_PRIOR_PRECISION + REWARD_NOISE_PRECISION * _visits(stats)
    reward_mean = (
        REWARD_PRIOR_PRECISION * REWARD_PRIOR_MEAN + REWARD_NOISE_PRECISION * stats.reward_sums
    ) / precision
    return MDPInstance(counts / jnp.sum(counts, axis=-1, keepdims=True), reward_mean)


def _posterior_sample(stats: Statistics, key: jax.Array) -> MDPInstance:
    """One MDP drawn from the exact posterior (Dirichlet transitions, Normal mean rewards)."""
    key_transitions, key_rewards = jax.random.split(key)
    gammas = sample_gamma(key_transitions, stats.transition_counts + 1.0)  # [S, A, S]
    transitions = gammas / jnp.sum(gammas, axis=-1, keepdims=True)
    precision = REWARD_PRIOR_PRECISION + REWARD_NOISE_PRECISION * _visits(stats)
    mean = _posterior_mean_mdp(stats).mean_rewards
    noise = jax.random.normal(key_rewards, mean.shape, jnp.float32)
    return MDPInstance(transitions, mean + noise / jnp.sqrt(precision))


# ----------------------------------------------------------------------------
# The player as a trial policy on the real MDP


@functools.lru_cache(maxsize=None)
def _env(num_states: int, num_actions: int, episode_length: int):
    """The ``tabular-mdp`` family's env of these sizes."""
    return tabular_mdp(states=num_states, actions=num_actions, episode_length=episode_length).env


def as_task(mdp: Any, episode_length: int = DEFAULT_EPISODE_LENGTH) -> TabularMDPParams:
    """One MDP's env params (``TabularMDPParams``), checked; ``reward_noise_std`` kept (else 1)."""
    instance = as_instance(mdp)
    noise = jnp.asarray(getattr(mdp, "reward_noise_std", 1.0), jnp.float32)
    return TabularMDPParams(instance.transitions, instance.mean_rewards, noise, episode_length)


class PlayerState(NamedTuple):
    """A player's policy state: statistics, the current plan, its step, its own PRNG key.

    ``q: [T, S, A]`` is planned at each episode start; step ``h`` of the episode
    acts on ``q[h]``; ``key`` is ``None`` unless planning draws random numbers (PSRL).
    """

    statistics: Statistics
    q: jax.Array
    h: jax.Array  # int32
    key: Any = None


def _policy(plan: Plan, num_states: int, num_actions: int, episode_length: int,
            key: jax.Array) -> TrialPolicy:
    """The trial policy of ``plan`` (``key``: its own PRNG key, used if ``plan.random``).

    It reads ``[obs, prev obs, prev final obs, prev action, prev reward, prev
    done]``. At each step it first counts the previous step into its
    statistics: the reward into ``reward_sums[s, a]`` and the transition
    ``(s, a) -> s'`` into ``transition_counts``, where ``s'`` is the state the
    action led to (the pre-reset final state when it ended the episode). At an episode start (the done input,
    or the trial's start) it plans ``q = plan.plan(params, statistics, key)``
    (``[T, S, A]``), then acts greedily on ``q[h, obs]``, ties uniformly at
    random, with ``plan.epsilon`` random actions if given.
    """
    plan_fn, epsilon = plan.plan, plan.epsilon

    def step(params, state, inputs):
        obs = inputs[:num_states]
        prev_obs = inputs[num_states : 2 * num_states]
        successor = inputs[2 * num_states : 3 * num_states]
        prev_action = inputs[3 * num_states : 3 * num_states + num_actions]
        reward = inputs[3 * num_states + num_actions]
        done = inputs[3 * num_states + num_actions + 1]
        visit = prev_obs[:, None] * prev_action[None, :]  # [S, A] one-hot; zeros at the start
        statistics = Statistics(
            state.statistics.transition_counts + visit[:, :, None] * successor[None, None, :],
            state.statistics.reward_sums + visit * reward,
        )
        episode_start = (done > 0.5) | (jnp.sum(prev_action) == 0.0)

        def replan():  # exact per task: only where episode_start holds
            key, plan_key = (None, None) if state.key is None else jax.random.split(state.key)
            q = jnp.where(episode_start, plan_fn(params, statistics, plan_key), state.q)
            if key is not None:
                key = jnp.where(episode_start, key, state.key)
            return q, key

        # planned once per episode, not once per step, under evaluate's vmap over tasks
        q, key = jax.lax.cond(any_in_batch(episode_start), replan,
                              lambda: (state.q, state.key))
        h = jnp.where(episode_start, 0, state.h + 1)
        scores = q[h, jnp.argmax(obs)]  # [A]
        state = PlayerState(statistics, q, h, key)
        return state, greedy_distribution(scores, epsilon), no_value()

    statistics = Statistics(
        jnp.zeros((num_states, num_actions, num_states), jnp.float32),
        jnp.zeros((num_states, num_actions), jnp.float32),
    )
    init_state = PlayerState(
        statistics, jnp.zeros((episode_length, num_states, num_actions), jnp.float32),
        jnp.zeros((), jnp.int32), key if plan.random else None)
    return TrialPolicy(step, init_state, plan.params, MetaInputs(previous_obs=True, final_obs=True))


def _prepare(mdp: Any, num_episodes: int, episode_length: int) -> TabularMDPParams:
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("episode_length", episode_length, integer=True)
    return as_task(mdp, episode_length)


def _check_unit_interval(name: str, value: Any) -> None:
    if not isinstance(value, jax.core.Tracer) and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


# ----------------------------------------------------------------------------
# Players


def _player(make_plan: Callable[..., Plan]) -> Callable[..., jax.Array]:
    """A player built from ``make_plan(mdp, episode_length, **hyperparameters) -> Plan``.

    The player is ``f(mdp, key, *, num_episodes, episode_length=DEFAULT_EPISODE_LENGTH,
    per_episode=False, **hyperparameters)``: it checks ``mdp`` and the lengths,
    lets ``make_plan`` check its hyperparameters and build the :class:`Plan`, and
    plays one trial of ``num_episodes`` episodes on the real ``TabularMDP``
    through the rollout engine. It returns the float32 total, or the
    ``[num_episodes]`` returns if ``per_episode``. ``f.policy(mdp, key, *,
    episode_length=..., **hyperparameters)`` is the :class:`TrialPolicy`
    itself, for :func:`~metarl_jax.core.rollout.run_trial` (``key``: the
    player's own PRNG key). The player takes ``make_plan``'s name and
    docstring, and its keyword-only parameters (with their defaults) as its
    hyperparameters.
    """

    def policy(mdp: Any, key: jax.Array, *, episode_length: int = DEFAULT_EPISODE_LENGTH,
               **hyperparameters: Any) -> TrialPolicy:
        require_positive("episode_length", episode_length, integer=True)
        task = as_task(mdp, episode_length)
        num_states, num_actions = task.mean_rewards.shape
        plan = make_plan(task, episode_length, **hyperparameters)
        return _policy(plan, num_states, num_actions, episode_length, key)

    def player(
        mdp: Any,
        key: jax.Array,
        *,
        num_episodes: int,
        episode_length: int = DEFAULT_EPISODE_LENGTH,
        per_episode: bool = False,
        **hyperparameters: Any,
    ) -> jax.Array:
        task = _prepare(mdp, num_episodes, episode_length)
        key_policy, key_trial = jax.random.split(key)
        trial_policy = policy(task, key_policy, episode_length=episode_length, **hyperparameters)
        num_states, num_actions = task.mean_rewards.shape
        rewards = play_trial(_env(num_states, num_actions, episode_length), trial_policy, task,
                             key_trial, num_episodes=num_episodes, horizon=episode_length)
        returns = jnp.sum(rewards.reshape(num_episodes, episode_length), axis=-1)
        return returns if per_episode else jnp.sum(returns)  # returns: [num_episodes]

    return dress_player(player, policy, make_plan)


def _certainty_equivalence_plan(episode_length: int, bonus: Any = None) -> PlanFn:
    """Value iteration in the posterior-mean MDP, rewards plus ``bonus / (1 + visits)`` if given."""

    def plan(params, stats, key):
        model = _posterior_mean_mdp(stats)
        rewards = model.mean_rewards
        if bonus is not None:
            rewards = rewards + bonus / (1.0 + _visits(stats))
        return value_iteration(model.transitions, rewards, episode_length)

    return plan


def _known_plan(params, stats, key):
    """The plan a player knows before the trial (its params), whatever it sees."""
    return params


@_player
def random_policy(mdp: TabularMDPParams, episode_length: int) -> Plan:
    """Uniformly random actions (RL² Table 2, "Random"); about 10 per episode at T = 10."""
    return Plan(_known_plan, jnp.zeros((episode_length,) + mdp.mean_rewards.shape, jnp.float32))


@_player
def known_mdp_optimum(mdp: TabularMDPParams, episode_length: int) -> Plan:
    """Act optimally with the MDP known (finite-horizon value iteration): the ceiling of Table 2.

    The one player that knows the task: its params are the MDP's optimal ``q``.
    """
    return Plan(_known_plan, value_iteration(mdp.transitions, mdp.mean_rewards, episode_length))


@_player
def epsilon_greedy(
    mdp: TabularMDPParams, episode_length: int, *, epsilon: Any = DEFAULT_EPSILON
) -> Plan:
    """Certainty equivalence with epsilon-random actions (RL² "eps-Greedy").

    At each episode start, plan by value iteration in the posterior-mean MDP;
    act greedily on it, but uniformly at random with probability ``epsilon``
    (traced; ``None`` is plain greedy).
    """
    if epsilon is not None:
        _check_unit_interval("epsilon", epsilon)
    return Plan(_certainty_equivalence_plan(episode_length), epsilon=epsilon)


@_player
def greedy(mdp: TabularMDPParams, episode_length: int) -> Plan:
    """Certainty equivalence (RL² "Greedy"): value iteration in the posterior-mean MDP, no exploration."""
    return Plan(_certainty_equivalence_plan(episode_length))


@_player
def myopic(mdp: TabularMDPParams, episode_length: int) -> Plan:
    """Myopic posterior mean (not in RL² Table 2): in each state take the action with the
    highest posterior-mean *immediate* reward, ignoring transitions; re-planned at each
    episode start like the others. A diagnostic: it needs only per-(state, action) reward
    memory, no planning, and at n = 10 it already scores about as well as greedy and BEB.
    """
    shape = (episode_length,) + mdp.mean_rewards.shape

    def plan(params, stats, key):
        return jnp.broadcast_to(_posterior_mean_mdp(stats).mean_rewards, shape)

    return Plan(plan)


@_player
def beb(mdp: TabularMDPParams, episode_length: int, *, bonus: Any = DEFAULT_BEB_BONUS) -> Plan:
    """Bayesian exploration bonus (Kolter & Ng 2009; RL² "BEB").

    Value iteration in the posterior-mean MDP with rewards
    ``r(s, a) + bonus / (1 + n(s, a))``, ``n`` the visit count; ``bonus`` traced.
    """
    if not isinstance(bonus, jax.core.Tracer) and not float(bonus) >= 0.0:
        raise ValueError(f"bonus must be >= 0, got {bonus!r}")
    return Plan(_certainty_equivalence_plan(episode_length, bonus))


@_player
def psrl(mdp: TabularMDPParams, episode_length: int) -> Plan:
    """Posterior sampling RL (Osband, Russo & Van Roy 2013; RL² "PSRL").

    At each episode start draw one MDP from the exact posterior (Dirichlet(1)
    transitions, Normal mean rewards with prior N(1, 1) and unit noise) and
    follow its finite-horizon optimal policy for the episode. The draws use
    the player's own PRNG key, carried in its policy state.
    """
    return Plan(_posterior_sampling_plan(1, episode_length), random=True)


@_player
def optimistic_psrl(
    mdp: TabularMDPParams, episode_length: int, *, num_samples: int = DEFAULT_OPSRL_SAMPLES
) -> Plan:
    """Optimistic PSRL (RL² "OPSRL", Sec. 5.2): the most optimistic of K posterior MDPs.

    At each episode start draw ``num_samples`` MDPs from the posterior and
    follow the optimal policy of the one whose optimal value from state 0 is
    largest; ``num_samples = 1`` is PSRL.
    """
    require_positive("num_samples", num_samples, integer=True)
    return Plan(_posterior_sampling_plan(num_samples, episode_length), random=True)


def _posterior_sampling_plan(num_samples: int, episode_length: int) -> PlanFn:
    """Plan of the posterior MDP sample (of ``num_samples``) with the highest optimal value."""

    def plan(params, stats, key):
        samples = jax.vmap(_posterior_sample, in_axes=(None, 0))(
            stats, jax.random.split(key, num_samples)
        )
        q = jax.vmap(value_iteration, in_axes=(0, 0, None))(
            samples.transitions, samples.mean_rewards, episode_length
        )  # [K, T, S, A]
        return q[jnp.argmax(jnp.max(q[:, 0, 0], axis=-1))]

    return plan


# ----------------------------------------------------------------------------
# Registry and batch evaluation

BASELINES: dict[str, Callable[..., jax.Array]] = {
    "random": random_policy,
    "greedy": greedy,
    "myopic": myopic,
    "epsilon_greedy": epsilon_greedy,
    "beb": beb,
    "psrl": psrl,
    "optimistic_psrl": optimistic_psrl,
    "known_mdp_optimum": known_mdp_optimum,
}
_STATIC_HYPERPARAMETERS = ("num_samples",)  # they change shapes
_TRACED_HYPERPARAMETERS = ("epsilon", "bonus")


@functools.partial(
    jax.jit,
    static_argnames=(
        "name",
        "num_episodes",
        "episode_length",
        "per_episode",
        "static_hyperparameters",
    ),
)
def _evaluate(
    name,
    mdps,
    key,
    num_episodes,
    episode_length,
    per_episode,
    static_hyperparameters,
    traced_hyperparameters,
):
    player = functools.partial(
        BASELINES[name],
        num_episodes=num_episodes,
        episode_length=episode_length,
        per_episode=per_episode,
        **dict(static_hyperparameters),
        **traced_hyperparameters,
    )
    keys = jax.random.split(key, mdps.mean_rewards.shape[0])
    return jax.vmap(player)(mdps, keys)


def evaluate(
    name: str,
    mdps: Any,
    key: jax.Array,
    *,
    num_episodes: int,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    per_episode: bool = False,
    **hyperparameters: Any,
) -> jax.Array:
    """Total reward of baseline ``name`` on each MDP: ``[instances]`` float32.

    With ``per_episode=True``: the returns ``[instances, num_episodes]`` instead.

    ``mdps``: a batch of ``TabularMDPParams`` (``sample_instances``, the
    family's ``sample``), or anything with ``transitions: [instances, S, A, S]``
    and ``mean_rewards: [instances, S, A]`` (unit reward noise); each is played
    on the real env. One compile per
    ``(name, num_episodes, episode_length, sizes, num_samples)``; ``epsilon``
    and ``bonus`` are traced, so sweeping them does not recompile.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown MDP baseline {name!r}; expected one of {sorted(BASELINES)}")
    instances = as_instance(mdps, batched=True)
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("episode_length", episode_length, integer=True)
    noise = jnp.asarray(getattr(mdps, "reward_noise_std", 1.0), jnp.float32)
    num_instances = instances.mean_rewards.shape[0]
    mdps = TabularMDPParams(  # the env params of each instance, batched
        instances.transitions,
        instances.mean_rewards,
        jnp.broadcast_to(noise, (num_instances,)),
        jnp.full((num_instances,), int(episode_length), jnp.int32),
    )
    unknown = set(hyperparameters) - set(_STATIC_HYPERPARAMETERS) - set(_TRACED_HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)} for MDP baseline {name!r}")
    if "epsilon" in hyperparameters:
        _check_unit_interval("epsilon", hyperparameters["epsilon"])
    if "bonus" in hyperparameters and not float(hyperparameters["bonus"]) >= 0.0:
        raise ValueError(f"bonus must be >= 0, got {hyperparameters['bonus']!r}")
    if "num_samples" in hyperparameters:
        require_positive("num_samples", hyperparameters["num_samples"], integer=True)
    static = tuple(
        sorted((k, int(v)) for k, v in hyperparameters.items() if k in _STATIC_HYPERPARAMETERS)
    )
    traced = {
        k: jnp.asarray(v, jnp.float32)
        for k, v in hyperparameters.items()
        if k in _TRACED_HYPERPARAMETERS
    }
    return _evaluate(
        name,
        mdps,
        key,
        int(num_episodes),
        int(episode_length),
        bool(per_episode),
        static,
        traced,
    )
