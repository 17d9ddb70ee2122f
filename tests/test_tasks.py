"""TaskFamily, the registry, splits and their errors, and the gymnax adapter."""

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control.acrobot import EnvParams as AcrobotParams

import metarl_jax
from metarl_jax.envs import GymnaxEnvironment, Navigation2D
from metarl_jax.tasks import from_gymnax
from metarl_jax.families.meta_rl import sample_square_annulus
from metarl_jax.tasks import TaskFamily, make, register, uniform_params_sampler

SIGMAS = 5.0
META_RL_FAMILIES = ("acrobot", "bandit-bernoulli", "bandit-gaussian", "navigation2d", "tabular-mdp")


@pytest.fixture(scope="module")
def families():
    return {name: make(name) for name in META_RL_FAMILIES}


# -- sampling and splits ------------------------------------------------------------------


@pytest.mark.parametrize("name", META_RL_FAMILIES)
def test_sample_has_leading_task_axis_and_splits_differ(families, name):
    family = families[name]
    key = jax.random.PRNGKey(0)
    single = family.sample_params(key)
    train = family.sample(key, 3, "train")
    test = family.sample(key, 3, "test")
    chex.assert_tree_shape_prefix(train, (3,))
    chex.assert_trees_all_equal_structs(train, test)
    # each leaf is the single-task leaf with a task axis in front
    for batched, one in zip(jax.tree.leaves(train), jax.tree.leaves(single)):
        assert batched.shape == (3,) + jnp.shape(one)
    varied = [
        (a, b) for a, b in zip(jax.tree.leaves(train), jax.tree.leaves(test))
        if not np.all(np.asarray(a) == np.asarray(a)[:1])  # leaves that vary across tasks
    ]
    assert varied, "no parameter varies across tasks"
    for a, b in varied:
        assert not np.any(np.isclose(a, b)), "train and test share a task for the same key"
    # the same key gives the same tasks (sampling is a pure function of the key)
    chex.assert_trees_all_equal(train, family.sample(key, 3, "train"))


def test_family_distributions_match_their_spec(families):
    n = 2000
    key = jax.random.PRNGKey(1)
    means = np.asarray(families["bandit-bernoulli"].sample(key, n).arm_means)
    assert means.min() >= 0 and means.max() <= 1
    assert abs(means.mean() - 0.5) < SIGMAS * np.sqrt(1 / 12 / means.size)
    gauss = np.asarray(families["bandit-gaussian"].sample(key, n).arm_means)
    assert abs(gauss.mean()) < SIGMAS / np.sqrt(gauss.size)
    assert abs(gauss.std() - 1) < SIGMAS / np.sqrt(2 * gauss.size)
    goals = np.asarray(families["navigation2d"].sample(key, n).goal)
    assert np.abs(goals).max() <= 0.5
    np.testing.assert_array_less(np.abs(goals.mean(0)), SIGMAS * np.sqrt(1 / 12 / n))
    mdps = make("tabular-mdp", states=4, actions=3, episode_length=5).sample(key, 500)
    np.testing.assert_allclose(mdps.transitions.sum(-1), 1.0, atol=1e-5)
    assert float(mdps.transitions.min()) >= 0
    # flat Dirichlet over S=4 states: E[sum_j p_j^2] = 2 / (S + 1) per row
    # (Dirichlet(alpha) rows would give (alpha + 1) / (S alpha + 1))
    sum_sq = np.sum(np.asarray(mdps.transitions) ** 2, axis=-1).ravel()
    assert abs(sum_sq.mean() - 2 / 5) < SIGMAS * sum_sq.std() / np.sqrt(sum_sq.size)
    rewards = np.asarray(mdps.mean_rewards).ravel()
    assert abs(rewards.mean() - 1.0) < SIGMAS / np.sqrt(rewards.size)
    assert abs(rewards.std() - 1.0) < SIGMAS / np.sqrt(2 * rewards.size)
    np.testing.assert_array_equal(mdps.max_steps_in_episode, 5)


