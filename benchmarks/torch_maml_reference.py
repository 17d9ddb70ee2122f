"""A PyTorch MAML-TRPO meta-iteration, to time the PyTorch side in the same run.

What this is: our own single-process PyTorch implementation of one
meta-iteration of pytorch-maml-rl's MAML-TRPO (Deleu, ``maml_rl/metalearners/
maml_trpo.py`` with its ``MultiTaskSampler``, ``LinearFeatureBaseline``,
``BatchEpisodes.compute_advantages`` and ``conjugate_gradient``), written from
that library's algorithm, not copied from it. Per meta-iteration:

1. for each of ``meta_batch_size`` tasks, sample ``batch_size`` trajectories
   with the current policy, fit the per-task linear feature baseline (ridge
   regression on ``[obs, obs^2, t, t^2, t^3, 1]``, ``t = step / 100``, ridge
   1e-5 raised x10 while the solve is not finite), compute GAE advantages and
   normalise them (per task, episodes weighted equally, as the reference's
   ``weighted_normalize``), take one first-order REINFORCE step (the sampler's
   adaptation, only used to sample) and sample the validation trajectories
   with the adapted policy;
2. TRPO outer step: per task, re-adapt with ``create_graph=True`` (second
   order), surrogate ``-mean(exp(log pi' - log pi'_old) * A)`` and
   ``KL(pi' || pi'_old)`` of the adapted policy on the validation
   trajectories; average over tasks; gradient; Hessian-vector products of the
   KL by double backward plus damping; 10 conjugate-gradient iterations; step
   scaled so that ``0.5 s^T H s = max_kl``; backtracking line search (ratio
   0.8, up to 15 candidates) re-adapting every task (first order, no graph)
   and accepting the first candidate that lowers the loss with
   ``KL < max_kl``, else restoring the parameters.

How it differs from running pytorch-maml-rl itself, all in its favour (so a
speed ratio against it is conservative):

* the environments (2D navigation, Bernoulli bandit) are vectorised in one
  process: every trajectory of every task is stepped at once, with the
  adapted per-task policies evaluated by batched matrix products, where
  pytorch-maml-rl steps one gym env per trajectory in Python inside sampler
  worker processes and ships episodes through queues;
* the baseline fit, GAE and normalisation run batched over tasks, and the
  reference's per-episode Python masking loops (``weighted_mean``) are
  replaced by mask products (same numbers);
* distribution argument validation is off (the default of torch before 1.8;
  newer torch validates, which costs a little per distribution built).

The learner's autograd work (per-task adaptation, surrogate, KL Hessian-vector
products, line search) is the reference's: one task at a time, as
``MAMLTRPO.surrogate_loss`` / ``step`` do.

Float32 throughout; ``torch.set_num_threads(os.cpu_count())``.

Usage: ``python benchmarks/torch_maml_reference.py [--kind navigation2d|bandit|both]
[--repeats 3] [--out results.json]``; from Python, :func:`time_meta_iteration`.
``benchmarks/maml_speed.py`` runs it in a subprocess (its own thread pool, no
JAX in the process) and reports our speed relative to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, Normal, kl_divergence

# The two headline configurations of benchmarks/maml_speed.py (NAV and BANDIT
# there, with maml.Config's TRPO defaults), in pytorch-maml-rl's terms: its
# configs/maml/2d-navigation.yaml and configs/maml/bandit/bandit-k10-n100.yaml.
CONFIGS = {
    "navigation2d": dict(
        env="navigation2d", meta_batch_size=20, batch_size=20, horizon=100, num_steps=1,
        fast_lr=0.1, hidden_sizes=(64, 64), nonlinearity="tanh", gamma=0.99, gae_lambda=1.0,
        max_kl=1e-2, cg_iters=10, cg_damping=1e-5, ls_max_steps=15, ls_backtrack_ratio=0.8),
    "bandit": dict(
        env="bandit", arms=10, meta_batch_size=20, batch_size=100, horizon=1, num_steps=1,
        fast_lr=0.5, hidden_sizes=(32, 32), nonlinearity="relu", gamma=0.95, gae_lambda=1.0,
        max_kl=1e-2, cg_iters=10, cg_damping=1e-5, ls_max_steps=15, ls_backtrack_ratio=0.8),
}

NAV_MAX_SPEED = 0.1
NAV_GOAL_TOLERANCE = 0.01
NAV_GOAL_LOW, NAV_GOAL_HIGH = -0.5, 0.5
MIN_LOG_STD = math.log(1e-6)  # pytorch-maml-rl's NormalMLPPolicy min_std
BASELINE_REG = 1e-5


# -- policy ---------------------------------------------------------------------


class MLPPolicy:
    """Functional MLP policy with pytorch-maml-rl's parameter names and init.

    Gaussian (``layer{i}``, ``mu``, ``sigma`` = log std, clamped below at
    log 1e-6) or categorical (``layer{i}``, last layer gives the logits).
    Weights are ``[out, in]`` (``F.linear``), Xavier-uniform, zero biases.

    ``forward(params, obs)`` takes shared parameters and ``obs [..., d]``, or
    per-task parameters stacked on a leading task axis (weights
    ``[M, out, in]``) and ``obs [M, N, d]`` (batched matrix products).
    """

    def __init__(self, obs_dim, action_dim, hidden_sizes, nonlinearity, discrete,
                 init_log_std=0.0, generator=None):
        self.obs_dim, self.action_dim, self.discrete = obs_dim, action_dim, discrete
        self.act = {"tanh": torch.tanh, "relu": F.relu}[nonlinearity]
        sizes = (obs_dim,) + tuple(hidden_sizes) + (action_dim,)
        self.num_layers = len(sizes) - 1
        params = OrderedDict()
        for i in range(1, self.num_layers + 1):
            name = f"layer{i}" if (discrete or i < self.num_layers) else "mu"
            weight = torch.empty(sizes[i], sizes[i - 1])
            torch.nn.init.xavier_uniform_(weight, generator=generator)
            params[f"{name}.weight"] = weight
            params[f"{name}.bias"] = torch.zeros(sizes[i])
        if not discrete:
            params["sigma"] = torch.full((action_dim,), float(init_log_std))
        self.initial_params = params

    def _names(self):
        last = f"layer{self.num_layers}" if self.discrete else "mu"
        return [f"layer{i}" for i in range(1, self.num_layers)] + [last]

    def forward(self, params, obs):
        stacked = params[self._names()[0] + ".weight"].dim() == 3
        x = obs
        names = self._names()
        for i, name in enumerate(names):
            weight, bias = params[name + ".weight"], params[name + ".bias"]
            if stacked:
                x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            else:
                x = F.linear(x, weight, bias)
            if i < len(names) - 1:
                x = self.act(x)
        if self.discrete:
            return Categorical(logits=x, validate_args=False)
        log_std = params["sigma"]
        if stacked:
            log_std = log_std.unsqueeze(1)
        scale = torch.exp(torch.clamp(log_std, min=MIN_LOG_STD)).expand_as(x)
        return Independent(Normal(loc=x, scale=scale, validate_args=False), 1,
                           validate_args=False)

    __call__ = forward


def detach_distribution(pi):
    if isinstance(pi, Independent):
        return Independent(detach_distribution(pi.base_dist), pi.reinterpreted_batch_ndims,
                           validate_args=False)
    if isinstance(pi, Categorical):
        return Categorical(logits=pi.logits.detach(), validate_args=False)
    return Normal(loc=pi.loc.detach(), scale=pi.scale.detach(), validate_args=False)


# -- episodes: [T, tasks, E] batches, advantages as in pytorch-maml-rl ----------------


class Episodes:
    """Trajectories of ``M`` tasks: ``obs [T, M, E, d]``, ``actions [T, M, E(, a)]``,
    ``rewards [T, M, E]``, ``mask [T, M, E]`` (1 on steps inside the episode)."""

    def __init__(self, observations, actions, rewards, mask):
        self.observations, self.actions, self.rewards, self.mask = (
            observations, actions, rewards, mask)
        self.lengths = mask.sum(0)  # [M, E]
        self.advantages = None

    def task(self, m):
        """One task's episodes, ``[T, E, ...]`` (what a pytorch-maml-rl BatchEpisodes holds)."""
        ep = Episodes(self.observations[:, m], self.actions[:, m], self.rewards[:, m],
                      self.mask[:, m])
        ep.advantages = None if self.advantages is None else self.advantages[:, m]
        return ep


