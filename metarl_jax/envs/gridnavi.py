"""GridNavi of VariBAD (Zintgraf et al. 2020, arXiv:1910.08348, Sec. 5.1).

A ``size x size`` grid (5 x 5 in the paper). Every episode starts in the
corner ``(0, 0)``; the goal is one cell other than the start and its three
neighbours ``(0, 1), (1, 0), (1, 1)`` (21 cells on 5 x 5) and it is the task,
held in ``params``. Five actions: 0 stay, 1 up (``y + 1``), 2 right
(``x + 1``), 3 down (``y - 1``), 4 left (``x - 1``); a move into the wall
leaves the agent where it is. The reward is computed on the cell the action
leads to: ``+1`` on the goal, ``-0.1`` anywhere else. Reaching the goal does
not end the episode (staying there earns ``+1`` per step); episodes last
``max_steps_in_episode`` steps (15). Matches the VariBAD repository's
``GridNavi-v0`` (``environments/navigation/gridworld.py``), whose
observation is the position ``(x, y)`` as floats.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from metarl_jax.envs.environment import Environment, require_positive

GOAL_REWARD = 1.0
STEP_REWARD = -0.1
# (dx, dy) of actions 0..4: stay, up, right, down, left (VariBAD's order)
MOVES = np.array([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]], np.int32)
# the start and its neighbours are never the goal
EXCLUDED_CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))


def goal_cells(size: int) -> np.ndarray:
    """``[N, 2]`` int32: the cells ``(x, y)`` a goal may occupy, in row-major ``(x, y)`` order.

    Raises ``ValueError`` for a grid too small to leave any goal cell
    (``size < 3``).
    """
    require_positive("size", size, integer=True)
    cells = [c for c in itertools.product(range(size), repeat=2) if c not in EXCLUDED_CELLS]
    if not cells:
        raise ValueError(f"a {size}x{size} grid has no goal cell: the start (0, 0) and its "
                         "neighbours are excluded, so GridNavi needs size >= 3")
    return np.array(cells, np.int32)


@struct.dataclass
class GridNaviState:
    """Position ``(x, y)`` (int32 ``[2]``) and the step count ``time``."""

    position: jax.Array
    time: jax.Array


@struct.dataclass
class GridNaviParams:
    """The task: ``goal`` (int32 ``[2]``, a cell of :func:`goal_cells`); horizon 15."""

    goal: jax.Array
    max_steps_in_episode: int = 15


class GridNavi(Environment):
    """VariBAD's grid navigation: observation = position ``(x, y)`` float32 ``[2]``."""

    obs_from_state = True

    def __init__(self, size: int = 5, episode_length: int = 15):
        super().__init__()
        goal_cells(size)  # raises for a grid without goal cells
        require_positive("episode_length", episode_length, integer=True)
        self.size = int(size)
        self.episode_length = int(episode_length)

    @property
    def num_cells(self) -> int:
        return self.size * self.size

    @property
    def num_actions(self) -> int:
        return len(MOVES)

    @property
    def default_params(self) -> GridNaviParams:
        return GridNaviParams(goal=jnp.asarray(goal_cells(self.size)[0]),
                              max_steps_in_episode=self.episode_length)

    def cell_of(self, position: jax.Array) -> jax.Array:
        """Index ``x * size + y`` (int32) of a position or observation ``[..., 2]``."""
        position = jnp.round(jnp.asarray(position)).astype(jnp.int32)
        return position[..., 0] * self.size + position[..., 1]

    def step_env(self, key, state, action, params):
        """Move (walls stop the move); ``+1`` if the new cell is the goal, else ``-0.1``."""
        position = jnp.clip(state.position + jnp.asarray(MOVES)[action], 0, self.size - 1)
        at_goal = jnp.all(position == params.goal)
        reward = jnp.where(at_goal, GOAL_REWARD, STEP_REWARD).astype(jnp.float32)
        state = GridNaviState(position=position, time=state.time + 1)
        info = {"expected_reward": reward}
        return self.get_obs(state, params), state, reward, jnp.array(False), info

    def reset_env(self, key, params):
        """Every episode starts at ``(0, 0)`` (the key is unused: the start is fixed)."""
        state = GridNaviState(position=jnp.zeros((2,), jnp.int32), time=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return state.position.astype(jnp.float32)

    def is_terminated(self, state, params) -> jax.Array:
        """Episodes end only by truncation (the goal is a cell to stay on, not an exit)."""
        return jnp.array(False)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, float(self.size - 1), (2,), jnp.float32)

    def validate_params(self, params) -> None:
        """Raise ``ValueError`` naming the field unless every goal is a goal cell.

        Accepts one task or a batch with leading task axes.
        """
        goal = np.asarray(params.goal)
        if goal.ndim < 1 or goal.shape[-1] != 2:
            raise ValueError(f"{self.name}: goal must have shape [..., 2], got {goal.shape}")
        allowed = {tuple(c) for c in goal_cells(self.size)}
        bad = [tuple(int(v) for v in g) for g in goal.reshape(-1, 2) if tuple(g) not in allowed]
        if bad:
            raise ValueError(f"{self.name}: goal {bad[0]} is not a goal cell of the "
                             f"{self.size}x{self.size} grid (not the start or its neighbours)")
        if not np.all(np.asarray(params.max_steps_in_episode) >= 1):
            raise ValueError(f"{self.name}: max_steps_in_episode must be >= 1")
