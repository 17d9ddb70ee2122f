"""Propensity-score re-use of old data for a new task (Meta-Q-Learning, Fakoor et al. 2020, Sec. 4.2).

To adapt to a new task MQL re-uses the meta-training replay buffer, weighting
each old transition ``x`` by the density ratio ``beta(x) = p_new(x) / p_old(x)``,
estimated by a logistic classifier that tells new-task context (label 1)
from buffer context (label 0): with logit ``f(x)``,
``beta(x) = exp(f(x)) * n_old / n_new`` (the class-prior correction), clipped
at ``beta_clip``. The normalised effective sample size of the weights,
``ESS = (sum beta)^2 / (n sum beta^2)`` in ``(0, 1]``, says how much of the
old data is like the new task; MQL's proximal coefficient is ``1 - ESS``
(stay near the meta-parameters when the old data says little about the task).

Pure functions of arrays; the classifier is an L2-regularised logistic
regression on standardised features fitted by full-batch gradient descent
(convex, so a fixed number of steps is enough for these small problems).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metarl_jax.utils import check_positive, check_positive_int


def fit_logistic(features: jax.Array, labels: jax.Array, weights: jax.Array | None = None, *,
                 steps: int = 200, learning_rate: float = 0.5, l2: float = 1e-3):
    """``(w [F], b)`` of ``P(label = 1 | x) = sigmoid(w . x + b)`` on ``features [N, F]``.

    ``weights [N]`` (default ones) weight each example (zero drops it).
    """
    check_positive_int("steps", steps)
    check_positive("learning_rate", learning_rate)
    labels = labels.astype(jnp.float32)
    weights = jnp.ones_like(labels) if weights is None else weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights), 1.0)

    def loss(wb):
        w, b = wb
        logits = features @ w + b
        nll = jnp.sum(weights * (jax.nn.softplus(logits) - labels * logits)) / total
        return nll + l2 * jnp.sum(jnp.square(w))

    def step(wb, _):
        grads = jax.grad(loss)(wb)
        return jax.tree.map(lambda p, g: p - learning_rate * g, wb, grads), None

    init = (jnp.zeros(features.shape[-1], jnp.float32), jnp.zeros((), jnp.float32))
    wb, _ = jax.lax.scan(step, init, None, length=steps)
    return wb


def propensity_weights(new: jax.Array, old: jax.Array, new_mask: jax.Array | None = None, *,
                       beta_clip: float = 10.0, steps: int = 200, learning_rate: float = 0.5,
                       l2: float = 1e-3):
    """Weights ``beta [N_old]`` of the old examples and their normalised ESS.

    ``new [N_new, F]`` (``new_mask [N_new]`` says which rows are real) and
    ``old [N_old, F]`` are the two samples' features; they are standardised
    with the pooled mean and spread before the classifier sees them.
    """
    check_positive("beta_clip", beta_clip)
    new_mask = (jnp.ones(new.shape[0], bool) if new_mask is None else new_mask)
    features = jnp.concatenate([new, old], axis=0).astype(jnp.float32)
    weights = jnp.concatenate([new_mask.astype(jnp.float32), jnp.ones(old.shape[0], jnp.float32)])
    mean = jnp.sum(features * weights[:, None], 0) / jnp.sum(weights)
    spread = jnp.sqrt(jnp.sum(jnp.square(features - mean) * weights[:, None], 0)
                      / jnp.sum(weights)) + 1e-6
    features = (features - mean) / spread
    labels = jnp.concatenate([jnp.ones(new.shape[0]), jnp.zeros(old.shape[0])])
    w, b = fit_logistic(features, labels, weights, steps=steps, learning_rate=learning_rate,
                        l2=l2)
    n_new = jnp.maximum(jnp.sum(new_mask.astype(jnp.float32)), 1.0)
    logits = features[new.shape[0]:] @ w + b
    beta = jnp.clip(jnp.exp(logits) * old.shape[0] / n_new, 0.0, beta_clip)
    return beta, effective_sample_size(beta)


def effective_sample_size(beta: jax.Array) -> jax.Array:
    """``(sum beta)^2 / (n sum beta^2)``: 1 for equal weights, ``1/n`` for one non-zero."""
    return jnp.square(jnp.sum(beta)) / (beta.shape[0] * jnp.maximum(jnp.sum(jnp.square(beta)),
                                                                     1e-12))
