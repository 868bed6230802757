"""Reinforcement-learning search: an autoregressive LSTM controller trained by REINFORCE
(NASNet, MnasNet), vectorised over a batch of sampled architectures.

The controller picks the genome's genes one after another: the resolution, then for each unit
its depth and the kernel and expand ratio of each of its blocks. Each step feeds the previous
choice (an embedding) and the step's position to an LSTM cell whose output, through a per-gene
linear head, gives the logits of the next gene's choices. A block outside its unit's chosen depth
is still sampled (the genome keeps its genes) but its log-probability and entropy are left out:
they have no effect on the architecture, so they earn no credit.

Training: for each batch of sampled architectures, loss = -mean(advantage * log pi(arch)) -
entropy * mean(entropy per gene), one Adam step. The advantage is the reward minus a moving
average of past batch rewards (the baseline), divided by a moving average of their spread, so
that the learning rate does not depend on the objective's units.

The defaults (lr 0.005, entropy 2.0) were chosen on seeds 10-12 of benchmarks/search's setting (a),
apart from the benchmark's seeds 0-4. log pi(arch) sums some 40 active genes while the entropy
term is a mean per gene, so a weight of about 2 is what keeps them comparable. With the earlier
lr 0.05 and entropy 0.01 the normalised advantage grew as the batch rewards drew together, the
policy collapsed after 400-1,000 architectures (then `patience` stops it) and it stayed 0.25-0.5
pp below evolution's best at 5,000 evaluations; with the defaults it keeps finding new
architectures for 3,500-4,300 of them and ends level with evolution there.

Two rewards (`reward=`):
- "hard" (the default): a sample over any budget is repaired (`Constraints.enforce`: shrunk one
  choice at a time, as the other strategies do), and the repaired architecture is both what is
  evaluated and the action whose log-probability is reinforced; the reward is the objective.
  Every evaluation is then spent on a feasible architecture, which is what a search under a
  hard budget returns, and the controller learns to propose feasible ones.
- "soft": MnasNet's reward, objective x prod over budgets of (value / limit) ^ w, with
  w = `reward_exponent` (default -0.07) on every budget (latency, MACs, params, memory), and no
  repair. Samples over budget are evaluated too (they cost evaluations, and the result never
  returns them); the reward trades accuracy against cost around the budget, so the controller
  hovers near it from both sides. It suits a Pareto search more than a hard budget, which is
  why it is not the default. (For a negative objective value, the factor is inverted, so a
  larger cost still lowers the reward.)

Deterministic for a seed: parameters are initialised and choices drawn from torch generators
seeded from `rng`, on the CPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgenas.errors import ConfigError
from edgenas.search.problem import Problem
from edgenas.space import genome_of

REWARDS = ("hard", "soft")


class Controller(nn.Module):
    """An LSTM policy over the genes in `order` (indices into the genome), `choices[g]` each."""

    def __init__(self, choices: np.ndarray, order: np.ndarray, hidden: int):
        super().__init__()
        self.order = torch.as_tensor(order, dtype=torch.long)
        n = len(order)
        per_step = torch.as_tensor(choices[order], dtype=torch.long)
        self.cmax = int(per_step.max())
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), per_step.cumsum(0)[:-1]]) + 1  # 0: start token
        self.token = nn.Embedding(int(per_step.sum()) + 1, hidden)
        self.position = nn.Embedding(n, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.head_w = nn.Parameter(torch.randn(n, hidden, self.cmax) * (1.0 / math.sqrt(hidden)) * 0.1)
        self.head_b = nn.Parameter(torch.zeros(n, self.cmax))
        self.register_buffer("valid", torch.arange(self.cmax)[None, :] < per_step[:, None])  # (steps, cmax)

    def run(self, batch: int, forced: torch.Tensor | None = None, generator: torch.Generator | None = None,
            allowed_first: torch.Tensor | None = None):
        """Choices (batch, steps), their log-probabilities and entropies (batch, steps): sampled
        with `generator`, or the given `forced` choices (teacher forcing)."""
        hidden = self.position.embedding_dim
        h = c = torch.zeros(batch, hidden)
        prev = torch.zeros(batch, dtype=torch.long)
        picks, logps, ents = [], [], []
        for t in range(len(self.order)):
            h, c = self.cell(self.token(prev) + self.position.weight[t], (h, c))
            logits = h @ self.head_w[t] + self.head_b[t]
            mask = self.valid[t]
            if t == 0 and allowed_first is not None:
                mask = mask & allowed_first
            logits = logits.masked_fill(~mask, -1e9)
            logp = torch.log_softmax(logits, -1)
            if forced is None:
                pick = torch.multinomial(logp.detach().exp(), 1, generator=generator)[:, 0]
            else:
                pick = forced[:, t]
            picks.append(pick)
            logps.append(logp.gather(1, pick[:, None])[:, 0])
            ents.append(-(logp.exp() * logp).masked_fill(~mask, 0.0).sum(-1))
            prev = pick + self.offsets[t]
        return torch.stack(picks, 1), torch.stack(logps, 1), torch.stack(ents, 1)


def gene_order(space) -> np.ndarray:
    """Resolution, then per unit: its depth, then (kernel, expand) of each of its blocks."""
    g = genome_of(space)
    J = space.max_depth
    order = [g.res]
    for u in range(g.n_units):
        order.append(g.depth.start + u)
        for j in range(J):
            order += [g.kernel.start + u * J + j, g.expand.start + u * J + j]
    return np.asarray(order)


def rl(
    problem: Problem,
    rng: np.random.Generator,
    evaluations: int = 5000,
    batch: int = 50,
    reward: str = "hard",
    reward_exponent: float = -0.07,
    lr: float = 0.005,
    entropy: float = 2.0,
    baseline_decay: float = 0.9,
    hidden: int = 64,
    patience: int = 20,
) -> None:
    """Train the controller until `evaluations` distinct architectures have been evaluated (or the
    search's max_evals), or `patience` batches in a row bring no new one (the policy has settled).
    Every evaluated architecture lands in `problem.evaluate`'s archive."""
    if reward not in REWARDS:
        raise ConfigError(f"unknown rl reward {reward!r}; expected one of {', '.join(REWARDS)}")
    if not (isinstance(reward_exponent, (int, float)) and math.isfinite(reward_exponent)):
        raise ConfigError(f"the rl reward exponent must be a finite number, got {reward_exponent!r}")
    if evaluations < 1 or batch < 1 or hidden < 1 or patience < 1 or not lr > 0 or not entropy >= 0 \
            or not 0 <= baseline_decay < 1:
        raise ConfigError("rl needs evaluations, batch, hidden and patience of at least 1, lr > 0, entropy >= 0 "
                          "and baseline_decay in [0, 1)")
    space, cons, evaluate = problem.space, problem.constraints, problem.evaluate
    g = genome_of(space)
    order = gene_order(space)
    J = space.max_depth
    depth_values = torch.as_tensor(space.depths)
    # For each step: the unit whose depth gates it and the block's position (-1: not a block gene).
    slot_of = np.full(len(order), -1)
    unit_of = np.zeros(len(order), np.int64)
    for t, gene in enumerate(order):
        if gene >= g.kernel.start:
            s = (gene - g.kernel.start) % g.n_slots
            slot_of[t], unit_of[t] = s % J, s // J
    depth_step = torch.as_tensor([1 + u * (1 + 2 * J) for u in range(g.n_units)])  # where unit u's depth is chosen
    is_block = torch.as_tensor(slot_of >= 0)
    block_pos = torch.as_tensor(np.maximum(slot_of, 0))
    block_unit = torch.as_tensor(unit_of)
    allowed = torch.zeros(int(g.choices[0]), dtype=torch.bool)
    allowed[torch.as_tensor(cons.allowed)] = True

    seeds = rng.integers(2**62, size=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeds[0]))
        policy = Controller(g.choices, order, hidden)
    generator = torch.Generator().manual_seed(int(seeds[1]))
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    target = evaluate.count + evaluations
    baseline = spread = None
    stale = 0
    if reward == "soft" and cons.items:
        evaluate(cons.seed[None])  # one feasible architecture, so the result always has a best
    while evaluate.count < target and not evaluate.exhausted and stale < patience:
        n = min(batch, target - evaluate.count)
        with torch.no_grad():
            picks, _, _ = policy.run(n, generator=generator, allowed_first=allowed)
        genomes = np.zeros((n, g.length), np.int64)
        genomes[:, order] = picks.numpy()
        if reward == "hard":
            genomes = cons.enforce(genomes, rng)
        before = evaluate.count
        fitness = evaluate(genomes)
        stale = 0 if evaluate.count > before else stale + 1
        if reward == "soft" and cons.items:
            ratio = np.maximum(cons.values(genomes), 1e-12) / np.maximum(cons.limits, 1e-12)
            factor = np.prod(ratio ** reward_exponent, axis=1)
            fitness = np.where(fitness >= 0, fitness * factor, fitness / factor)
        r = torch.as_tensor(fitness, dtype=torch.float32)
        if baseline is None:
            baseline, spread = float(r.mean()), float(r.std()) if n > 1 else 1.0
        advantage = (r - baseline) / max(spread, 1e-8)
        baseline = baseline_decay * baseline + (1 - baseline_decay) * float(r.mean())
        if n > 1:
            spread = baseline_decay * spread + (1 - baseline_decay) * float(r.std())
        # Teacher-forced pass on the architectures evaluated (repaired ones included).
        forced = torch.as_tensor(genomes[:, order])
        _, logp, ent = policy.run(n, forced=forced)
        depth = depth_values[forced[:, depth_step]]  # (n, units)
        active = (~is_block)[None, :] | (block_pos[None, :] < depth[:, block_unit])
        loss = -(advantage * (logp * active).sum(1)).mean() - entropy * (ent * active).sum(1).mean() / active.sum(1).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
