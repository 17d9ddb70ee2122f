"""Model-predictive-control planners: random shooting, CEM and MPPI, in pure JAX.

Model-based meta-RL (GrBAL/ReBAL, Nagabandi et al. ICLR 2019) acts by planning
through a learned, quickly adapted dynamics model at every control step; the
reference code (iclavera/learning_to_adapt) uses random shooting with 500
candidate sequences of 10 actions. The planner only needs the model's
predicted return of a batch of action sequences, so it takes a function
``sequence_return(actions [N, horizon, action_dim]) -> [N]`` and the caller
batches the model rollout behind it (:func:`plan`; :func:`plan_discrete` for
``[N, horizon]`` int32 actions).

Every size (candidates, horizon, iterations, elites) comes from a static
:class:`PlannerConfig`, so a planner compiles once, runs under ``jit`` and
``vmap`` over tasks or environments (boxes, warm starts and the return
function's closed-over task may all be batched), and ``sequence_return`` is
always called with exactly ``num_candidates`` sequences. Choices made here:

* ``rs`` with ``iterations = k`` draws ``k`` independent batches of
  ``num_candidates`` uniform sequences (``k * num_candidates`` in all), so it
  can be compared with CEM and MPPI at an equal number of evaluated sequences.
  A warm start replaces the first sample of the first batch;
* ``cem`` and ``mppi`` sample ``mean + std * noise`` clipped to the box, with
  the current mean itself as the first candidate of every batch (so a good
  warm start is never lost), and floor the std at ``min_std`` of the box's
  half-width so the search never collapses to a point before it converges;
* ``cem`` returns the best sequence ever sampled, whose return is already
  known (the final mean may be unevaluated and, after clipping, off the elite
  set); ``info["mean"]`` is the final mean;
* ``mppi`` weights all candidates by ``softmax((R - max R) / (temperature *
  std(R)))``: returns are normalised by their spread, so ``temperature`` means
  the same for any reward scale. Mean and std are refitted to the weighted
  candidates with the same ``smoothing`` as CEM (``smoothing = 0``: the plain
  update), and the final mean is returned, evaluated once more
  (``sequence_return`` on a batch of one) for ``info["return"]``.

A non-finite predicted return (NaN from a diverged model) counts as the worst
possible: it is never chosen, is never an elite before a finite one, and has
MPPI weight 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from metarl_jax.utils import (
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
)

KINDS = ("rs", "cem", "mppi")

SequenceReturn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """A planner's static settings (hashable: close over it or pass it as a static argument)."""

    kind: str = "rs"             # "rs" (random shooting), "cem" or "mppi"
    num_candidates: int = 500    # action sequences evaluated per iteration
    horizon: int = 10            # actions per sequence
    iterations: int = 1          # rs: independent batches; cem/mppi: refits
    num_elites: int = 50         # cem: best candidates the distribution is refitted to
    smoothing: float = 0.1       # cem/mppi: new = smoothing * old + (1 - smoothing) * fit
    temperature: float = 1.0     # mppi: softmax temperature on std-normalised returns
    init_std: float = 0.5        # cem/mppi: initial std, a fraction of the box's half-width
    min_std: float = 0.05        # cem/mppi: std floor, a fraction of the box's half-width

    def __post_init__(self):
        check_planner_config(self)


def check_planner_config(config) -> None:
    """Raise ``ValueError`` naming the first bad field of ``config``."""
    check_choice("kind", config.kind, KINDS)
    for name in ("num_candidates", "horizon", "iterations", "num_elites"):
        check_positive_int(name, getattr(config, name))
    if config.kind == "cem" and config.num_elites > config.num_candidates:
        raise ValueError(f"num_elites must be <= num_candidates ({config.num_candidates}), "
                         f"got {config.num_elites!r}")
    if not 0 <= config.smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {config.smoothing!r}")
    check_positive("temperature", config.temperature)
    check_positive("init_std", config.init_std)
    check_non_negative("min_std", config.min_std)


# -- shared pieces ------------------------------------------------------------------------------


def _box(low, high) -> tuple[jax.Array, jax.Array]:
    low = jnp.asarray(low, jnp.float32)
    high = jnp.asarray(high, jnp.float32)
    if low.ndim != 1 or low.shape != high.shape:
        raise ValueError(f"low and high must be arrays of the same shape [action_dim], "
                         f"got {low.shape} and {high.shape}")
    return low, high


def _evaluator(sequence_return: SequenceReturn, num: int) -> SequenceReturn:
    """``sequence_return`` checked to give ``[num]`` float32 returns, non-finite ones ``-inf``."""

    def evaluate(actions):
        returns = jnp.asarray(sequence_return(actions), jnp.float32)
        if returns.shape != (num,):
            raise ValueError(f"sequence_return must map {actions.shape} actions to returns of "
                             f"shape ({num},), got {returns.shape}")
        return jnp.where(jnp.isfinite(returns), returns, -jnp.inf)

    return evaluate