def discounted_returns(rewards, mask, gamma):
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = gamma * running + rewards[t] * mask[t]
        returns[t] = running
    return returns


def baseline_features(observations, mask):
    """``[obs, obs^2, t/100, (t/100)^2, (t/100)^3, 1]`` on valid steps, ``[T, ..., F]``."""
    ones = mask.unsqueeze(-1)
    steps = torch.arange(mask.shape[0], dtype=torch.float32).view(
        -1, *([1] * (mask.dim() - 1)), 1)
    time_step = steps * ones / 100.0
    obs = observations.reshape(*mask.shape, -1)
    return torch.cat([obs, obs ** 2, time_step, time_step ** 2, time_step ** 3, ones], dim=-1)


def linear_baseline_values(episodes: Episodes, gamma, reg_coeff=BASELINE_REG):
    """Fit the linear feature baseline per task on the valid steps and predict, ``[T, M, E]``.

    The normal equations ``(X^T X + reg I) w = X^T y``; the ridge is raised
    x10 (up to 5 tries) while the solution is not finite, as
    pytorch-maml-rl's ``LinearFeatureBaseline.fit``. Batched over tasks.
    """
    returns = discounted_returns(episodes.rewards, episodes.mask, gamma)
    features = baseline_features(episodes.observations, episodes.mask)  # [T, M, E, F]
    valid = episodes.mask.unsqueeze(-1)
    x = (features * valid).permute(1, 0, 2, 3).reshape(features.shape[1], -1, features.shape[-1])
    y = (returns * episodes.mask).permute(1, 0, 2).reshape(features.shape[1], -1, 1)
    xtx = x.transpose(1, 2) @ x  # [M, F, F]
    xty = x.transpose(1, 2) @ y  # [M, F, 1]
    eye = torch.eye(xtx.shape[-1])
    weights = torch.zeros_like(xty)
    todo = torch.ones(xtx.shape[0], dtype=torch.bool)
    reg = reg_coeff
    for _ in range(5):
        solution = torch.linalg.solve(xtx + reg * eye, xty)
        ok = torch.isfinite(solution).all(dim=(1, 2)) & todo
        weights[ok] = solution[ok]
        todo &= ~ok
        if not todo.any():
            break
        reg *= 10
    else:
        raise RuntimeError("LinearFeatureBaseline: normal equations not solvable")
    values = torch.einsum("tmef,mf->tme", features, weights[..., 0])
    return values * episodes.mask


