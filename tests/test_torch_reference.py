"""The PyTorch timing reference computes the same mathematics as our JAX MAML.

``benchmarks/torch_maml_reference.py`` is a PyTorch port of pytorch-maml-rl's
MAML-TRPO, used by ``benchmarks/maml_speed.py`` to time the PyTorch side in
the same run. A timing comparison is only meaningful if both sides compute the
same thing, so here both are given the same policy parameters (the flax
params copied into the torch layout, kernels transposed) and the same fixed
trajectories (observations, actions, rewards, masks; sampled by the port's
vectorised environments), and must agree on:

* the advantages (linear feature baseline, GAE, normalisation), both within
  float32 rounding of a float64 solve of the baseline's normal equations;
* the adapted parameters after the inner step (rtol 2e-4, atol 2e-6);
* ``learner.meta_loss`` (the library's own re-adaptation) and its
  second-order gradient with respect to the initial parameters, which is also
  the gradient of the TRPO surrogate at the old parameters (rtol 1e-3,
  atol 1e-5), and it differs from the first-order gradient;
* the TRPO surrogate and the KL at other parameters (re-adapting inside);
* the KL Hessian-vector product (torch: double backward of ``KL(new || old)``;
  JAX: the Gauss-Newton product of ``KL(old || new)``; equal at the old
  parameters, where both are the Fisher matrix), and on the navigation case
  the whole TRPO update (conjugate gradient, step scale, line search).

From the learner comparisons on, both sides use the same (JAX) advantages, so
each stage is compared on identical inputs. Where the two differ by
construction (episodes of unequal length are weighted per step in JAX and per
episode in pytorch-maml-rl) a separate test pins the difference down.

CI does not install torch, so this module skips there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from jax.flatten_util import ravel_pytree

from metarl_jax.algorithms import maml
from metarl_jax.nn import make_policy
from metarl_jax.rl.returns import masked_mean
from metarl_jax.rl.trpo import gauss_newton_fvp, trpo_step
from metarl_jax.core.rollout import Trajectory

torch = pytest.importorskip("torch")

_BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("torch_maml_reference")

# float32 agreement: sums over a few thousand samples and one (second-order)
# gradient step; CG amplifies rounding, so the whole update gets more room
RTOL, ATOL = 2e-4, 2e-6
CASES = {
    "navigation2d": dict(family=("navigation2d", {}), kind="navigation2d",
                         # CG damping 1e-2 (the default is 1e-5): see the TRPO test
                         config=dict(meta_batch_size=3, inner_episodes=8, horizon=100,
                                     inner_lr=0.1, hidden_sizes=(64, 64), activation="tanh",
                                     cg_damping=1e-2)),
    "bandit": dict(family=("bandit-bernoulli", {"arms": 10}), kind="bandit",
                   config=dict(meta_batch_size=3, inner_episodes=100, horizon=1, inner_lr=0.5,
                               gamma=0.95, hidden_sizes=(32, 32), activation="relu")),
}


def flax_to_torch(policy_params, discrete):
    """flax ``{"params": {"torso": {"hidden_i"}, "output", "log_std"}}`` -> torch names."""
    p = policy_params["params"]
    hidden = len(p["torso"])
    out = OrderedDict()

    def dense(name, layer):
        out[f"{name}.weight"] = torch.tensor(np.asarray(layer["kernel"]).T.copy())
        out[f"{name}.bias"] = torch.tensor(np.asarray(layer["bias"]))

    for i in range(hidden):
        dense(f"layer{i + 1}", p["torso"][f"hidden_{i}"])
    dense(f"layer{hidden + 1}" if discrete else "mu", p["output"])
    if not discrete:
        out["sigma"] = torch.tensor(np.asarray(p["log_std"]))
    return out


def to_episodes(traj):
    """JAX Trajectory ``[M, E, T, ...]`` -> the port's ``[T, M, E, ...]`` Episodes."""
    def tm(x, dtype):
        x = np.asarray(x)
        return torch.tensor(np.moveaxis(x, 2, 0).copy(), dtype=dtype)

    action_dtype = torch.int64 if np.issubdtype(np.asarray(traj.action).dtype, np.integer) \
        else torch.float32
    return ref.Episodes(tm(traj.obs, torch.float32), tm(traj.action, action_dtype),
                        tm(traj.reward, torch.float32), tm(traj.valid, torch.float32))


