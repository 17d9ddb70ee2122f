"""Fitting and adapting learned dynamics models: the pieces every model-based learner shares.

* :func:`sample_segments`: runs of consecutive real transitions from a replay
  buffer (:mod:`metarl_jax.rl.replay`) that stay inside one episode: GrBAL's
  "past M, future K" training examples, and plain training batches;
* :func:`model_error`: the weighted squared error of a model's normalised
  prediction (delta and reward), the one regression loss;
* :func:`bootstrap_weights`: Poisson(1) weights per example and ensemble
  member, the online form of a bootstrap resample, so every member trains on
  its own resample with the same static shapes;
* :func:`gradient_adapt`: ``steps`` plain gradient steps (static count, so
  reverse-mode autodiff goes through them for MAML's meta-gradient;
  ``first_order`` drops the second-order terms);
* :func:`imagined_return`: the return of an action sequence under a model,
  from one observation, with the model's reward or a given reward function.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from metarl_jax.rl import replay
from metarl_jax.utils import check_int_at_least, check_positive_int, tree_axpy


def sample_segments(buffer: replay.ReplayBuffer, key: jax.Array, batch_size: int,
                    length: int):
    """``batch_size`` runs of ``length`` consecutive items, each from a random slot
    of ``buffer``, and ``valid [batch_size]``: the run is stored whole and lies
    inside one episode (the items' in-episode index ``t`` is consecutive)."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("length", length)
    k_slot, k_run = jax.random.split(key)
    slots = jax.random.randint(k_slot, (batch_size,), 0, buffer.num_tasks)
    runs, present = replay.sample_sequences(buffer, k_run, slots, 1, length)
    runs = jax.tree.map(lambda x: x[:, 0], runs)
    t = runs["t"]
    valid = jnp.all(present[:, 0], axis=-1) & (t[:, -1] - t[:, 0] == length - 1)
    return runs, valid


def model_error(prediction: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Weighted mean over examples of the squared error summed over output dimensions
    (``prediction``, ``target``: ``[..., d]``; ``weight [...]``)."""
    per_example = jnp.sum(jnp.square(prediction - target), axis=-1)
    w = weight.astype(jnp.float32)
    return jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1.0)


def bootstrap_weights(key: jax.Array, members: int, shape: tuple[int, ...]) -> jax.Array:
    """``[members, *shape]`` Poisson(1) counts: each member's bootstrap resample."""
    check_positive_int("members", members)
    return jax.random.poisson(key, 1.0, (members,) + tuple(shape)).astype(jnp.float32)


def gradient_adapt(loss: Callable[[Any], jax.Array], params: Any, lr, steps: int,
                   first_order: bool = False) -> Any:
    """``params`` after ``steps`` gradient steps of size ``lr`` on ``loss(params)``.

    ``lr`` may be a traced scalar (a learned inner learning rate). With
    ``first_order`` the gradients are treated as constants, so a meta-gradient
    through the result is the first-order MAML one.
    """
    check_int_at_least("steps", steps, 0)
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        params = tree_axpy(-lr, grads, params)
    return params


def imagined_return(step: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
                    obs: jax.Array, actions: jax.Array,
                    reward_fn: Callable | None = None) -> jax.Array:
    """Undiscounted return of ``actions [H, a]`` from ``obs [s]`` under a model.

    ``step(obs, action) -> (next_obs, reward)`` is the model; with
    ``reward_fn(obs, action, next_obs)`` the reward comes from it instead of
    the model's reward head (a planner told the true reward).
    """
    def body(carry, action):
        next_obs, reward = step(carry, action)
        if reward_fn is not None:
            reward = reward_fn(carry, action, next_obs)
        return next_obs, reward

    _, rewards = jax.lax.scan(body, obs, actions)
    return jnp.sum(rewards)
