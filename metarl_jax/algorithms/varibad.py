"""VariBAD: Bayes-adaptive deep RL via meta-learning.

Zintgraf et al. 2020 (ICLR, arXiv:1910.08348; reference code
``lmzintgraf/varibad``). The task is unknown; a recurrent *encoder* turns the
trial so far into a Gaussian posterior ``q(z | tau_{:t})`` over a latent task
embedding ``z``, a *decoder* is trained to predict the rewards (and, as an
option, the next states) of the **whole** trial, past and future, from a
sample of that posterior, and the policy acts on the observation and the
posterior's mean and log-variance, i.e. on its belief. Maximising the ELBO

    E_q[log p(r_{0:T}, s'_{0:T} | z, s, a)] - KL(q(z | tau_{:t}) || q(z | tau_{:t-1}))

at many times ``t`` of the trial makes the posterior at ``t`` summarise what
the trial so far says about the task (the KL is to the previous posterior,
to the prior ``N(0, I)`` at the start, as in the paper).

One ``update(state, key)`` is one iteration:

1. ``meta_batch_size`` train tasks, one trial of ``trial_episodes`` episodes
   each, played by the encoder (its GRU state carried through the trial,
   episode boundaries included) and the policy on ``[obs, mean, logvar]``;
   the encoder reads each transition ``(s', a, r, done)`` as it happens
   (:class:`~metarl_jax.core.rollout.MetaInputs` with ``final_obs``, so the
   last cell of an episode is seen before the reset);
2. the posteriors of every step are recomputed from the rollout's encoder
   and *stopped*: the policy loss never reaches the encoder (the paper's
   default, ``rlloss_through_encoder=False``), and the policy's inputs are
   exactly those it acted on, so PPO's old log-probabilities are right;
3. ``num_epochs`` epochs of PPO on minibatches of steps (the policy is
   feed-forward given the belief), with GAE over whole trials as RL²;
4. ``vae_updates`` Adam steps on the negative ELBO of ``vae_batch_trials``
   trials, at ``elbo_terms`` random times ``t`` (all with ``None``), each
   decoding every reward of the trial. The trials are this iteration's, or,
   with ``vae_buffer_trials > 0``, drawn uniformly from a ring buffer of the
   last ``vae_buffer_trials`` trials (the reference's VAE buffer; it is part
   of the state, so checkpoints and resume cover it).

Differences from the reference code, each a choice: PPO (the shared
:func:`~metarl_jax.rl.ppo.ppo_update`) instead of its GridNavi A2C; the VAE
buffer is off by default (the reference keeps the last 100,000 trajectories;
here ``vae_buffer_trials`` sets it, and its size goes into every checkpoint);
the trial's last transition is not a decoding target (each
transition reaches the learner in the next step's input, and the trial has
no step after its last); the first posterior is the encoder's output on the
trial-start (all-zero) input rather than the output layer on a zero hidden
state (a learned prior in both).

Reward decoders (``reward_decoder``): ``"multi_head"`` (GridNavi: ``z`` ->
one Bernoulli logit per cell, "this cell pays the goal reward", the
reference's ``multihead_for_reward`` with ``rew_pred_type='bernoulli'``),
``"mlp"`` (any family: ``(z, s, a, s') -> r`` by squared error) or
``"auto"`` (multi-head where the family allows it). ``state_decoder=True``
adds ``(z, s, a) -> s'`` by squared error.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import (MetaInputs, TrialBatch, episode_horizon, episode_returns,
                                     run_trials)
from metarl_jax.envs.gridnavi import GridNavi
from metarl_jax.nn.mlp import ACTIVATIONS
from metarl_jax.nn.spaces import action_spec
from metarl_jax.rl import replay
from metarl_jax.nn.vae import (BeliefEncoder, BeliefPolicy, MultiHeadRewardDecoder,
                               RewardDecoder, StateDecoder, encode_sequence, gaussian_kl)
from metarl_jax.rl.losses import actor_critic_ppo_loss
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.rl.returns import masked_mean, trial_gae
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_non_negative, check_positive, check_positive_int,
                              check_positive_int_tuple)

EVAL_POLICIES = ("sample", "mode")
REWARD_DECODERS = ("auto", "multi_head", "mlp")
INPUTS = MetaInputs(final_obs=True)


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('state_loss_coef', 'kl_weight', 'vae_learning_rate', 'learning_rate',
                   'max_grad_norm', 'gamma', 'gae_lambda', 'clip_eps', 'entropy_coef', 'value_coef')


@dataclasses.dataclass(frozen=True)
class Config:
    """VariBAD hyperparameters (defaults: the reference's GridNavi config, PPO for A2C).

    Sizes are static (they change array shapes); the rest could be swept.
    """

    trial_episodes: int = 4            # episodes per trial (the BAMDP horizon: 4 x 15 on GridNavi)
    horizon: int | None = None         # steps per episode; None: the env's default
    meta_batch_size: int = 64          # tasks per iteration, one trial each
    latent_dim: int = 5                # dimension of the task embedding z
    encoder_hidden_size: int = 64      # GRU units of the encoder
    state_embed: int = 32              # ReLU embedding of s' before the GRU (0: raw)
    action_embed: int = 16             # ... of the action (0: raw)
    reward_embed: int = 8              # ... of (r, done) (0: raw)
    policy_hidden_sizes: tuple[int, ...] = (32, 32)
    policy_activation: str = "tanh"
    reward_decoder: str = "auto"       # "auto" | "multi_head" (GridNavi) | "mlp"
    decoder_hidden_sizes: tuple[int, ...] = (32, 32)
    state_decoder: bool = False        # also decode s' from (z, s, a)
    state_loss_coef: float = 1.0
    kl_weight: float = 1.0             # weight of KL(q_t || q_{t-1}) in the negative ELBO
    elbo_terms: int | None = None      # times t per trial at which the ELBO is taken; None: all
    vae_updates: int = 3               # Adam steps on the ELBO per iteration
    vae_batch_trials: int | None = None  # trials per VAE step; None: meta_batch_size
    vae_buffer_trials: int = 0         # trials the VAE buffer keeps (0: no buffer, this iteration's)
    vae_learning_rate: float = 1e-3
    num_epochs: int = 2                # PPO epochs per iteration
    num_minibatches: int = 4           # PPO minibatches (of steps) per epoch
    learning_rate: float = 7e-4        # the policy's Adam step size
    max_grad_norm: float = 0.5
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip_eps: float = 0.1
    entropy_coef: float = 0.05
    value_coef: float = 0.5
    normalize_advantages: bool = True
    eval_policy: str = "sample"        # "sample" | "mode" when evaluating
    eval_episodes: int | None = None   # episodes per evaluation trial; None: trial_episodes

    def __post_init__(self):
        for name in ("trial_episodes", "meta_batch_size", "latent_dim", "encoder_hidden_size",
                     "vae_updates", "num_epochs", "num_minibatches"):
            check_positive_int(name, getattr(self, name))
        for name in ("state_embed", "action_embed", "reward_embed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: no embedding), "
                                 f"got {value!r}")
        for name in ("policy_hidden_sizes", "decoder_hidden_sizes"):
            check_positive_int_tuple(name, getattr(self, name))
        if (isinstance(self.vae_buffer_trials, bool) or not isinstance(self.vae_buffer_trials, int)
                or self.vae_buffer_trials < 0):
            raise ValueError(f"vae_buffer_trials must be an integer >= 0 (0: no buffer), "
                             f"got {self.vae_buffer_trials!r}")
        for name in ("horizon", "elbo_terms", "vae_batch_trials", "eval_episodes"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name in ("state_decoder", "normalize_advantages"):
            check_bool(name, getattr(self, name))
        for name in ("learning_rate", "vae_learning_rate", "max_grad_norm", "clip_eps"):
            check_positive(name, getattr(self, name))
        for name in ("entropy_coef", "value_coef", "kl_weight", "state_loss_coef"):
            check_non_negative(name, getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            check_in_unit_interval(name, getattr(self, name))
        check_choice("policy_activation", self.policy_activation, tuple(ACTIVATIONS))
        check_choice("reward_decoder", self.reward_decoder, REWARD_DECODERS)
        check_choice("eval_policy", self.eval_policy, EVAL_POLICIES)
        if self.vae_buffer_trials:
            if self.vae_buffer_trials < self.meta_batch_size:
                raise ValueError(f"vae_buffer_trials={self.vae_buffer_trials} is smaller than the "
                                 f"meta_batch_size={self.meta_batch_size} trials one iteration "
                                 "adds to it")
        elif self.vae_batch_trials is not None and self.vae_batch_trials > self.meta_batch_size:
            raise ValueError(f"vae_batch_trials={self.vae_batch_trials} exceeds the "
                             f"meta_batch_size={self.meta_batch_size} trials of an iteration "
                             "(set vae_buffer_trials to draw from earlier iterations too)")


@struct.dataclass
class VariBADState:
    """Learner state: ``params = {"encoder", "decoder", "policy"}``, the two Adam states, step,
    and the VAE's buffer of past trials (``None`` without one, so older checkpoints load)."""

    params: Any
    policy_opt_state: Any
    vae_opt_state: Any
    step: jax.Array
    vae_buffer: Any = None


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus VariBAD's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    run_trials: Any     # (params, task_params, key, num_episodes, deterministic) -> TrialBatch
    beliefs: Any        # (encoder params, inputs [B, T, in]) -> policy inputs [B, T, obs + 2 L]
    policy_loss: Any    # (policy params, *PPO data) -> (loss, aux)
    vae_loss: Any       # (vae params, inputs [B, T, in], valid [B, T], key) -> (loss, aux)
    encoder: BeliefEncoder
    policy: BeliefPolicy
    reward_decoder_kind: str


def make(config: Config, family, mesh=None) -> Learner:
    """Build the VariBAD learner for ``family`` (a :class:`metarl_jax.tasks.TaskFamily`).

    Raises ``TypeError`` for a wrong config type or an unsupported action
    space, ``ValueError`` for a decoder the family cannot use, more ELBO
    terms than a trial has steps, or a batch that does not divide over ``mesh``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a varibad.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    horizon = episode_horizon(family, config.horizon, "VariBAD")
    try:
        spec = action_spec(env.action_space(params0))
    except TypeError as error:
        raise TypeError(f"family {family.name!r}: VariBAD supports Discrete and 1-D Box "
                        f"action spaces ({error})") from None
    obs_dim = math.prod(env.observation_space(params0).shape)
    trial_steps = config.trial_episodes * horizon
    if config.elbo_terms is not None and config.elbo_terms > trial_steps:
        raise ValueError(f"elbo_terms={config.elbo_terms} exceeds the {trial_steps} steps of a "
                         f"trial ({config.trial_episodes} episodes x {horizon})")
    multi_head_ok = isinstance(env, GridNavi)
    decoder_kind = config.reward_decoder
    if decoder_kind == "auto":
        decoder_kind = "multi_head" if multi_head_ok else "mlp"
    if decoder_kind == "multi_head" and not multi_head_ok:
        raise ValueError(f"family {family.name!r}: reward_decoder='multi_head' predicts one "
                         "Bernoulli per grid cell and needs a family whose reward is set by the "
                         "cell reached (gridnavi); use reward_decoder='mlp'")

    encoder = BeliefEncoder(config.encoder_hidden_size, config.latent_dim, obs_dim, spec.dim,
                            config.state_embed, config.action_embed, config.reward_embed)
    policy = BeliefPolicy(spec.dim, spec.discrete, tuple(config.policy_hidden_sizes),
                          config.policy_activation)
    if decoder_kind == "multi_head":
        reward_decoder = MultiHeadRewardDecoder(env.num_cells, tuple(config.decoder_hidden_sizes))
    else:
        reward_decoder = RewardDecoder(tuple(config.decoder_hidden_sizes))
    state_decoder = (StateDecoder(obs_dim, tuple(config.decoder_hidden_sizes))
                     if config.state_decoder else None)
    policy_optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                                   optax.adam(config.learning_rate))
    vae_optimizer = optax.adam(config.vae_learning_rate)
    a_dim, latent = spec.dim, config.latent_dim
    # the engine's inputs: [obs, s' of the previous step, its action, reward, done]
    input_dim = INPUTS.size(obs_dim, a_dim)

    def policy_features(obs, mean, logvar):
        return jnp.concatenate([obs, mean, logvar], axis=-1)

    def policy_step(params, hidden, inputs):
        """One step of the trial: update the posterior with the last transition, then act."""
        hidden, mean, logvar = encoder.apply(params["encoder"], hidden, inputs[obs_dim:])
        features = policy_features(inputs[:obs_dim], jax.lax.stop_gradient(mean),
                                   jax.lax.stop_gradient(logvar))
        dist, value = policy.apply(params["policy"], features)
        return hidden, dist, value

    def trials_of(params, task_params, key, num_episodes: int, deterministic: bool = False):
        """One trial of ``num_episodes`` episodes on each task (leading axis ``B``), one chunk."""
        return run_trials(env, policy_step, encoder.init_state(), params, task_params, key,
                          horizon=horizon, mesh=mesh, num_episodes=num_episodes,
                          action_spec=spec, inputs=INPUTS, deterministic=deterministic)

    def beliefs(encoder_params, inputs):
        """The policy's inputs ``[obs, mean, logvar]`` at every step of trials ``[B, T, in]``."""
        mean, logvar = encode_sequence(encoder, encoder_params, inputs[..., obs_dim:])
        return policy_features(inputs[..., :obs_dim], mean, logvar)

    # -- the policy: PPO on steps, given the (stopped) beliefs ----------------------

    def policy_loss(policy_params, features, action, old_log_prob, advantages, returns, valid):
        """PPO's actor-critic loss on steps ``[N, ...]`` of the policy on fixed beliefs."""
        dist, value = policy.apply(policy_params, features)
        return actor_critic_ppo_loss(dist, value, action, old_log_prob, advantages, returns,
                                     valid, clip_eps=config.clip_eps,
                                     value_coef=config.value_coef,
                                     entropy_coef=config.entropy_coef)

    # -- the VAE: encoder and decoders on the ELBO ------------------------------------

    def vae_loss(vae_params, inputs, valid, key):
        """Negative ELBO of trials ``inputs [B, T, in]``, averaged over trials and ELBO times.

        At each time ``t`` (``elbo_terms`` random ones, or all) a
        reparameterised sample of ``q_t`` decodes every transition ``j`` of the
        trial (``j = 0 .. T - 2``, read from the inputs of step ``j + 1``);
        ``kl_weight * KL(q_t || q_{t-1})`` with ``q_{-1} = N(0, I)``.
        Returns ``(loss, aux)`` with the reconstruction and KL terms.
        """
        time_key, noise_key = jax.random.split(key)
        mean, logvar = encode_sequence(encoder, vae_params["encoder"], inputs[..., obs_dim:])
        b, t = valid.shape
        prior = jnp.zeros_like(mean[:, :1])
        kl = gaussian_kl(mean, logvar, jnp.concatenate([prior, mean[:, :-1]], axis=1),
                         jnp.concatenate([prior, logvar[:, :-1]], axis=1))       # [B, T]
        times = (jnp.arange(t) if config.elbo_terms is None else
                 jax.random.choice(time_key, t, (config.elbo_terms,), replace=False))
        eps = jax.random.normal(noise_key, (b, times.shape[0], latent), jnp.float32)
        z = mean[:, times] + jnp.exp(0.5 * logvar[:, times]) * eps              # [B, S, L]
        # transition j: s_j from step j's input; s'_j, a_j, r_j from step j + 1's
        state = inputs[:, :-1, :obs_dim]
        next_state = inputs[:, 1:, obs_dim:2 * obs_dim]
        action = inputs[:, 1:, 2 * obs_dim:2 * obs_dim + a_dim]
        reward = inputs[:, 1:, 2 * obs_dim + a_dim]
        target_valid = valid[:, 1:]                                            # [B, T - 1]
        if decoder_kind == "multi_head":
            logits = reward_decoder.apply(vae_params["reward_decoder"], z)      # [B, S, cells]
            cell = env.cell_of(next_state)                                     # [B, T - 1]
            picked = jnp.take_along_axis(
                logits[:, :, None, :], jnp.broadcast_to(cell[:, None, :, None],
                                                        (b, z.shape[1], t - 1, 1)), axis=-1)
            # GridNavi pays more than zero only on the goal: the Bernoulli label
            reward_error = optax.sigmoid_binary_cross_entropy(
                picked[..., 0], jnp.broadcast_to((reward > 0.0)[:, None, :], picked.shape[:-1]))
        else:
            context = jnp.concatenate([state, action, next_state], axis=-1)   # [B, T - 1, .]
            x = jnp.concatenate([
                jnp.broadcast_to(z[:, :, None, :], (b, z.shape[1], t - 1, latent)),
                jnp.broadcast_to(context[:, None], (b, z.shape[1]) + context.shape[1:])],
                axis=-1)
            prediction = reward_decoder.apply(vae_params["reward_decoder"], x)
            reward_error = jnp.square(prediction - reward[:, None, :])
        reconstruction = jnp.sum(reward_error * target_valid[:, None, :], axis=-1)  # [B, S]
        aux = {"reward_reconstruction": masked_mean(reconstruction, valid[:, times])}
        if state_decoder is not None:
            context = jnp.concatenate([state, action], axis=-1)
            x = jnp.concatenate([
                jnp.broadcast_to(z[:, :, None, :], (b, z.shape[1], t - 1, latent)),
                jnp.broadcast_to(context[:, None], (b, z.shape[1]) + context.shape[1:])],
                axis=-1)
            error = jnp.sum(jnp.square(state_decoder.apply(vae_params["state_decoder"], x)
                                       - next_state[:, None]), axis=-1)
            state_term = jnp.sum(error * target_valid[:, None, :], axis=-1)
            aux["state_reconstruction"] = masked_mean(state_term, valid[:, times])
            reconstruction = reconstruction + config.state_loss_coef * state_term
        aux["kl"] = masked_mean(kl[:, times], valid[:, times])
        loss = masked_mean(reconstruction + config.kl_weight * kl[:, times], valid[:, times])
        return loss, aux

    def vae_steps(vae_params, opt_state, inputs, valid, buffer, key):
        """``vae_updates`` Adam steps on :func:`vae_loss`, each on ``vae_batch_trials`` trials
        of this iteration (``buffer`` None) or of the buffer (drawn with replacement)."""
        grad_fn = jax.value_and_grad(vae_loss, has_aux=True)
        num_trials = valid.shape[0]

        def one(carry, step_key):
            vae_params, opt_state = carry
            pick_key, loss_key = jax.random.split(step_key)
            if buffer is not None:
                drawn = replay.sample(buffer, pick_key, jnp.zeros((1,), jnp.int32),
                                      config.vae_batch_trials or config.meta_batch_size)
                batch = jax.tree.map(lambda x: x[0], drawn)
            elif config.vae_batch_trials is None:
                batch = (inputs, valid)
            else:
                rows = jax.random.choice(pick_key, num_trials, (config.vae_batch_trials,),
                                         replace=False)
                batch = (inputs[rows], valid[rows])
            (loss, aux), grads = grad_fn(vae_params, *batch, loss_key)
            updates, opt_state = vae_optimizer.update(grads, opt_state, vae_params)
            return (optax.apply_updates(vae_params, updates), opt_state), {"vae_loss": loss,
                                                                          **aux}

        (vae_params, opt_state), aux = jax.lax.scan(
            one, (vae_params, opt_state), jax.random.split(key, config.vae_updates))
        return vae_params, opt_state, aux

    # -- the learner ----------------------------------------------------------------

    def split_params(params):
        vae = {name: params[name] for name in params if name != "policy"}
        return vae, params["policy"]

    def init(key: jax.Array) -> VariBADState:
        """Initial encoder, decoder and policy parameters and both optimiser states."""
        keys = jax.random.split(key, 4)
        z = jnp.zeros((latent,), jnp.float32)
        obs = jnp.zeros((obs_dim,), jnp.float32)
        params = {
            "encoder": encoder.init(keys[0], encoder.init_state(),
                                    jnp.zeros((input_dim - obs_dim,), jnp.float32)),
            "policy": policy.init(keys[1], policy_features(obs, z, z)),
        }
        if decoder_kind == "multi_head":
            params["reward_decoder"] = reward_decoder.init(keys[2], z)
        else:
            params["reward_decoder"] = reward_decoder.init(
                keys[2], jnp.zeros((latent + 2 * obs_dim + a_dim,), jnp.float32))
        if state_decoder is not None:
            params["state_decoder"] = state_decoder.init(
                keys[3], jnp.zeros((latent + obs_dim + a_dim,), jnp.float32))
        vae, policy_params = split_params(params)
        buffer = None
        if config.vae_buffer_trials:   # one ring of whole trials (a task axis of one)
            trial = (jnp.zeros((trial_steps, input_dim), jnp.float32),
                     jnp.zeros((trial_steps,), bool))
            buffer = replay.init(trial, 1, config.vae_buffer_trials)
        return VariBADState(params=params, policy_opt_state=policy_optimizer.init(policy_params),
                            vae_opt_state=vae_optimizer.init(vae), step=jnp.zeros((), jnp.int32),
                            vae_buffer=buffer)

    def update(state: VariBADState, key: jax.Array):
        """One iteration: trials, PPO on the stopped beliefs, VAE steps (pure, jit-able)."""
        task_key, trial_key, ppo_key, vae_key = jax.random.split(key, 4)
        task_params = shard_tasks(
            family.sample(task_key, config.meta_batch_size, "train"), mesh)
        trials = trials_of(state.params, task_params, trial_key, config.trial_episodes)
        inputs = trials.flat(trials.inputs)                  # [B, T, in]
        valid = trials.flat(trials.valid)
        adv, returns = trial_gae(trials.flat(trials.reward), trials.flat(trials.value), valid,
                                 config.gamma, config.gae_lambda, config.normalize_advantages)
        features = jax.lax.stop_gradient(beliefs(state.params["encoder"], inputs))

        def steps(x):  # [B, T, ...] -> [B * T, ...]: PPO's samples are steps
            return x.reshape((-1,) + x.shape[2:])

        data = (steps(features), steps(trials.flat(trials.action)),
                steps(trials.flat(trials.log_prob)), steps(adv), steps(returns), steps(valid))
        vae_params, policy_params = split_params(state.params)
        policy_params, policy_opt_state, (_, policy_aux) = ppo_update(
            policy_loss, policy_optimizer, policy_params, state.policy_opt_state, data, ppo_key,
            num_epochs=config.num_epochs, num_minibatches=config.num_minibatches)
        buffer = state.vae_buffer
        if buffer is not None:
            buffer = replay.add(buffer, jnp.zeros((1,), jnp.int32),
                                (inputs[None], valid[None].astype(bool)))
        vae_params, vae_opt_state, vae_aux = vae_steps(vae_params, state.vae_opt_state,
                                                       inputs, valid, buffer, vae_key)
        per_episode = episode_returns(trials, config.trial_episodes)
        metrics = {
            "mean_trial_return": jnp.mean(jnp.sum(per_episode, axis=1)),
            "first_episode_return": jnp.mean(per_episode[:, 0]),
            "last_episode_return": jnp.mean(per_episode[:, -1]),
            "env_steps": jnp.sum(trials.valid),
            **{name: jnp.mean(v) for name, v in policy_aux.items()},
            **{name: jnp.mean(v) for name, v in vae_aux.items()},
        }
        metrics = {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}
        params = {**vae_params, "policy": policy_params}
        return VariBADState(params=params, policy_opt_state=policy_opt_state,
                            vae_opt_state=vae_opt_state, step=state.step + 1,
                            vae_buffer=buffer), metrics

    def evaluate(state: VariBADState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Return of each episode of one trial per held-out task, ``{"varibad": [tasks, n]}``.

        As RL²'s: ``n = num_steps`` episodes (default ``eval_episodes`` or
        ``trial_episodes``), acting by sampling or by the most likely action
        as ``eval_policy`` says; the posterior is carried through the trial.
        """
        if num_steps is not None:
            check_positive_int("num_steps (episodes of the evaluation trial)", num_steps)
        num_episodes = num_steps or config.eval_episodes or config.trial_episodes
        trials = trials_of(state.params, task_params, key, num_episodes,
                           deterministic=config.eval_policy == "mode")
        return make_curves({"varibad": episode_returns(trials, num_episodes)},
                           range(1, num_episodes + 1), "episode in trial")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="mean_trial_return", run_trials=trials_of, beliefs=beliefs,
                   policy_loss=policy_loss, vae_loss=vae_loss, encoder=encoder, policy=policy,
                   reward_decoder_kind=decoder_kind)
