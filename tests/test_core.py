"""The shared core: the learner contract, AdaptationCurves, the trial rollout used on
its own, the PPO update, the validators, one tree_axpy, renamed config keys."""

from __future__ import annotations

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metarl_jax
from metarl_jax.core import (AdaptationCurves, MetaInputs, check_learner, episode_returns,
                             make_curves, run_trial, run_trials)
from metarl_jax.nn import Categorical, action_spec
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.training.config import ConfigError, config_from_dict
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_int_at_least, check_non_negative, check_positive,
                              check_positive_int, check_positive_int_tuple, tree_axpy)

# -- AdaptationCurves ------------------------------------------------------------------


def test_curves_carry_their_axis_and_pass_through_jit():
    def evaluate(offset):
        return make_curves({"mine": jnp.ones((3, 2)) + offset, "base": jnp.zeros((3, 2)),
                            "another": jnp.zeros((3, 2))},
                           [0, 1], "inner gradient steps")

    curves = jax.jit(evaluate)(1.0)
    assert isinstance(curves, AdaptationCurves)
    assert curves.x == (0, 1) and curves.xlabel == "inner gradient steps"
    assert curves.learner == "mine" and curves.baselines == ("another", "base")
    assert list(curves) == ["mine", "another", "base"] and len(curves) == 3
    np.testing.assert_array_equal(curves["mine"], 2.0)
    assert list(dict(curves.items())) == ["mine", "another", "base"]


def test_make_curves_rejects_inconsistent_curves():
    with pytest.raises(ValueError, match="at least one curve"):
        make_curves({}, [0], "x")
    with pytest.raises(ValueError, match=r"expected \[tasks, 3\]"):
        make_curves({"a": jnp.zeros((2, 2))}, [0, 1, 2], "x")
    with pytest.raises(ValueError, match="lack the learner's own curve 'b'"):
        make_curves({"a": jnp.zeros((2, 1))}, [0], "x", learner="b")


# -- the learner contract ---------------------------------------------------------------


def test_check_learner_names_what_breaks_the_contract():
    family = metarl_jax.make("bandit-bernoulli", arms=2)
    good = metarl_jax.algorithms.get("rl2").make(
        metarl_jax.algorithms.get("rl2").Config(meta_batch_size=4, hidden_size=4,
                                               num_minibatches=1, trial_episodes=2), family)
    check_learner(good)
    with pytest.raises(TypeError, match=r"lacks the contract field\(s\) \['key_metric'\]"):
        check_learner(type("L", (), {"init": None, "update": None, "evaluate": None,
                                     "config": None, "family": None})())
    with pytest.raises(TypeError, match="learner.update must accept 2 positional"):
        check_learner(good._replace(update=lambda state: state))
    with pytest.raises(TypeError, match="learner.init must be callable"):
        check_learner(good._replace(init=3))
    with pytest.raises(TypeError, match="key_metric must be a str"):
        check_learner(good._replace(key_metric=None))


# -- trials, used without any learner ---------------------------------------------------


