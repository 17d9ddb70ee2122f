"""Task families of the meta-RL literature: bandits, random MDPs, 2D navigation.

* ``bandit-bernoulli``, ``bandit-gaussian``: RL²'s multi-armed bandits
  (Duan et al. 2016, Sec. 4.1).
* ``tabular-mdp``: RL²'s random MDPs (Duan et al. 2016, Sec. 4.2).
* ``navigation2d``: MAML's point navigation (Finn et al. 2017, Sec. 5.3).
* ``gridnavi``: VariBAD's grid navigation (Zintgraf et al. 2020, Sec. 5.1).
* ``point-robot``, ``point-robot-sparse``: PEARL's point robot, dense and
  sparse (Rakelly et al. 2019, Sec. 6 and Appendix).
* ``acrobot``: gymnax ``Acrobot-v1`` with varied link masses, through
  :func:`~metarl_jax.envs.gymnax_adapter.from_gymnax`.

Train and test tasks share a distribution and differ by key stream; the
``ood`` splits of ``navigation2d`` and ``acrobot`` draw from parameter sets
disjoint from training.

``navigation2d`` also takes ``change_every``/``change_prob``/``num_pieces``
(:func:`~metarl_jax.tasks.changing_dynamics_family`): a motor breaks within
the episode. Every piece keeps the goal; each later piece cripples one random
axis (``velocity_scale`` of that axis ~ U(0, 0.5), the other axis 1), and in
the ``ood`` split reverses it instead (scale ~ U(-1, -0.5)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments.classic_control.acrobot import EnvParams as AcrobotParams

from metarl_jax.envs.bandit import BernoulliBandit, GaussianBandit
from metarl_jax.envs.environment import require_positive
from metarl_jax.envs.gridnavi import GridNavi, goal_cells
from metarl_jax.envs.navigation import Navigation2D
from metarl_jax.envs.point_robot import PointRobot
from metarl_jax.envs.tabular_mdp import TabularMDP
from metarl_jax.utils import check_positive
from metarl_jax.tasks import (
    TaskFamily,
    changing_dynamics_family,
    from_gymnax,
    register,
    uniform_params_sampler,
)

# MAML's goal square and the out-of-distribution square annulus around it
NAVIGATION_GOAL_HALF_WIDTH = 0.5
NAVIGATION_OOD_HALF_WIDTH = 1.0
# velocity_scale of the broken axis in a changing navigation2d task's later pieces
NAVIGATION_CRIPPLED_SCALE = {"train": (0.0, 0.5), "ood": (-1.0, -0.5)}

# quarter-turn rotations [4, 2, 2]: side i of a square is side 0 turned i times
_QUARTER_TURNS = np.array(
    [[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]]],
    np.float32,
)


def _bandit_family(name, env, trial_pulls, draw_arm_means, ranges, description) -> TaskFamily:
    """A bandit family drawing ``arm_means = draw_arm_means(key, [k], float32)`` per task."""
    require_positive("trial_pulls", trial_pulls, integer=True)
    params = env.default_params.replace(max_steps_in_episode=int(trial_pulls))

    def sample_fn(key, split):
        del split  # test tasks come from a separate key stream
        return params.replace(arm_means=draw_arm_means(key, (env.num_arms,), jnp.float32))

    return TaskFamily(
        name=name, env=env, sample_fn=sample_fn, ranges=ranges, description=description
    )


@register("bandit-bernoulli")
def bernoulli_bandits(arms: int = 5, trial_pulls: int = 1) -> TaskFamily:
    """Bernoulli bandits, arm means ~ U[0, 1] i.i.d. per arm (RL², Duan et al. 2016, Sec. 4.1).

    Args:
      arms: number of arms ``k`` (>= 2).
      trial_pulls: pulls per episode (``max_steps_in_episode``). The default 1
        is RL²'s convention: every pull is an episode, and a trial of ``n``
        pulls is ``n`` episodes of the same bandit (the learner's number of
        episodes per trial). ``trial_pulls=n`` makes one episode a whole trial.
    """
    require_positive("arms", arms, integer=True, minimum=2)
    return _bandit_family(
        "bandit-bernoulli",
        BernoulliBandit(arms),
        trial_pulls,
        jax.random.uniform,
        ranges={"train": {"arm_means": (0.0, 1.0)}},
        description=f"{arms}-armed Bernoulli bandits, p_i ~ U[0, 1] (RL²)",
    )


@register("bandit-gaussian")
def gaussian_bandits(arms: int = 5, trial_pulls: int = 1) -> TaskFamily:
    """Gaussian bandits, arm means ~ N(0, 1) i.i.d. per arm, unit reward noise.

    The reward of arm ``a`` is ``N(arm_means[a], 1)``: the standard-normal
    testbed of Sutton & Barto (2018, Sec. 2.3). ``arms`` and ``trial_pulls``
    as in ``bandit-bernoulli``.
    """
    require_positive("arms", arms, integer=True, minimum=2)
    return _bandit_family(
        "bandit-gaussian",
        GaussianBandit(arms),
        trial_pulls,
        jax.random.normal,
        ranges={"train": {"arm_means": "N(0, 1) per arm", "arm_stds": "1 (fixed)"}},
        description=f"{arms}-armed Gaussian bandits, mu_i ~ N(0, 1), unit noise",
    )


def sample_square_annulus(key: jax.Array, inner: float, outer: float) -> jax.Array:
    """A point ``[2]`` uniform on ``{x : inner < max(|x_1|, |x_2|) <= outer}``.

    The max-norm radius ``r`` has density proportional to the perimeter
    ``8 r`` of its square, so ``r = sqrt(inner^2 + (outer^2 - inner^2) u)``;
    the point is then uniform on that square's perimeter: one of four sides
    (equal lengths) and a uniform position along it.
    """
    key_radius, key_side, key_along = jax.random.split(key, 3)
    u = jax.random.uniform(key_radius, (), jnp.float32)
    radius = jnp.sqrt(inner**2 + (outer**2 - inner**2) * u)
    side = jax.random.randint(key_side, (), 0, 4)
    along = jax.random.uniform(key_along, (), jnp.float32, -1.0, 1.0) * radius
    return jnp.asarray(_QUARTER_TURNS)[side] @ jnp.stack([radius, along])


def cripple_one_axis(key: jax.Array, params, split: str):
    """``params`` with one random axis's ``velocity_scale`` from the split's crippled range."""
    low, high = NAVIGATION_CRIPPLED_SCALE.get(split, NAVIGATION_CRIPPLED_SCALE["train"])
    # one draw for both (every extra jax.random call costs a Threefry compile)
    axis_draw, scale_draw = jax.random.uniform(key, (2,), jnp.float32)
    axis = (axis_draw >= 0.5).astype(jnp.int32)
    scale = low + (high - low) * scale_draw
    velocity_scale = jnp.where(jnp.arange(2) == axis, scale, jnp.float32(1.0))
    return params.replace(velocity_scale=velocity_scale)


def _changing_navigation(family: TaskFamily, max_steps_in_episode, change_every, change_prob,
                         num_pieces) -> TaskFamily:
    """``family`` unchanged, or with motors that break mid-episode (module docstring)."""
    goal_sample = family.sample_fn

    def sample_fn(key, split):  # piece 0: the intact point, explicit ones
        return goal_sample(key, split).replace(velocity_scale=jnp.ones((2,), jnp.float32))

    describe = {split: f"later pieces: one axis's velocity_scale ~ U{scale}"
                for split, scale in NAVIGATION_CRIPPLED_SCALE.items()}
    changing = changing_dynamics_family(
        dataclasses.replace(family, sample_fn=sample_fn), cripple_one_axis,
        max_steps_in_episode, change_every, change_prob, num_pieces, describe)
    return family if changing is None else changing


@register("navigation2d")
def navigation2d(
    max_steps_in_episode: int = 100,
    normalized_actions: bool = False,
    change_every: int | None = None,
    change_prob: float | None = None,
    num_pieces: int | None = None,
) -> TaskFamily:
    """MAML 2D navigation, goals ~ U[-0.5, 0.5]^2 (Finn et al. 2017, Sec. 5.3).

    The ``ood`` split draws goals uniformly from the square annulus
    ``0.5 < max(|x|, |y|) <= 1`` around the training square (area 3), so no
    out-of-distribution goal is a training goal.

    ``normalized_actions=True`` gives the policy the action space ``[-1, 1]^2``
    scaled onto the velocity bound, as the MAML authors' code did (rllab's
    ``normalize``); the default is pytorch-maml-rl's raw velocity action.

    ``change_every``/``change_prob``/``num_pieces``: one axis's motor breaks
    within the episode (module docstring).
    """
    require_positive("max_steps_in_episode", max_steps_in_episode, integer=True)
    env = Navigation2D(normalized_actions=normalized_actions)
    params = env.default_params.replace(max_steps_in_episode=int(max_steps_in_episode))

    def sample_fn(key, split):
        if split == "ood":
            goal = sample_square_annulus(
                key, NAVIGATION_GOAL_HALF_WIDTH, NAVIGATION_OOD_HALF_WIDTH
            )
        else:
            goal = jax.random.uniform(
                key, (2,), jnp.float32, -NAVIGATION_GOAL_HALF_WIDTH, NAVIGATION_GOAL_HALF_WIDTH
            )
        return params.replace(goal=goal)

    family = TaskFamily(
        name="navigation2d",
        env=env,
        sample_fn=sample_fn,
        ranges={
            "train": {"goal": (-0.5, 0.5)},
            "ood": {"goal": "uniform on 0.5 < max(|x|, |y|) <= 1"},
        },
        description="MAML 2D point navigation, goal ~ U[-0.5, 0.5]^2",
    )
    return _changing_navigation(family, int(max_steps_in_episode), change_every, change_prob,
                                num_pieces)


# PEARL's point robot: dense goals on [-1, 1]^2, sparse goals on the upper unit half circle
POINT_ROBOT_GOAL_HALF_WIDTH = 1.0
POINT_ROBOT_OOD_HALF_WIDTH = 1.5


@register("point-robot")
def point_robot(max_steps_in_episode: int = 20) -> TaskFamily:
    """PEARL's dense point robot: goals ~ U[-1, 1]^2, random starts, reward ``-d``.

    oyster's ``point-robot`` (Rakelly et al. 2019): 20-step episodes, actions in
    ``[-1, 1]^2`` moving the point by ``0.1 a``. The ``ood`` split draws goals from
    the square annulus ``1 < max(|x|, |y|) <= 1.5`` around the training square.
    """
    require_positive("max_steps_in_episode", max_steps_in_episode, integer=True)
    env = PointRobot(sparse=False)
    params = env.default_params.replace(max_steps_in_episode=int(max_steps_in_episode))

    def sample_fn(key, split):
        if split == "ood":
            goal = sample_square_annulus(key, POINT_ROBOT_GOAL_HALF_WIDTH,
                                         POINT_ROBOT_OOD_HALF_WIDTH)
        else:
            goal = jax.random.uniform(key, (2,), jnp.float32, -POINT_ROBOT_GOAL_HALF_WIDTH,
                                      POINT_ROBOT_GOAL_HALF_WIDTH)
        return params.replace(goal=goal)

    return TaskFamily(
        name="point-robot", env=env, sample_fn=sample_fn,
        ranges={"train": {"goal": (-1.0, 1.0)},
                "ood": {"goal": "uniform on 1 < max(|x|, |y|) <= 1.5"}},
        description="PEARL point robot, dense reward, goal ~ U[-1, 1]^2",
    )


@register("point-robot-sparse")
def point_robot_sparse(max_steps_in_episode: int = 20, goal_radius: float = 0.2) -> TaskFamily:
    """PEARL's sparse point robot: goals on the upper half of the unit circle.

    oyster's ``sparse-point-robot`` (Rakelly et al. 2019): start at the origin,
    reward ``1 - d`` within ``goal_radius`` of the goal and 0 elsewhere
    (``info["dense_reward"]`` carries ``-d``), 20-step episodes. The reference
    draws 100 goals at evenly spaced angles in ``[0, pi]`` and keeps 80 for
    training and 20 for testing; here each split draws the angle uniformly from
    ``[0, pi]`` (the same distribution, without the grid). The ``ood`` split's
    goals are on the lower half circle, angle in ``(pi, 2 pi)``, which no
    training goal is near.
    """
    require_positive("max_steps_in_episode", max_steps_in_episode, integer=True)
    check_positive("goal_radius", goal_radius)
    env = PointRobot(sparse=True)
    params = env.default_params.replace(max_steps_in_episode=int(max_steps_in_episode),
                                        goal_radius=float(goal_radius))

    def sample_fn(key, split):
        low = jnp.pi if split == "ood" else 0.0
        angle = jax.random.uniform(key, (), jnp.float32, low, low + jnp.pi)
        return params.replace(goal=jnp.stack([jnp.cos(angle), jnp.sin(angle)]))

    return TaskFamily(
        name="point-robot-sparse", env=env, sample_fn=sample_fn,
        ranges={"train": {"goal angle": (0.0, float(np.pi))},
                "ood": {"goal angle": (float(np.pi), float(2 * np.pi))}},
        description="PEARL sparse point robot, goal on the unit half circle, radius 0.2",
    )


@register("tabular-mdp")
def tabular_mdp(states: int = 10, actions: int = 5, episode_length: int = 10) -> TaskFamily:
    """RL² random MDPs: mean rewards ~ N(1, 1), flat Dirichlet transitions (Duan et al. 2016).

    Each ``(s, a)`` gets an independent mean reward ``N(1, 1)`` and a
    next-state distribution from the flat Dirichlet; per-step reward noise is
    ``N(0, 1)``; episodes start in state 0 and last ``episode_length`` steps.
    """
    require_positive("states", states, integer=True)
    require_positive("actions", actions, integer=True)
    require_positive("episode_length", episode_length, integer=True)
    env = TabularMDP(states, actions, episode_length)
    params = env.default_params
    s, a = env.num_states, env.num_actions

    def sample_fn(key, split):
        del split  # test tasks come from a separate key stream
        key_transitions, key_rewards = jax.random.split(key)
        # flat Dirichlet = normalised i.i.d. Exponential(1) (= Gamma(1, 1)) draws:
        # exact, and cheaper than jax.random.dirichlet's rejection-sampled gammas
        draws = jax.random.exponential(key_transitions, (s, a, s), jnp.float32)
        transitions = draws / jnp.sum(draws, axis=-1, keepdims=True)
        mean_rewards = 1.0 + jax.random.normal(key_rewards, (s, a), jnp.float32)
        return params.replace(transitions=transitions, mean_rewards=mean_rewards)

    return TaskFamily(
        name="tabular-mdp",
        env=env,
        sample_fn=sample_fn,
        ranges={
            "train": {
                "mean_rewards": "N(1, 1) per (s, a)",
                "transitions": "Dirichlet(1, ..., 1) per (s, a)",
            }
        },
        description=f"RL² random MDPs, |S|={states}, |A|={actions}, T={episode_length}",
    )


@register("gridnavi")
def gridnavi(size: int = 5, episode_length: int = 15) -> TaskFamily:
    """VariBAD's GridNavi: the goal uniform over the cells other than the start and its
    neighbours (21 on the paper's 5 x 5 grid), 15-step episodes (Zintgraf et al. 2020).

    Train and test goals come from the same finite set (separate key streams):
    with 21 goals, held-out *draws* are what a test split can offer; no split is
    out of range.
    """
    env = GridNavi(size, episode_length)  # raises for size < 3 or episode_length < 1
    cells = jnp.asarray(goal_cells(size))
    params = env.default_params

    def sample_fn(key, split):
        del split  # test tasks come from a separate key stream
        return params.replace(goal=cells[jax.random.randint(key, (), 0, cells.shape[0])])

    return TaskFamily(
        name="gridnavi",
        env=env,
        sample_fn=sample_fn,
        ranges={"train": {"goal": f"uniform over the {cells.shape[0]} cells of the {size}x{size} "
                                  "grid other than (0, 0) and its neighbours"}},
        description=f"VariBAD GridNavi, {size}x{size}, goal uniform over {cells.shape[0]} cells, "
                    f"{episode_length}-step episodes",
    )


ACROBOT_MASS_RANGES = {
    "train": {"link_mass_1": (0.5, 1.5), "link_mass_2": (0.5, 1.5)},
    "ood": {"link_mass_1": (1.5, 2.0), "link_mass_2": (1.5, 2.0)},
}


@register("acrobot")
def acrobot(max_steps_in_episode: int = 500) -> TaskFamily:
    """gymnax Acrobot-v1 with link masses ~ U[0.5, 1.5] each; ood U[1.5, 2.0].

    Built with :func:`~metarl_jax.envs.gymnax_adapter.from_gymnax`, as an
    example of turning any gymnax environment into a task family.
    """
    require_positive("max_steps_in_episode", max_steps_in_episode, integer=True)
    defaults = AcrobotParams(max_steps_in_episode=int(max_steps_in_episode))
    return from_gymnax(
        "Acrobot-v1",
        uniform_params_sampler(defaults, ACROBOT_MASS_RANGES),
        name="acrobot",
        ranges=ACROBOT_MASS_RANGES,
        description="gymnax Acrobot-v1, link masses ~ U[0.5, 1.5] (ood [1.5, 2.0])",
    )
