"""Task families: an environment plus a distribution over its parameters.

A *task* is one ``params`` pytree of an environment; a batch of tasks is the
same pytree with a leading task axis, so everything above this layer
``vmap``s over it.

Splits
------
``family.sample(key, n, split)`` draws from one of three splits:

* ``"train"`` and ``"test"``: the same parameter distribution, drawn from
  separate key streams (``jax.random.fold_in(key, split_id)``), so the same
  user key never yields the same task in both; for continuous parameters the
  two sets are disjoint with probability one.
* ``"ood"``: out-of-distribution tasks from parameter ranges disjoint from the
  training ranges (physics families only; others raise ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from metarl_jax.envs.environment import Environment, require_positive
from metarl_jax.envs.gymnax_adapter import as_environment

SPLITS = ("train", "test", "ood")
_SPLIT_IDS = {"train": 0, "test": 1, "ood": 2}

# sample_fn(key, split) -> params of one task
SampleFn = Callable[[jax.Array, str], Any]


@dataclasses.dataclass(frozen=True, eq=False)
class TaskFamily:
    """An environment and a sampler of its task parameters.

    Attributes:
      name: registry name, e.g. ``"cartpole"``.
      env: the environment; sizes that change shapes are its constructor args.
      sample_fn: ``sample_fn(key, split) -> params`` for one task.
      ranges: human-readable description of each varied field per split,
        ``{"train": {"length": (0.25, 1.0)}, "ood": {...}}``, shown by
        ``metarl families`` and in the README table.
      description: one line for listings.
    """

    name: str
    env: Environment
    sample_fn: SampleFn
    ranges: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    description: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this family can sample (always train and test)."""
        return ("train", "test") + (("ood",) if "ood" in self.ranges else ())

    def sample_params(self, key: jax.Array, split: str = "train") -> Any:
        """Params of a single task from ``split``."""
        self._check_split(split)
        return _strong(self.sample_fn(jax.random.fold_in(key, _SPLIT_IDS[split]), split))

    def sample(self, key: jax.Array, num_tasks: int, split: str = "train") -> Any:
        """Params of ``num_tasks`` tasks, with a leading task axis."""
        require_positive("num_tasks", num_tasks, integer=True)
        self._check_split(split)
        keys = jax.random.split(jax.random.fold_in(key, _SPLIT_IDS[split]), int(num_tasks))
        return _strong(jax.vmap(lambda k: self.sample_fn(k, split))(keys))

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self.splits:
            raise ValueError(
                f"task family {self.name!r} has no {split!r} split; "
                f"available: {self.splits}"
            )


