"""Performance-weighted ensembles: Hedge weights, mixtures, the online selector, the protocol."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax import cli
from metarl_jax.algorithms import ensembles, es_maml, maml, rl2
from metarl_jax.core.population import make_population, population_members
from metarl_jax.nn.distributions import Categorical, DiagGaussian
from metarl_jax.training import ensemble as host
from metarl_jax.training.runner import train

# -- Hedge weights ------------------------------------------------------------------------


def test_hedge_limits_and_normalisation():
    p = jnp.array([1.0, 3.0, 2.0, -5.0])
    np.testing.assert_allclose(ensembles.hedge_weights(p, 0.0), np.full(4, 0.25), rtol=1e-6)
    np.testing.assert_array_equal(ensembles.hedge_weights(p, math.inf), [0, 1, 0, 0])
    # a large finite eta approaches the limit without overflow (stable softmax)
    np.testing.assert_allclose(ensembles.hedge_weights(p, 1e4), [0, 1, 0, 0], atol=1e-6)
    for eta in (0.0, 0.3, 1.0, 7.0, 1e30, math.inf):
        w = ensembles.hedge_weights(p, eta)
        assert w.dtype == jnp.float32 and bool(jnp.all(w >= 0))
        np.testing.assert_allclose(float(jnp.sum(w)), 1.0, rtol=1e-6)
    # the closed form in between
    eta = 0.7
    expected = np.exp(eta * np.asarray(p)) / np.exp(eta * np.asarray(p)).sum()
    np.testing.assert_allclose(ensembles.hedge_weights(p, eta), expected, rtol=1e-5)


def test_hedge_ties_split_at_infinity():
    w = ensembles.hedge_weights(jnp.array([2.0, 5.0, 5.0, 1.0, 5.0]), math.inf)
    np.testing.assert_allclose(w, [0, 1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("eta", [-1.0, math.nan, "big", True])
def test_bad_eta(eta):
    with pytest.raises(ValueError, match="eta"):
        ensembles.hedge_weights(jnp.array([1.0, 2.0]), eta)


def test_bad_performance():
    with pytest.raises(ValueError, match="non-empty"):
        ensembles.hedge_weights(jnp.zeros((0,)), 1.0)
    with pytest.raises(ValueError, match="finite"):
        ensembles.hedge_weights(jnp.array([1.0, jnp.nan]), 1.0)


def test_choose_eta_picks_the_best_scoring_and_breaks_ties_low():
    p = jnp.array([0.0, 1.0, 2.0])
    grid = ensembles.eta_grid(p)
    assert grid[0] == 0.0 and math.isinf(grid[-1]) and len(grid) == 8
    # validation scores q of the members disagree with p: some mixing beats both limits
    q = jnp.array([0.0, 2.0, 1.5])
    eta, scores = ensembles.choose_eta(p, lambda w: w @ q, grid)
    assert eta == grid[int(np.argmax(scores))] == 2.0
    assert scores[grid.index(2.0)] > max(scores[0], scores[-1])
    # constant score: every eta ties and the broadest mixture wins
    eta, _ = ensembles.choose_eta(p, lambda w: jnp.zeros(w.shape[0]), grid)
    assert eta == 0.0
    assert ensembles.eta_grid(jnp.array([1.0, 1.0])) == (0.0, math.inf)
    with pytest.raises(ValueError, match="eta"):
        ensembles.choose_eta(p, lambda w: w[:, 0], (0.0, -2.0))


# -- mixtures -----------------------------------------------------------------------------


def test_categorical_mixture_probabilities():
    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4))  # 3 members, batch 5, 4 actions
    dists = [Categorical(logits[i]) for i in range(3)]
    w = jnp.array([0.2, 0.5, 0.3])
    mix = ensembles.mixture(dists, w)
    probs = jnp.exp(mix.log_probs)
    np.testing.assert_allclose(jnp.sum(probs, -1), np.ones(5), rtol=1e-5)
    expected = sum(w[i] * jax.nn.softmax(logits[i]) for i in range(3))
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    # one-hot weights: exactly that member's policy
    one = ensembles.mixture(dists, jnp.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(one.log_probs, dists[1].log_probs, atol=1e-6)  # float32 rounding


def test_gaussian_mixture_sampling_frequencies_and_density():
    w = jnp.array([0.1, 0.6, 0.3])
    means = jnp.array([[-20.0], [0.0], [20.0]])  # far apart: a sample names its member
    dists = [DiagGaussian(means[i], jnp.zeros(1)) for i in range(3)]
    mix = ensembles.mixture(dists, w)
    n = 4000
    samples = jax.jit(jax.vmap(mix.sample))(jax.random.split(jax.random.PRNGKey(1), n))[:, 0]
    counts = np.array([(samples < -10).sum(), (np.abs(samples) < 10).sum(), (samples > 10).sum()])
    assert counts.sum() == n
    # Pearson chi-square, 2 degrees of freedom: 13.8 is the 0.999 quantile
    expected = n * np.asarray(w)
    assert ((counts - expected) ** 2 / expected).sum() < 13.8
    # log-density: log sum_i w_i N(a; mu_i, 1), against a direct float64 sum
    a = jnp.array([[0.3], [19.0], [-21.0]])
    direct = np.log(sum(float(w[i]) * np.exp(-0.5 * (np.asarray(a[:, 0], np.float64)
                                                      - float(means[i, 0])) ** 2)
                        for i in range(3)) / np.sqrt(2 * np.pi))
    np.testing.assert_allclose(jax.jit(jax.vmap(mix.log_prob))(a), direct, rtol=1e-5)
    # one-hot weights: that member's density and that member's sample
    one = ensembles.mixture(dists, jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(one.log_prob(a[0]), dists[2].log_prob(a[0]), rtol=1e-6)
    assert float(one.sample(jax.random.PRNGKey(3))[0]) > 10


def test_mixture_errors():
    with pytest.raises(ValueError, match="at least one"):
        ensembles.mixture([], jnp.zeros(0))
    with pytest.raises(TypeError, match="action spaces"):
        ensembles.mixture([Categorical(jnp.zeros(3)), DiagGaussian(jnp.zeros(2), jnp.zeros(2))],
                          jnp.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="one per member"):
        ensembles.mixture([Categorical(jnp.zeros(3))], jnp.array([0.5, 0.5]))


# -- the online selector ------------------------------------------------------------------


def test_selector_concentrates_on_the_better_member():
    """Bernoulli episode returns with means 0.2, 0.8, 0.4: over 300 episodes UCB1
    plays the best member most, and tries each first, best-prior first."""
    means = jnp.array([0.2, 0.8, 0.4])
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    priority = jnp.array([0.0, 0.0, 1.0])

    def episode(state, key):
        member = ensembles.selector_choose(state, 0.5, priority)
        ret = jax.random.bernoulli(key, means[member]).astype(jnp.float32)
        return ensembles.selector_update(state, member, ret), member

    state, members = jax.lax.scan(episode, ensembles.selector_init(3), keys)
    assert members[0] == 2 and set(np.asarray(members[:3]).tolist()) == {0, 1, 2}
    assert float(state.counts[1]) > 0.75 * 300
    np.testing.assert_allclose(float(jnp.sum(state.counts)), 300)


# -- ensembles of learners ----------------------------------------------------------------

NAV_HORIZON = 8


@pytest.fixture(scope="module")
def nav_family():
    return metarl_jax.make("navigation2d", max_steps_in_episode=NAV_HORIZON)


def _maml_config(**kw):
    return maml.Config(meta_batch_size=2, inner_episodes=2, horizon=NAV_HORIZON,
                       hidden_sizes=(8,), eval_episodes=2, outer_optimizer="adam",
                       train_pretrained=False, **kw)


@pytest.fixture(scope="module")
def nav_ensemble(nav_family):
    learners = [maml.make(_maml_config(inner_lr=lr), nav_family) for lr in (0.1, 0.05)]
    params = [learner.init(jax.random.PRNGKey(i)).meta_params
              for i, learner in enumerate(learners)]
    return ensembles.make_ensemble(learners, params, ["a", "b"])


@pytest.fixture(scope="module")
def bandit_family():
    return metarl_jax.make("bandit-bernoulli", arms=3)


def _rl2(family, **kw):
    config = rl2.Config(trial_episodes=6, meta_batch_size=4, num_minibatches=2, hidden_size=4,
                        **kw)
    return rl2.make(config, family)


def test_maml_members_one_hot_and_online(nav_ensemble, nav_family):
    """With one-hot weights the mixture is the member: its adaptation, its policy, the
    same keys, so the same returns; every row of a call plays the same tasks with the
    same keys; the online selector tries the prior's favourite first."""
    tasks = nav_family.sample(jax.random.PRNGKey(3), 1, "train")
    task = jax.tree.map(lambda x: x[0], tasks)
    weights = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    acting = jax.jit(lambda p, t, k: ensembles.prepare(nav_ensemble, p, t, k))(
        nav_ensemble.params, tasks, jax.random.PRNGKey(2))
    returns = jax.jit(lambda a, w, t, k: ensembles.returns_table(nav_ensemble, a, w, t, k, 3))(
        acting, weights, tasks, jax.random.PRNGKey(4))
    assert returns.shape == (4, 1, 3)
    np.testing.assert_array_equal(returns[0], returns[3])
    assert not np.array_equal(returns[0], returns[1])
    # member 0 alone, by hand: its own adaptation, then its own policy on the same keys
    learner = nav_ensemble.learners[0]
    alone = nav_ensemble._replace(learners=(learner,))
    adapt_key = jax.random.split(jax.random.PRNGKey(2), 1)[0]
    play_key = jax.random.split(jax.random.PRNGKey(4), 1)[0]

    @jax.jit
    def by_hand(meta_params):
        adapted = learner.sample_adaptation(meta_params, task, adapt_key, 1)[1]
        return ensembles.play(alone, (adapted,), jnp.ones(1), task, play_key, 3)

    np.testing.assert_allclose(returns[0, 0], by_hand(nav_ensemble.params[0]), rtol=1e-5)
    one_task = jax.tree.map(lambda x: x[0], acting)
    online = jax.jit(lambda a, k: ensembles.play_online(
        nav_ensemble, a, jnp.array([0.0, 1.0]), 1.0, task, k, 4))
    returns, members = online(one_task, jax.random.PRNGKey(6))
    assert returns.shape == (4,) and members.shape == (4,)
    assert members[0] == 1 and members[1] == 0  # the prior's favourite, then the untried one
    np.testing.assert_array_equal(
        members, ensembles.selector_replay(returns, 1.0, jnp.array([0.0, 1.0])))