def tm_np(x):
    """``[M, E, T]`` -> ``[T, M, E]`` numpy."""
    return np.moveaxis(np.asarray(x), 2, 0)


def assert_close(torch_tree, jax_tree, discrete, rtol=RTOL, atol=ATOL):
    expected = flax_to_torch(jax_tree, discrete)
    assert list(torch_tree) == list(expected)
    for name in expected:
        np.testing.assert_allclose(torch_tree[name].detach().numpy(), expected[name].numpy(),
                                   rtol=rtol, atol=atol, err_msg=name)


def perturbation(meta_params, scale, seed):
    """A fixed random pytree like ``meta_params`` times ``scale``."""
    flat, unravel = ravel_pytree(meta_params["policy"])
    direction = np.random.default_rng(seed).normal(size=flat.shape).astype(np.float32)
    return {"policy": unravel(scale * jnp.asarray(direction)), "inner_lr": None}


def jax_side(config, policy, learner, meta_params, trajs, delta, vector, with_trpo=True):
    """Everything the torch port is compared with, from metarl_jax's functions.

    The pieces of ``maml.py``'s ``outer_step`` that are closures there are
    rebuilt from the same pure functions (``policy.apply``, ``masked_mean``,
    ``gauss_newton_fvp``, ``trpo_step``); ``learner.meta_loss`` (the library's
    own re-adaptation) checks that they agree with the library.
    """
    (train, weights), (valid, adv) = trajs

    def adapt(policy_params, tr, w):  # maml.py's inner_step (VPG)
        def inner_loss(p):
            return -masked_mean(policy.apply(p, tr.obs).log_prob(tr.action) * w, tr.valid)

        grads = jax.grad(inner_loss)(policy_params)
        return jax.tree.map(lambda p, g: p - config.inner_lr * g, policy_params, grads)

    def adapted_dists(mp):
        return jax.vmap(lambda tr, w, va: policy.apply(adapt(mp["policy"], tr, w), va.obs))(
            train, weights, valid)

    def log_prob(dists):
        return jax.vmap(lambda d, a: d.log_prob(a))(dists, valid.action)

    old_dists = jax.lax.stop_gradient(adapted_dists(meta_params))
    old_logp = log_prob(old_dists)

    def surrogate(mp):  # as in outer_step
        return -masked_mean(jnp.exp(log_prob(adapted_dists(mp)) - old_logp) * adv, valid.valid)

    def kl_of_dist(dist):  # as in outer_step: KL(old || new)
        return masked_mean(jax.vmap(lambda od, nd: od.kl(nd))(old_dists, dist), valid.valid)

    meta_loss, meta_grad = jax.value_and_grad(learner.meta_loss)(meta_params, trajs)
    moved = jax.tree.map(lambda a, b: a + b, meta_params, delta)
    new_dists = adapted_dists(moved)
    fvp = gauss_newton_fvp(adapted_dists, kl_of_dist, meta_params)
    new_params, info = meta_params, None
    if with_trpo:
        new_params, info = trpo_step(
            surrogate, lambda mp: kl_of_dist(adapted_dists(mp)), meta_params,
            max_kl=config.max_kl, damping=config.cg_damping, cg_iters=config.cg_iters,
            backtrack_ratio=config.line_search_backtrack,
            max_backtracks=config.line_search_steps, line_search="sequential",
            fisher_vector_product=fvp)
    return dict(
        adapted=jax.vmap(adapt, in_axes=(None, 0, 0))(meta_params["policy"], train, weights),
        meta_loss=meta_loss, meta_grad=meta_grad["policy"],
        surrogate_at_old=surrogate(meta_params), surrogate_moved=surrogate(moved),
        kl_new_old_moved=masked_mean(jax.vmap(lambda n, o: n.kl(o))(new_dists, old_dists),
                                     valid.valid),
        kl_old_new_moved=kl_of_dist(new_dists), fvp=fvp(vector)["policy"],
        trpo_params=new_params["policy"], trpo_info=info)