def test_navigation_ood_goals_are_uniform_on_the_disjoint_annulus(families):
    n = 4000
    goals = np.asarray(families["navigation2d"].sample(jax.random.PRNGKey(2), n, "ood").goal)
    radius = np.abs(goals).max(axis=1)
    assert radius.min() > 0.5 and radius.max() <= 1.0  # disjoint from the training square
    # uniform on the annulus: P(r <= 0.75) = (0.75^2 - 0.5^2) / (1 - 0.5^2)
    p_inner = (0.75**2 - 0.25) / 0.75
    assert abs((radius <= 0.75).mean() - p_inner) < SIGMAS * np.sqrt(p_inner * (1 - p_inner) / n)
    # the four quadrants and both signs of each coordinate are equally likely
    for coordinate in (0, 1):
        frac = (goals[:, coordinate] > 0).mean()
        assert abs(frac - 0.5) < SIGMAS * np.sqrt(0.25 / n)


def test_square_annulus_sampler_hits_its_bounds():
    points = jax.vmap(lambda k: sample_square_annulus(k, 0.2, 0.3))(
        jax.random.split(jax.random.PRNGKey(0), 1000)
    )
    radius = np.abs(np.asarray(points)).max(axis=1)
    assert radius.min() > 0.2 and radius.max() <= 0.3 + 1e-7
    assert radius.min() < 0.205 and radius.max() > 0.295


def test_acrobot_ood_masses_are_disjoint_from_train(families):
    family = families["acrobot"]
    key = jax.random.PRNGKey(3)
    train = family.sample(key, 200, "train")
    ood = family.sample(key, 200, "ood")
    for field in ("link_mass_1", "link_mass_2"):
        low, high = family.ranges["train"][field]
        ood_low, ood_high = family.ranges["ood"][field]
        assert high <= ood_low  # declared ranges are disjoint
        t, o = np.asarray(getattr(train, field)), np.asarray(getattr(ood, field))
        assert t.min() >= low and t.max() <= high
        assert o.min() >= ood_low and o.max() <= ood_high
    np.testing.assert_array_equal(train.link_length_1, 1.0)  # other fields keep defaults


# -- registry and errors ----------------------------------------------------------------------


def test_registry_lists_the_meta_rl_families():
    names = metarl_jax.list_families()
    assert set(META_RL_FAMILIES) <= set(names)
    descriptions = metarl_jax.family_descriptions()
    for name in META_RL_FAMILIES:
        assert descriptions[name]


def test_ranges_describe_every_split(families):
    for family in families.values():
        assert "train" in family.ranges and family.ranges["train"]
        assert set(family.ranges) <= {"train", "test", "ood"}
        assert family.splits == ("train", "test") + (("ood",) if "ood" in family.ranges else ())
        assert family.description


