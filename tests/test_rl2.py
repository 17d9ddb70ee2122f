"""RL² (Duan et al. 2016): trial rollouts, recurrent PPO loss, learning on bandits."""

import dataclasses
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import metarl_jax
from metarl_jax.algorithms import rl2
from metarl_jax.core.rollout import episode_returns, task_features

EPISODE_LENGTH = 3
TRIAL_EPISODES = 3


def tiny_config(**overrides):
    fields = dict(trial_episodes=TRIAL_EPISODES, meta_batch_size=4, hidden_size=8,
                  num_epochs=1, num_minibatches=2)
    fields.update(overrides)
    return rl2.Config(**fields)


@pytest.fixture(scope="module")
def mdp_family():
    return metarl_jax.make("tabular-mdp", states=3, actions=2, episode_length=EPISODE_LENGTH)


@pytest.fixture(scope="module")
def stepwise(mdp_family):
    """Learner whose truncated-BPTT chunks are single steps: the hidden state of every step."""
    learner = rl2.make(tiny_config(bptt_length=1), mdp_family)
    params = learner.init(jax.random.PRNGKey(0)).params
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    run = jax.jit(learner.run_trials, static_argnums=3)
    trials = run(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    return learner, params, tasks, trials, run


@pytest.fixture(scope="module")
def whole(mdp_family, stepwise):
    """The same trials, BPTT over the whole trial, and the loss's arguments."""
    _, params, tasks, _, _ = stepwise
    learner = rl2.make(tiny_config(bptt_length=None), mdp_family)
    trials = jax.jit(learner.run_trials, static_argnums=3)(
        params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    adv, returns = jax.jit(learner.advantages)(trials)
    return learner, trials, adv, returns, jax.jit(learner.loss)


# -- config ----------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("trial_episodes", 0), ("meta_batch_size", -4), ("hidden_size", 0), ("num_epochs", 0),
    ("num_minibatches", 0), ("horizon", 0), ("bptt_length", 0), ("learning_rate", 0.0),
    ("max_grad_norm", -1.0), ("clip_eps", 0.0), ("reward_scale", 0.0),
    ("entropy_coef", -0.1), ("value_coef", -1.0), ("gamma", 1.5), ("gae_lambda", -0.1),
    ("eval_policy", "greedy"), ("eval_episodes", 0), ("hidden_size", 2.5),
    ("trial_episodes", True), ("learning_reward", "mean"),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        rl2.Config(**{field: value})


@pytest.mark.parametrize("field", ["head_hidden_sizes", "embed_hidden_sizes"])
@pytest.mark.parametrize("value", [(0,), (16, -1), [16], (2.5,), (True,)])
def test_config_rejects_bad_layer_sizes(field, value):
    with pytest.raises(ValueError, match=field):
        rl2.Config(**{field: value})


@pytest.mark.parametrize("field", ["previous_obs_input", "time_input", "separate_value",
                                   "privileged_value"])
def test_config_rejects_non_bool_flags(field):
    with pytest.raises(ValueError, match=field):
        rl2.Config(**{field: 1})


def test_separate_value_gru_owns_the_value(mdp_family):
    """separate_value: a second GRU (the paper's recurrent baseline) carries its own half of
    the state; the policy never reads it and the value never reads the policy's GRU. The
    trial and the PPO loss are the same with one-step chunks as over the whole trial."""
    network = rl2.RL2Network(hidden_size=8, action_dim=3, discrete=True, separate_value=True)
    assert network.state_size == 16
    hidden = jax.random.normal(jax.random.PRNGKey(3), (16,))
    inputs = jnp.ones((5,))
    params = network.init(jax.random.PRNGKey(0), hidden, inputs)
    assert set(params["params"]) == {"gru", "value_gru", "policy", "value"}

    def outputs(p, h):
        h2, dist, value = network.apply(p, h, inputs)
        return h2, dist.logits, value

    _, logits, value = outputs(params, hidden)
    # each output depends only on its own GRU's parameters and its own half of the state
    dpol = jax.jacobian(lambda p: outputs(p, hidden)[1])(params)["params"]
    dval = jax.jacobian(lambda p: outputs(p, hidden)[2])(params)["params"]
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(dpol["value_gru"]))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(dval["gru"]))
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(dval["value_gru"]))
    _, logits2, value2 = outputs(params, hidden.at[8:].add(1.0))
    np.testing.assert_array_equal(logits, logits2)
    assert not np.allclose(value, value2)
    _, logits3, value3 = outputs(params, hidden.at[:8].add(1.0))
    np.testing.assert_array_equal(value, value3)
    assert not np.allclose(logits, logits3)

    config = tiny_config(separate_value=True)
    stepwise = rl2.make(dataclasses.replace(config, bptt_length=1), mdp_family)
    whole = rl2.make(config, mdp_family)
    params = whole.init(jax.random.PRNGKey(0)).params
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    step_trials = stepwise.run_trials(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    trials = whole.run_trials(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    chex.assert_shape(step_trials.chunk_state, (4, TRIAL_EPISODES * EPISODE_LENGTH, 16))
    np.testing.assert_array_equal(step_trials.chunk_state[:, 0], 0.0)
    np.testing.assert_allclose(step_trials.flat(step_trials.value), trials.flat(trials.value),
                               rtol=1e-5, atol=1e-6)
    adv, returns = whole.advantages(trials)
    b, k, c = step_trials.valid.shape
    chunk_loss, _ = stepwise.loss(
        params, step_trials.chunk_state.reshape(b * k, -1),
        step_trials.inputs.reshape(b * k, c, -1), step_trials.action.reshape(b * k, c),
        step_trials.log_prob.reshape(b * k, c), adv.reshape(b * k, c),
        returns.reshape(b * k, c), step_trials.valid.reshape(b * k, c))
    loss, _ = whole.loss(params, trials.chunk_state[:, 0], trials.inputs[:, 0],
                         trials.action[:, 0], trials.log_prob[:, 0], adv, returns,
                         trials.valid[:, 0])
    np.testing.assert_allclose(chunk_loss, loss, rtol=1e-5)


def test_previous_obs_input_is_the_state_the_previous_action_was_taken_in(mdp_family):
    """With previous_obs_input the input is [obs_t, obs_{t-1}, a_{t-1}, r_{t-1}, d_{t-1}];
    obs_{t-1} is zero at the trial start and, after an episode ends, the last state of the
    finished episode (not the reset state), so (obs_{t-1}, a_{t-1}, r_{t-1}) is one transition."""
    learner = rl2.make(tiny_config(previous_obs_input=True, embed_hidden_sizes=(6,),
                                   head_hidden_sizes=(5,)), mdp_family)
    params = learner.init(jax.random.PRNGKey(0)).params
    assert set(params["params"]) >= {"embed_0", "gru", "policy_hidden_0", "value_hidden_0"}
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    trials = learner.run_trials(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    inputs = np.asarray(trials.flat(trials.inputs))  # [B, T, 3 + 3 + 2 + 2]
    assert inputs.shape[-1] == 3 + 3 + 2 + 2
    obs, prev_obs = inputs[..., :3], inputs[..., 3:6]
    np.testing.assert_array_equal(prev_obs[:, 0], 0.0)
    np.testing.assert_array_equal(prev_obs[:, 1:], obs[:, :-1])
    # every episode starts in state 0; the step after a boundary still sees where it ended
    starts = np.arange(EPISODE_LENGTH, EPISODE_LENGTH * TRIAL_EPISODES, EPISODE_LENGTH)
    np.testing.assert_array_equal(obs[:, starts, 0], 1.0)
    np.testing.assert_array_equal(inputs[:, starts, -1], 1.0)  # done flag of the previous step
    assert not np.array_equal(prev_obs[:, starts], obs[:, starts])


def test_time_input_is_the_fraction_of_the_trial_played(mdp_family):
    """With time_input the input ends with t / T, after d_{t-1} and before the privileged
    task features; evaluation trials of another length count against their own T."""
    learner = rl2.make(tiny_config(time_input=True, privileged_value=True), mdp_family)
    params = learner.init(jax.random.PRNGKey(0)).params
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    privileged = int(task_features(jax.tree.map(lambda x: x[0], tasks)).shape[0])
    for episodes in (TRIAL_EPISODES, 2):
        trials = learner.run_trials(params, tasks, jax.random.PRNGKey(2), episodes)
        inputs = np.asarray(trials.flat(trials.inputs))  # [B, T, 3 + 2 + 2 + 1 + P]
        total = episodes * EPISODE_LENGTH
        assert inputs.shape[-1] == 3 + 2 + 2 + 1 + privileged
        elapsed = inputs[..., 3 + 2 + 2]
        np.testing.assert_allclose(elapsed, np.broadcast_to(np.arange(total) / total,
                                                             elapsed.shape), rtol=1e-6)
        features = np.asarray(jax.vmap(task_features)(tasks))  # [B, P]
        np.testing.assert_allclose(inputs[..., -privileged:],
                                   np.broadcast_to(features[:, None], inputs[..., -privileged:].shape))


def test_mlp_heads_read_gru_output_and_current_input():
    """Default: the paper's linear heads; with head_hidden_sizes, one ReLU MLP per head on
    [GRU output, input], so the logits depend on the input beyond the GRU update."""
    linear = rl2.RL2Network(hidden_size=8, action_dim=3, discrete=True)
    mlp = rl2.RL2Network(hidden_size=8, action_dim=3, discrete=True, head_hidden_sizes=(16, 4))
    hidden, inputs = jnp.zeros((8,)), jnp.ones((5,))
    linear_params = linear.init(jax.random.PRNGKey(0), hidden, inputs)["params"]
    mlp_params = mlp.init(jax.random.PRNGKey(0), hidden, inputs)["params"]
    assert set(linear_params) == {"gru", "policy", "value"}
    assert set(mlp_params) == {"gru", "policy", "value", "policy_hidden_0", "policy_hidden_1",
                               "value_hidden_0", "value_hidden_1"}
    assert mlp_params["policy_hidden_0"]["kernel"].shape == (8 + 5, 16)
    assert mlp_params["policy"]["kernel"].shape == (4, 3)
    # the head's kernel rows for the input act on the input directly: perturbing them
    # changes the logits even though the GRU (and its output) are unchanged
    bumped = jax.tree.map(lambda x: x, mlp_params)
    bumped["policy_hidden_0"]["kernel"] = bumped["policy_hidden_0"]["kernel"].at[8:].add(1.0)
    _, dist, value = mlp.apply({"params": mlp_params}, hidden, inputs)
    _, dist2, value2 = mlp.apply({"params": bumped}, hidden, inputs)
    assert not np.allclose(dist.logits, dist2.logits)
    np.testing.assert_allclose(value, value2)  # the value head has its own layers


def test_config_minibatches_must_divide_batch():
    with pytest.raises(ValueError, match="num_minibatches"):
        rl2.Config(meta_batch_size=10, num_minibatches=4)


def test_make_rejects_wrong_config_type(mdp_family):
    with pytest.raises(TypeError, match="rl2.Config"):
        rl2.make({"hidden_size": 8}, mdp_family)


# -- trial rollout: hidden state across episodes, reset between trials -----------------


def test_trial_shapes_and_episode_structure(stepwise):
    learner, _, _, trials, _ = stepwise
    steps = TRIAL_EPISODES * EPISODE_LENGTH
    chex.assert_shape(trials.chunk_state, (4, steps, 8))
    chex.assert_shape(trials.inputs, (4, steps, 1, 3 + 2 + 2))  # obs, one-hot action, r, d
    chex.assert_shape([trials.reward, trials.valid, trials.done], (4, steps, 1))
    flat_done = np.asarray(trials.flat(trials.done))
    expected_done = (np.arange(steps) % EPISODE_LENGTH) == EPISODE_LENGTH - 1
    np.testing.assert_array_equal(flat_done, np.broadcast_to(expected_done, (4, steps)))
    np.testing.assert_array_equal(trials.flat(trials.episode)[0],
                                  np.arange(steps) // EPISODE_LENGTH)
    assert bool(jnp.all(trials.valid))
    inputs = np.asarray(trials.flat(trials.inputs))
    # the previous-done input is 1 exactly at the first step of episodes 2..n
    prev_done = np.concatenate([np.zeros((4, 1), bool), flat_done[:, :-1]], axis=1)
    np.testing.assert_array_equal(inputs[..., -1], prev_done * 1.0)
    # episodes start in state 0 (one-hot obs), the previous action is one-hot
    np.testing.assert_array_equal(inputs[:, ::EPISODE_LENGTH, 0], 1.0)
    np.testing.assert_array_equal(inputs[:, 1:, 3:5].sum(-1), 1.0)


def test_hidden_state_is_zero_at_trial_start_and_carried_across_episodes(stepwise):
    learner, params, _, trials, _ = stepwise
    hidden = np.asarray(trials.chunk_state)  # [B, T, H]: the state before each step
    np.testing.assert_array_equal(hidden[:, 0], 0.0)
    # every later state is exactly one GRU step from the previous one, also at the
    # first step of a new episode (t = 3, 6): nothing resets inside a trial
    next_hidden, _, _ = learner.network.apply(params, trials.chunk_state[:, :-1],
                                              trials.inputs[:, :-1, 0])
    np.testing.assert_allclose(hidden[:, 1:], next_hidden, rtol=1e-5, atol=1e-6)
    for t in range(EPISODE_LENGTH, TRIAL_EPISODES * EPISODE_LENGTH, EPISODE_LENGTH):
        assert np.all(np.abs(hidden[:, t]).max(-1) > 1e-3), f"state reset at episode start t={t}"


def test_every_trial_starts_fresh(stepwise, mdp_family):
    """A trial depends only on its own task and key: nothing leaks between trials."""
    _, params, tasks, trials, run = stepwise
    others = mdp_family.sample(jax.random.PRNGKey(7), 4)
    mixed = jax.tree.map(lambda t, o: o.at[2].set(t[2]), tasks, others)
    trials_mixed = run(params, mixed, jax.random.PRNGKey(2), TRIAL_EPISODES)
    for field in ("chunk_state", "inputs", "action", "reward"):
        np.testing.assert_allclose(getattr(trials_mixed, field)[2], getattr(trials, field)[2],
                                   rtol=1e-5, atol=1e-6, err_msg=field)
    assert not np.allclose(trials_mixed.reward[0], trials.reward[0])


def test_chunking_does_not_change_the_trial(stepwise, whole):
    """Whole-trial and one-step chunks give the same rollout and the same PPO loss."""
    learner, params, _, trials, _ = stepwise
    _, trials_whole, adv, returns, whole_loss = whole
    for field in ("action", "reward", "log_prob", "value", "inputs"):
        np.testing.assert_allclose(trials.flat(getattr(trials, field)),
                                   trials_whole.flat(getattr(trials_whole, field)),
                                   rtol=1e-5, atol=1e-6, err_msg=field)
    b, k, c = trials.valid.shape
    chunk_loss, _ = jax.jit(learner.loss)(
        params, trials.chunk_state.reshape(b * k, -1), trials.inputs.reshape(b * k, c, -1),
        trials.action.reshape(b * k, c), trials.log_prob.reshape(b * k, c),
        adv.reshape(b * k, c), returns.reshape(b * k, c), trials.valid.reshape(b * k, c))
    loss, _ = whole_loss(
        params, trials_whole.chunk_state[:, 0], trials_whole.inputs[:, 0],
        trials_whole.action[:, 0], trials_whole.log_prob[:, 0], adv, returns,
        trials_whole.valid[:, 0])
    np.testing.assert_allclose(chunk_loss, loss, rtol=1e-5)


def test_gae_spans_episode_boundaries_and_stops_at_trial_end(mdp_family, stepwise):
    """With gamma = lambda = 1 and no normalisation the return is the trial's reward-to-go."""
    _, _, _, trials, _ = stepwise
    learner = rl2.make(tiny_config(bptt_length=1, gamma=1.0, gae_lambda=1.0,
                                   normalize_advantages=False, reward_scale=2.0), mdp_family)
    _, returns = jax.jit(learner.advantages)(trials)
    rewards = np.asarray(trials.flat(trials.reward)) * 2.0
    reward_to_go = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(returns, reward_to_go, rtol=1e-5, atol=1e-5)


def test_trial_ends_after_n_episodes_of_variable_length():
    """Padding steps after the n-th episode are invalid and excluded from the returns."""
    family = metarl_jax.make("bandit-bernoulli", arms=2)
    learner = rl2.make(tiny_config(horizon=2, bptt_length=4), family)
    params = learner.init(jax.random.PRNGKey(0)).params
    tasks = family.sample(jax.random.PRNGKey(1), 4)
    trials = jax.jit(learner.run_trials, static_argnums=3)(params, tasks,
                                                            jax.random.PRNGKey(2), 3)
    # 3 episodes x horizon 2 = 6 steps, padded to 2 chunks of 4
    chex.assert_shape(trials.valid, (4, 2, 4))
    np.testing.assert_array_equal(trials.flat(trials.valid)[0], [1, 1, 1, 1, 1, 1, 0, 0])
    returns = episode_returns(trials, 3)
    np.testing.assert_allclose(returns.sum(1), jnp.sum(trials.reward * trials.valid, (1, 2)))


# -- the recurrent PPO loss against finite differences ---------------------------------


def test_loss_gradient_matches_finite_differences(stepwise, whole):
    """Gradient of the recurrent PPO loss (BPTT through the whole trial) vs central differences."""
    _, params, _, _, _ = stepwise
    learner, trials, adv, returns, _ = whole
    # old log-probs away from the clipping kinks: some ratios inside, some clipped
    offsets = jax.random.choice(jax.random.PRNGKey(5), jnp.array([-0.6, -0.05, 0.05, 0.6]),
                                adv.shape)
    args = (trials.chunk_state[:, 0], trials.inputs[:, 0], trials.action[:, 0],
            trials.log_prob[:, 0] + offsets, adv, returns + 0.3, trials.valid[:, 0])
    loss = jax.jit(lambda p: learner.loss(p, *args)[0])
    grads = jax.grad(loss)(params)
    flat, unravel = ravel_pytree(params)
    flat_grads, _ = ravel_pytree(grads)
    assert float(jnp.linalg.norm(flat_grads)) > 1e-2
    eps = 1e-2
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(6), 4)):
        direction = jax.random.normal(key, flat.shape)
        direction = direction / jnp.linalg.norm(direction)
        if i == 0:  # the steepest direction: a large, well-conditioned derivative
            direction = flat_grads / jnp.linalg.norm(flat_grads)
        numeric = (loss(unravel(flat + eps * direction))
                   - loss(unravel(flat - eps * direction))) / (2 * eps)
        analytic = jnp.dot(flat_grads, direction)
        np.testing.assert_allclose(numeric, analytic, rtol=1e-2,
                                   atol=1e-3 * float(jnp.linalg.norm(flat_grads)))


# -- transformer memory ------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (dict(memory="lstm"), "memory must be one of"),
    (dict(memory="transformer", num_heads=3), "divisible by num_heads=3"),
    (dict(memory="transformer", bptt_length=2), "bptt_length must be None"),
    (dict(memory="transformer", separate_value=True), "separate_value is a GRU option"),
    (dict(memory="transformer", num_layers=0), "num_layers must be a positive integer"),
])
def test_config_rejects_bad_memory_options(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.fixture(scope="module")
def transformer(mdp_family):
    """A 2-layer, 2-head transformer learner and one batch of its trials."""
    learner = rl2.make(tiny_config(memory="transformer", num_heads=2, previous_obs_input=True),
                       mdp_family)
    params = learner.init(jax.random.PRNGKey(0)).params
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    run = jax.jit(learner.run_trials, static_argnums=3)
    return learner, params, tasks, run(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)


def test_transformer_whole_trial_equals_its_steps(transformer):
    """The loss's all-at-once pass gives the rollout's step-by-step outputs, and the
    memory the rollout starts each trial from is empty."""
    learner, params, _, trials = transformer
    empty = learner.network.init_state((4, 1))
    chex.assert_trees_all_equal(trials.chunk_state, empty)
    first = jax.tree.map(lambda x: x[:, 0], trials.chunk_state)
    dist, value = jax.jit(learner.sequence)(params, first, trials.inputs[:, 0])
    np.testing.assert_allclose(value, trials.value[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.log_prob(trials.action[:, 0]), trials.log_prob[:, 0],
                               rtol=1e-5, atol=1e-5)
    # the batched step (no in-place write) matches too
    hidden, step_value = empty, []
    for t in range(trials.inputs.shape[2]):
        hidden, _, v = learner.network.apply(params, hidden, trials.inputs[:, :, t])
        step_value.append(v[:, 0])
    np.testing.assert_array_equal(hidden["count"], trials.inputs.shape[2])
    np.testing.assert_allclose(jnp.stack(step_value, 1), trials.value[:, 0], rtol=1e-5,
                               atol=1e-5)


def test_transformer_attends_across_episodes_and_only_to_the_past(transformer):
    """Changing the reward seen at step 1 changes the outputs of every later step, those
    of the next episodes too, and none before it."""
    learner, params, _, trials = transformer
    inputs = trials.inputs[:, 0]                          # [B, T, in]; reward is input -2
    changed = inputs.at[:, 1, -2].add(3.0)
    outputs = jax.jit(learner.sequence)
    (dist, value), (dist2, value2) = [outputs(params, None, x)
                                      for x in (inputs, changed)]
    diff = np.abs(np.asarray(value2 - value)) + np.abs(np.asarray(
        dist2.logits - dist.logits)).sum(-1)
    np.testing.assert_array_equal(diff[:, :1], 0.0)
    assert np.all(diff[:, 1:] > 1e-7), "a later step did not see the earlier reward"


def test_transformer_trial_beyond_its_memory_raises(transformer):
    learner, params, tasks, _ = transformer
    with pytest.raises(ValueError, match="exceeds the transformer memory's 9 slots"):
        learner.run_trials(params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES + 1)
    longer = rl2.make(dataclasses.replace(learner.config, eval_episodes=5), learner.family)
    assert longer.network.max_len == 5 * EPISODE_LENGTH


def test_transformer_loss_gradient_matches_finite_differences(transformer):
    learner, params, _, trials = transformer
    adv, returns = jax.jit(learner.advantages)(trials)
    args = (None, trials.inputs[:, 0], trials.action[:, 0],
            trials.log_prob[:, 0] + 0.05, adv, returns + 0.3, trials.valid[:, 0])
    loss = jax.jit(lambda p: learner.loss(p, *args)[0])
    flat, unravel = ravel_pytree(params)
    flat_grads, _ = ravel_pytree(jax.grad(loss)(params))
    eps = 1e-2
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(6), 3)):
        direction = jax.random.normal(key, flat.shape)
        if i == 0:
            direction = flat_grads
        direction = direction / jnp.linalg.norm(direction)
        numeric = (loss(unravel(flat + eps * direction))
                   - loss(unravel(flat - eps * direction))) / (2 * eps)
        np.testing.assert_allclose(numeric, jnp.dot(flat_grads, direction), rtol=1e-2,
                                   atol=1e-3 * float(jnp.linalg.norm(flat_grads)))