def to_trajectory(episodes):
    """The port's ``[T, M, E, ...]`` Episodes -> a JAX Trajectory ``[M, E, T, ...]``."""
    def mt(x):
        return jnp.asarray(np.moveaxis(x.numpy(), 0, 2))

    valid = mt(episodes.mask) > 0
    length = jnp.sum(valid, axis=-1, keepdims=True)
    last = jnp.arange(valid.shape[-1]) == length - 1
    terminated = last & (length < valid.shape[-1])  # ended before the horizon: reached
    zeros = jnp.zeros(valid.shape, jnp.float32)
    return Trajectory(obs=mt(episodes.observations), action=mt(episodes.actions),
                      reward=mt(episodes.rewards), terminated=terminated,
                      truncated=last & ~terminated, valid=valid, log_prob=zeros,
                      next_obs=jnp.zeros_like(mt(episodes.observations)))




@pytest.fixture(scope="module", params=sorted(CASES))
def setup(request):
    """Same parameters, same fixed trajectories, both implementations.

    The trajectories are sampled by the port's vectorised environments (as the
    benchmark does: train batch with the initial policy, validation batch with
    the first-order adapted one); both sides then compute on them.
    """
    case = CASES[request.param]
    name, kwargs = case["family"]
    family = metarl_jax.make(name, **kwargs)
    config = maml.Config(outer_optimizer="trpo", train_pretrained=False, **case["config"])
    learner = maml.make(config, family)
    state = learner.init(jax.random.PRNGKey(0))
    discrete = request.param == "bandit"
    # the torch learner at the same parameters, same hyperparameters
    tconf = dict(ref.CONFIGS[case["kind"]], meta_batch_size=config.meta_batch_size,
                 batch_size=config.inner_episodes, cg_damping=config.cg_damping)
    learner_t = ref.MAMLTRPO(tconf, seed=1)
    learner_t.params = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in
                                   flax_to_torch(state.meta_params["policy"], discrete).items())
    train, valid = learner_t.sample(learner_t.sample_tasks(config.meta_batch_size))
    advantages = jax.jit(jax.vmap(learner.advantages))  # maml.py's own, per task
    trajs = [(traj, advantages(traj)) for traj in (to_trajectory(train), to_trajectory(valid))]
    # the port's own advantages (compared in test_advantages_match); the learner
    # comparisons get identical advantages (JAX's)
    ported = [train.advantages.numpy().copy(), valid.advantages.numpy().copy()]
    train.advantages = torch.tensor(tm_np(trajs[0][1]).copy())
    valid.advantages = torch.tensor(tm_np(trajs[1][1]).copy())
    env = family.env
    policy = make_policy(env.action_space(env.default_params), config.hidden_sizes,
                         config.activation, config.init_log_std)
    delta = perturbation(state.meta_params, 0.02, seed=3)
    vector = perturbation(state.meta_params, 1.0, seed=4)
    with_trpo = not discrete  # the whole update is compared on the navigation case
    jax_out = jax.jit(lambda mp, tr, d, v: jax_side(config, policy, learner, mp, tr, d, v,
                                                    with_trpo))(
        state.meta_params, trajs, delta, vector)
    return dict(config=config, state=state, trajs=trajs, jax=jax_out, discrete=discrete,
                learner_t=learner_t, train=train, valid=valid, num_tasks=config.meta_batch_size,
                ported_advantages=ported, delta=flax_to_torch(delta["policy"], discrete),
                vector=flax_to_torch(vector["policy"], discrete), with_trpo=with_trpo)


def torch_loss_kl(s, params, old_pis=None):
    """The port's task-mean surrogate and KL at ``params`` (re-adapting every task)."""
    lt = s["learner_t"]
    saved = lt.params
    lt.params = params
    try:
        out = [lt.surrogate_loss(s["train"].task(m), s["valid"].task(m),
                                 old_pi=None if old_pis is None else old_pis[m])
               for m in range(s["num_tasks"])]
    finally:
        lt.params = saved
    losses, kls, pis = zip(*out)
    return sum(losses) / len(out), sum(kls) / len(out), pis


