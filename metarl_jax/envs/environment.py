"""Base class for metarl_jax environments.

Every environment is a pure function pair with gymnax 1.0 signatures::

    reset(key, params)                -> (obs, state)
    step(key, state, action, params)  -> (obs, state, reward, terminated, truncated, info)

Subclasses write only their dynamics (``step_env``, ``reset_env``, ``get_obs``,
``is_terminated``); this base class owns truncation, auto-reset, action checks
and the ``info`` dictionary, so every env gets the same cheap mechanics.

Our ``Environment`` subclasses gymnax's, so our envs are accepted wherever
gymnax envs are (``isinstance`` checks, gymnax wrappers such as ``LogWrapper``).

Cheap, exact auto-reset
-----------------------
An auto-resetting step computes a reset in every step (``select`` keeps it
only where the episode ended), so the reset's random numbers are paid for on
every step. On CPU, ``jax.random`` lowers each Threefry call to a rolled
``while`` loop that XLA cannot fuse with the dynamics, and gymnax spends three
of them per step (the caller's key split, its own ``split(key)`` and the
reset's ``uniform``), several times the cost of CartPole's physics. Here:

* deterministic dynamics (``step_uses_key = False``) get the step key whole
  for the reset: no split;
* otherwise :func:`split_key` splits with the same Threefry-2x32 hash written
  as plain integer ops, bit-identical to ``jax.random.split`` and fused by XLA;
* resets draw with :func:`reset_uniform`: a counter-based hash of the
  step key's 64 bits (:func:`key_hash_bits`, a few integer multiplies per
  32-bit word) fused into the step, turned into floats exactly as
  ``jax.random.uniform`` does (uniform bits give exactly uniform floats on
  the 2**-23 grid). Tested: Kolmogorov-Smirnov, moments, independence within
  and across envs for three ways of making per-env keys, avalanche;
* envs whose observation is a function of the state (``obs_from_state``)
  observe the post-reset state once rather than selecting between two
  observations, which XLA would compute by running the dynamics again.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment as gymnax_environment
from gymnax.environments import spaces


@struct.dataclass
class EnvState:
    """Common state fields: ``time`` counts steps in the current episode."""

    time: jax.Array


@struct.dataclass
class EnvParams:
    """Common task parameters; ``max_steps_in_episode`` sets truncation."""

    max_steps_in_episode: int = 1


class Environment(gymnax_environment.Environment):
    """Auto-resetting, gymnax-compatible environment base class.

    Class attributes subclasses may set:

    * ``step_uses_key``: ``True`` if ``step_env`` draws random numbers. When
      ``False`` (deterministic dynamics, e.g. CartPole) the step key is handed
      whole to the reset branch instead of being split first: the key is still
      used exactly once, and one split per step is saved. When ``True`` the
      key is split by :func:`split_key` (fused, bit-identical to
      ``jax.random.split``).

    * ``obs_from_state``: ``True`` if the observations ``step_env`` and
      ``reset_env`` return are exactly ``get_obs(state, params)``. Then
      :meth:`step` observes the selected (post-reset) state once, instead of
      selecting between the stepped and the reset observation: XLA fuses
      that select with everything that produced the stepped observation and
      recomputes the dynamics (CartPole's sin/cos included) a second time.

    * ``has_observation_reward``: ``True`` if the env implements
      :meth:`observation_reward`, its reward written on observations (what a
      model-based planner needs to score imagined transitions).

    Subclasses should draw reset noise with :func:`reset_uniform`, which XLA
    fuses into the step (see the module docstring).
    """

    step_uses_key: bool = False
    obs_from_state: bool = False
    has_observation_reward: bool = False

    # -- identity ---------------------------------------------------------------

    def _config_key(self):
        """``(type, attributes)`` when every attribute is hashable, else ``None``."""
        items = tuple(sorted(vars(self).items()))
        try:
            hash(items)
        except TypeError:
            return None
        return type(self), items

    def __eq__(self, other):
        """Envs of the same class built with the same arguments are equal.

        ``step`` and ``reset`` are jitted with ``self`` static, so equal envs
        share their compiled code: calling ``make`` again (a re-run notebook
        cell, a second family of the same env) does not compile again. An env
        with an unhashable attribute is only equal to itself.
        """
        if self is other:
            return True
        if not isinstance(other, Environment):
            return NotImplemented
        key = self._config_key()
        return key is not None and key == other._config_key()

    def __hash__(self):
        key = self._config_key()
        return hash(key) if key is not None else object.__hash__(self)

    # -- public API -----------------------------------------------------------

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: Any,
        action: int | float | jax.Array,
        params: Any | None = None,
    ) -> tuple[Any, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """Step the environment, resetting it when the episode ends.

        On ``terminated or truncated`` the returned ``obs`` and ``state`` are
        those of a fresh episode; the pre-reset observation (needed to
        bootstrap a value on truncation) is ``info["final_observation"]``.
        """
        if params is None:
            params = self.default_params
        action = self.check_action(action, params)
        if self.step_uses_key:
            key_step, key_reset = split_key(key)
        else:
            key_step = key_reset = key
        obs_st, state_st, reward, terminated, info = self.step_env(
            key_step, state, action, params
        )
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key_reset, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        if self.obs_from_state:
            obs = self.get_obs(state, params)
        else:
            obs = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), obs_re, obs_st)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_st,
        }
        return obs, state, reward, terminated, truncated, info

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any | None = None) -> tuple[Any, Any]:
        """Start a new episode of the task described by ``params``."""
        if params is None:
            params = self.default_params
        return self.reset_env(key, params)

    def step_no_reset(self, key, state, action, params=None):
        """One transition without auto-reset (for fixed-horizon rollouts).

        Returns the same six values as :meth:`step`; after the episode ended
        the state simply keeps evolving and callers mask those steps.
        """
        if params is None:
            params = self.default_params
        action = self.check_action(action, params)
        obs, state, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = self.is_truncated(state, params)
        info = {**info, "terminated": terminated, "truncated": truncated,
                "final_observation": obs}
        return obs, state, reward, terminated, truncated, info

    def observation_reward(self, obs, action, next_obs, params) -> jax.Array:
        """The reward of ``obs --action--> next_obs`` from observations alone.

        Equals the ``step`` reward of that transition (float32 scalar), so a
        planner imagining transitions with a learned model can be told the
        true reward. Only envs with ``has_observation_reward = True`` have one:
        an env whose reward needs unobserved state cannot.
        """
        raise NotImplementedError(
            f"{self.name} has no reward function of observations "
            "(has_observation_reward is False)"
        )

    # -- checks ---------------------------------------------------------------

    def check_action(self, action, params):
        """Validate an action's shape and dtype at trace time.

        A wrong shape would otherwise broadcast silently through the dynamics
        (e.g. a ``[2]`` action into CartPole gives a ``[2]``-shaped state).
        """
        space = self.action_space(params)
        action = jnp.asarray(action)
        shape = tuple(space.shape)
        if action.shape != shape:
            raise ValueError(
                f"{self.name}: action has shape {action.shape}, expected {shape} "
                f"(action space {space!r}). Batch over environments with jax.vmap."
            )
        if isinstance(space, spaces.Discrete):
            if not jnp.issubdtype(action.dtype, jnp.integer):
                raise TypeError(
                    f"{self.name}: discrete action must have an integer dtype, "
                    f"got {action.dtype}"
                )
            return action.astype(jnp.int32)
        if isinstance(space, spaces.Box):
            if not jnp.issubdtype(action.dtype, jnp.floating):
                raise TypeError(
                    f"{self.name}: continuous action must have a floating dtype, "
                    f"got {action.dtype}"
                )
            return action.astype(jnp.float32)
        return action

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field if concrete ``params`` are invalid.

        Subclasses override; called by task families on their sampling ranges
        and available to users constructing params by hand.
        """

    # -- to be provided by subclasses ------------------------------------------

    def step_env(self, key, state, action, params):
        """Dynamics: ``(obs, state, reward, terminated, info)`` without reset."""
        raise NotImplementedError

    def reset_env(self, key, params):
        """Initial ``(obs, state)`` of an episode."""
        raise NotImplementedError

    def is_truncated(self, state, params) -> jax.Array:
        return state.time >= params.max_steps_in_episode


def require_positive(name: str, value, *, integer: bool = False, minimum=None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a valid size.

    Used for constructor sizes (arms, states, horizons) and batch sizes.
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            hasattr(value, "__index__")
        ):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    low = 1 if minimum is None else minimum
    if not value >= low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


def require_positive_params(owner: str, params, fields) -> None:
    """Raise ``ValueError`` naming ``params.<field>`` unless every value is > 0.

    ``params`` must be concrete (not traced); a leading task axis is fine.
    ``max_steps_in_episode``, if listed, must also be an integer.
    """
    for field in fields:
        value = np.asarray(getattr(params, field))
        if field == "max_steps_in_episode" and not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"{owner}: params.{field} must be an integer, got {value!r}")
        if not np.all(value > 0):
            raise ValueError(f"{owner}: params.{field} must be > 0, got {value!r}")


