"""Performance-weighted ensembles of meta-learners: Hedge weights, mixture policies, ESBAS.

A meta-learner may keep a set of learners ``f_i`` (the members of a
population, or several trained runs of one family), measure each one's
performance ``P_i`` on validation tasks and act with the soft ensemble
``f* = sum_i w_i f_i``. Here

* the weights are Hedge's, ``w_i ∝ exp(eta * P_i)`` (Freund & Schapire 1997):
  ``eta = 0`` is the uniform mixture, ``eta -> inf`` puts all the weight on
  the best member (ties split evenly); :func:`choose_eta` picks ``eta`` on
  validation tasks;
* the combination is a *mixture of action distributions*: at every step the
  ensemble acts with ``pi*(a|s) = sum_i w_i pi_i(a|s)`` (:func:`mixture`).
  Discrete policies mix their probabilities (the result is a
  :class:`~metarl_jax.nn.distributions.Categorical`); Gaussian policies give a
  :class:`GaussianMixture`, sampled by drawing a member ``i ~ w`` and then its
  action, whose log-density is ``logsumexp_i(log w_i + log pi_i(a|s))``;
* the online variant (:class:`SelectorState`, as ESBAS, Laroche & Féraud 2018)
  lets one member act for each whole episode of a trial, chosen by UCB1
  (Auer et al. 2002) from the returns the members earned earlier in the same
  trial.

Members, and what "acting" means for them:

* MAML members (``maml.Learner``): each member first adapts to the task as in
  meta-training (``num_inner_steps`` policy-gradient steps of its
  ``inner_lr`` on ``inner_episodes`` fresh trajectories, the learner's own
  ``sample_adaptation``); the ensemble then acts with the mixture of the
  *adapted* policies on fresh episodes. A task's score is the mean return of
  those episodes.
* RL² members (``rl2.Learner``): the mixture acts for the whole trial; every
  member's memory observes the same transition stream (the ensemble's own
  actions and rewards), each carrying its own hidden state. A task's score is
  the trial's total return.

A member plays alone as the mixture with one-hot weights, so members, the
uniform mixture, the Hedge ensemble and the best member all run the same code
and, given the same keys, the same random numbers.

Everything here is pure (no files, clocks or printing);
:mod:`metarl_jax.training.ensemble` measures, chooses and reports.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.algorithms import maml, rl2
from metarl_jax.core.rollout import (MetaInputs, episode_horizon, episode_returns, rollout,
                                     run_trial, with_horizon)
from metarl_jax.nn import memory
from metarl_jax.nn.distributions import Categorical, DiagGaussian
from metarl_jax.nn.mlp import make_policy
from metarl_jax.nn.spaces import ActionSpec, action_spec

SUPPORTED = ("maml", "rl2")
# eta * (max P - min P) on the default grid: how many nats the best member's
# log-weight is above the worst one's (0 and inf are added at the ends)
DEFAULT_ETA_SPREADS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


# -- Hedge weights ----------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_eta(eta) -> None:
    """Raise ``ValueError`` unless ``eta`` is a number ``>= 0`` (``inf`` allowed, NaN not)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) and not (
            hasattr(eta, "shape") and jnp.shape(eta) == ()):
        raise ValueError(f"eta must be a non-negative number (inf allowed), got {eta!r}")
    if _is_concrete(eta) and not float(eta) >= 0:
        raise ValueError(f"eta must be a non-negative number (inf allowed), got {eta!r}")


def hedge_weights(performance, eta) -> jax.Array:
    """Hedge weights ``w_i = exp(eta P_i) / sum_j exp(eta P_j)``, float32 ``[M]``.

    ``performance [M]`` is each member's measured return. Computed as a softmax
    of ``eta * (P_i - max P)`` with the best members' exponent fixed at 0, so it
    is stable for any ``eta`` and exact in both limits: ``eta = 0`` gives the
    uniform weights ``1 / M`` and ``eta = inf`` splits the weight evenly
    between the members tied at the best performance (``0 * inf`` never occurs).
    """
    check_eta(eta)
    performance = jnp.asarray(performance, jnp.float32)
    if performance.ndim != 1 or performance.shape[0] == 0:
        raise ValueError(f"performance must be a non-empty vector [members], got shape "
                         f"{performance.shape}")
    if _is_concrete(performance) and not bool(jnp.all(jnp.isfinite(performance))):
        raise ValueError(f"performance must be finite, got {performance.tolist()}")
    best = jnp.max(performance)
    exponent = jnp.where(performance == best, 0.0,
                         jnp.asarray(eta, jnp.float32) * (performance - best))
    return jax.nn.softmax(exponent)