def _keep_best(best, candidates, returns):
    """The running ``(sequence, return)`` best; an earlier one wins ties."""
    index = jnp.argmax(returns)
    better = returns[index] > best[1]
    return (jnp.where(better, candidates[index], best[0]),
            jnp.where(better, returns[index], best[1]))


def _softmax_weights(returns: jax.Array, temperature: float) -> jax.Array:
    """MPPI weights ``softmax((R - max R) / (temperature * std R))`` over finite returns
    (uniform when none is finite, plain argmax-free averaging when all are equal)."""
    finite = jnp.isfinite(returns)
    count = jnp.maximum(jnp.sum(finite), 1)
    safe = jnp.where(finite, returns, 0.0)
    centre = jnp.sum(safe) / count
    spread = jnp.sqrt(jnp.sum(jnp.where(finite, (safe - centre) ** 2, 0.0)) / count)
    spread = jnp.where(spread > 0, spread, 1.0)
    top = jnp.max(jnp.where(finite, safe, -jnp.inf))
    logits = jnp.where(finite, (safe - top) / (spread * temperature), -jnp.inf)
    logits = jnp.where(jnp.any(finite), logits, 0.0)
    return jax.nn.softmax(logits)


def _with_first(candidates: jax.Array, first: jax.Array, use: jax.Array) -> jax.Array:
    """``candidates`` with row 0 replaced by ``first`` where ``use``."""
    return candidates.at[0].set(jnp.where(use, first, candidates[0]))


# -- continuous actions -------------------------------------------------------------------------


def plan(key: jax.Array, sequence_return: SequenceReturn, low, high, config: PlannerConfig,
         init_mean=None) -> tuple[jax.Array, dict]:
    """Maximise ``sequence_return`` over sequences ``[horizon, action_dim]`` in ``[low, high]``.

    Args:
        key: a PRNG key.
        sequence_return: ``actions [num_candidates, horizon, action_dim] -> returns
            [num_candidates]``, the (model-)predicted return of each sequence.
        low, high: the action box, arrays ``[action_dim]`` with ``low <= high``.
        config: a :class:`PlannerConfig` (static).
        init_mean: ``[horizon, action_dim]`` warm start (e.g. :func:`shift_plan` of the
            last plan), clipped to the box; the box centre when ``None``.

    Returns:
        ``(sequence [horizon, action_dim], info)``: the chosen sequence and a dict with
        ``"return"`` (its predicted return), ``"mean"`` and ``"std"`` (the final
        sampling distribution; for ``rs`` the warm start or centre and the uniform's
        std) and ``"history"`` (``[iterations]``, the best return of each batch).
    """
    check_planner_config(config)
    low, high = _box(low, high)
    shape = (config.horizon, low.shape[0])
    centre, half = 0.5 * (low + high), 0.5 * (high - low)
    if init_mean is None:
        mean, warm = jnp.broadcast_to(centre, shape), False
    else:
        mean = jnp.asarray(init_mean, jnp.float32)
        if mean.shape != shape:
            raise ValueError(f"init_mean must have shape [horizon, action_dim] = {shape}, "
                             f"got {mean.shape}")
        mean, warm = jnp.clip(mean, low, high), True
    evaluate = _evaluator(sequence_return, config.num_candidates)
    keys = jax.random.split(key, config.iterations)
    if config.kind == "rs":
        return _random_shooting(keys, evaluate, low, high, mean, warm, config)
    return _gaussian_search(keys, evaluate, sequence_return, low, high, mean,
                            config.init_std * jnp.broadcast_to(half, shape), config)


def _random_shooting(keys, evaluate, low, high, mean, warm, config):
    size = (config.num_candidates,) + mean.shape

    def step(best, inputs):
        key, index = inputs
        unit = jax.random.uniform(key, size, jnp.float32)
        candidates = jnp.clip(low + (high - low) * unit, low, high)
        candidates = _with_first(candidates, mean, jnp.logical_and(warm, index == 0))
        returns = evaluate(candidates)
        return _keep_best(best, candidates, returns), jnp.max(returns)

    start = (mean, jnp.float32(-jnp.inf))
    (sequence, value), history = jax.lax.scan(
        step, start, (keys, jnp.arange(config.iterations)))
    std = jnp.broadcast_to((high - low) / jnp.sqrt(12.0), mean.shape)
    return sequence, {"return": value, "mean": mean, "std": std, "history": history}


