"""Bernoulli-bandit players of RL² Table 1 (Duan et al. 2016, arXiv:1611.02779, Sec. 5.1).

An instance is a ``bandit-bernoulli`` task: ``BernoulliBanditParams`` (from
``metarl_jax.make("bandit-bernoulli", arms=k).sample``, ``p_i ~ U[0, 1]`` as in
the paper; :func:`sample_instances` is that call) or anything with an
``arm_means: [k]`` field, or the array itself. A trial is ``num_pulls`` pulls,
played on the real :class:`~metarl_jax.envs.BernoulliBandit` by the shared
rollout engine (:func:`metarl_jax.core.rollout.run_trial`, one pull per
episode as in RL²): each player is a trial policy whose carried state holds
its statistics, and returns its total (realised) reward, a float32 scalar
(or, with ``per_pull=True``, the ``[num_pulls]`` rewards: no player but the
Bayes-optimal one depends on ``n``, so for them the first ``m`` pulls of a
trial of ``n`` are a trial of ``m``). ``evaluate`` vmaps a named player over
a batch of instances in one compiled call.

Every player scores the arms from the posterior counts (``successes``,
``failures``: ``[k]`` int32, i.e. a Beta(1 + successes, 1 + failures)
posterior per arm under the Beta(1, 1) prior), counted from the previous
action and reward inputs, and pulls an arm of maximal score, ties broken
uniformly at random (the engine samples a Categorical uniform on the
maximisers). Thompson sampling carries a PRNG key of its own for its
posterior draws; the oracle's params are the arm means.

Two players need tables built once in NumPy at construction time and looked
up in JAX: ``gittins_indices`` (discounted Beta-Bernoulli Gittins indices by
calibration) and ``bayes_optimal_policy`` (the exact finite-horizon
Bayes-optimal policy by dynamic programming over posterior counts).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl_jax.core.rollout import MetaInputs
from metarl_jax.envs.bandit import BernoulliBanditParams
from metarl_jax.envs.environment import require_positive
from metarl_jax.families.meta_rl import bernoulli_bandits
from metarl_jax.players.policy import (
    TrialPolicy,
    dress_player,
    greedy_distribution,
    no_value,
    play_trial,
)

# RL² tuned these without publishing them; ours are tuned per (n, k) by
# benchmarks/baselines_tables.py (the values are in its JSON). Defaults: UCB1's
# c = 0.2 wins for n = 100 and 500; epsilon = 0.02 lies between the best
# values 0 (n = 10) and 0.05 (n = 500); see default_gittins_discount.
DEFAULT_EPSILON = 0.02
DEFAULT_UCB_EXPLORATION = 0.2
# Exact DP is refused beyond this many posterior states (about 30 s and 1 GB).
DEFAULT_MAX_DP_STATES = 1_000_000

# score_fn(successes, failures, memory, params, key) -> scores [k]
ScoreFn = Callable[[jax.Array, jax.Array, Any, Any, Any], jax.Array]


# ----------------------------------------------------------------------------
# Input checks


def arm_means_of(instance: Any) -> jax.Array:
    """``instance`` itself or its ``arm_means`` field as float32 ``[..., k]``, ``k >= 2``."""
    means = jnp.asarray(getattr(instance, "arm_means", instance))
    if not jnp.issubdtype(means.dtype, jnp.floating):
        raise TypeError(f"arm_means must be floating point, got dtype {means.dtype}")
    if means.ndim < 1 or means.shape[-1] < 2:
        raise ValueError(f"arm_means must have a last axis of k >= 2 arms, got shape {means.shape}")
    if not isinstance(means, jax.core.Tracer):
        host = np.asarray(means)
        if np.any(host < 0) or np.any(host > 1) or np.any(np.isnan(host)):
            raise ValueError("arm_means must lie in [0, 1] (Bernoulli success probabilities)")
    return means.astype(jnp.float32)


def _check_single(arm_means: jax.Array) -> None:
    if arm_means.ndim != 1:
        raise ValueError(
            f"arm_means of one instance must have shape [k], got {arm_means.shape}; "
            "use evaluate(...) for a batch"
        )


def _check_unit_interval(name: str, value: Any) -> None:
    if not isinstance(value, jax.core.Tracer) and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _check_non_negative(name: str, value: Any) -> None:
    if not isinstance(value, jax.core.Tracer) and not float(value) >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


# ----------------------------------------------------------------------------
# The player as a trial policy on the real bandit


@functools.lru_cache(maxsize=None)
def _env(num_arms: int):
    """The ``bandit-bernoulli`` family's env with ``num_arms`` arms (one pull per episode)."""
    return bernoulli_bandits(arms=num_arms).env