def eta_grid(performance, spreads: Sequence[float] = DEFAULT_ETA_SPREADS) -> tuple[float, ...]:
    """Candidate ``eta`` s: 0, ``s / (max P - min P)`` for each ``s`` in ``spreads``, inf.

    Scaling by the members' spread makes the grid independent of the return's
    units: ``eta = s / spread`` weighs the best member ``e^s`` times the worst.
    With no spread (all members equal) every ``eta`` gives the same weights: ``(0, inf)``.
    """
    performance = [float(p) for p in jnp.asarray(performance, jnp.float32).reshape(-1)]
    spread = max(performance) - min(performance)
    middle = tuple(s / spread for s in spreads) if spread > 0 else ()
    return (0.0,) + middle + (math.inf,)


def choose_eta(performance, score: Callable[[jax.Array], Any],
               etas: Sequence[float] | None = None) -> tuple[float, list[float]]:
    """The ``eta`` whose Hedge ensemble scores best, and every candidate's score.

    ``performance [M]`` is measured on one set of validation tasks;
    ``score(weights [G, M]) -> [G]`` is the return of the ensemble with each row
    of weights on validation tasks (the caller builds it, on tasks other than
    the test tasks and preferably other than those ``performance`` came from,
    so that ``eta = inf`` is not favoured by the noise that made the best
    member look best). ``etas`` defaults to :func:`eta_grid`. Ties go to the
    smallest ``eta`` (the broader mixture).
    """
    etas = eta_grid(performance) if etas is None else tuple(etas)
    if not etas:
        raise ValueError("etas must name at least one candidate")
    for eta in etas:
        check_eta(eta)
    weights = jnp.stack([hedge_weights(performance, eta) for eta in etas])
    scores = [float(s) for s in jnp.asarray(score(weights)).reshape(-1)]
    if len(scores) != len(etas):
        raise ValueError(f"score gave {len(scores)} values for {len(etas)} rows of weights")
    order = sorted(range(len(etas)), key=lambda i: (-scores[i], etas[i]))
    return float(etas[order[0]]), scores


# -- mixtures of action distributions -------------------------------------------------------


class GaussianMixture(struct.PyTreeNode):
    """``sum_i w_i N(mean_i, diag(exp(log_std_i))^2)`` over the member axis (leading, ``M``).

    ``weights [M]``, ``mean [M, ..., d]``, ``log_std`` broadcast to ``mean``'s shape.
    """

    weights: jax.Array
    mean: jax.Array
    log_std: jax.Array

    def _components(self) -> DiagGaussian:
        return DiagGaussian(self.mean, self.log_std)

    def sample(self, key: jax.Array) -> jax.Array:
        """A member ``i ~ w``, then ``i`` 's action: float32 ``[..., d]``."""
        member_key, action_key = jax.random.split(key)
        batch = self.mean.shape[1:-1]
        member = jax.random.categorical(member_key, jnp.log(self.weights), shape=batch)
        actions = self._components().sample(action_key)  # [M, ..., d], one per member
        return jnp.take_along_axis(actions, member[None, ..., None], axis=0)[0]

    def log_prob(self, action: jax.Array) -> jax.Array:
        """``log sum_i w_i pi_i(action)``, ``[...]`` (logsumexp: no underflow)."""
        per_member = self._components().log_prob(jnp.asarray(action)[None])  # [M, ...]
        log_w = jnp.log(self.weights).reshape((-1,) + (1,) * (per_member.ndim - 1))
        return jax.nn.logsumexp(log_w + per_member, axis=0)

    def mode(self) -> jax.Array:
        """The mean of the heaviest member (the mixture's exact mode has no closed form)."""
        return self.mean[jnp.argmax(self.weights)]