def test_transformer_update_compiles_once(transformer):
    learner = transformer[0]
    update = jax.jit(chex.assert_max_traces(learner.update, n=1))
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(2):
        state, metrics = update(state, jax.random.PRNGKey(i))
    assert np.isfinite(float(metrics["policy_loss"])) and float(metrics["grad_norm"]) > 0


# -- variance reductions: expected-reward signal, privileged value ----------------------


@pytest.mark.parametrize("memory", rl2.MEMORIES)
def test_expected_reward_signal_and_privileged_value(mdp_family, memory):
    """learning_reward="expected": the reward PPO learns from is mean_rewards[s, a] of each
    step while the policy's input keeps the sampled reward. privileged_value: the task's
    parameters reach the value head only; the policy's outputs do not depend on them."""
    extra = {"num_heads": 2} if memory == "transformer" else {}
    learner = rl2.make(tiny_config(memory=memory, learning_reward="expected",
                                   privileged_value=True, **extra), mdp_family)
    plain = rl2.make(tiny_config(memory=memory, **extra), mdp_family)
    tasks = mdp_family.sample(jax.random.PRNGKey(1), 4)
    features = jax.vmap(task_features)(tasks)
    chex.assert_shape(features, (4, 3 * 2 * 3 + 3 * 2 + 1))  # transitions, means, noise std
    state = learner.init(jax.random.PRNGKey(0))
    trials = jax.jit(learner.run_trials, static_argnums=3)(
        state.params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    plain_trials = jax.jit(plain.run_trials, static_argnums=3)(
        plain.init(jax.random.PRNGKey(0)).params, tasks, jax.random.PRNGKey(2), TRIAL_EPISODES)
    # the task features ride at the end of every input; the learning signal is the mean
    # reward of the state-action taken, the plain learner's is the sampled reward
    inputs = trials.flat(trials.inputs)                                   # [B, T, in + F]
    np.testing.assert_array_equal(inputs[..., -features.shape[1]:],
                                  np.broadcast_to(features[:, None], inputs.shape[:2]
                                                  + features.shape[1:]))
    obs = inputs[..., :3]
    state_index = np.argmax(np.asarray(obs), axis=-1)                     # [B, T]
    action = np.asarray(trials.flat(trials.action))
    means = np.asarray(tasks.mean_rewards)
    expected = means[np.arange(4)[:, None], state_index, action]
    np.testing.assert_allclose(trials.flat(trials.learning_reward), expected, rtol=1e-6)
    assert not np.allclose(trials.flat(trials.reward), expected)  # rewards stay noisy
    np.testing.assert_array_equal(plain_trials.learning_reward, plain_trials.reward)
    # the advantages are computed from the learning signal
    adv, returns = learner.advantages(trials)
    shifted = trials.replace(reward=trials.reward + 100.0)
    chex.assert_trees_all_close(learner.advantages(shifted), (adv, returns))

    # the policy ignores the privileged features, the value reads them
    hidden = None if memory == "transformer" else trials.chunk_state[:, 0]
    other = inputs.at[..., -features.shape[1]:].set(features[::-1, None])
    dist, value = learner.sequence(state.params, hidden, inputs)
    dist2, value2 = learner.sequence(state.params, hidden, other)
    np.testing.assert_allclose(dist.logits, dist2.logits, rtol=1e-6, atol=1e-7)
    assert not np.allclose(value, value2)
    assert "privileged_value" in state.params["params"]
    _, aux = learner.loss(state.params, hidden, inputs, trials.flat(trials.action),
                          trials.flat(trials.log_prob), adv, returns,
                          trials.flat(trials.valid))
    assert np.isfinite(float(aux["value_loss"]))


def test_expected_reward_needs_an_env_that_reports_it():
    family = metarl_jax.make("cartpole", max_steps_in_episode=5)
    with pytest.raises(TypeError, match="info\\['expected_reward'\\]"):
        rl2.make(tiny_config(learning_reward="expected"), family)
    learner = rl2.make(tiny_config(privileged_value=True), family)  # its params are features
    assert learner.network.privileged_dim == int(
        task_features(family.sample_params(jax.random.PRNGKey(0))).shape[0])


def test_bandit_reports_the_pulled_arms_mean():
    family = metarl_jax.make("bandit-bernoulli", arms=3)
    params = family.sample_params(jax.random.PRNGKey(0))
    obs, env_state = family.env.reset(jax.random.PRNGKey(1), params)
    for arm in range(3):
        *_, info = family.env.step(jax.random.PRNGKey(2), env_state, arm, params)
        assert float(info["expected_reward"]) == pytest.approx(float(params.arm_means[arm]))


# -- update and evaluate ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bandit_learner():
    family = metarl_jax.make("bandit-bernoulli", arms=2)
    return rl2.make(tiny_config(trial_episodes=5, meta_batch_size=8, bptt_length=2), family)


def test_update_compiles_once_and_reports_metrics(bandit_learner):
    update = jax.jit(chex.assert_max_traces(bandit_learner.update, n=1))
    state = bandit_learner.init(jax.random.PRNGKey(0))
    for i in range(3):
        state, metrics = update(state, jax.random.PRNGKey(i))
    assert int(state.step) == 3
    for name in ("mean_trial_return", "policy_loss", "value_loss", "entropy", "approx_kl",
                 "grad_norm", "env_steps"):
        assert metrics[name].dtype == jnp.float32 and metrics[name].shape == (), name
        assert np.isfinite(metrics[name]), name
    assert float(metrics["env_steps"]) == 8 * 5
    assert 0.0 <= float(metrics["mean_trial_return"]) <= 5.0


def test_evaluate_returns_per_episode_curve(bandit_learner):
    """One point per episode of the evaluation trial: num_steps episodes, by default
    eval_episodes (else trial_episodes); the curves carry x = 1..n and its label."""
    state = bandit_learner.init(jax.random.PRNGKey(0))
    tasks = bandit_learner.family.sample(jax.random.PRNGKey(1), 6, "test")
    evaluate = jax.jit(bandit_learner.evaluate, static_argnums=3)
    curves = evaluate(state, tasks, jax.random.PRNGKey(2))
    chex.assert_shape(curves["rl2"], (6, 5))
    assert curves.x == (1, 2, 3, 4, 5) and curves.xlabel == "episode in trial"
    assert curves.learner == "rl2" and curves.baselines == ()
    assert set(np.unique(np.asarray(curves["rl2"]))) <= {0.0, 1.0}
    three = evaluate(state, tasks, jax.random.PRNGKey(2), 3)
    chex.assert_shape(three["rl2"], (6, 3))
    assert three.x == (1, 2, 3)
    # the first episodes of a longer trial are played with the same keys: same rewards
    np.testing.assert_array_equal(three["rl2"], curves["rl2"][:, :3])
    with pytest.raises(ValueError, match="num_steps"):
        bandit_learner.evaluate(state, tasks, jax.random.PRNGKey(2), 0)
    longer = rl2.make(dataclasses.replace(bandit_learner.config, eval_episodes=7,
                                          eval_policy="mode"), bandit_learner.family)
    curve = jax.jit(longer.evaluate)(state, tasks, jax.random.PRNGKey(2))["rl2"]
    chex.assert_shape(curve, (6, 7))
    assert set(np.unique(np.asarray(curve))) <= {0.0, 1.0}


def test_continuous_actions_run(in_ci):
    """Box action spaces: Gaussian head, the action vector is the previous-action input."""
    family = metarl_jax.make("navigation2d", max_steps_in_episode=4)
    learner = rl2.make(tiny_config(trial_episodes=2), family)
    state = learner.init(jax.random.PRNGKey(0))
    trials = jax.jit(learner.run_trials, static_argnums=3)(
        state.params, family.sample(jax.random.PRNGKey(1), 4), jax.random.PRNGKey(2), 2)
    chex.assert_shape(trials.action, (4, 1, 8, 2))
    chex.assert_shape(trials.inputs, (4, 1, 8, 2 + 2 + 2))
    assert bool(jnp.all(jnp.isfinite(trials.log_prob)))
    assert "log_std" in state.params["params"]
    # the PPO update recomputes the Gaussian over whole sequences (a scan over steps)
    new_state, metrics = jax.jit(learner.update)(state, jax.random.PRNGKey(3))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert not np.array_equal(new_state.params["params"]["log_std"],
                              state.params["params"]["log_std"])


MESH_SCRIPT = """
import json, jax, numpy as np, metarl_jax
from metarl_jax.algorithms import rl2
from metarl_jax.sharding import task_mesh
family = metarl_jax.make("bandit-bernoulli", arms=2)
config = rl2.Config(trial_episodes=3, meta_batch_size=4, hidden_size=8, num_minibatches=2)
single, sharded = rl2.make(config, family), rl2.make(config, family, mesh=task_mesh())
state = single.init(jax.random.PRNGKey(0))
tasks = family.sample(jax.random.PRNGKey(1), 4)
trials = [jax.jit(l.run_trials, static_argnums=3)(state.params, tasks, jax.random.PRNGKey(2), 3)
          for l in (single, sharded)]
metrics = [jax.jit(l.update)(state, jax.random.PRNGKey(3))[1] for l in (single, sharded)]
print(json.dumps({
    "devices": len(trials[1].reward.sharding.device_set),
    "spec": str(trials[1].reward.sharding.spec),
    "same_trials": bool(np.array_equal(trials[0].reward, trials[1].reward)),
    "loss": [float(m["policy_loss"]) for m in metrics],
}))
"""


def test_task_axis_sharded_over_two_devices():
    """With a mesh, trials are split over the "tasks" axis and nothing else changes."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", MESH_SCRIPT], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and "tasks" in report["spec"]
    assert report["same_trials"]
    np.testing.assert_allclose(*report["loss"], rtol=1e-4, atol=1e-6)


# -- learning ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("memory", rl2.MEMORIES)
def test_rl2_beats_random_on_two_armed_bandit(in_ci, memory):
    """n = 10 pulls of a 2-armed bandit, p ~ U[0, 1]: random gets 5.0, the oracle 6.67."""
    family = metarl_jax.make("bandit-bernoulli", arms=2)
    iterations = 40 if in_ci else 100
    config = rl2.Config(trial_episodes=10, meta_batch_size=256, hidden_size=64,
                        learning_rate=3e-3, memory=memory,
                        **({"num_layers": 1} if memory == "transformer" else {}))
    learner = rl2.make(config, family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    for key in jax.random.split(jax.random.PRNGKey(1), iterations):
        state, metrics = update(state, key)
    tasks = family.sample(jax.random.PRNGKey(2), 1000, "test")
    curve = jax.jit(learner.evaluate)(state, tasks, jax.random.PRNGKey(3))["rl2"]
    trial_returns = curve.sum(axis=1)
    standard_error = float(trial_returns.std() / np.sqrt(1000))
    # random play: 5.0 with a standard error of about 0.06 on 1000 trials
    assert float(trial_returns.mean()) > 5.0 + max(0.4, 6 * standard_error)
    # it explores, then exploits: later pulls pay more than the first
    assert float(curve[:, -3:].mean()) > float(curve[:, 0].mean()) + 0.05


def test_imitation_teacher_targets_follow_the_posterior_mean(stepwise):
    """benchmarks/rl2_mdp_imitation.py labels each step with the myopic teacher's choice given
    the trial so far: uniform over the current state's actions whose posterior-mean reward
    (1 + sum) / (1 + count) over *earlier* steps is highest. Checked against a plain loop."""
    module = _benchmark_module("rl2_mdp_imitation")
    _, _, _, trials, _ = stepwise
    num_states, num_actions = 3, 2
    target = np.asarray(module.myopic_targets(trials, num_states, num_actions))
    inputs = np.asarray(trials.flat(trials.inputs))
    actions = np.asarray(trials.flat(trials.action))
    rewards = np.asarray(trials.flat(trials.reward))
    batch, steps = actions.shape
    assert target.shape == (batch, steps, num_actions)
    for b in range(batch):
        sums = np.zeros((num_states, num_actions))
        counts = np.zeros((num_states, num_actions))
        for t in range(steps):
            s = int(np.argmax(inputs[b, t, :num_states]))
            mean = (1.0 + sums[s]) / (1.0 + counts[s])
            best = np.isclose(mean, mean.max(), atol=1e-5)
            np.testing.assert_allclose(target[b, t], best / best.sum(), atol=1e-6)
            sums[s, actions[b, t]] += rewards[b, t]
            counts[s, actions[b, t]] += 1
    # the first step sees no rewards: every action ties
    np.testing.assert_allclose(target[:, 0], 1.0 / num_actions)


def _benchmark_module(name):
    """Import ``benchmarks/<name>.py`` as a module (the scripts import only the library)."""
    import importlib.util
    module_name = f"benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks",
                        name + ".py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses in the script resolve their annotations
    spec.loader.exec_module(module)
    return module


def test_benchmark_training_resumes_exactly_from_its_checkpoint(tmp_path, capsys):
    """The RL² table scripts' training (``train_rl2``, the runner underneath, as with
    ``--checkpoint-dir``): a run stopped by its budget after its first iteration and
    resumed equals one uninterrupted run bit for bit, with the training time and env steps
    carried over; resuming with another config or seed raises, naming the field."""
    from metarl_jax.training import RunDirectoryError

    bench = _benchmark_module("rl2_bandits")
    family = metarl_jax.make("bandit-bernoulli", arms=2)
    config = tiny_config(trial_episodes=5)
    straight = bench.train_rl2(config, family, 20, 1e6, seed=3, run_dir=tmp_path / "straight",
                               log=None)
    assert straight.iterations == 20 and straight.resumed_from == 0
    directory = tmp_path / "cell"
    first = bench.train_rl2(config, family, 20, 1e-9, seed=3, run_dir=directory,
                            checkpoint_every=10)
    assert first.iterations == 1  # the tiny budget stops it after its first iteration
    resumed = bench.train_rl2(config, family, 20, 1e6, seed=3, run_dir=directory, resume=True,
                              checkpoint_every=10)
    assert "resumed from iteration 1" in capsys.readouterr().out
    assert resumed.iterations == 20 and resumed.resumed_from == 1
    assert resumed.env_steps == straight.env_steps and resumed.train_s > first.train_s
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), first.state.params,
                                         straight.state.params))
    with pytest.raises(RunDirectoryError, match=r"algorithm_config\.learning_rate: 0\.001 "
                                                r"\(checkpoint\) vs 0\.002 \(requested\)$"):
        bench.train_rl2(dataclasses.replace(config, learning_rate=2e-3), family, 20, 1e6,
                        seed=3, run_dir=directory, resume=True, log=None)
    with pytest.raises(RunDirectoryError, match=r"seed: 3 \(checkpoint\) vs 4 \(requested\)"):
        bench.train_rl2(config, family, 20, 1e6, seed=4, run_dir=directory, resume=True,
                        log=None)
