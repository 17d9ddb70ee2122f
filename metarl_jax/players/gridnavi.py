"""Reference players of GridNavi (VariBAD, Zintgraf et al. 2020), up to the exact Bayes-optimal value.

The prior is uniform over the ``N`` goal cells (:func:`~metarl_jax.envs.gridnavi.goal_cells`),
so the belief after any history is uniform over the goal cells not visited yet,
or a point mass once the goal has been stepped on (the only informative
observation is the reward: ``+1`` on the goal, ``-0.1`` elsewhere).

* ``known_goal``: the oracle told the goal; walks a shortest path and stays.
* ``belief_greedy``: acts on the exact belief (the cells not ruled out): one
  step towards the nearest candidate cell (ties at random), then to the goal
  and stays. A heuristic with the true belief, not a learned belief-oracle
  policy; its return is a floor for what acting on the belief can do.
* ``bayes_optimal``: the optimal policy of the belief MDP, from
  :func:`bayes_optimal_plan` (an exact search, below), played on the real env.
* ``random``: uniform actions.

Why the Bayes-optimal policy is an open-loop plan until the goal is found:
positions are deterministic, so before the goal is found every history of
the same actions yields the same observations; a policy is then one action
sequence per episode (the belief after episode ``e`` depends only on the
earlier sequences), and once the goal is found the optimum is known (stay,
then walk straight to it in later episodes). The value of a plan is a sum over
goals ``g`` of ``(1 / N)`` times the return had the goal been ``g``; per step
every candidate not yet found pays ``-0.1``, and the candidate found at step
``t`` of episode ``e`` earns ``H - t + 1`` in that episode plus the
known-goal return ``o(g)`` in each later one. :func:`bayes_optimal_plan` maximises
this exactly: a forward dynamic programme over (cell, set of candidates
visited this episode) within each episode, keeping the best accumulated value
per state, and at each episode's end a branch and bound over the candidate
sets that remain, with an admissible bound (each step can find at most one
candidate, no earlier than its distance from the start). Values are kept in
integer tenths of a reward, so the search is exact. The tests compare it with
an expectimax over belief states on small grids.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metarl_jax.core.rollout import MetaInputs, run_trial, with_horizon
from metarl_jax.envs.environment import require_positive
from metarl_jax.envs.gridnavi import GOAL_REWARD, MOVES, STEP_REWARD, GridNavi, goal_cells
from metarl_jax.nn.distributions import Categorical
from metarl_jax.nn.spaces import action_spec
from metarl_jax.players.policy import TrialPolicy, greedy_distribution, no_value

DEFAULT_SIZE = 5
DEFAULT_EPISODE_LENGTH = 15
DEFAULT_EPISODES = 4
# the players read [obs, obs the previous action led to, prev action, prev reward, prev done]
INPUTS = MetaInputs(final_obs=True)
PLAYERS = ("random", "belief_greedy", "bayes_optimal", "known_goal")
_FAR = 10**6  # a distance larger than any on the grid


def known_goal_return(distance: int, episode_length: int) -> float:
    """The return of one episode of the known-goal oracle for a goal ``distance`` steps away."""
    if distance > episode_length:
        return STEP_REWARD * episode_length
    return STEP_REWARD * (distance - 1) + GOAL_REWARD * (episode_length - distance + 1)


# -- the exact Bayes-optimal plan -------------------------------------------------------


class BayesOptimalPlan(NamedTuple):
    """What :func:`bayes_optimal_plan` returns."""

    value: float          # expected trial return under the uniform prior over goals
    plan: np.ndarray      # int32 [num_episodes, episode_length]: the actions while not found
    size: int
    episode_length: int
    num_episodes: int


def _grid(size: int):
    """Moves ``[cells, actions] -> cell`` and start distances of cells ``x * size + y``."""
    cells = np.array([(x, y) for x in range(size) for y in range(size)], np.int32)
    nxt = np.clip(cells[:, None, :] + MOVES[None], 0, size - 1)
    moves = (nxt[..., 0] * size + nxt[..., 1]).tolist()
    distance = (cells[:, 0] + cells[:, 1]).tolist()
    return moves, distance


@functools.lru_cache(maxsize=16)
def bayes_optimal_plan(size: int = DEFAULT_SIZE, episode_length: int = DEFAULT_EPISODE_LENGTH,
                       num_episodes: int = DEFAULT_EPISODES) -> BayesOptimalPlan:
    """The exact Bayes-optimal value and plan of GridNavi (see the module docstring).

    ``size``, ``episode_length`` (``H``) and ``num_episodes`` (``E``) as in
    the family and the trial. The paper's setting (5, 15, 4) takes about a
    minute of pure Python on one core; results are cached per setting.
    """
    require_positive("episode_length", episode_length, integer=True)
    require_positive("num_episodes", num_episodes, integer=True)
    goals = goal_cells(size)  # raises for a grid without goal cells
    moves, distance = _grid(size)
    horizon, episodes = int(episode_length), int(num_episodes)
    n = len(goals)
    goal_cell = [int(x) * size + int(y) for x, y in goals]
    bit_of = [0] * (size * size)
    for i, c in enumerate(goal_cell):
        bit_of[c] = 1 << i
    # the known-goal oracle's episode return, in tenths
    oracle = [round(10 * known_goal_return(distance[c], horizon)) for c in goal_cell]
    goal_distance = [distance[c] for c in goal_cell]
    shift, actions = n, len(MOVES)

    def bits(mask):
        return [i for i in range(n) if mask >> i & 1]

    @functools.lru_cache(maxsize=None)
    def bound(episode: int, remaining: int) -> int:
        """Admissible bound on the value of episodes ``episode..E-1`` (tenths)."""
        if episode >= episodes or not remaining:
            return 0
        later = episodes - 1 - episode
        members = bits(remaining)
        # not found in this episode: -H now, at best the oracle return in each later episode
        total = sum(-horizon + later * oracle[i] for i in members)
        # found at step t instead gains 11 (H - t + 1) over that (one candidate per step, t >= d)
        reach = sorted(goal_distance[i] for i in members)
        taken = 0
        for t in range(1, horizon + 1):
            if taken < len(reach) and reach[taken] <= t:
                total += 11 * (horizon - t + 1)
                taken += 1
        return total

    def forward(episode: int, remaining: int):
        """Layers ``{(cell << n) | visited: best value so far}`` of one episode's steps."""
        later = episodes - 1 - episode
        layers = [{0: 0}]  # the start cell 0, nothing visited
        full = (1 << n) - 1
        for t in range(1, horizon + 1):
            found_gain = 10 * (horizon - t + 1)
            layer = {}
            for key, acc in layers[-1].items():
                cell, visited = key >> shift, key & full
                open_ = remaining & ~visited
                count = open_.bit_count()
                for a in range(actions):
                    to = moves[cell][a]
                    b = bit_of[to]
                    if open_ & b:
                        value = acc + found_gain + later * oracle[b.bit_length() - 1] - (count - 1)
                        new = (to << shift) | visited | b
                    else:
                        value = acc - count
                        new = (to << shift) | visited
                    if value > layer.get(new, -(1 << 60)):
                        layer[new] = value
            layers.append(layer)
        return layers

    def backtrack(layers, episode: int, remaining: int, final_key: int) -> list[int]:
        """The actions of the episode whose forward pass reached ``final_key`` with its best value."""
        later = episodes - 1 - episode
        full = (1 << n) - 1
        actions_taken = []
        key = final_key
        for t in range(horizon, 0, -1):
            target = layers[t][key]
            to, visited = key >> shift, key & full
            b = bit_of[to]
            found_gain = 10 * (horizon - t + 1)
            choice = None
            for cell in range(size * size):
                for a in range(actions):
                    if moves[cell][a] != to:
                        continue
                    # before this step the candidate under `to` was unvisited (found now) or not
                    for before in ({visited, visited & ~b} if visited & b else {visited}):
                        acc = layers[t - 1].get((cell << shift) | before)
                        if acc is None:
                            continue
                        open_ = remaining & ~before
                        count = open_.bit_count()
                        if open_ & b:
                            if before | b != visited:
                                continue
                            value = acc + found_gain + later * oracle[b.bit_length() - 1] \
                                - (count - 1)
                        else:
                            if before != visited:
                                continue
                            value = acc - count
                        if value == target:
                            choice = (cell << shift) | before, a
                            break
                    if choice:
                        break
                if choice:
                    break
            key, a = choice
            actions_taken.append(a)
        return actions_taken[::-1]

    @functools.lru_cache(maxsize=None)
    def solve(episode: int, remaining: int) -> tuple[int, tuple]:
        """Best value (tenths) of episodes ``episode..E-1`` and their action sequences."""
        if episode >= episodes:
            return 0, ()
        if not remaining:
            return 0, tuple((0,) * horizon for _ in range(episodes - episode))
        layers = forward(episode, remaining)
        full = (1 << n) - 1
        ends = {}  # visited set -> (best value, its final key)
        for key, acc in layers[-1].items():
            visited = key & full
            if visited not in ends or acc > ends[visited][0]:
                ends[visited] = (acc, key)
        order = sorted(((acc + bound(episode + 1, remaining & ~v), acc, v)
                        for v, (acc, _) in ends.items()), reverse=True)
        best, best_visited, best_rest = None, None, None
        for upper, acc, visited in order:
            if best is not None and upper <= best:
                break  # no other end of this episode can do better
            rest, rest_plan = solve(episode + 1, remaining & ~visited)
            if best is None or acc + rest > best:
                best, best_visited, best_rest = acc + rest, visited, rest_plan
        actions_now = backtrack(layers, episode, remaining, ends[best_visited][1])
        return best, (tuple(actions_now),) + best_rest

    value, plan = solve(0, (1 << n) - 1)
    solve.cache_clear()
    bound.cache_clear()
    return BayesOptimalPlan(value / (10.0 * n), np.array(plan, np.int32), int(size), horizon,
                            episodes)


