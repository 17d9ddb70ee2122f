"""VariBAD (Zintgraf et al. 2020): ELBO terms, the stopped policy gradient, learning on GridNavi."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metarl_jax
from metarl_jax.algorithms import varibad
from metarl_jax.nn.vae import gaussian_kl
from metarl_jax.players import gridnavi
from metarl_jax.training.runner import train

CI = os.environ.get("CI") == "true"


def tiny(**overrides):
    fields = dict(meta_batch_size=8, latent_dim=3, encoder_hidden_size=16,
                  policy_hidden_sizes=(16,), decoder_hidden_sizes=(16,), num_minibatches=2,
                  num_epochs=1, vae_updates=1)
    fields.update(overrides)
    return varibad.Config(**fields)


def small_gridnavi():
    return metarl_jax.make("gridnavi", size=3, episode_length=6)


def test_gaussian_kl_matches_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 4, 5)).astype(np.float32)
    lv1, lv2 = rng.normal(size=(2, 4, 5)).astype(np.float32)
    closed = 0.5 * np.sum(lv2 - lv1 + (np.exp(lv1) + (m1 - m2) ** 2) / np.exp(lv2) - 1.0, axis=-1)
    np.testing.assert_allclose(gaussian_kl(m1, lv1, m2, lv2), closed, rtol=1e-5)
    np.testing.assert_allclose(gaussian_kl(m1, lv1, m1, lv1), 0.0, atol=1e-6)


def test_policy_gradient_does_not_reach_the_encoder():
    family = small_gridnavi()
    learner = varibad.make(tiny(), family)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = family.sample(jax.random.PRNGKey(1), 4)
    trials = learner.run_trials(state.params, tasks, jax.random.PRNGKey(2), 4)

    def log_likelihood(params):  # the actions' log-probs, replayed through the rollout
        replay = learner.run_trials(params, tasks, jax.random.PRNGKey(2), 4)
        return jnp.sum(replay.log_prob * replay.valid)

    grads = jax.grad(log_likelihood)(state.params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["encoder"]))
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["policy"])) > 0.0
    # the PPO data's beliefs are what the policy acted on: replayed log-probs match
    inputs = trials.flat(trials.inputs)
    dist, _ = learner.policy.apply(state.params["policy"],
                                   learner.beliefs(state.params["encoder"], inputs))
    np.testing.assert_allclose(dist.log_prob(trials.flat(trials.action)),
                               trials.flat(trials.log_prob), atol=1e-5)


def test_update_moves_the_encoder_only_through_the_elbo():
    family = small_gridnavi()
    learner = varibad.make(tiny(), family)
    state = learner.init(jax.random.PRNGKey(0))
    new, _ = jax.jit(learner.update)(state, jax.random.PRNGKey(1))
    # same key, ELBO steps of (almost) zero size: the encoder stays put, the policy moves
    frozen = varibad.make(tiny(vae_learning_rate=1e-30), family)
    still, _ = jax.jit(frozen.update)(state, jax.random.PRNGKey(1))
    for a, b in zip(jax.tree.leaves(state.params["encoder"]),
                    jax.tree.leaves(still.params["encoder"])):
        np.testing.assert_allclose(a, b, atol=1e-20)
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(new.params["encoder"]))]
    assert max(moved) > 0.0
    np.testing.assert_allclose(jax.tree.leaves(still.params["policy"])[0],
                               jax.tree.leaves(new.params["policy"])[0])


@pytest.mark.parametrize("name, options, overrides", [
    ("gridnavi", {"size": 3, "episode_length": 6}, {}),
    ("bandit-bernoulli", {"arms": 3}, {"trial_episodes": 10}),
    ("navigation2d", {"max_steps_in_episode": 10}, {"trial_episodes": 2, "state_decoder": True}),
])
def test_decoder_loss_decreases_on_a_fixed_trial(name, options, overrides):
    family = metarl_jax.make(name, **options)
    learner = varibad.make(tiny(**overrides), family)
    state = learner.init(jax.random.PRNGKey(0))
    trials = learner.run_trials(state.params, family.sample(jax.random.PRNGKey(1), 16),
                                jax.random.PRNGKey(2), learner.config.trial_episodes)
    inputs, valid = trials.flat(trials.inputs), trials.flat(trials.valid)
    vae = {k: v for k, v in state.params.items() if k != "policy"}
    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(carry, key):
        vae, opt = carry
        (loss, _), grads = jax.value_and_grad(learner.vae_loss, has_aux=True)(
            vae, inputs, valid, key)
        updates, opt = optimizer.update(grads, opt, vae)
        return (optax.apply_updates(vae, updates), opt), loss

    _, losses = jax.lax.scan(step, (vae, optimizer.init(vae)),
                             jax.random.split(jax.random.PRNGKey(3), 300))
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-20:].mean() < 0.7 * losses[:5].mean()


def test_decoder_kinds():
    assert varibad.make(tiny(), small_gridnavi()).reward_decoder_kind == "multi_head"
    assert varibad.make(tiny(reward_decoder="mlp"), small_gridnavi()).reward_decoder_kind == "mlp"
    bandit = metarl_jax.make("bandit-bernoulli", arms=3)
    assert varibad.make(tiny(), bandit).reward_decoder_kind == "mlp"
    with pytest.raises(ValueError, match="multi_head.*gridnavi"):
        varibad.make(tiny(reward_decoder="multi_head"), bandit)


@pytest.mark.parametrize("field, value, match", [
    ("latent_dim", 0, "latent_dim"), ("meta_batch_size", 0, "meta_batch_size"),
    ("encoder_hidden_size", -1, "encoder_hidden_size"), ("state_embed", -1, "state_embed"),
    ("reward_decoder", "gaussian", "reward_decoder"), ("elbo_terms", 0, "elbo_terms"),
    ("vae_batch_trials", 100, "vae_batch_trials"), ("policy_activation", "gelu", "activation"),
    ("vae_buffer_trials", -1, "vae_buffer_trials"), ("vae_buffer_trials", 4, "smaller than"),
])
def test_bad_config_is_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(**{field: value})


def test_too_many_elbo_terms_and_wrong_config_type():
    with pytest.raises(ValueError, match="elbo_terms=100 exceeds"):
        varibad.make(tiny(elbo_terms=100), small_gridnavi())
    with pytest.raises(TypeError, match="varibad.Config"):
        varibad.make({"latent_dim": 3}, small_gridnavi())


def test_runs_on_every_advertised_family_without_retracing():
    for name, options in [("bandit-bernoulli", {"arms": 3}), ("tabular-mdp", {"states": 3}),
                          ("navigation2d", {"max_steps_in_episode": 5})]:
        family = metarl_jax.make(name, **options)
        learner = varibad.make(tiny(trial_episodes=2, elbo_terms=2), family)
        chex.clear_trace_counter()  # counted per function code: one count per family
        update = jax.jit(chex.assert_max_traces(learner.update, n=1))
        state = learner.init(jax.random.PRNGKey(0))
        for i in range(3):
            state, metrics = update(state, jax.random.PRNGKey(i))
        assert all(np.isfinite(float(v)) for v in metrics.values()), name
        curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(9), 4, "test"),
                                 jax.random.PRNGKey(1))
        assert np.asarray(curve["varibad"]).shape == (4, 2)


def test_vae_buffer_keeps_the_last_trials_in_order_and_feeds_the_vae():
    family = small_gridnavi()
    learner = varibad.make(tiny(vae_buffer_trials=20, vae_batch_trials=12), family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    trials = []
    for i in range(3):   # 24 trials into a ring of 20: the first 4 are overwritten
        key = jax.random.PRNGKey(i)
        task_key, trial_key, _, _ = jax.random.split(key, 4)
        batch = learner.run_trials(state.params, family.sample(task_key, 8, "train"),
                                   trial_key, learner.config.trial_episodes)
        trials.append(np.asarray(batch.flat(batch.inputs)))
        state, _ = update(state, key)
    stored = np.asarray(state.vae_buffer.data[0][0])
    expected = np.concatenate(trials)[4:]           # oldest first, from slot position on
    position = int(state.vae_buffer.position[0])
    np.testing.assert_array_equal(np.roll(stored, -position, axis=0), expected)
    assert int(state.vae_buffer.size[0]) == 20
    # the VAE steps read the buffer: emptying it except for one poisoned trial changes them
    poisoned = state.vae_buffer.replace(
        data=(state.vae_buffer.data[0].at[0, :].set(1e3), state.vae_buffer.data[1]))
    _, clean = update(state, jax.random.PRNGKey(7))
    _, dirty = update(state.replace(vae_buffer=poisoned), jax.random.PRNGKey(7))
    assert float(clean["vae_loss"]) != float(dirty["vae_loss"])
    assert float(clean["policy_loss"]) == float(dirty["policy_loss"])


def test_runner_resumes_exactly_with_the_vae_buffer(assert_resumes_exactly):
    assert_resumes_exactly("varibad", dataclasses.asdict(tiny(vae_buffer_trials=16)),
                           "gridnavi", family_options={"size": 3, "episode_length": 6},
                           eval_num_tasks=4)


def test_runner_trains_and_evaluates_varibad(tmp_path):
    run = train("varibad", tiny().__dict__ | {"policy_hidden_sizes": (16,),
                                              "decoder_hidden_sizes": (16,)},
                "gridnavi", tmp_path / "run", family_options={"size": 3, "episode_length": 6},
                num_iterations=2, eval_every=0, checkpoint_every=0, eval_num_tasks=4, quiet=True)
    assert run.iteration == 2
    assert (run.run_dir / "metrics.csv").is_file()


@pytest.mark.slow
def test_varibad_approaches_bayes_optimal_on_3x3_gridnavi():
    family = small_gridnavi()
    learner = varibad.make(varibad.Config(meta_batch_size=64), family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(250 if CI else 500):
        state, _ = update(state, jax.random.fold_in(jax.random.PRNGKey(1), i))
    goals = family.sample(jax.random.PRNGKey(2), 1000, "test")
    score = float(np.asarray(learner.evaluate(state, goals, jax.random.PRNGKey(3))["varibad"])
                  .sum(axis=1).mean())
    random = float(np.asarray(gridnavi.evaluate("random", goals, jax.random.PRNGKey(4), size=3,
                                                episode_length=6)).sum(axis=1).mean())
    exact = gridnavi.bayes_optimal_plan(3, 6, 4).value
    assert score > random + 0.8 * (exact - random), (score, random, exact)