def torch_logp_loss(s, first_order=False):
    """The port's ``-mean(log pi'(a) A)`` over tasks (what ``learner.meta_loss`` is)."""
    lt, total = s["learner_t"], 0.0
    for m in range(s["num_tasks"]):
        train, valid = s["train"].task(m), s["valid"].task(m)
        adapted = lt.adapt(train, first_order=first_order)
        logp = lt.policy(adapted, valid.observations).log_prob(valid.actions)
        total = total - ref.weighted_mean(logp * valid.advantages, valid.mask,
                                          valid.lengths).mean()
    return total / s["num_tasks"]


def flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1)
                      for p, g in zip(params, grads)])


def unflat(s, vector):
    params = s["learner_t"].params
    pieces = torch.split(vector, [p.numel() for p in params.values()])
    return OrderedDict((k, t.view_as(p)) for (k, p), t in zip(params.items(), pieces))


# -- tests ---------------------------------------------------------------------------


def test_configs_match_maml_speed():
    speed = _load("maml_speed")
    for kind, ours in (("navigation2d", speed.NAV), ("bandit", speed.BANDIT)):
        c = dataclasses.asdict(maml.Config(**ours))
        t = ref.CONFIGS[kind]
        assert (t["meta_batch_size"], t["batch_size"], t["horizon"], t["num_steps"]) == (
            c["meta_batch_size"], c["inner_episodes"], c["horizon"], c["num_inner_steps"])
        assert (t["fast_lr"], tuple(t["hidden_sizes"]), t["nonlinearity"]) == (
            c["inner_lr"], tuple(c["hidden_sizes"]), c["activation"])
        assert (t["gamma"], t["gae_lambda"], t["max_kl"], t["cg_iters"], t["cg_damping"],
                t["ls_max_steps"], t["ls_backtrack_ratio"]) == (
            c["gamma"], c["gae_lambda"], c["max_kl"], c["cg_iters"], c["cg_damping"],
            c["line_search_steps"], c["line_search_backtrack"])
        assert c["normalize_advantages"] and c["inner_estimator"] == "vpg"
        assert c["init_log_std"] == 0.0  # pytorch-maml-rl's init_std=1
        assert not c["first_order"] and not c["learn_inner_lr"]
    assert ref.CONFIGS["bandit"]["arms"] == 10


def test_all_episodes_full_length(setup):
    # the comparisons below are exact only with equal episode lengths (see
    # test_unequal_episode_lengths_weighting_differs)
    for traj, _ in setup["trajs"]:
        assert bool(jnp.all(traj.valid))


def test_advantages_match(setup):
    """Linear feature baseline + GAE + normalisation, from the same trajectories.

    The baseline's normal equations are ill-conditioned (the columns t, t^2,
    t^3 over 100 steps), so float32 solves differ at the 1e-4 level: on the
    navigation case, JAX is about 1e-4 and the torch port about 5e-4 from a
    float64 solve of the same equations. Both are checked against float64.
    """
    gamma, lam = setup["config"].gamma, setup["config"].gae_lambda
    for (traj, weights), ported in zip(setup["trajs"], setup["ported_advantages"]):
        ours = tm_np(weights)
        episodes = to_episodes(traj)
        np.testing.assert_allclose(ref.compute_advantages(episodes, gamma, lam).numpy(), ported)
        torch.set_default_dtype(torch.float64)
        try:
            for name in ("observations", "rewards", "mask", "lengths"):
                setattr(episodes, name, getattr(episodes, name).double())
            exact = ref.compute_advantages(episodes, gamma, lam).numpy()
        finally:
            torch.set_default_dtype(torch.float32)
        np.testing.assert_allclose(ours, exact, atol=5e-4)
        np.testing.assert_allclose(ported, exact, atol=2e-3)
        np.testing.assert_allclose(ported, ours, atol=2e-3)


def test_adapted_params_match(setup):
    s = setup
    for m in range(s["num_tasks"]):
        adapted = s["learner_t"].adapt(s["train"].task(m))  # second order (create_graph)
        assert_close(adapted, jax.tree.map(lambda x: x[m], s["jax"]["adapted"]), s["discrete"])