# -- players as trial policies ------------------------------------------------------------


def _parse(inputs: jax.Array):
    """``(position, cell the previous action led to, previous reward)`` from :data:`INPUTS`."""
    return inputs[0:2], inputs[2:4], inputs[-2]


def _scores_towards(env: GridNavi, position: jax.Array, targets: jax.Array) -> jax.Array:
    """``[actions]``: minus the distance to the nearest ``targets`` cell after each move."""
    cells = jnp.asarray(np.array([(x, y) for x in range(env.size) for y in range(env.size)]))
    after = jnp.clip(position.astype(jnp.int32)[None] + jnp.asarray(MOVES), 0, env.size - 1)
    dist = jnp.sum(jnp.abs(after[:, None, :] - cells[None]), axis=-1)   # [actions, cells]
    return -jnp.min(jnp.where(targets[None], dist, _FAR), axis=-1)


def _belief_update(env: GridNavi, state, inputs):
    """Rule out the cell the previous action led to; the goal if it paid ``+1``."""
    visited, goal = state
    _, arrived, prev_reward = _parse(inputs)
    cell = env.cell_of(arrived)
    goal = jnp.where(prev_reward > 0.0, cell, goal)
    return visited.at[cell].set(True), goal


def _empty_belief(env: GridNavi):
    return jnp.zeros((env.num_cells,), bool), jnp.asarray(-1, jnp.int32)