@pytest.fixture(scope="module")
def bandit_ensemble(bandit_family):
    learners = [_rl2(bandit_family) for _ in range(2)]
    params = [learner.init(jax.random.PRNGKey(i)).params for i, learner in enumerate(learners)]
    return ensembles.make_ensemble(learners, params)


def test_rl2_members_share_the_stream(bandit_ensemble, bandit_family):
    ens = bandit_ensemble
    tasks = bandit_family.sample(jax.random.PRNGKey(1), 1, "train")
    task = jax.tree.map(lambda x: x[0], tasks)

    @jax.jit
    def run(params, key):
        own = ens.learners[0].run_trials(params[0], tasks, key, 6)
        alone = ensembles.play(ens, params, jnp.array([1.0, 0.0]), task,
                               jax.random.split(key, 1)[0], 6)
        mixed = ensembles.play(ens, params, jnp.array([0.5, 0.5]), task, key, 6)
        online = ensembles.play_online(ens, params, jnp.array([1.0, 0.0]), 0.5, task, key, 6)
        return own.reward, alone, mixed, online

    own, alone, mixed, (returns, members) = run(ens.params, jax.random.PRNGKey(7))
    # member 0 alone through the ensemble plays the learner's own trial on the same key
    np.testing.assert_allclose(alone, own.reshape(-1)[:6])
    # every episode is one Bernoulli pull
    assert set(np.asarray(mixed).tolist()) <= {0.0, 1.0} and returns.shape == (6,)
    assert int(members[0]) == 0 and int(members[1]) == 1


