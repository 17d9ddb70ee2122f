"""Pure-JAX environments with gymnax 1.0 signatures; params are the task."""

from metarl_jax.envs.environment import EnvParams, EnvState, Environment
from metarl_jax.envs.bandit import (
    BernoulliBandit,
    BernoulliBanditParams,
    GaussianBandit,
    GaussianBanditParams,
)
from metarl_jax.envs.gridnavi import GridNavi, GridNaviParams, GridNaviState, goal_cells
from metarl_jax.envs.navigation import Navigation2D, NavigationParams, NavigationState
from metarl_jax.envs.point_robot import PointRobot, PointRobotParams, PointRobotState
from metarl_jax.envs.tabular_mdp import TabularMDP, TabularMDPParams, TabularMDPState
from metarl_jax.envs.gymnax_adapter import GymnaxEnvironment, as_environment
from metarl_jax.envs.cartpole import CartPole, CartPoleParams, CartPoleState
from metarl_jax.envs.mountain_car import (
    MountainCar,
    MountainCarContinuous,
    MountainCarContinuousParams,
    MountainCarParams,
    MountainCarState,
)
from metarl_jax.envs.pendulum import Pendulum, PendulumParams, PendulumState
from metarl_jax.envs.changing import ChangingDynamics, ChangingParams, ChangingState
