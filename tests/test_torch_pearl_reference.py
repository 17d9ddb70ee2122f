"""The PyTorch PEARL timing reference computes the same step as our JAX PEARL.

``benchmarks/torch_pearl_reference.py`` is timed against
``metarl_jax.algorithms.pearl`` by ``benchmarks/pearl_speed.py``. Both sides get
the same parameters (flax params copied into the torch layout), the same
context and RL batch (drawn from the JAX learner's buffers) and the same
noise (regenerated from the keys the JAX loss splits), and must agree on the
loss and its parts, on every network's gradient and on the parameters after
one Adam step and the target update.

CI does not install torch, so this module skips there.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metarl_jax
from metarl_jax.algorithms import pearl
from metarl_jax.rl import replay

torch = pytest.importorskip("torch")

_BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
_spec = importlib.util.spec_from_file_location(
    "torch_pearl_reference", os.path.join(_BENCH, "torch_pearl_reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

RTOL, ATOL = 2e-4, 2e-5


@pytest.fixture(scope="module")
def setup():
    config = pearl.Config(num_train_tasks=4, latent_dim=3, encoder_hidden_sizes=(16, 16),
                          hidden_sizes=(32, 32), num_initial_steps=40, num_steps_prior=20,
                          num_extra_rl_steps_posterior=20, num_tasks_sample=2,
                          num_train_steps=1, meta_batch_size=4, batch_size=16,
                          context_batch_size=8, replay_capacity=200, reward_scale=7.0,
                          alpha=0.3, gamma=0.9, tau=0.05, kl_weight=0.2)
    learner = pearl.make(config, metarl_jax.make("point-robot"))
    state = learner.init(jax.random.PRNGKey(0))
    # one JAX step so the target critics differ from the online ones
    carry = (state.params, state.target_critic, state.opt_state, state.replay,
             state.encoder_replay)
    carry, _ = learner.train_step(carry, jax.random.PRNGKey(5))
    params, target = carry[0], carry[1]
    ids = jnp.arange(4)
    context = learner.context_of(replay.sample(state.encoder_replay, jax.random.PRNGKey(1),
                                               ids, 8))
    batch = replay.sample(state.replay, jax.random.PRNGKey(2), ids, 16)
    key = jax.random.PRNGKey(3)
    k_z, k_next, k_new = jax.random.split(key, 3)
    noise = (jax.random.normal(k_z, (4, 3)), jax.random.normal(k_next, (4, 16, 2)),
             jax.random.normal(k_new, (4, 16, 2)))
    model = ref.TorchPEARL(2, 2, 3, (16, 16), (32, 32), learning_rate=config.learning_rate,
                           gamma=0.9, tau=0.05, reward_scale=7.0, alpha=0.3, kl_weight=0.2)
    model.load_flax(params, target)
    t = lambda x: torch.tensor(np.asarray(x, np.float32))
    torch_batch = {k: t(v) for k, v in batch.items()}
    return dict(config=config, learner=learner, params=params, target=target, context=context,
                batch=batch, key=key, model=model, t_context=t(context), t_batch=torch_batch,
                t_noise=tuple(t(n) for n in noise))


def test_losses_match(setup):
    s = setup
    total, aux = s["learner"].loss(s["params"], s["target"], s["context"], s["batch"], s["key"])
    t_total, t_aux = s["model"].loss(s["t_context"], s["t_batch"], *s["t_noise"])
    np.testing.assert_allclose(float(t_total.detach()), float(total), rtol=RTOL, atol=ATOL)
    for name in ("critic_loss", "actor_loss", "kl"):
        np.testing.assert_allclose(float(t_aux[name].detach()), float(aux[name]), rtol=RTOL, atol=ATOL)


def test_gradients_and_one_step_match(setup):
    s = setup
    grads = jax.grad(lambda p: s["learner"].loss(p, s["target"], s["context"], s["batch"],
                                                 s["key"])[0])(s["params"])
    model = s["model"]
    total, _ = model.loss(s["t_context"], s["t_batch"], *s["t_noise"])
    model.optimizer.zero_grad()
    total.backward()
    # encoder output layer, actor mean head, first critic's output layer
    pairs = [(model.encoder[-1].weight.grad, grads["encoder"]["params"]["factor"]["kernel"]),
             (model.actor_mean.weight.grad, grads["actor"]["params"]["mean"]["kernel"]),
             (model.critics[0][-1].weight.grad,
              grads["critic"]["params"]["twins"]["out"]["kernel"][0]),
             (model.critics[1][0].weight.grad,
              grads["critic"]["params"]["twins"]["torso"]["hidden_0"]["kernel"][1])]
    for torch_grad, jax_grad in pairs:
        np.testing.assert_allclose(torch_grad.numpy().T, np.asarray(jax_grad), rtol=1e-3,
                                   atol=1e-5)
    # a full step: Adam on every network and the Polyak target update
    model.load_flax(s["params"], s["target"])
    model.step(s["t_context"], s["t_batch"], *s["t_noise"])
    optimizer = optax.adam(s["config"].learning_rate)
    updates, _ = optimizer.update(grads, optimizer.init(s["params"]), s["params"])
    new = optax.apply_updates(s["params"], updates)
    np.testing.assert_allclose(model.actor_mean.weight.detach().numpy().T,
                               np.asarray(new["actor"]["params"]["mean"]["kernel"]),
                               rtol=1e-4, atol=1e-6)
    new_target = jax.tree.map(lambda t, o: 0.95 * t + 0.05 * o, s["target"], new["critic"])
    np.testing.assert_allclose(model.targets[0][-1].weight.detach().numpy().T,
                               np.asarray(new_target["params"]["twins"]["out"]["kernel"][0]),
                               rtol=1e-4, atol=1e-6)