def test_make_ensemble_errors(nav_family, bandit_family):
    nav = maml.make(_maml_config(), nav_family)
    nav_params = nav.init(jax.random.PRNGKey(0)).meta_params
    with pytest.raises(ValueError, match="at least one member"):
        ensembles.make_ensemble([], [])
    # mismatched action spaces: 3 arms against 4
    three = _rl2(bandit_family)
    four = _rl2(metarl_jax.make("bandit-bernoulli", arms=4))
    with pytest.raises(TypeError,
                       match="mismatched action spaces.*Discrete\\(3\\).*Discrete\\(4\\)"):
        ensembles.make_ensemble([three, four], [None, None])
    with pytest.raises(TypeError, match="one kind"):
        ensembles.make_ensemble([nav, three], [nav_params, None])
    es = es_maml.make(es_maml.Config(meta_batch_size=2, num_perturbations=1, inner_episodes=2,
                                     horizon=NAV_HORIZON, hidden_sizes=(8,)), nav_family)
    with pytest.raises(TypeError, match="maml and rl2"):
        ensembles.make_ensemble([es], [None])
    with pytest.raises(ValueError, match="2 learners but 1"):
        ensembles.make_ensemble([nav, nav], [nav_params])


# -- the host protocol and the CLI --------------------------------------------------------