def test_make_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown task family 'nope'.*navigation2d"):
        make("nope")
    with pytest.raises(ValueError, match="arms must be >= 2"):
        make("bandit-bernoulli", arms=1)
    with pytest.raises(ValueError, match="arms must be an integer"):
        make("bandit-gaussian", arms=2.5)
    with pytest.raises(ValueError, match="trial_pulls"):
        make("bandit-bernoulli", trial_pulls=0)
    with pytest.raises(ValueError, match="states"):
        make("tabular-mdp", states=0)
    with pytest.raises(ValueError, match="episode_length"):
        make("tabular-mdp", episode_length=-1)
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        make("navigation2d", max_steps_in_episode=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['goal_range'\]"):
        make("navigation2d", goal_range=1.0)


def test_family_options_reach_the_env():
    bandit = make("bandit-bernoulli", arms=7, trial_pulls=4)
    assert bandit.env.num_arms == 7
    params = bandit.sample(jax.random.PRNGKey(0), 2)
    assert params.arm_means.shape == (2, 7)
    np.testing.assert_array_equal(params.max_steps_in_episode, 4)
    mdp = make("tabular-mdp", states=3, actions=2, episode_length=6)
    assert (mdp.env.num_states, mdp.env.num_actions, mdp.env.episode_length) == (3, 2, 6)


def test_sample_errors(families):
    family = families["bandit-bernoulli"]
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        family.sample(key, 0)
    with pytest.raises(ValueError, match="num_tasks must be an integer"):
        family.sample(key, 2.0)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        family.sample(key, 2, "validation")
    with pytest.raises(ValueError, match="has no 'ood' split"):
        family.sample(key, 2, "ood")
    with pytest.raises(ValueError, match="has no 'ood' split"):
        family.sample_params(key, "ood")


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register("navigation2d")(lambda: None)


def test_uniform_params_sampler():
    defaults = AcrobotParams()
    ranges = {"train": {"link_mass_1": (0.5, 1.0)}, "ood": {"link_mass_1": (2.0, 3.0)}}
    sample = uniform_params_sampler(defaults, ranges)
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    train = jax.vmap(lambda k: sample(k, "train"))(keys).link_mass_1
    test = jax.vmap(lambda k: sample(k, "test"))(keys).link_mass_1  # falls back to train
    ood = jax.vmap(lambda k: sample(k, "ood"))(keys).link_mass_1
    assert 0.5 <= float(train.min()) and float(train.max()) <= 1.0
    chex.assert_trees_all_equal(train, test)  # same key: TaskFamily separates the streams
    assert 2.0 <= float(ood.min()) and float(ood.max()) <= 3.0
    with pytest.raises(ValueError, match="unknown parameter field 'link_mass_3'"):
        uniform_params_sampler(defaults, {"train": {"link_mass_3": (0.0, 1.0)}})
    with pytest.raises(ValueError, match="'link_mass_1' in 'train' has low > high"):
        uniform_params_sampler(defaults, {"train": {"link_mass_1": (2.0, 1.0)}})


# -- gymnax adapter -------------------------------------------------------------------------


def test_adapter_steps_exactly_like_gymnax(families):
    """The wrapped env reproduces gymnax's own step, auto-reset included."""
    family = families["acrobot"]
    gymnax_env, _ = gymnax.make("Acrobot-v1")
    params = family.sample_params(jax.random.PRNGKey(0)).replace(max_steps_in_episode=3)
    key_reset, key_steps = jax.random.split(jax.random.PRNGKey(1))
    ours = family.env.reset(key_reset, params)
    theirs = gymnax_env.reset(key_reset, params)
    chex.assert_trees_all_equal(ours, theirs)
    state_ours, state_theirs = ours[1], theirs[1]
    for t, key in enumerate(jax.random.split(key_steps, 5)):
        action = jnp.int32(t % 3)
        out_ours = family.env.step(key, state_ours, action, params)
        out_theirs = gymnax_env.step(key, state_theirs, action, params)
        chex.assert_trees_all_close(out_ours[:5], out_theirs[:5], rtol=1e-6)
        state_ours, state_theirs = out_ours[1], out_theirs[1]
        assert bool(out_ours[4]) == (t == 2)  # truncation at max_steps_in_episode


def test_acrobot_masses_change_the_dynamics(families):
    family = families["acrobot"]
    env = family.env
    params = family.sample(jax.random.PRNGKey(0), 2)
    assert isinstance(env, GymnaxEnvironment) and env.name == "Acrobot-v1"

    def step(p):
        _, state = env.reset(jax.random.PRNGKey(1), p)
        obs = state
        for key in jax.random.split(jax.random.PRNGKey(2), 10):
            obs, state, *_ = env.step_no_reset(key, state, jnp.int32(2), p)
        return obs

    obs = [step(jax.tree.map(lambda x, i=i: x[i], params)) for i in range(2)]
    assert not np.allclose(obs[0], obs[1], atol=1e-4)


def test_adapter_checks_actions(families):
    env = families["acrobot"].env
    params = env.default_params
    _, state = env.reset(jax.random.PRNGKey(0), params)
    with pytest.raises(TypeError, match="integer dtype"):
        env.step(jax.random.PRNGKey(1), state, jnp.float32(1.0), params)
    with pytest.raises(ValueError, match="action has shape"):
        env.step(jax.random.PRNGKey(1), state, jnp.array([1, 2]), params)


def test_from_gymnax_with_key_only_sampler_and_instance():
    gymnax_env, defaults = gymnax.make("CartPole-v1")

    def sample_length(key):
        return defaults.replace(length=jax.random.uniform(key, (), jnp.float32, 0.25, 1.0))

    family = from_gymnax(gymnax_env, sample_length, ranges={"train": {"length": (0.25, 1.0)}})
    assert family.name == "CartPole-v1" and family.splits == ("train", "test")
    key = jax.random.PRNGKey(0)
    train, test = family.sample(key, 4).length, family.sample(key, 4, "test").length
    assert train.shape == (4,) and not np.any(np.isclose(train, test))
    assert float(train.min()) >= 0.25 and float(train.max()) <= 1.0
    # a (key, split) sampler sees the split it is asked for
    seen = []

    def sample_by_split(key, split):
        seen.append(split)
        return defaults

    from_gymnax("CartPole-v1", sample_by_split, ranges={"ood": {}}).sample(key, 2, "ood")
    assert "ood" in seen


def test_from_gymnax_errors():
    _, defaults = gymnax.make("CartPole-v1")
    with pytest.raises(ValueError, match=r"unknown gymnax environment id 'Nope-v0'.*CartPole-v1"):
        from_gymnax("Nope-v0", lambda key: defaults)
    with pytest.raises(TypeError, match="env_or_id must be"):
        from_gymnax(42, lambda key: defaults)
    with pytest.raises(ValueError, match="'ood' split but sample_params\\(key\\)"):
        from_gymnax("CartPole-v1", lambda key: defaults, ranges={"ood": {"length": (1.0, 2.0)}})
    with pytest.raises(ValueError, match="ranges has unknown split"):
        from_gymnax("CartPole-v1", lambda key: defaults, ranges={"validation": {}})
    with pytest.raises(TypeError, match="sample_params\\('train'\\) returned a pytree"):
        from_gymnax("CartPole-v1", lambda key: {"length": jnp.float32(1.0)})
    with pytest.raises(TypeError, match="sample_params must accept"):
        from_gymnax("CartPole-v1", lambda: defaults)
    with pytest.raises(TypeError, match="sample_params must be a callable"):
        from_gymnax("CartPole-v1", "not a function")


def test_our_envs_work_with_gymnax_wrappers_and_adapter():
    """Our envs are gymnax envs: gymnax's LogWrapper runs them, from_gymnax accepts them."""
    from gymnax.wrappers.purerl import LogWrapper

    env = Navigation2D()
    params = env.default_params.replace(goal=jnp.array([0.3, 0.0]), max_steps_in_episode=4)
    wrapped = LogWrapper(env)
    _, state = wrapped.reset(jax.random.PRNGKey(0), params)
    infos = []
    for key in jax.random.split(jax.random.PRNGKey(1), 4):
        _, state, _, _, _, info = wrapped.step(key, state, jnp.array([0.1, 0.0]), params)
        infos.append(info)
    # the third move reaches the goal: rewards -0.2, -0.1, 0 and the episode ends
    assert [bool(i["returned_episode"]) for i in infos] == [False, False, True, False]
    assert float(infos[2]["returned_episode_returns"]) == pytest.approx(-0.3, abs=1e-5)
    assert int(infos[2]["returned_episode_lengths"]) == 3
    family = from_gymnax(env, lambda key: params, name="fixed-goal")
    assert family.env is env and family.name == "fixed-goal"
    assert isinstance(family, TaskFamily)