def test_meta_loss_and_second_order_gradient_match(setup):
    s, out = setup, setup["jax"]
    valid, adv = s["trajs"][-1]
    # the surrogate rebuilt here is the library's: at the old parameters it is
    # -mean(A), and its gradient is learner.meta_loss's (checked just below)
    np.testing.assert_allclose(float(out["surrogate_at_old"]),
                               -float(masked_mean(adv, valid.valid)), atol=1e-6)
    params = list(s["learner_t"].params.values())
    logp_loss = torch_logp_loss(s)
    np.testing.assert_allclose(logp_loss.item(), float(out["meta_loss"]), rtol=RTOL, atol=1e-6)
    surrogate = torch_loss_kl(s, s["learner_t"].params)[0]
    second_order = flat_grad(logp_loss, params)
    for grads in (second_order, flat_grad(surrogate, params)):
        assert_close(unflat(s, grads), out["meta_grad"], s["discrete"], rtol=1e-3, atol=1e-5)
    if s["discrete"]:
        # the bandit's observation is a constant 0 and biases start at 0, so every
        # ReLU unit sits at 0 (zero derivative): the policy is softmax(last bias),
        # whose log-prob Hessian does not depend on the action, and the inner
        # loss's Hessian is mean(advantage) x that = 0 (normalised advantages).
        # The second-order term vanishes here, in both implementations.
        return
    # and it is second order: the first-order gradient is measurably different
    first_order = flat_grad(torch_logp_loss(s, first_order=True), params)
    assert torch.norm(second_order - first_order) > 1e-3 * torch.norm(second_order)


def test_surrogate_and_kl_at_other_parameters_match(setup):
    s, out = setup, setup["jax"]
    _, _, old_pis = torch_loss_kl(s, s["learner_t"].params)
    moved = OrderedDict((k, (p + s["delta"][k]).detach().requires_grad_(True))
                        for k, p in s["learner_t"].params.items())
    loss_t, kl_t, _ = torch_loss_kl(s, moved, old_pis)
    assert float(out["kl_new_old_moved"]) > 1e-5  # the move changed the adapted policy
    np.testing.assert_allclose(loss_t.item(), float(out["surrogate_moved"]), rtol=1e-3,
                               atol=1e-5)
    # pytorch-maml-rl's KL is KL(new || old); maml.py constrains KL(old || new):
    # equal to second order in the step, not equal
    np.testing.assert_allclose(kl_t.item(), float(out["kl_new_old_moved"]), rtol=1e-3,
                               atol=1e-7)
    np.testing.assert_allclose(kl_t.item(), float(out["kl_old_new_moved"]), rtol=0.2)


def test_kl_hessian_vector_product_and_trpo_update_match(setup):
    s, out, lt = setup, setup["jax"], setup["learner_t"]
    _, old_kl, _ = torch_loss_kl(s, lt.params)
    hvp = lt.hessian_vector_product(old_kl, damping=0.0)
    product = hvp(ref._flat(list(s["vector"].values())))
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(out["fvp"]))
    assert_close(unflat(s, product), out["fvp"], s["discrete"], rtol=1e-3, atol=1e-4 * scale)

    if not s["with_trpo"]:
        return
    # the whole TRPO update: CG direction, step scale, line search
    info = out["trpo_info"]
    old = ref._flat([p.detach().clone() for p in lt.params.values()])
    logs = lt.step(s["train"], s["valid"])
    try:
        assert float(info["step_fraction"]) > 0  # a step was taken
        assert logs["step_fraction"] == pytest.approx(float(info["step_fraction"]), rel=1e-5)
        np.testing.assert_allclose(logs["loss_before"], float(info["loss_before"]), atol=1e-6)
        # CG with the default damping 1e-5 on this nearly singular Fisher amplifies
        # float32 rounding: each float32 step is ~20% away from a float64 run of the
        # port, and how far the two float32 implementations land from each other
        # depends on the CPU (1% on one, 6% on another). With damping 1e-2 the system
        # is well conditioned, so the comparison tests the mathematics (CG direction,
        # step scale, line search), not the rounding; the step and the loss after it
        # (about g . step) must then agree closely
        step_t = (ref._flat(list(lt.params.values())).detach() - old).numpy()
        step_j = (ref._flat(list(flax_to_torch(out["trpo_params"], s["discrete"]).values()))
                  - old).numpy()
        rel = np.linalg.norm(step_t - step_j) / np.linalg.norm(step_j)
        cosine = step_t @ step_j / (np.linalg.norm(step_t) * np.linalg.norm(step_j))
        print(f"TRPO step: relative difference {rel:.2e}, cosine {cosine:.6f}, loss after "
              f"{logs['loss_after']:.6f} (torch) {float(info['loss_after']):.6f} (JAX)")
        assert rel < 3e-2 and cosine > 0.999
        np.testing.assert_allclose(logs["loss_after"], float(info["loss_after"]), rtol=3e-2,
                                   atol=1e-5)
    finally:  # leave the shared learner at the old parameters
        lt._set_params(old)


