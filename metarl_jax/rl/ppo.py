"""The PPO update (Schulman et al. 2017): epochs of minibatch gradient steps.

:func:`ppo_update` takes any loss on a batch of data (the recurrent PPO loss
of RL² on trial chunks, MAML's clipped outer surrogate through the inner
steps, a feed-forward PPO loss) and runs ``num_epochs`` passes, each over
``num_minibatches`` minibatches of a fresh random permutation of the
batch's leading axis, one optimiser step per minibatch, all in one
``lax.scan``. The clipped surrogate itself is :func:`metarl_jax.rl.losses.ppo_clip_loss`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def ppo_update(loss_fn: Callable[..., tuple[jax.Array, dict]], optimizer: optax.GradientTransformation,
               params: Any, opt_state: Any, data: Any, key: jax.Array | None, *,
               num_epochs: int, num_minibatches: int = 1):
    """``num_epochs`` epochs of minibatch steps on ``loss_fn(params, *data) -> (loss, aux)``.

    ``data`` is a tuple of pytrees (``None`` entries pass through) whose
    leaves share a leading batch axis divisible by ``num_minibatches``.
    With ``key=None`` every epoch is one full-batch step on ``data`` as it
    is (no permutation; ``num_minibatches`` must be 1), for losses whose
    batch is not a sum over independent rows.

    Returns ``(params, opt_state, (loss, aux))``: ``loss`` and every ``aux``
    entry (plus ``grad_norm``, the global norm of each step's gradient) with
    leading axes ``[num_epochs]`` (``key=None``) or ``[num_epochs, num_minibatches]``.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch_step(carry, batch):
        params, opt_state = carry
        (loss, aux), grads = grad_fn(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        aux = {**aux, "grad_norm": optax.tree.norm(grads)}
        return (optax.apply_updates(params, updates), opt_state), (loss, aux)

    if key is None:
        if num_minibatches != 1:
            raise ValueError("ppo_update without a key takes full-batch steps: "
                             f"num_minibatches must be 1, got {num_minibatches}")
        return _unpack(jax.lax.scan(lambda carry, _: minibatch_step(carry, data),
                                    (params, opt_state), None, length=num_epochs))

    size = jax.tree.leaves(data)[0].shape[0]

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, size)
        batches = jax.tree.map(
            lambda x: x[order].reshape((num_minibatches, -1) + x.shape[1:]), data)
        return jax.lax.scan(minibatch_step, carry, batches)

    return _unpack(jax.lax.scan(epoch, (params, opt_state),
                                jax.random.split(key, num_epochs)))


def _unpack(result):
    (params, opt_state), losses_and_aux = result
    return params, opt_state, losses_and_aux
