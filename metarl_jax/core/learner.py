"""The learner contract, defined once (as optax defines ``GradientTransformation``).

A learner is built on the host by ``make(config, family, mesh=None)`` and is
a named tuple whose first fields are pure functions:

* ``init(key) -> state``: a pytree (parameters, optimiser state, step);
* ``update(state, key) -> (state, metrics)``: one meta-iteration, jit-able,
  no host round-trip; ``metrics`` is a flat dict of float32 scalars;
* ``evaluate(state, task_params, key, num_steps=None) -> AdaptationCurves``:
  curves on a batch of held-out tasks. ``num_steps`` is how far the curve
  runs in the learner's own unit (inner gradient steps for MAML, episodes of
  the evaluation trial for RL²); ``None`` means the learner's default.

and whose other fields describe it: ``config``, ``family``, ``key_metric``
(the training metric a progress bar shows). A learner may carry more fields
(its losses, rollouts, networks) for tests and analysis; the runner uses
only these. :func:`check_learner` checks the contract.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

CONTRACT_FUNCTIONS = ("init", "update", "evaluate")
CONTRACT_FIELDS = CONTRACT_FUNCTIONS + ("config", "family", "key_metric")


@runtime_checkable
class Learner(Protocol):
    """What the runner, the CLI and the benchmarks rely on."""

    init: Callable[..., Any]
    update: Callable[..., Any]
    evaluate: Callable[..., Any]
    config: Any
    family: Any
    key_metric: str


def check_learner(learner: Any) -> None:
    """Raise ``TypeError`` naming what in ``learner`` breaks the contract."""
    missing = [name for name in CONTRACT_FIELDS if not hasattr(learner, name)]
    if missing:
        raise TypeError(f"learner lacks the contract field(s) {missing}; "
                        f"a learner needs {list(CONTRACT_FIELDS)}")
    for name, arity in (("init", 1), ("update", 2), ("evaluate", 3)):
        fn = getattr(learner, name)
        if not callable(fn):
            raise TypeError(f"learner.{name} must be callable, got {type(fn).__name__}")
        try:
            inspect.signature(fn).bind(*range(arity))
        except TypeError as error:
            raise TypeError(f"learner.{name} must accept {arity} positional argument(s) "
                            f"({error})") from None
        except ValueError:  # a builtin without a signature: trust it
            pass
    if not isinstance(learner.key_metric, str):
        raise TypeError(f"learner.key_metric must be a str, got {learner.key_metric!r}")