def compute_advantages(episodes: Episodes, gamma, gae_lambda):
    """GAE on the baseline values, normalised per task like ``weighted_normalize``."""
    values = linear_baseline_values(episodes, gamma)
    values = F.pad(values, (0, 0, 0, 0, 0, 1))  # a zero value after the last step
    deltas = episodes.rewards + gamma * values[1:] - values[:-1]
    advantages = torch.zeros_like(deltas)
    gae = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        gae = gae * gamma * gae_lambda + deltas[t]
        advantages[t] = gae
    # weighted_normalize(lengths): mean over episodes of per-episode means, then
    # the std likewise, per task; padded steps are zero.
    mask, lengths = episodes.mask, episodes.lengths
    mean = ((advantages * mask).sum(0) / lengths).mean(-1)  # [M]
    centred = (advantages - mean.unsqueeze(-1)) * mask
    std = torch.sqrt(((centred ** 2).sum(0) / lengths).mean(-1))
    episodes.advantages = centred / (std.unsqueeze(-1) + 1e-8)
    return episodes.advantages


def weighted_mean(tensor, mask, lengths):
    """Per-episode time average over the valid steps (pytorch-maml-rl's ``weighted_mean``)."""
    return (tensor * mask).sum(0) / lengths


# -- vectorised environments ------------------------------------------------------