def test_unequal_episode_lengths_weighting_differs():
    """With early-terminated episodes the two implementations weight differently.

    maml.py averages over valid *steps* (``masked_mean``); pytorch-maml-rl
    averages each episode over its steps and then over episodes
    (``weighted_mean(lengths)``), in the advantage normalisation, the inner
    loss, the surrogate and the KL. Same raw GAE advantages either way.
    """
    rng = np.random.default_rng(0)
    lengths = np.array([20, 20, 5, 12, 20, 3])
    steps = np.arange(20)[None, :]
    valid = steps < lengths[:, None]
    terminated = (steps == lengths[:, None] - 1) & (lengths[:, None] < 20)
    obs = np.where(valid[..., None], rng.uniform(-0.5, 0.5, (6, 20, 2)), 0).astype(np.float32)
    reward = np.where(valid, -rng.uniform(0, 1, (6, 20)), 0).astype(np.float32)
    gamma, lam = 0.99, 1.0

    def jax_advantages(normalize):  # maml.py's own ``advantages`` on these episodes
        config = maml.Config(gamma=gamma, gae_lambda=lam, horizon=20, inner_episodes=6,
                             normalize_advantages=normalize, train_pretrained=False)
        learner = maml.make(config, metarl_jax.make("navigation2d"))
        zeros = jnp.zeros(valid.shape, jnp.float32)
        traj = Trajectory(obs=jnp.asarray(obs), action=jnp.zeros(obs.shape, jnp.float32),
                          reward=jnp.asarray(reward), terminated=jnp.asarray(terminated),
                          truncated=jnp.asarray(~terminated & (steps == 19) & valid),
                          valid=jnp.asarray(valid), log_prob=zeros,
                          next_obs=jnp.zeros_like(jnp.asarray(obs)))
        return np.asarray(learner.advantages(traj))

    raw, adv_jax = jax_advantages(False), jax_advantages(True)
    episodes = ref.Episodes(torch.tensor(obs).permute(1, 0, 2)[:, None],
                            torch.zeros(20, 1, 6, 2), torch.tensor(reward).T[:, None],
                            torch.tensor(valid, dtype=torch.float32).T[:, None])
    adv_t = ref.compute_advantages(episodes, gamma, lam)[:, 0].numpy().T
    step_mean = raw[valid].mean()
    step_std = np.sqrt(np.mean((raw[valid] - step_mean) ** 2))
    np.testing.assert_allclose(adv_jax, np.where(valid, (raw - step_mean) / (step_std + 1e-8), 0),
                               rtol=1e-4, atol=1e-5)
    episode_mean = np.mean([raw[i, :n].mean() for i, n in enumerate(lengths)])
    centred = np.where(valid, raw - episode_mean, 0)
    episode_std = np.sqrt(np.mean([np.mean(centred[i, :n] ** 2) for i, n in enumerate(lengths)]))
    np.testing.assert_allclose(adv_t, centred / (episode_std + 1e-8), rtol=1e-3, atol=1e-4)
    assert np.abs(adv_t - adv_jax).max() > 1e-2
