"""RL² reference players (Duan et al. 2016, Tables 1 and 2): exact values, statistics, errors.

Every player is a trial policy played on the real bandit / MDP env by the
shared rollout engine, on tasks drawn from the task families. Compiles are the
expensive part on a 2-core CPU, so each module-scoped fixture jits several
players into one program and the tests share it.
"""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax.core.rollout import run_trial
from metarl_jax.envs.bandit import BernoulliBanditParams
from metarl_jax.envs.tabular_mdp import TabularMDPParams
from metarl_jax.nn.spaces import ActionSpec
from metarl_jax.players import bandits, mdp
from metarl_jax.players.policy import any_in_batch, greedy_distribution


def _mean_and_error(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


# ----------------------------------------------------------------------------
# Exact Bayes-optimal DP


@pytest.mark.parametrize("num_arms, published", [(5, 6.660), (10, 6.714), (50, 6.714)])
def test_bayes_optimal_dp_reproduces_published_values(num_arms, published):
    policy = bandits.bayes_optimal_policy(10, num_arms)
    assert round(policy.value, 3) == published


def _brute_force_bayes_value(num_pulls: int, num_arms: int) -> float:
    """Expectimax over ordered per-arm counts: no exchangeability shortcut."""

    @functools.lru_cache(maxsize=None)
    def value(counts: tuple, pulls_left: int) -> float:
        if pulls_left == 0:
            return 0.0
        best = -1.0
        for arm, (s, f) in enumerate(counts):
            p = (s + 1) / (s + f + 2)
            win = counts[:arm] + ((s + 1, f),) + counts[arm + 1 :]
            loss = counts[:arm] + ((s, f + 1),) + counts[arm + 1 :]
            q = p * (1 + value(win, pulls_left - 1)) + (1 - p) * value(loss, pulls_left - 1)
            best = max(best, q)
        return best

    return value(((0, 0),) * num_arms, num_pulls)


@pytest.mark.parametrize("num_pulls, num_arms", [(6, 3), (8, 2), (4, 5)])
def test_bayes_optimal_dp_matches_unreduced_expectimax(num_pulls, num_arms):
    policy = bandits.bayes_optimal_policy(num_pulls, num_arms)
    assert policy.value == pytest.approx(_brute_force_bayes_value(num_pulls, num_arms), abs=1e-12)


@pytest.mark.parametrize("num_pulls, num_arms", [(6, 3), (7, 10), (9, 4)])
def test_posterior_state_count_matches_enumeration(num_pulls, num_arms):
    # every multiset of pulled-arm counts with at most num_pulls - 1 pulls
    kinds = [(s, w - s) for w in range(1, num_pulls) for s in range(w + 1)]
    states = 0
    for size in range(0, min(num_arms, num_pulls - 1) + 1):
        for multiset in itertools.combinations_with_replacement(kinds, size):
            states += sum(s + f for s, f in multiset) <= num_pulls - 1
    assert bandits.count_posterior_states(num_pulls, num_arms) == states


def test_bayes_optimal_policy_tree_is_consistent():
    policy = bandits.bayes_optimal_policy(10, 5)
    nodes = policy.next_node.shape[0]
    chex.assert_shape(policy.best_successes, (nodes,))
    assert policy.next_node.dtype == jnp.int32
    assert int(policy.next_node.max()) == nodes - 1  # the terminal sink
    assert int(policy.best_successes[0]) == 0 and int(policy.best_failures[0]) == 0
    assert nodes <= 2**10  # at most one node per reward history


# ----------------------------------------------------------------------------
# Bandit players on instances from the prior (one compile for three players)

PRIOR_INSTANCES = 20_000


@pytest.fixture(scope="module")
def prior_bandit_totals():
    arm_means = bandits.sample_instances(jax.random.PRNGKey(0), PRIOR_INSTANCES, 5)
    policy = bandits.bayes_optimal_policy(10, 5)
    keys = jax.random.split(jax.random.PRNGKey(1), PRIOR_INSTANCES)

    @jax.jit
    def play(arm_means, keys):  # [instances, 5], [instances] -> dict of [instances]
        def one(means, key):
            k1, k2, k3 = jax.random.split(key, 3)
            return {
                "bayes_optimal": bandits.bayes_optimal(means, k1, num_pulls=10, policy=policy),
                "oracle": bandits.oracle(means, k2, num_pulls=10),
                "random": bandits.random_policy(means, k3, num_pulls=10),
            }

        return jax.vmap(one)(arm_means, keys)

    return play(arm_means, keys)


def test_simulated_bayes_optimal_player_matches_dp_value(prior_bandit_totals):
    mean, error = _mean_and_error(prior_bandit_totals["bayes_optimal"])
    assert abs(mean - bandits.bayes_optimal_policy(10, 5).value) < 4 * error


def test_oracle_and_random_match_their_expectations(prior_bandit_totals):
    mean, error = _mean_and_error(prior_bandit_totals["oracle"])
    assert abs(mean - bandits.oracle_value(10, 5)) < 4 * error
    mean, error = _mean_and_error(prior_bandit_totals["random"])
    assert abs(mean - 5.0) < 4 * error
    chex.assert_shape(prior_bandit_totals["random"], (PRIOR_INSTANCES,))


# ----------------------------------------------------------------------------
# Bandit players on an easy instance (one compile for all of them)

EASY_MEANS = jnp.array([0.1, 0.9], jnp.float32)
EASY_PULLS = 100
EASY_TRIALS = 200


@pytest.fixture(scope="module")
def easy_bandit_totals():
    table = bandits.gittins_indices(0.9, EASY_PULLS - 1)
    players = {
        "random": bandits.random_policy,
        "greedy": bandits.greedy,
        "ucb1": bandits.ucb1,
        "thompson_sampling": bandits.thompson_sampling,
        "optimistic_thompson_sampling": bandits.optimistic_thompson_sampling,
        "gittins": functools.partial(bandits.gittins, index_table=table),
    }

    @jax.jit
    def play(keys):  # [trials] -> dict of [trials]
        def one(key):
            player_keys = dict(zip(players, jax.random.split(key, len(players))))
            out = {
                name: player(EASY_MEANS, player_keys[name], num_pulls=EASY_PULLS)
                for name, player in players.items()
            }
            # the same key on purpose: the per-pull rewards of that very trial
            out["ucb1_per_pull"] = bandits.ucb1(
                EASY_MEANS, player_keys["ucb1"], num_pulls=EASY_PULLS, per_pull=True
            )
            return out

        return jax.vmap(one)(keys)

    return play(jax.random.split(jax.random.PRNGKey(2), EASY_TRIALS))


@pytest.mark.parametrize(
    "name", ["ucb1", "thompson_sampling", "optimistic_thompson_sampling", "gittins"]
)
def test_exploring_players_beat_random_and_approach_ceiling(easy_bandit_totals, name):
    ceiling = EASY_PULLS * 0.9
    mean, _ = _mean_and_error(easy_bandit_totals[name])
    random_mean, random_error = _mean_and_error(easy_bandit_totals["random"])
    assert abs(random_mean - EASY_PULLS * 0.5) < 4 * random_error
    # regret of a few pulls: within 5% of knowing the best arm
    assert mean > 0.95 * ceiling
    assert mean > random_mean + 30


def test_per_pull_rewards_sum_to_the_total(easy_bandit_totals):
    per_pull = easy_bandit_totals["ucb1_per_pull"]
    chex.assert_shape(per_pull, (EASY_TRIALS, EASY_PULLS))
    assert set(np.unique(np.asarray(per_pull))) <= {0.0, 1.0}
    np.testing.assert_array_equal(per_pull.sum(-1), easy_bandit_totals["ucb1"])


# ----------------------------------------------------------------------------
# evaluate: named players, traced hyperparameters


def test_evaluate_sweeps_epsilon_without_recompiling(monkeypatch):
    arm_means = bandits.sample_instances(jax.random.PRNGKey(3), 400, 3)
    key = jax.random.PRNGKey(4)
    traced_once = chex.assert_max_traces(bandits.epsilon_greedy, n=1)
    monkeypatch.setitem(bandits.BASELINES, "epsilon_greedy", traced_once)
    totals = {
        epsilon: bandits.evaluate("epsilon_greedy", arm_means, key, num_pulls=6, epsilon=epsilon)
        for epsilon in (0.0, 0.3, 1.0)
    }
    chex.assert_shape(totals[1.0], (400,))
    # the family's params and their arm_means array are the same tasks (no second trace)
    assert isinstance(arm_means, BernoulliBanditParams)
    np.testing.assert_array_equal(
        bandits.evaluate("epsilon_greedy", arm_means.arm_means, key, num_pulls=6, epsilon=0.3),
        totals[0.3],
    )
    # epsilon = 1 is uniformly random play: 6 pulls of a U[0, 1] arm
    mean, error = _mean_and_error(totals[1.0])
    assert abs(mean - 3.0) < 4 * error
    assert np.mean(totals[0.0]) > np.mean(totals[1.0]) + 0.3


# ----------------------------------------------------------------------------
# Gittins indices


def _brute_force_gittins(a: int, b: int, discount: float, depth: int = 150) -> float:
    """Bisection on the retirement reward, with a depth-truncated recursive DP."""

    def advantage(retire_reward: float) -> float:
        retire = retire_reward / (1 - discount)

        @functools.lru_cache(maxsize=None)
        def value(a, b, h):
            p = a / (a + b)
            if h == depth:
                return max(retire_reward, p) / (1 - discount)
            cont = p + discount * (p * value(a + 1, b, h + 1) + (1 - p) * value(a, b + 1, h + 1))
            return max(retire, cont)

        p = a / (a + b)
        return p + discount * (p * value(a + 1, b, 1) + (1 - p) * value(a, b + 1, 1)) - retire

    low, high = 0.0, 1.0
    for _ in range(24):  # to 6e-8, far inside the 2e-4 the table is checked to
        mid = (low + high) / 2
        low, high = (mid, high) if advantage(mid) > 0 else (low, mid)
    return (low + high) / 2


def test_gittins_indices_match_bisection_and_published_table():
    table = bandits.gittins_indices(0.9, 12)
    chex.assert_shape(table, (13, 13))
    assert table.dtype == np.float32
    # Gittins (1979) / Gittins, Glazebrook & Weber (2011) table, discount 0.9: nu(1, 1) = 0.7029
    assert table[0, 0] == pytest.approx(0.7029, abs=1e-4)
    for successes, failures in [(0, 0), (3, 1), (0, 5), (7, 2), (2, 10)]:
        expected = _brute_force_gittins(successes + 1, failures + 1, 0.9)
        assert table[successes, failures] == pytest.approx(expected, abs=2e-4)
    # above the posterior mean, increasing in successes, decreasing in failures
    s, f = np.meshgrid(np.arange(13), np.arange(13), indexing="ij")
    reachable = s + f <= 12
    assert np.all(table[reachable] > ((s + 1) / (s + f + 2))[reachable])
    assert np.all(np.diff(table[:6, :6], axis=0) > 0)
    assert np.all(np.diff(table[:6, :6], axis=1) < 0)


# ----------------------------------------------------------------------------
# Gamma / Beta sampler


def test_sample_gamma_moments():
    shapes = jnp.array([1.0, 2.5, 40.0], jnp.float32)
    draws = 20_000
    x = jax.jit(bandits.sample_gamma)(
        jax.random.PRNGKey(5), jnp.broadcast_to(shapes[:, None], (3, draws))
    )
    assert x.dtype == jnp.float32
    for row, alpha in zip(np.asarray(x, np.float64), np.asarray(shapes, np.float64)):
        # Gamma(alpha, 1): mean alpha, variance alpha, fourth central moment 3a^2 + 6a
        assert abs(row.mean() - alpha) < 4 * math.sqrt(alpha / draws)
        variance_error = math.sqrt((3 * alpha**2 + 6 * alpha - alpha**2) / draws)
        assert abs(row.var() - alpha) < 4 * variance_error


# ----------------------------------------------------------------------------
# The players' policy pieces: sampled action distribution, instances from the families


def test_greedy_distribution_is_uniform_on_ties_and_mixes_epsilon():
    scores = jnp.array([1.0, 3.0, 3.0, 2.0], jnp.float32)
    probs = jax.jit(lambda s: [jnp.exp(greedy_distribution(s, e).log_probs)
                               for e in (None, 0.2, 0.0)])(scores)  # one compile
    np.testing.assert_allclose(probs[0], [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(probs[1], [0.05, 0.45, 0.45, 0.05], rtol=1e-6)
    np.testing.assert_allclose(probs[2], [0.0, 0.5, 0.5, 0.0])


def test_any_in_batch_keeps_planning_a_branch_and_exact():
    flags = jnp.array([True, False, True])
    assert bool(any_in_batch(jnp.array(False))) is False  # unbatched: the flag itself
    # under vmap: one unbatched flag, so cond stays a branch; the where keeps it per member
    out = jax.vmap(lambda f: jax.lax.cond(any_in_batch(f), lambda: jnp.where(f, 1, 2),
                                          lambda: 3))(flags)
    np.testing.assert_array_equal(out, [1, 2, 1])
    np.testing.assert_array_equal(
        jax.vmap(lambda f: jax.lax.cond(any_in_batch(f), lambda: 1, lambda: 3))(~jnp.ones(3, bool)),
        [3, 3, 3])


# ----------------------------------------------------------------------------
# Tabular MDPs: value iteration against enumeration of all policies


# Sampling compiles every operation per shape (about 1-2 s each): the tests share a few shapes.


@pytest.fixture(scope="module")
def rl2_mdps():
    """4000 RL² MDPs (S=10, A=5, T=10) from the family's test split."""
    return mdp.sample_instances(jax.random.PRNGKey(6), 4000)


@pytest.fixture(scope="module")
def small_mdps():
    """8 MDPs with S=3, A=2 from the family's test split."""
    return mdp.sample_instances(jax.random.PRNGKey(9), 8, 3, 2)


def _evaluate_policy_exactly(transitions, rewards, policy):
    """Expected return from state 0 of a deterministic non-stationary policy[h, s]."""
    distribution = np.zeros(transitions.shape[0])
    distribution[0] = 1.0
    total = 0.0
    for h in range(policy.shape[0]):
        actions = policy[h]
        total += distribution @ rewards[np.arange(len(actions)), actions]
        distribution = distribution @ transitions[np.arange(len(actions)), actions]
    return total


@pytest.mark.parametrize("index", [0, 1, 2])
def test_value_iteration_matches_enumerated_policies(small_mdps, index):
    num_states, num_actions, horizon = 3, 2, 3  # 2**9 deterministic non-stationary policies
    instance = jax.tree.map(lambda x: x[index : index + 1], small_mdps)
    transitions = np.asarray(instance.transitions[0], np.float64)
    rewards = np.asarray(instance.mean_rewards[0], np.float64)
    best = max(
        _evaluate_policy_exactly(
            transitions, rewards, np.array(choice).reshape(horizon, num_states)
        )
        for choice in itertools.product(range(num_actions), repeat=horizon * num_states)
    )
    q = mdp.value_iteration(instance.transitions[0], instance.mean_rewards[0], horizon)
    chex.assert_shape(q, (horizon, num_states, num_actions))
    assert float(jnp.max(q[0, 0])) == pytest.approx(best, rel=1e-5)
    greedy_policy = np.asarray(jnp.argmax(q, axis=-1))  # [horizon, states]
    assert _evaluate_policy_exactly(transitions, rewards, greedy_policy) == pytest.approx(
        best, rel=1e-5
    )


def test_known_mdp_optimum_is_about_21_8_per_episode(rl2_mdps):
    # 4000 RL² MDPs (S=10, A=5, T=10); the published 21.8 is rounded to 0.1
    instances = rl2_mdps
    values = mdp.optimal_value(instances, episode_length=10)
    chex.assert_shape(values, (4000,))
    mean, error = _mean_and_error(values)
    assert abs(mean - 21.8) < 0.05 + 3 * error


# ----------------------------------------------------------------------------
# Tabular-MDP players (one compile for all of them)

MDP_INSTANCES = 200
MDP_EPISODES = 10


@pytest.fixture(scope="module")
def mdp_returns(rl2_mdps):
    instances = jax.tree.map(lambda x: x[-MDP_INSTANCES:], rl2_mdps)
    players = {
        "random": mdp.random_policy,
        "greedy": mdp.greedy,
        "myopic": mdp.myopic,
        "epsilon_greedy": functools.partial(mdp.epsilon_greedy, epsilon=0.1),
        "beb": functools.partial(mdp.beb, bonus=1.0),
        "psrl": mdp.psrl,
        "optimistic_psrl": functools.partial(mdp.optimistic_psrl, num_samples=2),
        "known_mdp_optimum": mdp.known_mdp_optimum,
    }

    @jax.jit
    def play(instances, keys):  # -> dict of [instances, episodes]
        def one(instance, keys):
            return {
                name: player(instance, k, num_episodes=MDP_EPISODES, per_episode=True)
                for (name, player), k in zip(players.items(), keys)
            }

        return jax.vmap(one)(instances, keys)

    keys = jax.vmap(lambda k: jax.random.split(k, len(players)))(
        jax.random.split(jax.random.PRNGKey(8), MDP_INSTANCES))  # [instances, players]
    returns = play(instances, keys)
    return instances, returns, dict(zip(players, jnp.swapaxes(keys, 0, 1)))


@pytest.mark.parametrize(
    "name", ["greedy", "myopic", "epsilon_greedy", "beb", "psrl", "optimistic_psrl",
             "known_mdp_optimum"]
)
def test_mdp_players_beat_random(mdp_returns, name):
    _, returns, _ = mdp_returns
    chex.assert_shape(returns[name], (MDP_INSTANCES, MDP_EPISODES))
    random_total = np.asarray(returns["random"]).sum(-1)
    mean, error = _mean_and_error(random_total)
    assert abs(mean - 10.0 * MDP_EPISODES) < 4 * error  # random play earns 1 per step
    # paired over instances; RL² Table 2 gains at n = 10 are 30 % or more
    gain, gain_error = _mean_and_error(np.asarray(returns[name]).sum(-1) - random_total)
    assert gain > 6 * gain_error and gain > 0.15 * 10.0 * MDP_EPISODES


@pytest.mark.parametrize("name", ["psrl", "optimistic_psrl", "greedy", "myopic"])
def test_mdp_learners_improve_over_the_trial(mdp_returns, name):
    returns = np.asarray(mdp_returns[1][name])  # [instances, episodes]
    improvement, error = _mean_and_error(returns[:, -3:].mean(-1) - returns[:, 0])
    assert improvement > 4 * error


def test_simulated_known_optimum_matches_value_iteration(mdp_returns):
    instances, returns, _ = mdp_returns
    exact = np.asarray(mdp.optimal_value(instances))  # [instances]
    per_episode = np.asarray(returns["known_mdp_optimum"]).mean(-1)
    difference, error = _mean_and_error(per_episode - exact)  # paired: noise only
    assert abs(difference) < 4 * error


def test_psrl_alone_on_the_engine_counts_what_it_is_shown_and_matches_the_batch(mdp_returns):
    # PSRL on one MDP of the fixture, through run_trial itself (not vmapped) in chunks of one
    # step, so that the policy state entering every step is recorded
    instances, returns, keys = mdp_returns
    task = jax.tree.map(lambda x: x[0], instances)
    key_policy, key_trial = jax.random.split(keys["psrl"][0])  # as the player splits it
    policy = mdp.psrl.policy(task, key_policy)
    env = metarl_jax.make("tabular-mdp").env
    num_states, num_actions, horizon = 10, 5, 10
    trial = jax.jit(functools.partial(
        run_trial, env, policy.step, policy.init_state, policy.params, task,
        num_episodes=MDP_EPISODES, horizon=horizon, action_spec=ActionSpec(True, num_actions),
        inputs=policy.inputs, chunk_length=1))(key_trial)
    # the batch (vmapped, planning once per episode for all instances through any_in_batch)
    # played this instance exactly as alone; a different action would move a return by O(1)
    reward = np.asarray(trial.reward[:, 0])  # [steps]
    np.testing.assert_allclose(reward.reshape(MDP_EPISODES, horizon).sum(-1),
                               returns["psrl"][0], rtol=1e-5, atol=1e-4)
    # each step counts the step before it from its inputs: the state entering the last step
    # holds all but the last two steps; an episode's last transition is counted with the
    # pre-reset state it led to (the engine's final_obs input)
    state = np.asarray(trial.inputs[:, 0, :num_states]).argmax(-1)
    led_to = np.asarray(trial.inputs[:, 0, 2 * num_states:3 * num_states]).argmax(-1)
    action, done = np.asarray(trial.action[:, 0]), np.asarray(trial.done[:, 0])
    inside = ~done[:-1]  # inside an episode the successor is the next observation
    np.testing.assert_array_equal(led_to[1:][inside], state[1:][inside])
    assert (led_to[1:][~inside] != state[1:][~inside]).any()  # at a reset it is not
    counts = np.zeros((num_states, num_actions, num_states))
    sums = np.zeros((num_states, num_actions))
    steps = MDP_EPISODES * horizon
    for t in range(steps - 2):
        sums[state[t], action[t]] += reward[t]
        counts[state[t], action[t], led_to[t + 1]] += 1
    last = jax.tree.map(lambda x: x[-1], trial.chunk_state)
    np.testing.assert_array_equal(last.statistics.transition_counts, counts)
    np.testing.assert_allclose(last.statistics.reward_sums, sums, rtol=1e-5, atol=1e-5)
    assert counts.sum() == steps - 2
    np.testing.assert_array_equal(last.h, (steps - 2) % horizon)  # step h of its episode


def test_mdp_evaluate_returns_per_episode_returns(small_mdps):
    instances = small_mdps
    key = jax.random.PRNGKey(10)
    per_episode = mdp.evaluate(
        "random", instances, key, num_episodes=3, episode_length=4, per_episode=True
    )
    chex.assert_shape(per_episode, (8, 3))
    assert per_episode.dtype == jnp.float32
    # random play earns about 1 per step: 12 per trial of 3 episodes of 4 steps
    mean, error = _mean_and_error(per_episode.sum(-1))
    assert abs(mean - 12.0) < 4 * error


def test_instances_come_from_the_families(small_mdps):
    key = jax.random.PRNGKey(3)  # the bandits of test_evaluate_sweeps_epsilon_without_recompiling
    family = metarl_jax.make("bandit-bernoulli", arms=3).sample(key, 400, "test")
    np.testing.assert_array_equal(bandits.sample_instances(key, 400, 3).arm_means,
                                  family.arm_means)
    family = metarl_jax.make("tabular-mdp", states=3, actions=2).sample(
        jax.random.PRNGKey(9), 8, "test")
    assert isinstance(small_mdps, TabularMDPParams)
    for ours, theirs in zip(jax.tree.leaves(small_mdps), jax.tree.leaves(family)):
        np.testing.assert_array_equal(ours, theirs)


# ----------------------------------------------------------------------------
# Bad input


def test_bandit_bad_input_raises():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="arm_means"):
        bandits.ucb1(jnp.array([0.5]), key, num_pulls=10)
    with pytest.raises(ValueError, match="arm_means"):
        bandits.greedy(jnp.array([0.5, 1.5]), key, num_pulls=10)
    with pytest.raises(TypeError, match="arm_means"):
        bandits.greedy(jnp.array([0, 1]), key, num_pulls=10)
    with pytest.raises(ValueError, match="num_pulls"):
        bandits.thompson_sampling(jnp.array([0.2, 0.5]), key, num_pulls=0)
    with pytest.raises(ValueError, match="num_pulls"):
        bandits.evaluate("random", jnp.full((4, 3), 0.5), key, num_pulls=-1)
    with pytest.raises(ValueError, match="num_arms"):
        bandits.bayes_optimal_policy(10, 1)
    with pytest.raises(ValueError, match="epsilon"):
        bandits.evaluate("epsilon_greedy", jnp.full((4, 3), 0.5), key, num_pulls=5, epsilon=1.5)
    with pytest.raises(ValueError, match="exploration"):
        bandits.ucb1(jnp.array([0.2, 0.5]), key, num_pulls=5, exploration=-1.0)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        bandits.evaluate("thompson_sampling", jnp.full((4, 3), 0.5), key, num_pulls=5, epsilon=0.1)
    with pytest.raises(ValueError, match="unknown bandit baseline"):
        bandits.evaluate("softmax", jnp.full((4, 3), 0.5), key, num_pulls=5)
    with pytest.raises(ValueError, match="intractable"):
        bandits.bayes_optimal_policy(100, 5)
    with pytest.raises(ValueError, match="policy was built for"):
        bandits.bayes_optimal(
            jnp.full((5,), 0.5), key, num_pulls=8, policy=bandits.bayes_optimal_policy(10, 5)
        )
    with pytest.raises(ValueError, match="index_table"):
        bandits.gittins(
            jnp.full((3,), 0.5), key, num_pulls=20, index_table=bandits.gittins_indices(0.9, 5)
        )
    with pytest.raises(ValueError, match="discount"):
        bandits.gittins_indices(1.0, 10)


def test_mdp_bad_input_raises(small_mdps):
    key = jax.random.PRNGKey(0)
    good = jax.tree.map(lambda x: x[:2], small_mdps)
    single = mdp.MDPInstance(good.transitions[0], good.mean_rewards[0])
    unnormalised = mdp.MDPInstance(single.transitions * 0.9, single.mean_rewards)
    with pytest.raises(ValueError, match="transitions rows must sum to 1"):
        mdp.psrl(unnormalised, key, num_episodes=2)
    negative = single.transitions.at[0, 0].set(jnp.array([1.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="transitions must be non-negative"):
        mdp.greedy(mdp.MDPInstance(negative, single.mean_rewards), key, num_episodes=2)
    with pytest.raises(ValueError, match="transitions must have shape"):
        mdp.greedy(
            mdp.MDPInstance(single.transitions[:, :, :2], single.mean_rewards), key, num_episodes=2
        )
    with pytest.raises(ValueError, match="num_episodes"):
        mdp.random_policy(single, key, num_episodes=0)
    with pytest.raises(ValueError, match="episode_length"):
        mdp.evaluate("random", good, key, num_episodes=2, episode_length=0)
    with pytest.raises(ValueError, match="mean_rewards"):
        mdp.evaluate("random", single, key, num_episodes=2)  # not batched
    with pytest.raises(ValueError, match="epsilon"):
        mdp.evaluate("epsilon_greedy", good, key, num_episodes=2, epsilon=-0.1)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        mdp.evaluate("psrl", good, key, num_episodes=2, temperature=1.0)
    with pytest.raises(ValueError, match="unknown MDP baseline"):
        mdp.evaluate("ucrl2", good, key, num_episodes=2)
    with pytest.raises(TypeError, match="transitions and mean_rewards"):
        mdp.psrl(np.zeros(3), key, num_episodes=2)