def sample_navigation(policy, params, goals, batch_size, horizon):
    """Roll out ``batch_size`` episodes in each task (goal ``[M, 2]``) at once.

    pytorch-maml-rl's Navigation2D: start at the origin, observation = position,
    the action (velocity) clipped to [-0.1, 0.1] per coordinate, reward
    ``-||position - goal||`` after the move, done within 0.01 of the goal in
    both coordinates; finished episodes are no longer stepped (zeros after).
    """
    num_tasks = goals.shape[0]
    stacked = params["mu.weight"].dim() == 3
    position = torch.zeros(num_tasks, batch_size, 2)
    obs = torch.zeros(horizon, num_tasks, batch_size, 2)
    actions = torch.zeros(horizon, num_tasks, batch_size, 2)
    rewards = torch.zeros(horizon, num_tasks, batch_size)
    mask = torch.zeros(horizon, num_tasks, batch_size)
    alive = torch.ones(num_tasks, batch_size, dtype=torch.bool)
    with torch.no_grad():
        for t in range(horizon):
            if not alive.any():
                break
            x = position if stacked else position.reshape(-1, 2)
            action = policy(params, x).sample().reshape(num_tasks, batch_size, 2)
            moved = position + torch.clamp(action, -NAV_MAX_SPEED, NAV_MAX_SPEED)
            diff = moved - goals.unsqueeze(1)
            reward = -torch.sqrt((diff ** 2).sum(-1))
            done = (diff.abs() < NAV_GOAL_TOLERANCE).all(-1)
            keep = alive.float()
            obs[t] = position * keep.unsqueeze(-1)
            actions[t] = action * keep.unsqueeze(-1)
            rewards[t] = reward * keep
            mask[t] = keep
            position = torch.where(alive.unsqueeze(-1), moved, position)
            alive = alive & ~done
    return Episodes(obs, actions, rewards, mask)


def sample_bandit(policy, params, arm_means, batch_size, horizon=1):
    """Bernoulli bandit (pytorch-maml-rl's ``BernoulliBanditEnv``): each episode
    is one pull, observation a constant ``[0.]``, reward ~ Bernoulli(p[arm])."""
    assert horizon == 1, "a bandit episode is one pull"
    num_tasks = arm_means.shape[0]
    stacked = params["layer1.weight"].dim() == 3
    obs = torch.zeros(1, num_tasks, batch_size, 1)
    with torch.no_grad():
        x = obs[0] if stacked else obs[0].reshape(-1, 1)
        actions = policy(params, x).sample().reshape(1, num_tasks, batch_size)
        probs = torch.gather(arm_means, 1, actions[0])
        rewards = torch.bernoulli(probs).unsqueeze(0)
    return Episodes(obs, actions, rewards, torch.ones(1, num_tasks, batch_size))


# -- MAML-TRPO ----------------------------------------------------------------------


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