def _goal_cell_mask(env: GridNavi) -> jax.Array:
    mask = np.zeros((env.num_cells,), bool)
    for x, y in goal_cells(env.size):
        mask[x * env.size + y] = True
    return jnp.asarray(mask)


def random_policy(env: GridNavi) -> TrialPolicy:
    """Uniform over the five actions."""
    def step(params, state, inputs):
        return state, Categorical(jnp.zeros((env.num_actions,), jnp.float32)), no_value()

    return TrialPolicy(step, jnp.zeros((), jnp.int32), None, INPUTS)


def known_goal_policy(env: GridNavi, goal: jax.Array) -> TrialPolicy:
    """The oracle told the goal (``params``): a shortest path to it, then stay."""
    def step(params, state, inputs):
        position, _, _ = _parse(inputs)
        target = jax.nn.one_hot(env.cell_of(params), env.num_cells) > 0
        return state, greedy_distribution(_scores_towards(env, position, target)), no_value()

    return TrialPolicy(step, jnp.zeros((), jnp.int32), jnp.asarray(goal, jnp.int32), INPUTS)


def belief_greedy_policy(env: GridNavi) -> TrialPolicy:
    """One step towards the nearest cell the exact belief has not ruled out; the goal once found."""
    candidates0 = _goal_cell_mask(env)

    def step(params, state, inputs):
        visited, goal = state = _belief_update(env, state, inputs)
        position, _, _ = _parse(inputs)
        targets = jnp.where(goal >= 0, jax.nn.one_hot(goal, env.num_cells) > 0,
                            candidates0 & ~visited)
        return state, greedy_distribution(_scores_towards(env, position, targets)), no_value()

    return TrialPolicy(step, _empty_belief(env), None, INPUTS)


