"""RL building blocks shared by the meta-learners.

Returns and GAE (:mod:`~metarl_jax.rl.returns`), the linear feature baseline
(:mod:`~metarl_jax.rl.baselines`), policy-gradient surrogates
(:mod:`~metarl_jax.rl.losses`) TRPO (:mod:`~metarl_jax.rl.trpo`) and the PPO epoch/minibatch update
(:mod:`~metarl_jax.rl.ppo`). All
are pure functions of arrays shaped ``[..., T]`` with a ``valid`` mask.
The MPC planners (:mod:`~metarl_jax.rl.planners`: random shooting, CEM, MPPI)
maximise a batched predicted return over action sequences, for model-based learners.
"""

from metarl_jax.rl.baselines import linear_baseline_features, linear_feature_baseline
from metarl_jax.rl.losses import actor_critic_ppo_loss, dice_loss, magic_box, mean_kl, ppo_clip_loss, vpg_loss
from metarl_jax.rl.planners import (PlannerConfig, check_planner_config, plan, plan_discrete,
                                    shift_plan)
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.rl.returns import (discounted_returns, gae, masked_mean, normalize_advantages,
                                   trial_gae)
from metarl_jax.rl.trpo import (
    conjugate_gradient,
    gauss_newton_fvp,
    hessian_vector_product,
    trpo_step,
)

__all__ = [
    "PlannerConfig",
    "actor_critic_ppo_loss",
    "check_planner_config",
    "conjugate_gradient",
    "dice_loss",
    "discounted_returns",
    "gae",
    "hessian_vector_product",
    "linear_baseline_features",
    "linear_feature_baseline",
    "magic_box",
    "masked_mean",
    "mean_kl",
    "normalize_advantages",
    "plan",
    "plan_discrete",
    "ppo_clip_loss",
    "ppo_update",
    "shift_plan",
    "trial_gae",
    "trpo_step",
    "gauss_newton_fvp",
    "vpg_loss",
]