class MAMLTRPO:
    """pytorch-maml-rl's MAML-TRPO meta-learner (one inner step), single process."""

    def __init__(self, config, seed=0):
        self.config = dict(config)
        c = self.config
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if c["env"] == "navigation2d":
            self.policy = MLPPolicy(2, 2, c["hidden_sizes"], c["nonlinearity"], False,
                                    generator=generator)
        else:
            self.policy = MLPPolicy(1, c["arms"], c["hidden_sizes"], c["nonlinearity"], True,
                                    generator=generator)
        self.params = OrderedDict(
            (k, v.clone().requires_grad_(True)) for k, v in self.policy.initial_params.items())

    # -- inner loop ----------------------------------------------------------------

    def reinforce_loss(self, params, episodes: Episodes):
        """``-mean_episodes(mean_t(log pi(a|s) A))`` of one task (``[T, E]`` episodes)."""
        obs = episodes.observations
        pi = self.policy(params, obs.reshape(-1, obs.shape[-1]))
        actions = episodes.actions.reshape(-1, *episodes.actions.shape[2:])
        log_probs = pi.log_prob(actions).view(episodes.mask.shape)
        return -weighted_mean(log_probs * episodes.advantages, episodes.mask,
                              episodes.lengths).mean()

    def adapt(self, episodes: Episodes, params=None, first_order=False):
        """One inner policy-gradient step (``create_graph`` unless first order)."""
        params = self.params if params is None else params
        loss = self.reinforce_loss(params, episodes)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        return OrderedDict((name, p - self.config["fast_lr"] * g)
                           for (name, p), g in zip(params.items(), grads))

    # -- sampling (MultiTaskSampler, all tasks at once) --------------------------------

    def sample_tasks(self, num_tasks):
        c = self.config
        if c["env"] == "navigation2d":
            return torch.empty(num_tasks, 2).uniform_(NAV_GOAL_LOW, NAV_GOAL_HIGH)
        return torch.rand(num_tasks, c["arms"])

    def _rollout(self, params, tasks):
        c = self.config
        fn = sample_navigation if c["env"] == "navigation2d" else sample_bandit
        episodes = fn(self.policy, params, tasks, c["batch_size"], c["horizon"])
        compute_advantages(episodes, c["gamma"], c["gae_lambda"])
        return episodes

    def sample(self, tasks):
        """Train episodes (current policy), first-order adaptation, validation episodes."""
        detached = OrderedDict((k, v.detach()) for k, v in self.params.items())
        train = self._rollout(detached, tasks)
        # the sampler's adaptation: first order, only used to sample D_1
        leaves = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in detached.items())
        adapted = [self.adapt(train.task(m), params=leaves, first_order=True)
                   for m in range(tasks.shape[0])]
        stacked = OrderedDict((k, torch.stack([a[k].detach() for a in adapted]))
                              for k in detached)
        valid = self._rollout(stacked, tasks)
        return train, valid

    # -- outer loop (TRPO) -------------------------------------------------------------

    def surrogate_loss(self, train: Episodes, valid: Episodes, old_pi=None):
        """One task's surrogate loss and KL of the adapted policy (re-adapted here)."""
        first_order = old_pi is not None
        params = self.adapt(train, first_order=first_order)
        with torch.set_grad_enabled(old_pi is None):
            pi = self.policy(params, valid.observations)
            if old_pi is None:
                old_pi = detach_distribution(pi)
            log_ratio = pi.log_prob(valid.actions) - old_pi.log_prob(valid.actions)
            ratio = torch.exp(log_ratio)
            losses = -weighted_mean(ratio * valid.advantages, valid.mask, valid.lengths)
            kls = weighted_mean(kl_divergence(pi, old_pi), valid.mask, valid.lengths)
        return losses.mean(), kls.mean(), old_pi

    def hessian_vector_product(self, kl, damping):
        params = list(self.params.values())
        grads = torch.autograd.grad(kl, params, create_graph=True)
        flat_grad_kl = _flat(grads)

        def product(vector, retain_graph=True):
            grad2s = torch.autograd.grad(torch.dot(flat_grad_kl, vector), params,
                                         retain_graph=retain_graph)
            return _flat(grad2s) + damping * vector

        return product

    @staticmethod
    def conjugate_gradient(f_ax, b, cg_iters=10, residual_tol=1e-10):
        p = b.clone().detach()
        r = b.clone().detach()
        x = torch.zeros_like(b)
        rdotr = torch.dot(r, r)
        for _ in range(cg_iters):
            z = f_ax(p).detach()
            v = rdotr / torch.dot(p, z)
            x += v * p
            r -= v * z
            new_rdotr = torch.dot(r, r)
            p = r + (new_rdotr / rdotr) * p
            rdotr = new_rdotr
            if rdotr.item() < residual_tol:
                break
        return x.detach()

    def _set_params(self, vector):
        with torch.no_grad():
            offset = 0
            for p in self.params.values():
                p.copy_(vector[offset:offset + p.numel()].view_as(p))
                offset += p.numel()

    def step(self, train: Episodes, valid: Episodes):
        """The TRPO outer step on the meta-parameters; returns a dict of logs."""
        c = self.config
        num_tasks = train.mask.shape[1]
        tasks = [(train.task(m), valid.task(m)) for m in range(num_tasks)]
        old_losses, old_kls, old_pis = zip(*[self.surrogate_loss(tr, va) for tr, va in tasks])
        old_loss = sum(old_losses) / num_tasks
        params = list(self.params.values())
        grads = _flat(torch.autograd.grad(old_loss, params, retain_graph=True))
        old_kl = sum(old_kls) / num_tasks
        hvp = self.hessian_vector_product(old_kl, c["cg_damping"])
        stepdir = self.conjugate_gradient(hvp, grads, cg_iters=c["cg_iters"])
        shs = 0.5 * torch.dot(stepdir, hvp(stepdir, retain_graph=False))
        lagrange_multiplier = torch.sqrt(shs / c["max_kl"])
        step = stepdir / lagrange_multiplier
        old_params = _flat([p.detach() for p in params]).clone()
        step_size, accepted = 1.0, 0.0
        loss_after, kl_after = old_loss.item(), 0.0
        for _ in range(c["ls_max_steps"]):
            self._set_params(old_params - step_size * step)
            losses, kls, _ = zip(*[self.surrogate_loss(tr, va, old_pi=old_pi)
                                   for (tr, va), old_pi in zip(tasks, old_pis)])
            improve = sum(losses) / num_tasks - old_loss
            kl = sum(kls) / num_tasks
            if improve.item() < 0.0 and kl.item() < c["max_kl"]:
                accepted, loss_after, kl_after = step_size, (sum(losses) / num_tasks).item(), kl.item()
                break
            step_size *= c["ls_backtrack_ratio"]
        else:
            self._set_params(old_params)
        return dict(loss_before=old_loss.item(), loss_after=loss_after, kl=kl_after,
                    step_fraction=accepted, grad_norm=grads.norm().item())

    def meta_iteration(self):
        """Sample tasks, sample and adapt, TRPO step; returns logs (returns, loss, KL)."""
        tasks = self.sample_tasks(self.config["meta_batch_size"])
        train, valid = self.sample(tasks)
        logs = self.step(train, valid)
        logs["pre_adaptation_return"] = (train.rewards.sum(0)).mean().item()
        logs["post_adaptation_return"] = (valid.rewards.sum(0)).mean().item()
        return logs


