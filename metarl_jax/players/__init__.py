"""Reference players of RL² (Duan et al. 2016, arXiv:1611.02779), up to the Bayes-optimal limit.

``bandits``: Bernoulli bandits (Table 1): random, greedy, epsilon-greedy,
UCB1, Thompson sampling, optimistic Thompson sampling, Gittins index, the
exact finite-horizon Bayes-optimal policy and the oracle.
``mdp``: random tabular MDPs (Table 2): random, greedy, myopic,
epsilon-greedy, BEB, PSRL, optimistic PSRL and the known-MDP optimum.

Every player is a trial policy (``policy``: :class:`~metarl_jax.players.policy.TrialPolicy`)
played on the real env of its task family by the shared rollout engine
(:func:`metarl_jax.core.rollout.run_trial`): its statistics are its carried
policy state. Each module has one function per player (one instance, one
trial, jittable; ``player.policy(...)`` gives the policy itself), instances
drawn from the families (``sample_instances``), and ``evaluate(name,
instances, key, ...)``, which vmaps a named player over a batch of instances
(env params of the family) in one compiled call.
"""

from metarl_jax.players import bandits, mdp
from metarl_jax.players.policy import TrialPolicy

evaluate_bandit = bandits.evaluate
evaluate_mdp = mdp.evaluate

__all__ = ["TrialPolicy", "bandits", "evaluate_bandit", "evaluate_mdp", "mdp"]