def as_task(instance: Any) -> BernoulliBanditParams:
    """One bandit's env params (``BernoulliBanditParams``) from params or ``arm_means: [k]``."""
    arm_means = arm_means_of(instance)
    _check_single(arm_means)
    return BernoulliBanditParams(arm_means=arm_means, max_steps_in_episode=1)


@struct.dataclass
class BanditState:
    """A player's policy state: posterior counts per arm, its memory, its own PRNG key.

    ``successes``, ``failures``: ``[k]`` int32, a Beta(1 + successes, 1 +
    failures) posterior per arm; ``memory``: whatever else the player tracks
    (the Bayes-optimal player's decision-tree node); ``key``: ``None`` unless
    the player draws random scores (Thompson sampling).
    """

    successes: jax.Array
    failures: jax.Array
    memory: Any = None
    key: Any = None


def _no_observe(memory: Any, pulled: jax.Array, reward: jax.Array) -> Any:
    return memory


class Score(NamedTuple):
    """How a player scores the arms; it pulls a maximiser (ties uniformly at random).

    ``score_fn(successes, failures, memory, params, key) -> [k]``; ``params``:
    what the player knows before the trial (the oracle: ``arm_means``);
    ``epsilon``: probability of a uniformly random arm (``None``: none);
    ``memory``: extra policy state, updated by ``observe(memory, pulled
    one-hot, reward)`` before each pull; ``random``: ``score_fn`` gets a fresh
    key per pull from the player's own key (else ``None``).
    """

    score_fn: ScoreFn
    params: Any = None
    epsilon: Any = None
    memory: Any = None
    observe: Callable[[Any, jax.Array, jax.Array], Any] = _no_observe
    random: bool = False


def _policy(score: Score, num_arms: int, key: jax.Array) -> TrialPolicy:
    """The trial policy of ``score`` (``key``: its own PRNG key, used if ``score.random``).

    At every pull the policy first counts the previous pull (its one-hot
    action and reward inputs; all zero at the trial's start) into the
    posterior, then returns the distribution of its next pull.
    """

    def step(params, state, inputs):  # inputs: [obs (1), prev action (k), r, done]
        pulled, reward = inputs[1 : 1 + num_arms], inputs[1 + num_arms]
        successes = state.successes + (pulled * reward).astype(jnp.int32)
        failures = state.failures + (pulled * (1.0 - reward)).astype(jnp.int32)
        memory = score.observe(state.memory, pulled, reward)
        key, score_key = (None, None) if state.key is None else jax.random.split(state.key)
        scores = score.score_fn(successes, failures, memory, params, score_key)
        state = BanditState(successes, failures, memory, key)
        return state, greedy_distribution(scores, score.epsilon), no_value()

    counts = jnp.zeros((num_arms,), jnp.int32)
    init_state = BanditState(counts, counts, score.memory, key if score.random else None)
    return TrialPolicy(step, init_state, score.params, MetaInputs())