def test_run_trial_carries_the_state_and_assembles_the_inputs():
    """A counting policy on a 3-armed bandit: it always pulls arm t % 3 and counts steps.

    The carried state must run on across the episodes (one pull each) and reset only
    at the trial's start; the inputs hold [obs, one-hot a_{t-1}, r_{t-1}, d_{t-1}, t/T]."""
    family = metarl_jax.make("bandit-bernoulli", arms=3)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    spec = action_spec(env.action_space(params0))
    horizon = int(params0.max_steps_in_episode)
    num_episodes = 6

    def policy_step(params, count, inputs):
        del params
        logits = jnp.where(jnp.arange(3) == count % 3, 0.0, -jnp.inf)
        return count + 1, Categorical(logits), jnp.float32(0.0)

    tasks = family.sample(jax.random.PRNGKey(1), 4, "test")
    trials = jax.jit(lambda p, k: run_trials(
        env, policy_step, jnp.int32(0), None, p, k, horizon=horizon,
        num_episodes=num_episodes, action_spec=spec, inputs=MetaInputs(time=True),
        chunk_length=2))(tasks, jax.random.PRNGKey(2))
    steps = num_episodes * horizon
    chex.assert_shape(trials.action, (4, steps // 2, 2))
    np.testing.assert_array_equal(trials.chunk_state, np.arange(0, steps, 2)[None].repeat(4, 0))
    actions = np.asarray(trials.flat(trials.action))
    np.testing.assert_array_equal(actions, np.arange(steps)[None].repeat(4, 0) % 3)
    inputs = np.asarray(trials.flat(trials.inputs))  # [B, T, in]
    obs_dim = inputs.shape[-1] - (3 + 2 + 1)
    prev_action = inputs[:, :, obs_dim:obs_dim + 3]
    np.testing.assert_array_equal(prev_action[:, 0], 0.0)           # nothing before the trial
    np.testing.assert_array_equal(prev_action[:, 1:].argmax(-1), actions[:, :-1])
    np.testing.assert_array_equal(inputs[:, 1:, obs_dim + 3], trials.flat(trials.reward)[:, :-1])
    np.testing.assert_allclose(inputs[:, :, -1], np.broadcast_to(np.arange(steps) / steps, (4, steps)),
                               rtol=1e-6)
    per_episode = episode_returns(trials, num_episodes)
    np.testing.assert_array_equal(per_episode.sum(1), trials.reward.sum((1, 2)))
    one = run_trial(env, policy_step, jnp.int32(0), None, params0, jax.random.PRNGKey(3),
                    num_episodes=2, horizon=horizon, action_spec=spec)
    chex.assert_shape(one.valid, (1, 2 * horizon))


# -- the PPO update ------------------------------------------------------------------------


def test_ppo_update_equals_the_hand_written_epochs():
    """SGD on a least-squares loss: the shared update takes exactly the minibatch steps
    of a loop over the same permutations."""
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    w0 = jnp.zeros(3)
    optimizer = optax.sgd(0.1)

    def loss(w, xb, yb):
        return jnp.mean((xb @ w - yb) ** 2), {"mean_y": jnp.mean(yb)}

    key = jax.random.PRNGKey(1)
    w, _, (losses, aux) = ppo_update(loss, optimizer, w0, optimizer.init(w0), (x, y), key,
                                     num_epochs=3, num_minibatches=2)
    chex.assert_shape(losses, (3, 2))
    chex.assert_shape(aux["grad_norm"], (3, 2))
    expected = w0
    for epoch_key in jax.random.split(key, 3):
        order = jax.random.permutation(epoch_key, 8)
        for batch in np.split(np.asarray(order), 2):
            expected = expected - 0.1 * jax.grad(lambda w: loss(w, x[batch], y[batch])[0])(expected)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    full, _, (full_losses, _) = ppo_update(loss, optimizer, w0, optimizer.init(w0), (x, y),
                                           None, num_epochs=2)
    chex.assert_shape(full_losses, (2,))
    step = w0 - 0.1 * jax.grad(lambda w: loss(w, x, y)[0])(w0)
    step = step - 0.1 * jax.grad(lambda w: loss(w, x, y)[0])(step)
    np.testing.assert_allclose(full, step, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_minibatches must be 1"):
        ppo_update(loss, optimizer, w0, optimizer.init(w0), (x, y), None, num_epochs=1,
                   num_minibatches=2)


# -- validators and tree arithmetic --------------------------------------------------------


@pytest.mark.parametrize("check, args, message", [
    (check_positive_int, ("n", 0), "n must be a positive integer, got 0"),
    (check_positive_int, ("n", True), "n must be a positive integer, got True"),
    (check_int_at_least, ("k", -1, 0), "k must be an integer >= 0, got -1"),
    (check_positive_int_tuple, ("h", (4, 0)), r"h must be a tuple of positive integers"),
    (lambda *a: check_positive_int_tuple(*a, allow_empty=False), ("h", ()),
     r"h must be a non-empty tuple"),
    (check_positive, ("lr", float("nan")), "lr must be positive, got nan"),
    (check_non_negative, ("c", -0.1), "c must be non-negative"),
    (check_in_unit_interval, ("gamma", 1.5), r"gamma must be in \[0, 1\]"),
    (check_bool, ("flag", 1), "flag must be a bool, got 1"),
    (check_choice, ("memory", "lstm", ("gru", "transformer")), "memory must be one of"),
])
def test_validators_name_the_field(check, args, message):
    with pytest.raises(ValueError, match=message):
        check(*args)


def test_validators_accept_good_values():
    check_positive_int("n", 3)
    check_int_at_least("k", 0, 0)
    check_positive_int_tuple("h", ())
    check_positive("lr", 1e-3)
    check_in_unit_interval("gamma", 1.0)
    check_choice("memory", "gru", ("gru", "transformer"))


def test_tree_axpy_is_alpha_x_plus_y():
    x, y = {"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([10.0, 20.0])}
    np.testing.assert_array_equal(tree_axpy(-0.5, x, y)["a"], [9.5, 19.0])
    alpha = {"a": jnp.array([2.0, 3.0])}  # per-leaf step sizes (Meta-SGD)
    np.testing.assert_array_equal(tree_axpy(alpha, x, y)["a"], [12.0, 26.0])


# -- renamed config keys ----------------------------------------------------------------------


def test_renamed_maml_keys_still_load_with_a_warning():
    from metarl_jax.algorithms import maml

    with pytest.warns(DeprecationWarning, match="'ppo_epochs' is now 'num_epochs'"):
        config = config_from_dict(maml.Config, {"ppo_epochs": 3, "ppo_clip": 0.1})
    assert config.num_epochs == 3 and config.clip_eps == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config_from_dict(maml.Config, {"num_epochs": 3}).num_epochs == 3
    with pytest.raises(ConfigError, match="sets both 'ppo_clip' and its new name 'clip_eps'"):
        config_from_dict(maml.Config, {"ppo_clip": 0.1, "clip_eps": 0.2})
    assert dataclasses.asdict(config).keys() >= {"num_epochs", "clip_eps"}


def test_every_learner_state_names_what_it_learns_params():
    """``state.params`` is the learned parameters of MAML's and RL²'s states alike."""
    from metarl_jax.algorithms import maml, rl2

    nav = metarl_jax.make("navigation2d", max_steps_in_episode=4)
    maml_state = maml.make(maml.Config(meta_batch_size=2, inner_episodes=2, horizon=4,
                                       hidden_sizes=(4,)), nav).init(jax.random.PRNGKey(0))
    assert maml_state.params is maml_state.meta_params
    rl2_state = rl2.make(rl2.Config(meta_batch_size=2, hidden_size=4, num_minibatches=1,
                                    trial_episodes=2), nav).init(jax.random.PRNGKey(0))
    assert jax.tree.structure(rl2_state.params) is not None
    assert "params" in {f.name for f in dataclasses.fields(rl2_state)}
