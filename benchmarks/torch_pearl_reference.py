"""A PyTorch PEARL gradient step, to time the PyTorch side in the same run.

Our own PyTorch implementation of exactly the update of
``metarl_jax.algorithms.pearl`` (which follows ``katerakelly/oyster``'s
``PEARLSoftActorCritic._take_step`` with twin target critics in place of its
value network), written from the algorithm: per step, for ``M`` tasks,

1. the context ``[M, Nc, d]`` through the encoder MLP to Gaussian factors
   (variance by softplus, clamped at 1e-7), multiplied into the posterior;
   ``z = mean + sqrt(var) eps``; ``KL(q || N(0, I))`` summed over tasks;
2. twin critics on ``[s, a, z]``; the target
   ``reward_scale r + gamma (1 - done) (min_j Q'_j(s', a') - alpha log pi(a' | s', z̄))``
   with ``a'`` from the actor (tanh-Gaussian); critic loss the sum over the
   two critics of the mean squared error; the encoder learns through it and
   the KL (weight ``kl_weight``);
3. actor loss ``mean(alpha log pi(ã | s, z̄) - min_j Q_j(s, ã, z̄))`` with the
   critics' parameters and ``z`` detached, plus the small penalties on the
   pre-squash mean and log std;
4. one Adam step over all networks, then the Polyak update of the targets.

The noise (``eps`` for ``z``, ``a'`` and ``ã``) is passed in, so
``tests/test_torch_reference.py`` can feed both sides the same numbers and
check that they compute the same losses, gradients and updated parameters;
:func:`random_noise` draws it for timing. ``benchmarks/pearl_speed.py``
times both.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX, MIN_VARIANCE = -20.0, 2.0, 1e-7


def mlp(sizes: list[int]) -> nn.Sequential:
    """ReLU after every layer but the last."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TorchPEARL:
    """Encoder, actor, twin critics and target critics, with one Adam optimiser."""

    def __init__(self, obs_dim, action_dim, latent_dim, encoder_hidden, hidden, *,
                 learning_rate=3e-4, gamma=0.99, tau=0.005, reward_scale=5.0, alpha=1.0,
                 kl_weight=0.1, policy_mean_reg=1e-3, policy_std_reg=1e-3):
        context_dim = obs_dim + action_dim + 1
        self.latent_dim, self.action_dim = latent_dim, action_dim
        self.encoder = mlp([context_dim, *encoder_hidden, 2 * latent_dim])
        self.actor_torso = mlp([obs_dim + latent_dim, *hidden])
        self.actor_torso.append(nn.ReLU())
        self.actor_mean = nn.Linear(hidden[-1], action_dim)
        self.actor_log_std = nn.Linear(hidden[-1], action_dim)
        critic_sizes = [obs_dim + action_dim + latent_dim, *hidden, 1]
        self.critics = nn.ModuleList([mlp(critic_sizes), mlp(critic_sizes)])
        self.targets = nn.ModuleList([mlp(critic_sizes), mlp(critic_sizes)])
        self.targets.load_state_dict(self.critics.state_dict())
        for p in self.targets.parameters():
            p.requires_grad_(False)
        self.modules = nn.ModuleList([self.encoder, self.actor_torso, self.actor_mean,
                                      self.actor_log_std, self.critics])
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=learning_rate)
        self.gamma, self.tau, self.reward_scale = gamma, tau, reward_scale
        self.alpha, self.kl_weight = alpha, kl_weight
        self.mean_reg, self.std_reg = policy_mean_reg, policy_std_reg

    # -- pieces -------------------------------------------------------------------------

    def posterior(self, context):
        out = self.encoder(context)
        mu, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        precision = 1.0 / torch.clamp(nn.functional.softplus(raw), min=MIN_VARIANCE)
        var = 1.0 / precision.sum(-2)
        return var * (mu * precision).sum(-2), var

    def actor(self, x):
        h = self.actor_torso(x)
        return self.actor_mean(h), torch.clamp(self.actor_log_std(h), LOG_STD_MIN, LOG_STD_MAX)

    @staticmethod
    def tanh_sample(mean, log_std, eps):
        u = mean + torch.exp(log_std) * eps
        log_normal = (-0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        correction = (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_normal - correction

    @staticmethod
    def twin(critics, x, detach=False):
        outs = []
        for critic in critics:
            if detach:
                params = {k: v.detach() for k, v in critic.named_parameters()}
                outs.append(torch.func.functional_call(critic, params, (x,))[..., 0])
            else:
                outs.append(critic(x)[..., 0])
        return torch.stack(outs, -1)

    def loss(self, context, batch, eps_z, eps_next, eps_new):
        """PEARL's total loss and its parts (tensors, the graph kept)."""
        mean, var = self.posterior(context)
        z = mean + torch.sqrt(var) * eps_z
        kl = (0.5 * (var + mean ** 2 - 1.0 - torch.log(var)).sum(-1)).sum()
        batch_z = z[:, None, :].expand(*batch["obs"].shape[:2], z.shape[-1])
        fixed_z = batch_z.detach()
        q = self.twin(self.critics, torch.cat([batch["obs"], batch["action"], batch_z], -1))
        with torch.no_grad():
            next_mean, next_log_std = self.actor(torch.cat([batch["next_obs"], fixed_z], -1))
            next_action, next_log_prob = self.tanh_sample(next_mean, next_log_std, eps_next)
            next_q = self.twin(self.targets,
                               torch.cat([batch["next_obs"], next_action, fixed_z], -1))
            target = (self.reward_scale * batch["critic_reward"] + self.gamma
                      * (1.0 - batch["terminated"])
                      * (next_q.min(-1).values - self.alpha * next_log_prob))
        critic_loss = ((q - target[..., None]) ** 2).mean(dim=(0, 1)).sum()
        new_mean, new_log_std = self.actor(torch.cat([batch["obs"], fixed_z], -1))
        new_action, log_prob = self.tanh_sample(new_mean, new_log_std, eps_new)
        new_q = self.twin(self.critics, torch.cat([batch["obs"], new_action, fixed_z], -1),
                          detach=True)
        actor_loss = ((self.alpha * log_prob - new_q.min(-1).values).mean()
                      + self.mean_reg * (new_mean ** 2).mean()
                      + self.std_reg * (new_log_std ** 2).mean())
        total = critic_loss + self.kl_weight * kl + actor_loss
        return total, {"critic_loss": critic_loss, "actor_loss": actor_loss, "kl": kl}

    def step(self, context, batch, eps_z, eps_next, eps_new):
        """One gradient step and the target update; returns the total loss (a float)."""
        total, _ = self.loss(context, batch, eps_z, eps_next, eps_new)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        with torch.no_grad():
            for target, online in zip(self.targets.parameters(), self.critics.parameters()):
                target.mul_(1.0 - self.tau).add_(self.tau * online)
        return float(total.detach())

    # -- parameters from the JAX learner -------------------------------------------------

    def load_flax(self, params, target_critic):
        """Copy ``metarl_jax.algorithms.pearl``'s parameters (flax kernels are ``[in, out]``)."""
        def put(linear, dense):
            linear.weight.data = torch.tensor(np.asarray(dense["kernel"]).T.copy())
            linear.bias.data = torch.tensor(np.asarray(dense["bias"]).copy())

        def put_mlp(seq, torso, out=None):
            linears = [m for m in seq if isinstance(m, nn.Linear)]
            for i, linear in enumerate(linears[:len(torso)]):
                put(linear, torso[f"hidden_{i}"])
            if out is not None:
                put(linears[-1], out)

        enc = params["encoder"]["params"]
        put_mlp(self.encoder, enc["torso"], enc["factor"])
        act = params["actor"]["params"]
        put_mlp(self.actor_torso, act["torso"])
        put(self.actor_mean, act["mean"])
        put(self.actor_log_std, act["log_std"])
        for modules, source in ((self.critics, params["critic"]), (self.targets, target_critic)):
            twins = source["params"]["twins"]
            for j, critic in enumerate(modules):
                one = {"torso": {k: {n: v[j] for n, v in layer.items()}
                                 for k, layer in twins["torso"].items()},
                       "out": {n: v[j] for n, v in twins["out"].items()}}
                put_mlp(critic, one["torso"], one["out"])
        self.optimizer = torch.optim.Adam(self.modules.parameters(),
                                          lr=self.optimizer.param_groups[0]["lr"])


def random_noise(meta_batch, batch, latent_dim, action_dim, generator=None):
    """The three noise tensors of one step: ``eps_z [M, L]``, ``eps_next``, ``eps_new [M, B, A]``."""
    return (torch.randn(meta_batch, latent_dim, generator=generator),
            torch.randn(meta_batch, batch, action_dim, generator=generator),
            torch.randn(meta_batch, batch, action_dim, generator=generator))


def time_steps(encoder_hidden, hidden, meta_batch, batch, context, latent_dim=5, steps=50,
               repeats=5, learning_rate=3e-4) -> dict:
    """Median gradient steps per second of :class:`TorchPEARL` on the point robot's
    shapes (2-D observations and actions), on tensors drawn once."""
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(0)
    model = TorchPEARL(2, 2, latent_dim, encoder_hidden, hidden, learning_rate=learning_rate)
    ctx = torch.randn(meta_batch, context, 5, generator=gen)
    data = {"obs": torch.randn(meta_batch, batch, 2, generator=gen),
            "action": torch.rand(meta_batch, batch, 2, generator=gen) * 2 - 1,
            "critic_reward": torch.randn(meta_batch, batch, generator=gen),
            "next_obs": torch.randn(meta_batch, batch, 2, generator=gen),
            "terminated": torch.zeros(meta_batch, batch)}
    noise = [random_noise(meta_batch, batch, latent_dim, 2, gen) for _ in range(steps)]
    model.step(ctx, data, *noise[0])        # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for n in noise:
            model.step(ctx, data, *n)
        times.append(time.perf_counter() - start)
    return {"torch_gradient_steps_per_s": steps / statistics.median(times),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder-hidden", type=int, nargs="+", default=[200, 200, 200])
    parser.add_argument("--hidden", type=int, nargs="+", default=[300, 300, 300])
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = time_steps(args.encoder_hidden, args.hidden, args.meta_batch, args.batch,
                        args.context, repeats=args.repeats)
    print(f"torch {result['torch']}, {result['torch_threads']} threads: "
          f"{result['torch_gradient_steps_per_s']:.1f} PEARL gradient steps / s")
    return result


if __name__ == "__main__":
    main()