def _player(make_score: Callable[..., Score]) -> Callable[..., jax.Array]:
    """A player from ``make_score(arm_means, num_pulls, **hyperparameters) -> Score``.

    The player is ``f(arm_means, key, *, num_pulls, per_pull=False,
    **hyperparameters)``: it checks the instance and ``num_pulls``, lets
    ``make_score`` check its hyperparameters, and plays one trial of
    ``num_pulls`` one-pull episodes on the real ``BernoulliBandit`` through the
    rollout engine (RL²'s convention). It returns the float32 total, or the
    ``[num_pulls]`` rewards if ``per_pull``. ``f.policy(arm_means, key, *,
    num_pulls, **hyperparameters)`` is the :class:`TrialPolicy` itself, for
    :func:`~metarl_jax.core.rollout.run_trial` (``key``: the player's own PRNG
    key). The player takes ``make_score``'s name and docstring, and its
    keyword-only parameters (with their defaults) as its hyperparameters.
    """

    def policy(arm_means: Any, key: jax.Array, *, num_pulls: int,
               **hyperparameters: Any) -> TrialPolicy:
        arm_means = arm_means_of(arm_means)
        _check_single(arm_means)
        require_positive("num_pulls", num_pulls, integer=True)
        score = make_score(arm_means, num_pulls, **hyperparameters)
        return _policy(score, arm_means.shape[0], key)

    def player(arm_means: Any, key: jax.Array, *, num_pulls: int, per_pull: bool = False,
               **hyperparameters: Any) -> jax.Array:
        key_policy, key_trial = jax.random.split(key)
        trial_policy = policy(arm_means, key_policy, num_pulls=num_pulls, **hyperparameters)
        task = as_task(arm_means)
        rewards = play_trial(_env(task.arm_means.shape[0]), trial_policy, task, key_trial,
                             num_episodes=num_pulls, horizon=1)
        return rewards if per_pull else jnp.sum(rewards)

    return dress_player(player, policy, make_score)