def test_from_population_uses_each_members_config(bandit_family):
    config = rl2.Config(trial_episodes=4, meta_batch_size=4, num_minibatches=2, hidden_size=4)
    pop = make_population(rl2, config, bandit_family,
                          population_members(1, {"learning_rate": [1e-3, 3e-3]}))
    state = pop.init(jax.random.split(jax.random.PRNGKey(0), 2))
    ens = host.from_population(pop, state)
    assert [learner.config.learning_rate for learner in ens.learners] == [1e-3, 3e-3]
    assert ens.names == ("seed=0, learning_rate=0.001", "seed=0, learning_rate=0.003")
    for i in range(2):
        for a, b in zip(jax.tree.leaves(ens.params[i]),
                        jax.tree.leaves(pop.member_state(state, i).params)):
            np.testing.assert_array_equal(a, b)
    # a member frozen for non-finite values is left out
    ens = host.from_population(pop, state.replace(alive=jnp.array([True, False])))
    assert ens.names == ("seed=0, learning_rate=0.001",)
    with pytest.raises(ValueError, match="non-finite"):
        host.from_population(pop, state.replace(alive=jnp.array([False, False])))



class _SplitSpy:
    """A family that records which splits were sampled, in order."""

    def __init__(self, family):
        self._family, self.calls = family, []

    def __getattr__(self, name):
        return getattr(self._family, name)

    def sample(self, key, num_tasks, split="train"):
        self.calls.append(split)
        return self._family.sample(key, num_tasks, split)


def test_eta_is_chosen_without_test_tasks(bandit_ensemble):
    spy = _SplitSpy(bandit_ensemble.family)
    chosen = []
    original = ensembles.choose_eta

    def recording_choose(*args, **kwargs):
        chosen.append(list(spy.calls))
        return original(*args, **kwargs)

    ens = bandit_ensemble._replace(family=spy)
    ensembles.choose_eta = recording_choose
    try:
        result = host.evaluate_ensemble(ens, num_tasks=2, num_episodes=4, seed=1)
    finally:
        ensembles.choose_eta = original
    # eta was chosen after drawing two validation sets from train, before any test task
    assert chosen == [["train", "train"]] and spy.calls == ["train", "train", "test"]
    assert set(result["test"]) == set(host.METHODS)
    for stats in result["test"].values():
        assert len(stats["per_task"]) == 2 and np.isfinite(stats["mean"])
    weights = [m["hedge_weight"] for m in result["members"]]
    np.testing.assert_allclose(sum(weights), 1.0, rtol=1e-5)


def test_cli_end_to_end(tmp_path, bandit_family, capsys):
    config = rl2.Config(trial_episodes=4, meta_batch_size=4, num_minibatches=2, hidden_size=4)
    runs = []
    for seed in (0, 1):
        result = train("rl2", config, "bandit-bernoulli", tmp_path / f"run{seed}",
                       family_options={"arms": 3}, seed=seed, num_iterations=2, eval_every=0,
                       checkpoint_every=0, eval_num_tasks=2, quiet=True)
        runs.append(str(result.run_dir))
    out = tmp_path / "ens"
    code = cli.main(["ensemble", *runs, "--out", str(out), "--num-tasks", "3", "--seed", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "hedge" in printed and "best_member" in printed and "run1" in printed
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["kind"] == "rl2" and saved["num_test_tasks"] == 3
    assert [m["name"] for m in saved["members"]] == ["run0", "run1"]
    # bad input: no run dir; a fixed eta that is negative
    assert cli.main(["ensemble", str(tmp_path / "missing")]) == 2
    assert cli.main(["ensemble", *runs, "--eta", "-1"]) == 2
    assert "eta must be" in capsys.readouterr().err