def _strong(tree: Any) -> Any:
    """Drop weak types (Python-number defaults broadcast by vmap become weakly
    typed), so params from ``sample`` never cause a retrace next to others."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def uniform_params_sampler(
    default_params: Any,
    ranges: Mapping[str, Mapping[str, tuple[float, float]]],
    derive: Callable[[Any], Any] | None = None,
) -> SampleFn:
    """Sampler drawing each listed field of ``default_params`` uniformly.

    ``ranges[split][field] = (low, high)``; fields not listed keep their
    defaults. A split missing from ``ranges`` uses the ``"train"`` ranges
    (that is how ``"test"`` shares the training distribution). ``derive`` may
    recompute dependent fields after sampling.
    """
    for split, fields in ranges.items():
        for field, (low, high) in fields.items():
            if not hasattr(default_params, field):
                raise ValueError(f"unknown parameter field {field!r} in {split!r} ranges")
            if not low <= high:
                raise ValueError(f"range of {field!r} in {split!r} has low > high")

    def sample_fn(key, split):
        fields = ranges.get(split, ranges["train"])
        keys = jax.random.split(key, max(len(fields), 1))
        updates = {
            field: jax.random.uniform(k, (), jnp.float32, low, high)
            for k, (field, (low, high)) in zip(keys, sorted(fields.items()))
        }
        params = default_params.replace(**updates)
        return derive(params) if derive is not None else params

    return sample_fn


# -- dynamics that change within an episode --------------------------------------------

# perturb(key, params, split) -> params of another piece of the task ``params``
PerturbFn = Callable[[jax.Array, Any, str], Any]


def changing_dynamics_family(
    family: TaskFamily,
    perturb: PerturbFn,
    max_steps_in_episode: int,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
    describe_pieces: Mapping[str, str] | None = None,
) -> TaskFamily | None:
    """``family`` with dynamics that change within an episode, or ``None`` if unasked.

    The physics families' ``change_every``/``change_prob``/``num_pieces``
    options land here. With both change options ``None`` (and no
    ``num_pieces``) this returns ``None``: the caller keeps ``family`` as it
    is. Otherwise the env is
    :class:`~metarl_jax.envs.changing.ChangingDynamics` of ``family.env``, and
    a task's piece 0 is a task of ``family``'s split while pieces ``1 ..
    num_pieces - 1`` are ``perturb(key, piece_0, split)`` with independent
    keys.

    Args:
      family: the base family.
      perturb: ``perturb(key, params, split) -> params`` of one more piece.
      max_steps_in_episode: the base family's horizon.
      change_every: steps per piece; must be ``< max_steps_in_episode`` (else
        the dynamics never change). ``num_pieces`` defaults to (and must
        equal) ``ceil(max_steps_in_episode / change_every)``.
      change_prob: per-step probability of moving to the next piece
        (cyclically); ``num_pieces`` defaults to 2.
      num_pieces: number of pieces (>= 2).
      describe_pieces: per split, how pieces 1.. differ from piece 0, appended
        to ``ranges[split]["change"]``.

    Raises:
      ValueError: naming the bad option (both or neither change option,
        non-positive sizes, a schedule that never changes, an inconsistent
        ``num_pieces``).
    """
    from metarl_jax.envs.changing import ChangingDynamics, ChangingParams, check_change_options

    if change_every is None and change_prob is None and num_pieces is None:
        return None
    check_change_options(change_every, change_prob)
    num_pieces = _num_pieces(max_steps_in_episode, change_every, num_pieces)
    env = ChangingDynamics(family.env, num_pieces, change_every, change_prob)
    base_sample = family.sample_fn

    def sample_fn(key, split):
        keys = jax.random.split(key, num_pieces)
        first = base_sample(keys[0], split)
        rest = jax.vmap(lambda k: perturb(k, first, split))(keys[1:])
        pieces = jax.tree.map(lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b]),
                              first, rest)
        return ChangingParams(pieces=pieces, max_steps_in_episode=first.max_steps_in_episode)

    schedule = (f"every {change_every} steps" if change_every is not None
                else f"with probability {change_prob} per step")
    change = f"{schedule}, {num_pieces} pieces"
    ranges = {}
    for split, fields in family.ranges.items():
        detail = (describe_pieces or {}).get(split, (describe_pieces or {}).get("train"))
        ranges[split] = {**fields, "change": change + (f"; {detail}" if detail else "")}
    return TaskFamily(name=family.name, env=env, sample_fn=sample_fn, ranges=ranges,
                      description=f"{family.description}; changing dynamics ({change})")


def _num_pieces(horizon: int, change_every: int | None, num_pieces: int | None) -> int:
    """The number of pieces, checked against the schedule (see the caller)."""
    if num_pieces is not None:
        require_positive("num_pieces", num_pieces, integer=True, minimum=2)
        num_pieces = int(num_pieces)
    if change_every is None:
        return 2 if num_pieces is None else num_pieces
    if change_every >= horizon:
        raise ValueError(
            f"change_every={change_every} must be < max_steps_in_episode={horizon}: "
            "otherwise the dynamics never change within an episode")
    needed = -(-horizon // change_every)  # ceil
    if num_pieces is not None and num_pieces != needed:
        raise ValueError(
            f"num_pieces={num_pieces} is inconsistent with change_every={change_every} and "
            f"max_steps_in_episode={horizon}: the schedule uses ceil({horizon} / "
            f"{change_every}) = {needed} pieces (leave num_pieces unset)")
    return needed


# -- registry ------------------------------------------------------------------

_REGISTRY: dict[str, tuple[Callable[..., TaskFamily], str]] = {}


def register(name: str, description: str = ""):
    """Decorator registering a ``factory(**overrides) -> TaskFamily`` under ``name``."""

    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"task family {name!r} is already registered")
        _REGISTRY[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return decorator


def _load_builtin() -> None:
    import metarl_jax.families  # noqa: F401  (registers the shipped families)


def list_families() -> list[str]:
    """Names of all registered task families, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def family_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` of all registered families."""
    _load_builtin()
    return {name: _REGISTRY[name][1] for name in sorted(_REGISTRY)}


def family_options(name: str) -> dict[str, Any]:
    """``{option: default}`` accepted by ``make(name, **options)``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown task family {name!r}; known families: {', '.join(sorted(_REGISTRY))}"
        )
    return {
        p.name: p.default
        for p in inspect.signature(_REGISTRY[name][0]).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def make(name: str, **overrides) -> TaskFamily:
    """Build the registered task family ``name``.

    ``overrides`` are passed to the family's factory (e.g. ``arms=10`` for
    bandits); an unknown override raises ``ValueError`` naming it.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown task family {name!r}; known families: {', '.join(sorted(_REGISTRY))}"
        )
    factory = _REGISTRY[name][0]
    try:
        inspect.signature(factory).bind(**overrides)
    except TypeError:
        valid = list(inspect.signature(factory).parameters)
        bad = [k for k in overrides if k not in valid]
        raise ValueError(
            f"task family {name!r} got unknown option(s) {bad}; valid options: {valid}"
        ) from None
    return factory(**overrides)


# -- any gymnax environment plus a sampler is a family --------------------------------


def _takes_split(sample_params: Callable) -> bool:
    """Whether ``sample_params`` is ``f(key, split)`` rather than ``f(key)``.

    It takes the split if it has a parameter named ``split`` or two required
    positional parameters.
    """
    try:
        signature = inspect.signature(sample_params)
    except (TypeError, ValueError):
        raise TypeError("sample_params must be a callable with an inspectable signature") from None
    parameters = list(signature.parameters.values())
    positional = [
        p for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return True
    if "split" in signature.parameters or len(required) >= 2:
        return True
    if len(positional) >= 1:
        return False
    raise TypeError(
        "sample_params must accept (key, split) or (key), got signature "
        f"{signature}"
    )


def from_gymnax(
    env_or_id,
    sample_params: Callable,
    name: str | None = None,
    ranges: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
) -> TaskFamily:
    """Make a :class:`~metarl_jax.tasks.TaskFamily` from any gymnax environment.

    Args:
      env_or_id: a gymnax id such as ``"Acrobot-v1"`` (``gymnax.make``), a
        gymnax environment instance, or a metarl_jax environment.
      sample_params: ``sample_params(key, split) -> params`` or
        ``sample_params(key) -> params`` for one task; params must have the
        pytree structure of the env's ``default_params``.
      name: family name (default: the env's name).
      ranges: description of the varied fields per split, as in
        ``TaskFamily.ranges``; an ``"ood"`` entry enables the ``"ood"`` split,
        which needs a sampler that takes the split.
      description: one line for listings.

    Raises:
      ValueError: unknown gymnax id (the message lists the valid ids), unknown
        split in ``ranges``, or an ``"ood"`` range with a split-blind sampler.
      TypeError: ``sample_params`` is not a sampler of the env's params.
    """
    env = as_environment(env_or_id)
    ranges = dict(ranges or {})
    unknown = [split for split in ranges if split not in SPLITS]
    if unknown:
        raise ValueError(f"ranges has unknown split(s) {unknown}; expected keys among {SPLITS}")
    if _takes_split(sample_params):
        sample_fn = sample_params
    else:
        if "ood" in ranges:
            raise ValueError(
                "ranges declares an 'ood' split but sample_params(key) takes no "
                "split argument; use sample_params(key, split)"
            )

        def sample_fn(key, split):
            del split  # train and test differ by their key streams only
            return sample_params(key)

    family = TaskFamily(
        name=name or env.name,
        env=env,
        sample_fn=sample_fn,
        ranges=ranges,
        description=description,
    )
    expected = jax.tree.structure(env.default_params)
    for split in family.splits:
        sampled = jax.eval_shape(
            lambda key, split=split: family.sample_params(key, split), jax.random.PRNGKey(0)
        )
        if jax.tree.structure(sampled) != expected:
            raise TypeError(
                f"sample_params({split!r}) returned a pytree of structure "
                f"{jax.tree.structure(sampled)}, expected the structure of "
                f"{env.name}'s default_params {expected}"
            )
    return family