def sample_gamma(key: jax.Array, shape_parameter: jax.Array) -> jax.Array:
    """Gamma(shape_parameter, 1) draws for ``shape_parameter >= 1`` (any shape, float32).

    Marsaglia & Tsang (2000) rejection sampling, vectorised over the whole
    array: each round proposes for every entry and keeps the first accepted
    proposal (acceptance is above 0.95 for shapes >= 1, so a few rounds
    suffice). Exact, and about twice as fast on CPU as ``jax.random.gamma``,
    whose per-entry loop dominates Thompson sampling and PSRL.
    """
    d = shape_parameter - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)

    def not_done(carry):
        return ~jnp.all(carry[1])

    def propose(carry):
        sample, done, key = carry
        key, key_normal, key_uniform = jax.random.split(key, 3)
        x = jax.random.normal(key_normal, d.shape, jnp.float32)
        u = jax.random.uniform(key_uniform, d.shape, jnp.float32)
        v = (1.0 + c * x) ** 3
        valid = v > 0.0
        log_v = jnp.log(jnp.where(valid, v, 1.0))
        accept = valid & (jnp.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        sample = jnp.where(accept & ~done, d * v, sample)
        return sample, done | accept, key

    start = (jnp.zeros(d.shape, jnp.float32), jnp.zeros(d.shape, bool), key)
    return jax.lax.while_loop(not_done, propose, start)[0]


def sample_beta(key: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """Beta(alpha, beta) draws for ``alpha, beta >= 1`` as a ratio of ``sample_gamma`` draws."""
    x, y = sample_gamma(key, jnp.stack([alpha, beta]))
    return x / (x + y)


def _posterior_mean(successes: jax.Array, failures: jax.Array) -> jax.Array:
    """Beta(1 + s, 1 + f) mean, ``[k]``: the estimate with one pseudo-success and -failure."""
    return (successes + 1).astype(jnp.float32) / (successes + failures + 2).astype(jnp.float32)


# ----------------------------------------------------------------------------
# Simple players


@_player
def random_policy(arm_means: jax.Array, num_pulls: int) -> Score:
    """Uniformly random arm at every pull (RL² Table 1, "Random"); expected n/2 under the prior."""
    return Score(lambda s, f, m, p, k: jnp.zeros(s.shape, jnp.float32))


@_player
def epsilon_greedy(
    arm_means: jax.Array, num_pulls: int, *, epsilon: Any = DEFAULT_EPSILON
) -> Score:
    """Greedy on the posterior mean, a uniformly random arm with probability ``epsilon``.

    RL² "eps-Greedy" (Duan et al. 2016, Sec. 5.1); statistics start at one
    success and one failure per arm. ``epsilon`` may be traced (sweeps vmap
    over it); ``None`` is plain greedy.
    """
    if epsilon is not None:
        _check_unit_interval("epsilon", epsilon)
    return Score(lambda s, f, m, p, k: _posterior_mean(s, f), epsilon=epsilon)


@_player
def greedy(arm_means: jax.Array, num_pulls: int) -> Score:
    """Pull the arm with the highest posterior mean (1 + s) / (2 + s + f) (RL² "Greedy")."""
    return Score(lambda s, f, m, p, k: _posterior_mean(s, f))


@_player
def ucb1(
    arm_means: jax.Array, num_pulls: int, *, exploration: Any = DEFAULT_UCB_EXPLORATION
) -> Score:
    """UCB1 (Auer et al. 2002) with a tunable exploration constant, as in RL² Sec. 5.1.

    Pulls ``argmax_i  mu_i + c * sqrt(2 log t / T_i)`` where the statistics
    start at one success and one failure per arm (a Beta(1, 1) prior):
    ``mu_i = (1 + s_i) / T_i``, ``T_i = 2 + s_i + f_i`` and ``t = sum_i T_i``.
    ``c = exploration`` (Audibert et al. 2009); ``c = 1`` is Auer's UCB1.
    """
    _check_non_negative("exploration", exploration)

    def score(successes, failures, memory, params, key):
        pulls = (successes + failures + 2).astype(jnp.float32)
        bonus = jnp.sqrt(2.0 * jnp.log(jnp.sum(pulls)) / pulls)
        return _posterior_mean(successes, failures) + exploration * bonus

    return Score(score)


@_player
def thompson_sampling(arm_means: jax.Array, num_pulls: int) -> Score:
    """Thompson sampling (Thompson 1933), Beta(1, 1) priors: argmax of one posterior draw per arm.

    The draws use the player's own PRNG key, carried in its policy state.
    """

    def score(successes, failures, memory, params, key):
        return sample_beta(
            key, (successes + 1).astype(jnp.float32), (failures + 1).astype(jnp.float32)
        )

    return Score(score, random=True)


@_player
def optimistic_thompson_sampling(arm_means: jax.Array, num_pulls: int) -> Score:
    """Optimistic Thompson sampling: score ``max(posterior draw, posterior mean)`` per arm.

    The optimistic variant of Chapelle & Li (2011, Sec. 4) and May et al.
    (2012), RL² "OTS"; Beta(1, 1) priors.
    """

    def score(successes, failures, memory, params, key):
        draw = sample_beta(
            key, (successes + 1).astype(jnp.float32), (failures + 1).astype(jnp.float32)
        )
        return jnp.maximum(draw, _posterior_mean(successes, failures))

    return Score(score, random=True)


@_player
def oracle(arm_means: jax.Array, num_pulls: int) -> Score:
    """Always pull the best arm (knows ``arm_means``); expected ``n k / (k + 1)``, U[0, 1] arms.

    The one player that knows the task: its params are the arm means.
    """
    return Score(lambda s, f, m, p, k: p, params=arm_means)


def oracle_value(num_pulls: int, num_arms: int) -> float:
    """Expected total reward of ``oracle`` under the prior: ``n E[max_i p_i] = n k / (k + 1)``."""
    require_positive("num_pulls", num_pulls, integer=True)
    require_positive("num_arms", num_arms, integer=True, minimum=2)
    return num_pulls * num_arms / (num_arms + 1)


# ----------------------------------------------------------------------------
# Gittins index


def default_gittins_discount(num_pulls: int) -> float:
    """Discount ``1 - 2 / n`` (at least 0.5): an effective horizon of ``n / 2``.

    A finite-horizon approximation of the discounted index: ``1 / (1 - discount)``
    equals the mean number of pulls left over a trial of ``n``. It matches the
    discounts our benchmark's tuning picks: 0.8 at n = 10, 0.98-0.99 at n = 100,
    0.995 at n = 500.
    """
    require_positive("num_pulls", num_pulls, integer=True)
    return max(0.5, 1.0 - 2.0 / num_pulls)


@functools.lru_cache(maxsize=16)
def gittins_indices(
    discount: float,
    max_pulls: int,
    *,
    num_levels: int = 500,
    truncation_tolerance: float = 1e-2,
) -> np.ndarray:
    """Gittins indices of Beta-Bernoulli arms, ``[max_pulls + 1, max_pulls + 1]`` float32.

    Entry ``[s, f]`` is the index of an arm with posterior Beta(1 + s, 1 + f)
    under discount ``discount`` (Gittins 1979), for ``s + f <= max_pulls``
    (other entries are 0 and never reached). Calibration / retirement
    formulation (Gittins, Glazebrook & Weber 2011, Sec. 8.3; Whittle 1980):
    the index of state ``(a, b)`` is the retirement reward ``lambda`` per step
    at which continuing and retiring (``lambda / (1 - discount)`` forever)
    are equally good. For a grid of ``num_levels`` values of ``lambda`` one
    backward DP over all Beta states ``a + b <= M`` gives every state's
    advantage of continuing, which decreases in ``lambda``; its root is found
    by linear interpolation between grid levels (error below 1e-4).
    The DP is truncated at ``M = max_pulls + 2 + log(truncation_tolerance) /
    log(discount)`` pulls, where the value is ``max(lambda, mean) / (1 -
    discount)`` (the posterior has concentrated). Runs in NumPy, once per
    ``(discount, max_pulls)`` (cached): for 500 pulls about 1 s at discount
    0.9 and 4 s at 0.99 on a 2-core CPU.
    """
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must lie in (0, 1), got {discount!r}")
    require_positive("max_pulls", max_pulls, integer=True)
    require_positive("num_levels", num_levels, integer=True, minimum=2)
    levels = np.linspace(0.0, 1.0, num_levels)  # [G]
    spacing = levels[1] - levels[0]
    retire = levels[:, None] / (1.0 - discount)  # [G, 1]
    extra = int(math.ceil(math.log(truncation_tolerance) / math.log(discount)))
    horizon = max_pulls + 2 + extra  # largest a + b in the DP
    alphas = np.arange(1, horizon)
    value = np.maximum(levels[:, None], alphas[None] / horizon) / (1.0 - discount)  # [G, M-1]
    table = np.zeros((max_pulls + 1, max_pulls + 1))
    for total in range(horizon - 1, 1, -1):  # diagonal a + b = total, a = 1 .. total - 1
        alphas = np.arange(1, total)
        mean = alphas / total  # [total - 1]
        # success -> (a + 1, b): column a of the next diagonal; failure -> (a, b + 1): column a - 1
        advantage = (
            mean + discount * (mean * value[:, 1:] + (1.0 - mean) * value[:, :-1]) - retire
        )  # [G, total - 1]
        value = retire + np.maximum(advantage, 0.0)
        if total - 2 <= max_pulls:
            first = np.argmax(advantage <= 0.0, axis=0)  # >= 1: advantage > 0 at lambda = 0
            columns = np.arange(total - 1)
            above, below = advantage[first - 1, columns], advantage[first, columns]
            table[alphas - 1, total - alphas - 1] = levels[first - 1] + spacing * above / (
                above - below
            )
    table = table.astype(np.float32)
    table.setflags(write=False)  # shared by the cache
    return table


@_player
def gittins(
    arm_means: jax.Array,
    num_pulls: int,
    *,
    index_table: Any = None,
    discount: float | None = None,
) -> Score:
    """Pull the arm of highest Gittins index (Gittins 1979; RL² "Gittins").

    ``index_table`` is ``gittins_indices(discount, max_pulls)`` with
    ``max_pulls >= num_pulls - 1``; built here (cached) when ``None``, with
    ``discount`` defaulting to ``default_gittins_discount(num_pulls)``. RL²
    used a practical approximation of the finite-horizon index; here the
    discount is the approximation's knob.
    """
    if index_table is None:
        if discount is None:
            discount = default_gittins_discount(num_pulls)
        index_table = gittins_indices(discount, num_pulls - 1)
    index_table = jnp.asarray(index_table, jnp.float32)
    if index_table.ndim != 2 or min(index_table.shape) < num_pulls:
        raise ValueError(
            f"index_table must have shape at least [{num_pulls}, {num_pulls}] "
            f"(counts up to num_pulls - 1), got {index_table.shape}"
        )
    return Score(lambda s, f, m, p, k: index_table[s, f])


# ----------------------------------------------------------------------------
# Exact finite-horizon Bayes-optimal policy


@struct.dataclass
class BayesOptimalPolicy:
    """Optimal decision tree of the Beta(1, 1)-Bernoulli bandit with ``num_pulls`` pulls.

    Nodes are the posterior states reached under the optimal policy (node 0
    is the prior; the last node is the terminal sink). At node ``i`` the
    policy pulls any arm whose counts are ``(best_successes[i],
    best_failures[i])`` (arms with equal counts are exchangeable) and moves to
    ``next_node[i, reward]``.
    """

    best_successes: jax.Array  # [nodes] int32
    best_failures: jax.Array  # [nodes] int32
    next_node: jax.Array  # [nodes, 2] int32
    value: float = struct.field(pytree_node=False)  # exact expected total reward
    num_pulls: int = struct.field(pytree_node=False)
    num_arms: int = struct.field(pytree_node=False)


def count_posterior_states(num_pulls: int, num_arms: int) -> int:
    """Number of distinct posterior states the exact DP visits (before its last pull).

    A state is a multiset of per-arm counts ``(s, f)`` with ``s + f >= 1`` for
    at most ``num_arms`` arms and total ``s + f`` at most ``num_pulls - 1``
    (unpulled arms are interchangeable, so they are not told apart).
    Counted by a generating-function DP over count kinds.
    """
    require_positive("num_pulls", num_pulls, integer=True)
    require_positive("num_arms", num_arms, integer=True, minimum=2)
    max_weight = num_pulls - 1
    max_size = min(num_arms, max_weight)
    # float64 counts: exact below 2**53, which is far beyond any tractable size
    ways = np.zeros((max_size + 1, max_weight + 1))  # [arms pulled, pulls]
    ways[0, 0] = 1.0
    for weight in range(1, max_weight + 1):
        for _ in range(weight + 1):  # the weight + 1 kinds (s, f) with s + f = weight
            for size in range(1, max_size + 1):  # ascending: a kind may repeat
                ways[size, weight:] += ways[size - 1, : max_weight + 1 - weight]
    return int(round(ways.sum()))


@functools.lru_cache(maxsize=8)
def bayes_optimal_policy(
    num_pulls: int, num_arms: int, *, max_states: int = DEFAULT_MAX_DP_STATES
) -> BayesOptimalPolicy:
    """Exact finite-horizon Bayes-optimal policy of the Beta(1, 1)-Bernoulli bandit.

    Dynamic programming over posterior counts (Bellman 1956; the Bayes-optimal
    limit of RL² Table 1): with ``t`` pulls made and state ``x``,
    ``V(x) = max_arm p (1 + V(x + success)) + (1 - p) V(x + failure)``,
    ``p = (1 + s) / (2 + s + f)``, ``V = 0`` after ``num_pulls`` pulls. Arms
    are exchangeable under the prior, so a state is the sorted multiset of the
    pulled arms' counts and unpulled arms are one action; the DP is exact,
    not an approximation. ``value`` is the expected total reward under the
    prior: 6.660 (n=10, k=5), 6.714 (n=10, k=10 and k=50).

    Supported sizes are those with at most ``max_states`` states
    (``count_posterior_states``): about 2e3 states for n=10 at any k,
    1e5 for n=18, k=5 (1.4 s), 8e5 for n=20, k=10 (about 20 s), 2e6 for
    n=100, k=2; n=100 with k >= 5 is far out of reach. Runs in Python once
    per ``(num_pulls, num_arms)`` (cached); the player then runs in JAX.
    """
    require_positive("num_pulls", num_pulls, integer=True)
    require_positive("num_arms", num_arms, integer=True, minimum=2)
    states = count_posterior_states(num_pulls, num_arms)
    if states > max_states:
        raise ValueError(
            f"exact Bayes-optimal DP for num_pulls={num_pulls}, num_arms={num_arms} "
            f"needs {states} posterior states > max_states={max_states}; intractable"
        )

    values: dict[tuple, float] = {}

    def actions(state: tuple) -> list[tuple[int, int]]:
        kinds = sorted(set(state))
        return kinds + [(0, 0)] if len(state) < num_arms else kinds

    def successor(state: tuple, kind: tuple[int, int], reward: int) -> tuple:
        arms = list(state)
        if kind != (0, 0):
            arms.remove(kind)
        arms.append((kind[0] + reward, kind[1] + 1 - reward))
        return tuple(sorted(arms))

    def action_values(state: tuple, pulls_made: int) -> list[float]:
        out = []
        for kind in actions(state):
            p = (kind[0] + 1) / (kind[0] + kind[1] + 2)
            if pulls_made == num_pulls - 1:
                out.append(p)
            else:
                out.append(
                    p * (1.0 + value(successor(state, kind, 1), pulls_made + 1))
                    + (1.0 - p) * value(successor(state, kind, 0), pulls_made + 1)
                )
        return out

    def value(state: tuple, pulls_made: int) -> float:
        if state not in values:
            values[state] = max(action_values(state, pulls_made))
        return values[state]

    root_value = value((), 0)

    # Walk the optimal decision tree from the prior; one node per distinct state.
    node_of: dict[tuple, int] = {(): 0}
    order: list[tuple[tuple, int]] = [((), 0)]
    best_kinds: list[tuple[int, int]] = []
    children: list[tuple[tuple, tuple]] = []
    for state, pulls_made in order:  # grows while iterating (breadth first)
        q = action_values(state, pulls_made)
        kind = actions(state)[int(np.argmax(q))]  # first maximiser: deterministic
        best_kinds.append(kind)
        pair = (successor(state, kind, 0), successor(state, kind, 1))
        children.append(pair)
        if pulls_made + 1 < num_pulls:
            for child in pair:
                if child not in node_of:
                    node_of[child] = len(order)
                    order.append((child, pulls_made + 1))
    terminal = len(order)
    next_node = [[node_of.get(child, terminal) for child in pair] for pair in children]
    next_node.append([terminal, terminal])
    best_kinds.append((-1, -1))
    kinds = np.asarray(best_kinds, np.int32)
    return BayesOptimalPolicy(
        best_successes=jnp.asarray(kinds[:, 0]),
        best_failures=jnp.asarray(kinds[:, 1]),
        next_node=jnp.asarray(np.asarray(next_node, np.int32)),
        value=float(root_value),
        num_pulls=int(num_pulls),
        num_arms=int(num_arms),
    )


@_player
def bayes_optimal(
    arm_means: jax.Array, num_pulls: int, *, policy: BayesOptimalPolicy | None = None
) -> Score:
    """Play the exact Bayes-optimal policy (``bayes_optimal_policy``) for one trial.

    Follows the decision tree, its node carried in the policy state: at each
    node pull an arm (uniformly among those) whose counts match the optimal
    count kind. Its mean total reward over instances drawn from the prior is
    ``policy.value``.
    """
    num_arms = arm_means.shape[0]
    if policy is None:
        policy = bayes_optimal_policy(num_pulls, num_arms)
    if (policy.num_pulls, policy.num_arms) != (num_pulls, num_arms):
        raise ValueError(
            f"policy was built for num_pulls={policy.num_pulls}, num_arms={policy.num_arms}; "
            f"got num_pulls={num_pulls}, num_arms={num_arms}"
        )

    def score(successes, failures, node, params, key):
        match = (successes == policy.best_successes[node]) & (
            failures == policy.best_failures[node]
        )
        return match.astype(jnp.float32)

    def observe(node, pulled, reward):  # no pull yet (the trial's start): stay at the root
        child = policy.next_node[node, reward.astype(jnp.int32)]
        return jnp.where(jnp.sum(pulled) > 0, child, node)

    return Score(score, memory=jnp.zeros((), jnp.int32), observe=observe)


# ----------------------------------------------------------------------------
# Registry and batch evaluation

BASELINES: dict[str, Callable[..., jax.Array]] = {
    "random": random_policy,
    "greedy": greedy,
    "epsilon_greedy": epsilon_greedy,
    "ucb1": ucb1,
    "thompson_sampling": thompson_sampling,
    "optimistic_thompson_sampling": optimistic_thompson_sampling,
    "gittins": gittins,
    "bayes_optimal": bayes_optimal,
    "oracle": oracle,
}


HYPERPARAMETERS: dict[str, tuple[str, ...]] = {  # keyword arguments evaluate accepts
    "epsilon_greedy": ("epsilon",),
    "ucb1": ("exploration",),
    "gittins": ("discount", "index_table"),
    "bayes_optimal": ("policy",),
}


def sample_instances(
    key: jax.Array, num_instances: int, num_arms: int, split: str = "test"
) -> BernoulliBanditParams:
    """RL² bandits from the ``bandit-bernoulli`` family: ``arm_means: [instances, k] ~ U[0, 1]``.

    ``metarl_jax.make("bandit-bernoulli", arms=num_arms).sample(key, num_instances, split)``.
    """
    require_positive("num_instances", num_instances, integer=True)
    require_positive("num_arms", num_arms, integer=True, minimum=2)
    return bernoulli_bandits(arms=int(num_arms)).sample(key, int(num_instances), split)


@functools.partial(jax.jit, static_argnames=("name", "num_pulls", "per_pull"))
def _evaluate(name, arm_means, key, num_pulls, per_pull, hyperparameters):
    player = functools.partial(
        BASELINES[name], num_pulls=num_pulls, per_pull=per_pull, **hyperparameters
    )
    keys = jax.random.split(key, arm_means.shape[0])
    return jax.vmap(player)(arm_means, keys)


def evaluate(
    name: str,
    arm_means: Any,
    key: jax.Array,
    *,
    num_pulls: int,
    per_pull: bool = False,
    **hyperparameters: Any,
) -> jax.Array:
    """Total reward of baseline ``name`` on each instance: ``[instances]`` float32.

    With ``per_pull=True``: the rewards ``[instances, num_pulls]`` instead.

    ``arm_means``: a batch of ``BernoulliBanditParams`` (``sample_instances``,
    the family's ``sample``) or of ``arm_means: [instances, k]``. One compiled
    call per ``(name, num_pulls, k, instances)``; float hyperparameters
    (``epsilon``, ``exploration``) are traced, so sweeping them does not
    recompile. ``gittins`` takes ``discount`` (default
    ``default_gittins_discount(num_pulls)``) and builds its index table once;
    ``bayes_optimal`` builds its policy (raising ``ValueError`` where the DP is
    intractable).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown bandit baseline {name!r}; expected one of {sorted(BASELINES)}")
    arm_means = arm_means_of(arm_means)
    if arm_means.ndim != 2:
        raise ValueError(f"arm_means must have shape [instances, k], got {arm_means.shape}")
    require_positive("num_pulls", num_pulls, integer=True)
    unknown = set(hyperparameters) - set(HYPERPARAMETERS.get(name, ()))
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)} for bandit baseline {name!r}")
    if name == "gittins" and "index_table" not in hyperparameters:
        discount = hyperparameters.pop("discount", None)
        if discount is None:
            discount = default_gittins_discount(num_pulls)
        hyperparameters["index_table"] = gittins_indices(float(discount), num_pulls - 1)
    if name == "bayes_optimal" and "policy" not in hyperparameters:
        hyperparameters["policy"] = bayes_optimal_policy(num_pulls, arm_means.shape[1])
    if "epsilon" in hyperparameters:
        _check_unit_interval("epsilon", hyperparameters["epsilon"])
    if "exploration" in hyperparameters:
        _check_non_negative("exploration", hyperparameters["exploration"])
    for field in ("epsilon", "exploration"):  # traced: a sweep reuses one compile
        if field in hyperparameters:
            hyperparameters[field] = jnp.asarray(hyperparameters[field], jnp.float32)
    return _evaluate(name, arm_means, key, int(num_pulls), bool(per_pull), hyperparameters)