def mixture(dists: Sequence[Any], weights) -> Categorical | GaussianMixture:
    """The mixture ``sum_i w_i dists[i]`` of ``M`` members' distributions (one batch shape).

    Categorical members give the Categorical of the mixed probabilities
    (log-probabilities ``logsumexp_i(log w_i + log p_i)``, exact where a weight is
    0 or 1); diagonal Gaussians give a :class:`GaussianMixture`. ``weights [M]``
    should sum to one.
    """
    dists = list(dists)
    if not dists:
        raise ValueError("a mixture needs at least one member distribution")
    kinds = {type(d).__name__ for d in dists}
    if len(kinds) > 1:
        raise TypeError(f"members' action distributions differ ({sorted(kinds)}): they act "
                        "in different action spaces and cannot be mixed")
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (len(dists),):
        raise ValueError(f"weights must have shape [{len(dists)}] (one per member), "
                         f"got {weights.shape}")
    if isinstance(dists[0], Categorical):
        log_p = jnp.stack([d.log_probs for d in dists])  # [M, ..., n]
        log_w = jnp.log(weights).reshape((-1,) + (1,) * (log_p.ndim - 1))
        return Categorical(jax.nn.logsumexp(log_w + log_p, axis=0))
    if isinstance(dists[0], DiagGaussian):
        means = jnp.stack([d.mean for d in dists])
        log_stds = jnp.stack([jnp.broadcast_to(d.log_std, d.mean.shape) for d in dists])
        return GaussianMixture(weights, means, log_stds)
    raise TypeError(f"cannot mix {type(dists[0]).__name__} distributions; supported: "
                    "Categorical and DiagGaussian")


# -- the online selector (ESBAS) --------------------------------------------------------------


class SelectorState(struct.PyTreeNode):
    """UCB1 statistics of one trial: episodes played and return summed, per member ``[M]``."""

    counts: jax.Array
    sums: jax.Array


def selector_init(num_members: int) -> SelectorState:
    """No episode played yet."""
    zeros = jnp.zeros((num_members,), jnp.float32)
    return SelectorState(zeros, zeros)


def selector_choose(state: SelectorState, exploration, priority) -> jax.Array:
    """The member to play the next episode (int32): UCB1's
    ``argmax_i mean_i + c sqrt(2 ln t / n_i)``, every member tried once first.

    ``exploration`` is ``c`` in return units (UCB1 assumes returns in [0, 1]; the
    caller scales by the returns' spread). Ties, including among untried
    members, go to the highest ``priority [M]`` (e.g. validation performance),
    so the trial starts with the member that looked best before it.
    """
    total = jnp.maximum(jnp.sum(state.counts), 1.0)
    n = jnp.maximum(state.counts, 1.0)
    index = jnp.where(state.counts > 0,
                      state.sums / n + exploration * jnp.sqrt(2.0 * jnp.log(total) / n),
                      jnp.inf)
    best = index == jnp.max(index)
    return jnp.argmax(jnp.where(best, jnp.asarray(priority, jnp.float32), -jnp.inf)).astype(
        jnp.int32)


def selector_update(state: SelectorState, member, episode_return) -> SelectorState:
    """The statistics after ``member`` played an episode returning ``episode_return``."""
    hit = jax.nn.one_hot(member, state.counts.shape[0], dtype=jnp.float32)
    return SelectorState(state.counts + hit, state.sums + hit * episode_return)


# -- ensembles of learners --------------------------------------------------------------------


class Ensemble(NamedTuple):
    """Members of one kind (``"maml"`` or ``"rl2"``) on one task family.

    ``learners[i]`` and ``params[i]`` are member ``i`` 's learner and what it
    learned (MAML's ``meta_params``, RL²'s network params); ``names[i]`` labels
    it. Build with :func:`make_ensemble`; the functions below take the params
    as an explicit argument so they can be traced, not baked into a program.
    """

    kind: str
    learners: tuple
    params: tuple
    names: tuple
    family: Any
    spec: ActionSpec
    horizon: int


def kind_of(learner) -> str:
    """``"maml"`` or ``"rl2"``; ``TypeError`` naming the supported kinds otherwise."""
    if isinstance(learner, maml.Learner):
        return "maml"
    if isinstance(learner, rl2.Learner):
        return "rl2"
    raise TypeError(f"ensembles support {' and '.join(SUPPORTED)} learners; got a "
                    f"{type(learner).__module__}.{type(learner).__name__}")


def _meta_inputs(config: rl2.Config) -> MetaInputs:
    # what rl2.make feeds its network, so a mixture builds one input for every member
    return MetaInputs(previous_obs=config.previous_obs_input, time=config.time_input,
                      privileged=config.privileged_value)


def _space_of(learner) -> tuple[ActionSpec, tuple]:
    env = learner.family.env
    params0 = learner.family.sample_params(jax.random.PRNGKey(0))
    return (action_spec(env.action_space(params0)),
            tuple(env.observation_space(params0).shape))