# -- fused random numbers ----------------------------------------------------------
#
# Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw 2011, "Parallel
# random numbers: as easy as 1, 2, 3") is the hash behind ``jax.random``. Below
# it is written with ``jnp`` integer ops, the same arithmetic as jax's
# lowering: on CPU jax's primitive becomes a rolled loop XLA cannot fuse, this
# is fused into whatever consumes the bits.

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_THREEFRY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, distance: int) -> jax.Array:
    return jax.lax.shift_left(x, np.uint32(distance)) | jax.lax.shift_right_logical(
        x, np.uint32(32 - distance)
    )


def _threefry2x32(key_words: jax.Array, count_hi: jax.Array, count_lo: jax.Array):
    """Threefry-2x32 (20 rounds) of the 64-bit counters ``(count_hi, count_lo)``.

    ``key_words``: ``uint32[2]``; counters: ``uint32`` arrays of one shape.
    Returns the two ``uint32`` output words, each of the counters' shape.
    """
    k0, k1 = key_words[0], key_words[1]
    schedule = (k0, k1, k0 ^ k1 ^ _THREEFRY_PARITY)
    x0 = count_hi + schedule[0]
    x1 = count_lo + schedule[1]
    for block in range(5):
        for distance in _THREEFRY_ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _threefry_key_words(key: jax.Array):
    """``(uint32[2] key words, typed)`` of a Threefry key, or ``None`` otherwise.

    ``typed`` tells whether ``key`` is a new-style typed key (``jax.random.key``)
    or a raw ``uint32[2]`` one (``jax.random.PRNGKey``).
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != () or str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        return jax.random.key_data(key), True
    if (
        key.dtype == jnp.uint32
        and key.shape == (2,)
        and str(jax.config.jax_default_prng_impl) == "threefry2x32"
    ):
        return key, False
    return None


def _split_key_words(key_words: jax.Array, num: int) -> jax.Array:
    """``uint32[num, 2]``: the key data of ``jax.random.split(key, num)``."""
    count_lo = jnp.arange(num, dtype=jnp.uint32)
    hi, lo = _threefry2x32(key_words, jnp.zeros_like(count_lo), count_lo)
    return jnp.stack([hi, lo], axis=-1)


def split_key(key: jax.Array, num: int = 2) -> jax.Array:
    """``jax.random.split(key, num)`` as fused integer ops (same keys, bit for bit).

    Threefry-2x32 of the counters ``0 .. num - 1`` (JAX's default
    ``jax_threefry_partitionable`` split); any other PRNG implementation
    falls back to ``jax.random.split``. Returns keys of ``key``'s kind
    (typed ``[num]`` or raw ``uint32[num, 2]``).
    """
    require_positive("num", num, integer=True)
    words = _threefry_key_words(key)
    if words is None or not jax.config.jax_threefry_partitionable:
        return jax.random.split(key, num)
    key_words, typed = words
    data = _split_key_words(key_words, int(num))
    return jax.random.wrap_key_data(data, impl="threefry2x32") if typed else data


def uniform_from_bits(bits: jax.Array, minval, maxval) -> jax.Array:
    """float32 uniforms on ``[minval, maxval)`` from ``uint32`` bits.

    ``jax.random.uniform``'s construction: the top 23 bits become the mantissa
    of a float in ``[1, 2)``, so ``u - 1`` is exactly uniform on the grid
    ``k * 2**-23``; then scaled, and clamped below against rounding.
    """
    mantissa = jax.lax.shift_right_logical(bits, np.uint32(9)) | np.uint32(0x3F800000)
    unit = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
    minval = jnp.asarray(minval, jnp.float32)
    maxval = jnp.asarray(maxval, jnp.float32)
    return jnp.maximum(minval, minval + unit * (maxval - minval))


# Weyl-sequence constants (golden ratio * 2**32) that separate the words of one key
_WORD_STRIDE = 0x9E3779B9


def _mix32(x: jax.Array) -> jax.Array:
    """``triple32``: a bijective 32-bit xorshift-multiply hash.

    From C. Wellons' hash-prospector (2018), the best of its searched
    three-multiply hashes: avalanche bias about 0.021 in its author's
    measurement (0 would be a perfect random permutation).
    """
    for shift, multiplier in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        x = (x ^ jax.lax.shift_right_logical(x, np.uint32(shift))) * np.uint32(multiplier)
    return x ^ jax.lax.shift_right_logical(x, np.uint32(14))


def key_hash_bits(key_words: jax.Array, num: int) -> jax.Array:
    """``uint32[num]`` pseudo-random words from the 64 bits of a key.

    Word ``i`` is ``triple32(k0 ^ triple32(k1 ^ (i + 1) * 0x9E3779B9))``: each
    word depends on all 64 key bits (two bijective rounds), and the words of
    one key differ by their Weyl constant. Why not Threefry: XLA:CPU computes
    every output element of a fusion on its own, so each 32-bit word would
    cost a whole 20-round Threefry block (~115 integer ops; ``jax.random``
    spends one block per word too) against ~25 ops here.
    """
    stride = (np.arange(1, num + 1, dtype=np.uint64) * _WORD_STRIDE % 2**32).astype(np.uint32)
    return _mix32(key_words[0] ^ _mix32(key_words[1] ^ jnp.asarray(stride)))


def reset_uniform(key: jax.Array, shape, minval=0.0, maxval=1.0) -> jax.Array:
    """float32 ``U[minval, maxval)`` of ``shape`` from one key, fused into the step.

    The ``prod(shape)`` words of :func:`key_hash_bits` of the key's data,
    converted by :func:`uniform_from_bits`; ``minval``/``maxval`` broadcast
    against ``shape``. For the auto-reset, where the reset is computed on every
    step and kept only where an episode ended, this costs a few integer
    multiplies per number instead of ``jax.random.uniform``'s Threefry blocks
    in a rolled loop. Keys of other PRNG implementations (or raw keys of a
    non-Threefry default) fall back to ``jax.random.uniform``.
    """
    shape = tuple(shape)
    words = _threefry_key_words(key)
    if words is None:
        return jax.random.uniform(key, shape, jnp.float32, minval, maxval)
    bits = key_hash_bits(words[0], math.prod(shape))
    return uniform_from_bits(bits.reshape(shape), minval, maxval)
