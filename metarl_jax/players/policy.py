"""What every reference player shares: it is a trial policy of the rollout engine.

A player is a ``policy_step(params, state, inputs) -> (state, dist, value)``
of :func:`metarl_jax.core.rollout.run_trial`, played on the real environment
(the env steps, draws the rewards and resets between episodes; the player
never simulates the task). Its statistics (posterior counts, planned action
values, a PRNG key for its own randomness) are the carried policy state,
updated from the ``[obs, (prev obs), prev action, prev reward, prev done]``
inputs the engine assembles; what a player knows before the trial (the
oracles: the task itself) is its ``params``. Its action distribution is
:func:`greedy_distribution`: uniform over the maximisers of its scores,
mixed with uniform exploration for epsilon-greedy; the engine samples it.
:class:`TrialPolicy` bundles a player's step, initial state, params and
inputs; :func:`play_trial` plays it. Players that plan at episode starts
branch on :func:`any_in_batch`, so that under ``vmap`` over tasks the plan
still runs once per episode rather than at every step.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import custom_batching

from metarl_jax.core.rollout import MetaInputs, PolicyStep, run_trial, with_horizon
from metarl_jax.nn.distributions import Categorical
from metarl_jax.nn.spaces import action_spec


def greedy_distribution(scores: jax.Array, epsilon: Any = None) -> Categorical:
    """Uniform over ``argmax scores`` (ties broken at random); ``epsilon``: a random action.

    ``scores: [A]``. Without ``epsilon`` the logits are 0 on the maximisers and
    ``-inf`` elsewhere; with it the probabilities are ``(1 - epsilon) /
    |argmax| + epsilon / A`` on the maximisers and ``epsilon / A`` elsewhere
    (``epsilon`` may be traced; 0 gives the same distribution as ``None``).
    """
    best = scores == jnp.max(scores)
    if epsilon is None:
        return Categorical(jnp.where(best, 0.0, -jnp.inf))
    best = best.astype(jnp.float32)
    probs = (1.0 - epsilon) * best / jnp.sum(best) + epsilon / scores.shape[-1]
    return Categorical(jnp.log(probs))


@custom_batching.custom_vmap
def any_in_batch(flag: jax.Array) -> jax.Array:
    """``flag`` itself; under ``vmap``, whether it holds for any member of the batch (unbatched).

    For ``lax.cond(any_in_batch(flag), work, keep)`` followed by a per-member
    ``where(flag, ...)``: under ``vmap`` a ``cond`` on a batched flag becomes a
    ``select`` that runs ``work`` at every step, while an unbatched flag keeps
    it a branch. Players plan only at episode starts, which every task of a
    batch reaches at the same step (one horizon, no termination), so the
    planning runs once per episode instead of once per step; the ``where``
    keeps the result exact for members whose flag is false.
    """
    return flag


@any_in_batch.def_vmap
def _any_in_batch_vmap(axis_size, in_batched, flag):
    (batched,) = in_batched
    return (jnp.any(flag, axis=0) if batched else flag), False


def no_value() -> jax.Array:
    """The value a player reports to the engine: it has none (0)."""
    return jnp.zeros((), jnp.float32)


class TrialPolicy(NamedTuple):
    """A player as a policy of :func:`~metarl_jax.core.rollout.run_trial`.

    ``run_trial(env, p.step, p.init_state, p.params, task, key,
    inputs=p.inputs, ...)`` plays it: ``step(params, state, inputs) -> (state,
    Categorical, value)``; ``init_state``: its statistics before the trial
    (the prior) and its own PRNG key if it draws random numbers; ``params``:
    what it knows before the trial (``None`` but for the oracles);
    ``inputs``: the :class:`~metarl_jax.core.rollout.MetaInputs` it reads.
    """

    step: PolicyStep
    init_state: Any
    params: Any
    inputs: MetaInputs


def play_trial(env, policy: TrialPolicy, task: Any, key: jax.Array, *, num_episodes: int,
               horizon: int) -> jax.Array:
    """Realised rewards ``[num_episodes * horizon]`` of one trial of ``policy`` on the real ``env``.

    ``task`` is one task's env params (episodes truncated after ``horizon``
    steps); the engine's step keys drive the env and the action sampling.
    """
    trial = run_trial(env, policy.step, policy.init_state, policy.params,
                      with_horizon(task, horizon), key, num_episodes=num_episodes,
                      horizon=horizon, action_spec=action_spec(env.action_space(task)),
                      inputs=policy.inputs)
    return trial.reward.reshape(-1)


def dress_player(player: Callable, policy: Callable, factory: Callable) -> Callable:
    """``player`` (and ``player.policy = policy``) named and documented as ``factory``, with
    ``factory``'s keyword-only hyperparameters in place of their ``**hyperparameters``."""
    own = [p for p in inspect.signature(factory).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for f in (policy, player):
        signature = inspect.signature(f)
        common = list(signature.parameters.values())[:-1]  # all but **hyperparameters
        f.__signature__ = signature.replace(parameters=common + own)
    player.__name__ = player.__qualname__ = factory.__name__
    player.__doc__ = factory.__doc__
    policy.__name__ = policy.__qualname__ = f"{factory.__name__}.policy"
    player.policy = policy
    return player