def _describe(spec: ActionSpec) -> str:
    return f"Discrete({spec.dim})" if spec.discrete else f"Box({spec.dim})"


def make_ensemble(learners: Sequence[Any], params: Sequence[Any],
                  names: Sequence[str] | None = None) -> Ensemble:
    """Check that the members can act together and bundle them.

    Raises ``ValueError`` for no members or mismatched lengths and
    ``TypeError`` for an unsupported learner, members of different kinds,
    different action or observation spaces, different task families, MAML
    members with different horizons, or RL² members whose inputs or
    episode horizons differ (one input stream must suit every memory).
    """
    learners, params = tuple(learners), tuple(params)
    if not learners:
        raise ValueError("an ensemble needs at least one member; got an empty list")
    if len(params) != len(learners):
        raise ValueError(f"{len(learners)} learners but {len(params)} parameter sets")
    names = tuple(names) if names is not None else tuple(f"member_{i}"
                                                        for i in range(len(learners)))
    if len(names) != len(learners):
        raise ValueError(f"{len(learners)} learners but {len(names)} names")
    kinds = [kind_of(learner) for learner in learners]
    if len(set(kinds)) > 1:
        raise TypeError(f"an ensemble's members must be of one kind; got {kinds}")
    spaces = [_space_of(learner) for learner in learners]
    (spec, obs_shape) = spaces[0]
    for name, (s, o) in zip(names, spaces):
        if (s.discrete, s.dim) != (spec.discrete, spec.dim):
            raise TypeError(f"mismatched action spaces: {names[0]} acts in {_describe(spec)}, "
                            f"{name} in {_describe(s)}; an ensemble mixes actions of one space")
        if o != obs_shape:
            raise TypeError(f"mismatched observation spaces: {names[0]} sees {obs_shape}, "
                            f"{name} sees {o}")
    families = [learner.family.name for learner in learners]
    if len(set(families)) > 1:
        raise TypeError(f"members were trained on different task families {families}")
    family = learners[0].family
    if kinds[0] == "maml":
        horizons = [learner.config.horizon for learner in learners]
        if len(set(horizons)) > 1:
            raise TypeError(f"MAML members must share the episode horizon; got {horizons}")
        horizon = horizons[0]
    else:
        inputs = [_meta_inputs(learner.config) for learner in learners]
        if len(set(inputs)) > 1:
            raise TypeError("RL² members must see the same inputs (previous_obs_input, "
                            f"time_input, privileged_value); got {inputs}")
        horizons = [episode_horizon(family, learner.config.horizon, "RL²")
                    for learner in learners]
        if len(set(horizons)) > 1:
            raise TypeError(f"RL² members must share the episode horizon; got {horizons}")
        horizon = horizons[0]
    return Ensemble(kinds[0], learners, params, names, family, spec, horizon)


def default_num_episodes(ensemble: Ensemble) -> int:
    """Episodes the ensemble plays per task: RL²'s evaluation trial (the first
    member's ``eval_episodes`` or ``trial_episodes``), or MAML's ``eval_episodes``."""
    config = ensemble.learners[0].config
    if ensemble.kind == "rl2":
        return config.eval_episodes or config.trial_episodes
    return config.eval_episodes


def adapt_member(learner, params, task_params, keys: jax.Array):
    """One MAML member's adapted policy params on a task batch (leading axis, one key
    per task): its own ``num_inner_steps`` steps of its ``inner_lr``, as in meta-training."""
    return jax.vmap(lambda task, key: learner.sample_adaptation(
        params, task, key, learner.config.num_inner_steps)[1])(task_params, keys)


def prepare(ensemble: Ensemble, params: tuple, task_params, key: jax.Array) -> tuple:
    """What each member acts with on a task batch (leading task axis): MAML members'
    adapted policy params (every member adapts to task ``b`` from the same key,
    common random numbers), RL² members' params unchanged (no task axis).
    """
    if ensemble.kind == "rl2":
        return params
    keys = jax.random.split(key, jax.tree.leaves(task_params)[0].shape[0])
    return tuple(adapt_member(learner, p, task_params, keys)
                 for learner, p in zip(ensemble.learners, params))


def _maml_policies(ensemble: Ensemble):
    # the networks maml.make builds from these same config fields
    env = ensemble.family.env
    space = env.action_space(env.default_params)
    return [make_policy(space, tuple(l.config.hidden_sizes), l.config.activation,
                        l.config.init_log_std) for l in ensemble.learners]


