"""Reference players of RL² (Duan et al. 2016, arXiv:1611.02779), up to the Bayes-optimal limit.

``bandits``: Bernoulli bandits (Table 1): random, greedy, epsilon-greedy,
UCB1, Thompson sampling, optimistic Thompson sampling, Gittins index, the
exact finite-horizon Bayes-optimal policy and the oracle.
``mdp``: random tabular MDPs (Table 2): random, greedy, epsilon-greedy, BEB,
PSRL, optimistic PSRL and the known-MDP optimum.

Each module has one function per player (one instance, one trial, jittable)
and ``evaluate(name, instances, key, ...)``, which vmaps a named player over
a batch of instances in one compiled call.
"""

from metarl_jax.players import bandits, mdp

evaluate_bandit = bandits.evaluate
evaluate_mdp = mdp.evaluate

__all__ = ["bandits", "evaluate_bandit", "evaluate_mdp", "mdp"]