def time_meta_iteration(kind: str, repeats: int = 3, seed: int = 0, threads=None) -> dict:
    """Median seconds per meta-iteration of the PyTorch port on ``kind``.

    ``kind``: ``"navigation2d"`` or ``"bandit"``. One untimed warm-up
    iteration, then ``repeats`` timed ones; every iteration starts from the
    parameters the previous one produced, so nothing can be skipped.
    """
    if kind not in CONFIGS:
        raise ValueError(f"kind must be one of {sorted(CONFIGS)}, got {kind!r}")
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    config = CONFIGS[kind]
    learner = MAMLTRPO(config, seed=seed)
    learner.meta_iteration()  # warm-up (allocator, thread pool)
    times, logs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        logs.append(learner.meta_iteration())
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    env_steps = config["meta_batch_size"] * config["batch_size"] * config["horizon"] * 2
    return dict(kind=kind, median_s=median, times=times, repeats=repeats, threads=threads,
                torch=torch.__version__, config={k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in config.items()},
                env_steps_per_s=env_steps / median,
                post_adaptation_return=logs[-1]["post_adaptation_return"],
                step_fraction=[log["step_fraction"] for log in logs])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="both", choices=["navigation2d", "bandit", "both"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the results (a JSON list) here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    kinds = ["navigation2d", "bandit"] if args.kind == "both" else [args.kind]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, {platform.machine()}")
    results = []
    for kind in kinds:
        r = time_meta_iteration(kind, args.repeats)
        results.append(r)
        print(f"{kind:14s} {r['median_s']:8.3f} s/meta-iteration (median of {r['repeats']}: "
              + ", ".join(f"{t:.3f}" for t in r["times"]) + f"), {r['threads']} threads, "
              f"post-adaptation return {r['post_adaptation_return']:.3f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