def _maml_act(ensemble: Ensemble):
    policies = _maml_policies(ensemble)

    def act(acting_and_weights, obs, key):
        acting, weights = acting_and_weights
        dist = mixture([p.apply(a, obs) for p, a in zip(policies, acting)], weights)
        action = dist.sample(key)
        return action, dist.log_prob(action)

    return act


def _rl2_step(ensemble: Ensemble):
    networks = [learner.network for learner in ensemble.learners]

    def step(params_and_weights, hidden, inputs):
        params, weights = params_and_weights
        outs = [memory.step(n, p, h, inputs) for n, p, h in zip(networks, params, hidden)]
        value = jnp.sum(weights * jnp.stack([v for _, _, v in outs]))
        return tuple(h for h, _, _ in outs), mixture([d for _, d, _ in outs], weights), value

    return step


def _rl2_init_hidden(ensemble: Ensemble) -> tuple:
    return tuple(learner.network.init_state() for learner in ensemble.learners)


def _check_rl2_length(ensemble: Ensemble, num_episodes: int) -> None:
    total = num_episodes * ensemble.horizon
    for name, learner in zip(ensemble.names, ensemble.learners):
        max_len = getattr(learner.network, "max_len", None)
        if max_len is not None and total > max_len:
            raise ValueError(f"{name}: a trial of {total} steps exceeds its transformer "
                             f"memory's {max_len} slots")


def play(ensemble: Ensemble, acting: tuple, weights, task_params, key: jax.Array,
         num_episodes: int) -> jax.Array:
    """Per-episode returns ``[num_episodes]`` of the mixture with ``weights [M]`` on one task.

    ``acting`` is one task's part of :func:`prepare`'s. MAML: ``num_episodes`` fresh, independent
    episodes of the adapted policies' mixture. RL²: one trial of
    ``num_episodes`` episodes, every member's memory fed the same stream.
    One-hot ``weights`` play that member alone.
    """
    weights = jnp.asarray(weights, jnp.float32)
    if ensemble.kind == "maml":
        traj = rollout(ensemble.family.env, _maml_act(ensemble), (acting, weights),
                       task_params, key, num_episodes, ensemble.horizon)
        return traj.episode_returns
    _check_rl2_length(ensemble, num_episodes)
    trial = run_trial(ensemble.family.env, _rl2_step(ensemble), _rl2_init_hidden(ensemble),
                      (acting, weights), with_horizon(task_params, ensemble.horizon), key,
                      num_episodes=num_episodes, horizon=ensemble.horizon,
                      action_spec=ensemble.spec,
                      inputs=_meta_inputs(ensemble.learners[0].config))
    return episode_returns(jax.tree.map(lambda x: x[None], trial), num_episodes)[0]


def play_online(ensemble: Ensemble, acting: tuple, priority, exploration, task_params,
                key: jax.Array, num_episodes: int) -> tuple[jax.Array, jax.Array]:
    """ESBAS on one task: per-episode returns ``[num_episodes]`` and who played each.

    Episode ``e`` is played by :func:`selector_choose` 's member given the
    returns of episodes ``0..e-1``. MAML: the adapted members play whole
    episodes in turn. RL²: one trial; every member's memory runs on the whole
    stream (so a member that takes over knows the trial so far), the chosen
    member acts; the choice is revised when an episode ends.
    """
    num_members = len(ensemble.learners)
    priority = jnp.asarray(priority, jnp.float32)
    if ensemble.kind == "maml":
        act = _maml_act(ensemble)

        def episode(selector, episode_key):
            member = selector_choose(selector, exploration, priority)
            weights = jax.nn.one_hot(member, num_members, dtype=jnp.float32)
            traj = rollout(ensemble.family.env, act, (acting, weights), task_params,
                           episode_key, 1, ensemble.horizon)
            ret = traj.episode_returns[0]
            return selector_update(selector, member, ret), (ret, member)

        _, (returns, members) = jax.lax.scan(episode, selector_init(num_members),
                                             jax.random.split(key, num_episodes))
        return returns, members

    _check_rl2_length(ensemble, num_episodes)
    inputs = _meta_inputs(ensemble.learners[0].config)
    obs_dim = math.prod(_space_of(ensemble.learners[0])[1])
    # MetaInputs' order: [obs parts, a_{t-1}, r_{t-1}, d_{t-1}, ...]
    reward_at = obs_dim * (1 + int(inputs.previous_obs) + int(inputs.final_obs)) + \
        ensemble.spec.dim
    mixed_step = _rl2_step(ensemble)

    def step(params, carry, x):
        hidden, selector, member, running = carry
        # the previous step's reward belongs to the episode being played; when that
        # step ended the episode, score it and let the selector choose again
        running = running + x[reward_at]
        ended = x[reward_at + 1] > 0
        updated = selector_update(selector, member, running)
        selector = jax.tree.map(lambda a, b: jnp.where(ended, a, b), updated, selector)
        member = jnp.where(ended, selector_choose(selector, exploration, priority), member)
        running = jnp.where(ended, 0.0, running)
        weights = jax.nn.one_hot(member, num_members, dtype=jnp.float32)
        hidden, dist, value = mixed_step((params, weights), hidden, x)
        return (hidden, selector, member, running), dist, value

    selector = selector_init(num_members)
    start = (_rl2_init_hidden(ensemble), selector,
             selector_choose(selector, exploration, priority), jnp.zeros((), jnp.float32))
    trial = run_trial(ensemble.family.env, step, start, acting,
                      with_horizon(task_params, ensemble.horizon), key,
                      num_episodes=num_episodes, horizon=ensemble.horizon,
                      action_spec=ensemble.spec, inputs=inputs)
    returns = episode_returns(jax.tree.map(lambda x: x[None], trial), num_episodes)[0]
    # run_trial keeps no per-step policy state; UCB1 is deterministic in the returns,
    # so replaying it on them names the member that played each episode
    return returns, selector_replay(returns, exploration, priority)