def _gaussian_search(keys, evaluate, sequence_return, low, high, mean, std, config):
    floor = config.min_std * 0.5 * (high - low)
    size = (config.num_candidates,) + mean.shape
    s = config.smoothing

    def step(carry, key):
        mean, std, best = carry
        noise = jax.random.normal(key, size, jnp.float32).at[0].set(0.0)
        candidates = jnp.clip(mean + std * noise, low, high)
        returns = evaluate(candidates)
        if config.kind == "cem":
            elites = candidates[jax.lax.top_k(returns, config.num_elites)[1]]
            fit_mean, fit_std = jnp.mean(elites, 0), jnp.std(elites, 0)
        else:
            weights = _softmax_weights(returns, config.temperature)
            fit_mean = jnp.tensordot(weights, candidates, 1)
            fit_std = jnp.sqrt(jnp.tensordot(weights, (candidates - fit_mean) ** 2, 1))
        mean = s * mean + (1.0 - s) * fit_mean
        std = jnp.maximum(s * std + (1.0 - s) * fit_std, floor)
        return (mean, std, _keep_best(best, candidates, returns)), jnp.max(returns)

    start = (mean, std, (mean, jnp.float32(-jnp.inf)))
    (mean, std, (sequence, value)), history = jax.lax.scan(step, start, keys)
    if config.kind == "mppi":
        sequence = jnp.clip(mean, low, high)
        value = _evaluator(sequence_return, 1)(sequence[None])[0]
    return sequence, {"return": value, "mean": mean, "std": std, "history": history}


def shift_plan(sequence: jax.Array, low, high) -> jax.Array:
    """The next control step's warm start: ``sequence [horizon, action_dim]`` without its
    first action, the box centre appended."""
    low, high = _box(low, high)
    sequence = jnp.asarray(sequence, jnp.float32)
    return jnp.concatenate([sequence[1:], (0.5 * (low + high))[None]], axis=0)


# -- discrete actions ---------------------------------------------------------------------------


def plan_discrete(key: jax.Array, sequence_return: SequenceReturn, num_actions: int,
                  config: PlannerConfig, init_sequence=None) -> tuple[jax.Array, dict]:
    """Maximise ``sequence_return`` over int32 sequences ``[horizon]`` of ``num_actions`` actions.

    ``rs`` samples every step uniformly; ``cem`` samples independent per-step
    categoricals and refits them to the elites' action frequencies, ``mppi`` to
    the softmax-weighted frequencies (both smoothed with ``smoothing``, no floor:
    a categorical that collapses has converged), with the per-step mode as the
    first candidate of every batch. All three return the best sequence ever
    sampled, whose return is known (a "mean" sequence does not exist).

    Args:
        key: a PRNG key.
        sequence_return: ``actions [num_candidates, horizon] int32 -> returns [num_candidates]``.
        num_actions: the number of discrete actions (static).
        config: a :class:`PlannerConfig` (static; ``init_std``/``min_std`` are unused).
        init_sequence: ``[horizon]`` int warm start, the first candidate evaluated.

    Returns:
        ``(sequence [horizon] int32, info)`` with ``"return"``, ``"probs"``
        (``[horizon, num_actions]``, the final sampling distribution) and ``"history"``.
    """
    check_planner_config(config)
    check_positive_int("num_actions", num_actions)
    shape = (config.horizon,)
    if init_sequence is None:
        first, warm = jnp.zeros(shape, jnp.int32), False
    else:
        first = jnp.asarray(init_sequence).astype(jnp.int32)
        if first.shape != shape:
            raise ValueError(f"init_sequence must have shape [horizon] = {shape}, "
                             f"got {first.shape}")
        first, warm = jnp.clip(first, 0, num_actions - 1), True
    evaluate = _evaluator(sequence_return, config.num_candidates)
    size = (config.num_candidates,) + shape
    probs = jnp.full(shape + (num_actions,), 1.0 / num_actions, jnp.float32)
    s = config.smoothing

    def step(carry, inputs):
        probs, best = carry
        key, index = inputs
        if config.kind == "rs":
            candidates = jax.random.randint(key, size, 0, num_actions, jnp.int32)
            seed = first
        else:
            candidates = jax.random.categorical(key, jnp.log(probs), shape=size).astype(jnp.int32)
            seed = jnp.where(warm & (index == 0), first, jnp.argmax(probs, -1).astype(jnp.int32))
        candidates = _with_first(candidates, seed,
                                 jnp.logical_or(config.kind != "rs", warm & (index == 0)))
        returns = evaluate(candidates)
        one_hot = jax.nn.one_hot(candidates, num_actions, dtype=jnp.float32)
        if config.kind == "cem":
            fit = jnp.mean(one_hot[jax.lax.top_k(returns, config.num_elites)[1]], 0)
            probs = s * probs + (1.0 - s) * fit
        elif config.kind == "mppi":
            fit = jnp.tensordot(_softmax_weights(returns, config.temperature), one_hot, 1)
            probs = s * probs + (1.0 - s) * fit
        return (probs, _keep_best(best, candidates, returns)), jnp.max(returns)

    keys = jax.random.split(key, config.iterations)
    start = (probs, (first, jnp.float32(-jnp.inf)))
    (probs, (sequence, value)), history = jax.lax.scan(
        step, start, (keys, jnp.arange(config.iterations)))
    return sequence, {"return": value, "probs": probs, "history": history}