def bayes_optimal_policy(env: GridNavi, plan: BayesOptimalPlan) -> TrialPolicy:
    """The plan's actions until the goal is found, then the known-goal oracle's."""
    if (plan.size, plan.episode_length) != (env.size, env.episode_length):
        raise ValueError(f"the plan is for a {plan.size}x{plan.size} grid with "
                         f"{plan.episode_length}-step episodes, the env is {env.size}x{env.size} "
                         f"with {env.episode_length}")
    horizon = plan.episode_length

    def step(params, state, inputs):
        belief, t = state
        visited, goal = belief = _belief_update(env, belief, inputs)
        position, _, _ = _parse(inputs)
        planned = params[jnp.minimum(t // horizon, params.shape[0] - 1), t % horizon]
        towards = _scores_towards(env, position, jax.nn.one_hot(goal, env.num_cells) > 0)
        scores = jnp.where(goal >= 0, towards,
                           jax.nn.one_hot(planned, env.num_actions) - 1.0)
        return (belief, t + 1), greedy_distribution(scores), no_value()

    return TrialPolicy(step, (_empty_belief(env), jnp.zeros((), jnp.int32)),
                       jnp.asarray(plan.plan), INPUTS)


def policy(name: str, env: GridNavi, goal: jax.Array | None = None, *,
           num_episodes: int = DEFAULT_EPISODES) -> TrialPolicy:
    """The trial policy of player ``name`` (``known_goal`` needs the ``goal``)."""
    if name not in PLAYERS:
        raise ValueError(f"unknown GridNavi player {name!r}; expected one of {list(PLAYERS)}")
    if name == "random":
        return random_policy(env)
    if name == "belief_greedy":
        return belief_greedy_policy(env)
    if name == "known_goal":
        if goal is None:
            raise ValueError("the known_goal player needs the goal")
        return known_goal_policy(env, goal)
    return bayes_optimal_policy(env, bayes_optimal_plan(env.size, env.episode_length,
                                                         num_episodes))


def evaluate(name: str, goals: Any, key: jax.Array, *, size: int = DEFAULT_SIZE,
             episode_length: int = DEFAULT_EPISODE_LENGTH,
             num_episodes: int = DEFAULT_EPISODES) -> jax.Array:
    """Return of each episode of one trial of player ``name`` per goal, ``[tasks, num_episodes]``.

    ``goals``: int ``[tasks, 2]`` cells, or a batch of ``GridNaviParams``;
    every trial is played on the real env.
    """
    env = GridNavi(size, episode_length)
    goals = jnp.asarray(getattr(goals, "goal", goals), jnp.int32)
    if goals.ndim != 2 or goals.shape[1] != 2:
        raise ValueError(f"goals must have shape [tasks, 2], got {goals.shape}")
    require_positive("num_episodes", num_episodes, integer=True)
    env.validate_params(env.default_params.replace(goal=np.asarray(goals)))
    if name not in PLAYERS:
        raise ValueError(f"unknown GridNavi player {name!r}; expected one of {list(PLAYERS)}")
    plan = (bayes_optimal_plan(size, episode_length, num_episodes) if name == "bayes_optimal"
            else None)
    return _evaluate(name, env, plan, goals, key, int(num_episodes))


@functools.partial(jax.jit, static_argnames=("name", "env", "plan", "num_episodes"))
def _evaluate_jit(name, env, plan, goals, key, num_episodes):
    spec = action_spec(env.action_space())
    horizon = env.episode_length

    def one(goal, k):
        if name == "bayes_optimal":
            p = bayes_optimal_policy(env, plan.plan)
        elif name == "known_goal":
            p = known_goal_policy(env, goal)
        else:
            p = policy(name, env)
        task = with_horizon(env.default_params.replace(goal=goal), horizon)
        trial = run_trial(env, p.step, p.init_state, p.params, task, k,
                          num_episodes=num_episodes, horizon=horizon, action_spec=spec,
                          inputs=p.inputs)
        return trial.reward.reshape(num_episodes, horizon).sum(axis=-1)

    return jax.vmap(one)(goals, jax.random.split(key, goals.shape[0]))


class _StaticPlan:
    """A hashable wrapper so a plan can be a static argument of the jitted evaluation."""

    def __init__(self, plan: BayesOptimalPlan):
        self.plan = plan
        self._key = (plan.size, plan.episode_length, plan.num_episodes, plan.plan.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _StaticPlan) and self._key == other._key


def _evaluate(name, env, plan, goals, key, num_episodes):
    static = None if plan is None else _StaticPlan(plan)
    return _evaluate_jit(name, env, static, goals, key, num_episodes)