def selector_replay(returns, exploration, priority) -> jax.Array:
    """The members UCB1 picks for episodes with ``returns [E]`` in turn, int32 ``[E]``."""
    priority = jnp.asarray(priority, jnp.float32)

    def episode(selector, ret):
        member = selector_choose(selector, exploration, priority)
        return selector_update(selector, member, ret), member

    return jax.lax.scan(episode, selector_init(priority.shape[0]),
                        jnp.asarray(returns, jnp.float32))[1]


def task_score(ensemble: Ensemble, returns: jax.Array) -> jax.Array:
    """One task's score from per-episode returns ``[..., E]``: MAML's mean episode
    return after adaptation, RL²'s total trial return."""
    return jnp.mean(returns, axis=-1) if ensemble.kind == "maml" else jnp.sum(returns, axis=-1)


def _acting_axis(ensemble: Ensemble):
    return None if ensemble.kind == "rl2" else 0


def returns_table(ensemble: Ensemble, acting: tuple, weights, task_params, key: jax.Array,
                  num_episodes: int) -> jax.Array:
    """Per-episode returns ``[W, tasks, num_episodes]`` of each row of ``weights [W, M]``.

    ``acting`` is :func:`prepare`'s for these tasks. Every row plays the same
    tasks with the same keys (common random numbers).
    """
    num_tasks = jax.tree.leaves(task_params)[0].shape[0]
    weights = jnp.asarray(weights, jnp.float32)

    def per_task(acting_b, task, task_key):
        return jax.vmap(lambda w: play(ensemble, acting_b, w, task, task_key,
                                       num_episodes))(weights)

    return jax.vmap(per_task, in_axes=(_acting_axis(ensemble), 0, 0), out_axes=1)(
        acting, task_params, jax.random.split(key, num_tasks))


def scores(ensemble: Ensemble, acting: tuple, weights, task_params, key: jax.Array,
           num_episodes: int) -> jax.Array:
    """Task scores ``[W, tasks]`` (:func:`task_score` of :func:`returns_table`)."""
    return task_score(ensemble, returns_table(ensemble, acting, weights, task_params, key,
                                              num_episodes))


def online_scores(ensemble: Ensemble, acting: tuple, priority, exploration, task_params,
                  key: jax.Array, num_episodes: int) -> jax.Array:
    """Scores ``[tasks]`` of the online selector, on the tasks and keys :func:`scores` uses."""
    num_tasks = jax.tree.leaves(task_params)[0].shape[0]

    def per_task(acting_b, task, task_key):
        returns, _ = play_online(ensemble, acting_b, priority, exploration, task, task_key,
                                 num_episodes)
        return task_score(ensemble, returns)

    return jax.vmap(per_task, in_axes=(_acting_axis(ensemble), 0, 0))(
        acting, task_params, jax.random.split(key, num_tasks))
