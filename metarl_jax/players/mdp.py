"""Tabular-MDP players of RL² Table 2 (Duan et al. 2016, arXiv:1611.02779, Sec. 5.2).

An instance is ``transitions: [S, A, S]`` (rows sum to 1) and ``mean_rewards:
[S, A]``, as an ``MDPInstance`` or any object with those fields
(``metarl_jax.envs.TabularMDP`` params). A trial is ``num_episodes`` episodes
of ``episode_length`` steps, each starting in state 0; taking ``a`` in ``s``
pays ``mean_rewards[s, a] + N(0, 1)``. Every player simulates one whole
trial with nested ``lax.scan`` and returns its total (realised) reward (or,
with ``per_episode=True``, the ``[num_episodes]`` returns: no player knows
``n``, so the first ``m`` episodes of a trial of ``n`` are a trial of ``m``);
``evaluate`` vmaps a named player over a batch of instances.

Every player is a *planner*: at each episode start it turns its statistics
(transition counts, reward sums) into non-stationary action values
``q: [episode_length, S, A]`` and then acts greedily on them (ties broken
uniformly at random, so all-equal values mean a uniformly random action),
optionally with epsilon-random actions. The Bayesian players use the exact
posterior of the RL² task distribution: Dirichlet(1, ..., 1) transitions and
a N(1, 1) prior on each mean reward with known unit noise, so after ``n``
visits with reward sum ``R`` the mean reward is N((1 + R) / (1 + n), 1 / (1 + n)).
(Environment params with another ``reward_noise_std`` are simulated with unit
noise all the same: these players are for the RL² distribution.)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metarl_jax.players.bandits import sample_gamma
from metarl_jax.envs.environment import require_positive

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


# q = plan(statistics, key): [episode_length, S, A]
PlanFn = Callable[[Statistics, jax.Array], jax.Array]


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
    key: jax.Array, num_instances: int, num_states: int = 10, num_actions: int = 5
) -> MDPInstance:
    """RL² MDPs: flat-Dirichlet transitions, mean rewards ~ N(1, 1); ``[instances, S, A(, S)]``."""
    require_positive("num_instances", num_instances, integer=True)
    require_positive("num_states", num_states, integer=True)
    require_positive("num_actions", num_actions, integer=True)
    return _sample_instances(key, int(num_instances), int(num_states), int(num_actions))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_instances(key, num_instances, num_states, num_actions):
    key_transitions, key_rewards = jax.random.split(key)
    # Dirichlet(1, ..., 1) = normalised Exp(1) draws
    exponentials = jax.random.exponential(
        key_transitions, (num_instances, num_states, num_actions, num_states), jnp.float32
    )
    transitions = exponentials / jnp.sum(exponentials, axis=-1, keepdims=True)
    mean_rewards = REWARD_PRIOR_MEAN + jax.random.normal(
        key_rewards, (num_instances, num_states, num_actions), jnp.float32
    )
    return MDPInstance(transitions, mean_rewards)


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
# The trial simulator shared by every player


def _argmax_random_tie(key: jax.Array, values: jax.Array) -> jax.Array:
    """Index of a maximal entry of ``values: [A]``, uniform over ties (int32)."""
    best = values == jnp.max(values)
    return jax.random.categorical(key, jnp.where(best, 0.0, -jnp.inf)).astype(jnp.int32)


def _play(
    mdp: MDPInstance,
    key: jax.Array,
    num_episodes: int,
    episode_length: int,
    plan: PlanFn,
    epsilon: Any = None,
    per_episode: bool = False,
) -> jax.Array:
    """Total reward of one trial; ``plan`` gives ``q: [T, S, A]`` at each episode start.

    Returns the float32 total, or the ``[num_episodes]`` returns if ``per_episode``.
    """
    num_states, num_actions = mdp.mean_rewards.shape

    def step(carry, inputs):
        state, stats = carry
        q_step, key_step = inputs  # q_step: [S, A]
        if epsilon is None:
            key_tie, key_noise, key_next = jax.random.split(key_step, 3)
        else:
            key_tie, key_noise, key_next, key_explore, key_action = jax.random.split(key_step, 5)
        action = _argmax_random_tie(key_tie, q_step[state])
        if epsilon is not None:
            explore = jax.random.bernoulli(key_explore, epsilon)
            action = jnp.where(explore, jax.random.randint(key_action, (), 0, num_actions), action)
        reward = mdp.mean_rewards[state, action] + jax.random.normal(key_noise, (), jnp.float32)
        next_state = jax.random.categorical(
            key_next, jnp.log(mdp.transitions[state, action])
        ).astype(jnp.int32)
        stats = Statistics(
            stats.transition_counts.at[state, action, next_state].add(1.0),
            stats.reward_sums.at[state, action].add(reward),
        )
        return (next_state, stats), reward

    def episode(stats, key_episode):
        key_plan, key_steps = jax.random.split(key_episode)
        q = plan(stats, key_plan)  # [T, S, A]
        (_, stats), rewards = jax.lax.scan(
            step,
            (jnp.zeros((), jnp.int32), stats),
            (q, jax.random.split(key_steps, episode_length)),
        )  # rewards: [T]
        return stats, jnp.sum(rewards)

    stats = Statistics(
        jnp.zeros((num_states, num_actions, num_states), jnp.float32),
        jnp.zeros((num_states, num_actions), jnp.float32),
    )
    _, returns = jax.lax.scan(episode, stats, jax.random.split(key, num_episodes))
    return returns if per_episode else jnp.sum(returns)  # returns: [num_episodes]


def _prepare(mdp: Any, num_episodes: int, episode_length: int) -> MDPInstance:
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("episode_length", episode_length, integer=True)
    return as_instance(mdp)


def _check_unit_interval(name: str, value: Any) -> None:
    if not isinstance(value, jax.core.Tracer) and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


# ----------------------------------------------------------------------------
# Players


def _player(make_plan: Callable[..., tuple[PlanFn, Any]]) -> Callable[..., jax.Array]:
    """A player built from ``make_plan(mdp, episode_length, **hyperparameters) -> (plan, epsilon)``.

    The player is ``f(mdp, key, *, num_episodes, episode_length=DEFAULT_EPISODE_LENGTH,
    per_episode=False, **hyperparameters)``: it checks ``mdp`` and the lengths,
    lets ``make_plan`` check its hyperparameters and build the plan (``epsilon``:
    the probability of a random action, ``None`` for none), and simulates one
    trial with ``_play``. It takes ``make_plan``'s name and docstring, and its
    keyword-only parameters (with their defaults) as its hyperparameters.
    """

    def player(
        mdp: Any,
        key: jax.Array,
        *,
        num_episodes: int,
        episode_length: int = DEFAULT_EPISODE_LENGTH,
        per_episode: bool = False,
        **hyperparameters: Any,
    ) -> jax.Array:
        mdp = _prepare(mdp, num_episodes, episode_length)
        plan, epsilon = make_plan(mdp, episode_length, **hyperparameters)
        return _play(mdp, key, num_episodes, episode_length, plan, epsilon, per_episode)

    signature = inspect.signature(player)
    common = list(signature.parameters.values())[:-1]  # all but **hyperparameters
    own = inspect.signature(make_plan).parameters.values()
    hyperparameters = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    player.__signature__ = signature.replace(parameters=common + hyperparameters)
    player.__name__ = player.__qualname__ = make_plan.__name__
    player.__doc__ = make_plan.__doc__
    return player


def _certainty_equivalence_plan(episode_length: int, bonus: Any = None) -> PlanFn:
    """Value iteration in the posterior-mean MDP, rewards plus ``bonus / (1 + visits)`` if given."""

    def plan(stats, key):
        model = _posterior_mean_mdp(stats)
        rewards = model.mean_rewards
        if bonus is not None:
            rewards = rewards + bonus / (1.0 + _visits(stats))
        return value_iteration(model.transitions, rewards, episode_length)

    return plan


@_player
def random_policy(mdp: MDPInstance, episode_length: int) -> tuple[PlanFn, Any]:
    """Uniformly random actions (RL² Table 2, "Random"); about 10 per episode at T = 10."""
    q = jnp.zeros((episode_length,) + mdp.mean_rewards.shape, jnp.float32)
    return (lambda stats, key: q), None


@_player
def known_mdp_optimum(mdp: MDPInstance, episode_length: int) -> tuple[PlanFn, Any]:
    """Act optimally with the MDP known (finite-horizon value iteration): the ceiling of Table 2."""
    q = value_iteration(mdp.transitions, mdp.mean_rewards, episode_length)
    return (lambda stats, key: q), None


@_player
def epsilon_greedy(
    mdp: MDPInstance, episode_length: int, *, epsilon: Any = DEFAULT_EPSILON
) -> tuple[PlanFn, Any]:
    """Certainty equivalence with epsilon-random actions (RL² "eps-Greedy").

    At each episode start, plan by value iteration in the posterior-mean MDP;
    act greedily on it, but uniformly at random with probability ``epsilon``
    (traced; ``None`` is plain greedy).
    """
    if epsilon is not None:
        _check_unit_interval("epsilon", epsilon)
    return _certainty_equivalence_plan(episode_length), epsilon


@_player
def greedy(mdp: MDPInstance, episode_length: int) -> tuple[PlanFn, Any]:
    """Certainty equivalence (RL² "Greedy"): value iteration in the posterior-mean MDP, no exploration."""
    return _certainty_equivalence_plan(episode_length), None


@_player
def myopic(mdp: MDPInstance, episode_length: int) -> tuple[PlanFn, Any]:
    """Myopic posterior mean (not in RL² Table 2): in each state take the action with the
    highest posterior-mean *immediate* reward, ignoring transitions; re-planned at each
    episode start like the others. A diagnostic: it needs only per-(state, action) reward
    memory, no planning, and at n = 10 it already scores about as well as greedy and BEB.
    """
    shape = (episode_length,) + mdp.mean_rewards.shape

    def plan(stats, key):
        return jnp.broadcast_to(_posterior_mean_mdp(stats).mean_rewards, shape)

    return plan, None


@_player
def beb(
    mdp: MDPInstance, episode_length: int, *, bonus: Any = DEFAULT_BEB_BONUS
) -> tuple[PlanFn, Any]:
    """Bayesian exploration bonus (Kolter & Ng 2009; RL² "BEB").

    Value iteration in the posterior-mean MDP with rewards
    ``r(s, a) + bonus / (1 + n(s, a))``, ``n`` the visit count; ``bonus`` traced.
    """
    if not isinstance(bonus, jax.core.Tracer) and not float(bonus) >= 0.0:
        raise ValueError(f"bonus must be >= 0, got {bonus!r}")
    return _certainty_equivalence_plan(episode_length, bonus), None


@_player
def psrl(mdp: MDPInstance, episode_length: int) -> tuple[PlanFn, Any]:
    """Posterior sampling RL (Osband, Russo & Van Roy 2013; RL² "PSRL").

    At each episode start draw one MDP from the exact posterior (Dirichlet(1)
    transitions, Normal mean rewards with prior N(1, 1) and unit noise) and
    follow its finite-horizon optimal policy for the episode.
    """
    return _posterior_sampling_plan(1, episode_length), None


@_player
def optimistic_psrl(
    mdp: MDPInstance, episode_length: int, *, num_samples: int = DEFAULT_OPSRL_SAMPLES
) -> tuple[PlanFn, Any]:
    """Optimistic PSRL (RL² "OPSRL", Sec. 5.2): the most optimistic of K posterior MDPs.

    At each episode start draw ``num_samples`` MDPs from the posterior and
    follow the optimal policy of the one whose optimal value from state 0 is
    largest; ``num_samples = 1`` is PSRL.
    """
    require_positive("num_samples", num_samples, integer=True)
    return _posterior_sampling_plan(num_samples, episode_length), None


def _posterior_sampling_plan(num_samples: int, episode_length: int) -> PlanFn:
    """Plan of the posterior MDP sample (of ``num_samples``) with the highest optimal value."""

    def plan(stats, key):
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

    ``mdps`` has a leading instance axis (``transitions: [instances, S, A, S]``,
    ``mean_rewards: [instances, S, A]``). One compile per
    ``(name, num_episodes, episode_length, sizes, num_samples)``; ``epsilon``
    and ``bonus`` are traced, so sweeping them does not recompile.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown MDP baseline {name!r}; expected one of {sorted(BASELINES)}")
    mdps = as_instance(mdps, batched=True)
    require_positive("num_episodes", num_episodes, integer=True)
    require_positive("episode_length", episode_length, integer=True)
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
