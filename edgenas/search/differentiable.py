"""Differentiable search on a trained supernet, with latency budgets as hard constraints.

    result = search(space, accuracy, [Constraint(latency_metric(table), 12.0)], "differentiable",
                    supernet=supernet, dataset=dataset, steps=200, freeze_weights=True)

Architecture logits alpha for every gene: the resolution, the depth of each unit, and the kernel
size and expand ratio of each block position. Each step samples one path through the elastic
supernet with the straight-through Gumbel-softmax (GDAS, ProxylessNAS): the forward pass runs only
the sampled kernel and expand ratio of each block, multiplied by their hard gates (value 1, gradient
that of the soft sample); every depth of a unit is a gated sum of the nested outputs after d blocks
(only the sampled one has value 1, the others give the depth logits their gradient); the
resolution's gate scales the logits. Temperature goes from `tau_start` to `tau_end` geometrically.

Bilevel, as DARTS: a weight step on a training batch (SGD; skipped with `freeze_weights`), then an
alpha step on a validation batch (Adam) minimising

    cross-entropy + sum_c lambda_c * (E[c] / limit_c - 1)

where E[c] is the exact expectation, under the independent categorical distributions softmax(alpha),
of every additive constraint c (a latency table, MACs, params: see
`edgenas.search.constraints.additive_terms`). The Lagrange multipliers rise by dual ascent while
the discrete architecture (the argmax of alpha) is over a budget by the table, and fall while the
expectation is under it, so the budget binds the returned architecture, not only the expectation.

The returned subnet is the argmax of alpha. When it is over any budget (or a budget the search
cannot differentiate, such as peak memory) it is repaired by the shared machinery
(`Constraints.repair`, then the known feasible genome), and the result says so. The supernet passed
in is not modified: weight steps train a copy, which is dropped (export from the checkpoint as
usual). Deterministic per seed on a given device and thread count.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.search.constraints import additive_terms
from edgenas.search.problem import Problem
from edgenas.space import decode, genome_of

log = logging.getLogger(__name__)


def differentiable(
    problem: Problem,
    rng: np.random.Generator,
    supernet: nn.Module | None = None,
    dataset: Any = None,
    steps: int = 200,
    batch_size: int = 64,
    arch_lr: float = 0.05,
    weight_lr: float = 0.005,
    freeze_weights: bool = False,
    tau_start: float = 5.0,
    tau_end: float = 0.5,
    multiplier_lr: float = 2.0,
    device: str | torch.device = "cpu",
    progress: Any = None,
) -> None:
    """Run the search; the returned (possibly repaired) subnet lands in `problem.evaluate`'s archive
    and its record in `problem.extra["differentiable"]`."""
    if supernet is None or dataset is None:
        raise ConfigError("the differentiable strategy searches a trained supernet on data: it needs both "
                          "supernet= and dataset= (edgenas search --supernet CKPT, with the checkpoint's data "
                          "or --data / --data-path)")
    if steps < 1 or batch_size < 2 or arch_lr <= 0 or weight_lr <= 0 or not 0 < tau_end <= tau_start \
            or multiplier_lr <= 0:
        raise ConfigError("differentiable search needs steps >= 1, batch_size >= 2, positive arch_lr, weight_lr "
                          "and multiplier_lr, and 0 < tau_end <= tau_start")
    started = time.perf_counter()
    space, cons = problem.space, problem.constraints
    device = torch.device(device)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    relaxed = Relaxation(space, cons, device)
    net = copy.deepcopy(supernet).to(device)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    if freeze_weights:
        net.requires_grad_(False)
    arch_opt = torch.optim.Adam(relaxed.parameters(), lr=arch_lr, betas=(0.5, 0.999))
    weight_opt = None if freeze_weights else torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=weight_lr, momentum=0.9)
    train_data = _cycle(dataset, "train", batch_size, gen)
    val_data = _cycle(dataset, "val", batch_size, gen)
    multipliers = torch.zeros(len(cons.items), dtype=torch.float64)
    limits = torch.tensor(cons.limits, dtype=torch.float64)
    history = []
    for step in range(steps):
        tau = tau_start * (tau_end / tau_start) ** (step / max(1, steps - 1))
        if weight_opt is not None:
            x, y = next(train_data)
            loss = F.cross_entropy(relaxed.forward(net, x.to(device), tau, gen), y.to(device))
            weight_opt.zero_grad(set_to_none=True)
            loss.backward()
            weight_opt.step()
        x, y = next(val_data)
        ce = F.cross_entropy(relaxed.forward(net, x.to(device), tau, gen), y.to(device))
        expected = relaxed.expected_costs()
        penalty = sum((multipliers[i] * (expected[i] / limits[i] - 1)).to(ce.dtype)
                      for i in relaxed.additive if expected[i] is not None)
        arch_opt.zero_grad(set_to_none=True)
        if weight_opt is not None:
            weight_opt.zero_grad(set_to_none=True)
        (ce + penalty).backward()
        arch_opt.step()
        # Dual ascent: the discrete argmax's excess by the table while it is over, else the expectation's.
        argmax = relaxed.argmax()[None]
        values = torch.as_tensor(cons.values(argmax)[0], dtype=torch.float64)
        with torch.no_grad():
            for i in relaxed.additive:
                over = float(values[i] / limits[i] - 1)
                excess = over if over > 0 else float(expected[i].detach() / limits[i] - 1)
                multipliers[i] = max(0.0, float(multipliers[i]) + multiplier_lr * excess)
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            history.append({"step": step, "tau": round(tau, 4), "val_loss": round(float(ce.detach()), 4),
                            "argmax": str(decode(space, argmax)[0]),
                            "expected": {cons.items[i].name: round(float(expected[i].detach()), 4) for i in relaxed.additive},
                            "multipliers": {cons.items[i].name: round(float(multipliers[i]), 4) for i in relaxed.additive}})
        if progress is not None:
            progress(1)
    chosen = relaxed.argmax()[None]
    before = cons.values(chosen)[0]
    repaired = fallback = False
    if not cons.feasible(chosen)[0]:
        repaired = True
        chosen, still = cons.repair(chosen, rng)
        if still[0]:
            fallback = True
            chosen = cons.seed[None].copy()
    chosen = genome_of(space).canonical(chosen)
    problem.evaluate(chosen)
    argmax_arch = str(decode(space, relaxed.argmax()[None])[0])
    over = {c.name: float(v) for c, v in zip(cons.items, before) if v > c.limit}
    record = {
        "argmax": argmax_arch, "returned": str(decode(space, chosen)[0]), "repaired": repaired,
        "argmax_over_budget": over, "steps": steps, "batch_size": batch_size, "arch_lr": arch_lr,
        "weight_lr": weight_lr, "freeze_weights": freeze_weights, "tau": [tau_start, tau_end],
        "multiplier_lr": multiplier_lr, "device": str(device),
        "differentiated": [cons.items[i].name for i in relaxed.additive],
        "multipliers": {cons.items[i].name: float(multipliers[i]) for i in relaxed.additive},
        "search_seconds": round(time.perf_counter() - started, 3), "history": history,
    }
    problem.extra["differentiable"] = record
    if repaired:
        what = ", ".join(f"{name} {v:.4g} > {cons.limits[[c.name for c in cons.items].index(name)]:g}"
                         for name, v in over.items())
        problem.extra["note"] = (f"the argmax subnet {argmax_arch} was over budget ({what}); "
                                 + ("no repair fit, so the known feasible subnet is returned" if fallback
                                    else "it was repaired (choices shrunk until every budget holds)"))
        log.warning("differentiable: %s", problem.extra["note"])


def _cycle(dataset, split: str, batch_size: int, gen: torch.Generator):
    """Endless shuffled batches of `split` (reshuffled each pass, drawn from `gen`)."""
    size = min(batch_size, len(dataset.split(split)))
    if size < 2:
        raise ConfigError(f"the differentiable search needs at least 2 images in the {split} split, it has "
                          f"{len(dataset.split(split))}")
    while True:
        yield from dataset.batches(split, size, shuffle=True, generator=gen, drop_last=True)


class Relaxation(nn.Module):
    """The architecture logits and what is computed from them: sampled gated forward passes,
    expected costs, and the argmax genome."""

    def __init__(self, space, cons, device: torch.device):
        super().__init__()
        self.space, self.cons = space, cons
        self.allowed = cons.allowed
        U, J = len(space.units), space.max_depth
        K, E, D = len(space.kernel_sizes), len(space.expand_ratios), len(space.depths)
        # Near-uniform logits, ties broken towards the larger choices: the search starts at the
        # largest subnet and the multipliers bring it within the budgets.
        def logits(*shape):
            return nn.Parameter(1e-3 * torch.arange(shape[-1], dtype=torch.float64).expand(*shape).clone())

        self.resolution = logits(len(self.allowed))
        self.depth = logits(U, D)
        self.kernel = logits(U, J, K)
        self.expand = logits(U, J, E)
        self.device = device
        self.terms: list[tuple[torch.Tensor, ...] | None] = []
        for c in cons.items:
            found = additive_terms(space, c.metric, cons.resolutions)
            if found is None:
                log.info("differentiable: %s is not additive; it is enforced on the returned subnet only", c.name)
                self.terms.append(None)
            else:
                _, base, A, delta = found
                self.terms.append(tuple(torch.as_tensor(t, dtype=torch.float64) for t in (base, A, delta)))
        self.additive = [i for i, t in enumerate(self.terms) if t is not None]
        self._depths = torch.as_tensor(space.depths)

    # ---- sampling --------------------------------------------------------------------------
    @staticmethod
    def _gumbel(logits: torch.Tensor, tau: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(hard straight-through one-hot gates, chosen indices) over the last axis."""
        u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        soft = torch.softmax((logits - torch.log(-torch.log(u))) / tau, -1)
        index = soft.argmax(-1)
        hard = F.one_hot(index, logits.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft, index

    def forward(self, net, x: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
        """Logits of one sampled path through `net` (an elastic `Supernet`) on images `x`."""
        from edgenas.train.bn import resize

        space = self.space
        g_res, r = self._gumbel(self.resolution, tau, gen)
        g_depth, _ = self._gumbel(self.depth, tau, gen)
        g_kernel, k = self._gumbel(self.kernel, tau, gen)
        g_expand, e = self._gumbel(self.expand, tau, gen)
        dtype = x.dtype
        r = int(r)
        h = net.first_block(net.stem(resize(x, space.resolutions[self.allowed[r]])))
        for u, blocks in enumerate(net.units):
            outs = []
            for j, block in enumerate(blocks):
                kk, ee = int(k[u, j]), int(e[u, j])
                block.set_active(space.kernel_sizes[kk], space.expand_ratios[ee])
                gate = (g_kernel[u, j, kk] * g_expand[u, j, ee]).to(dtype)
                h = block(h, gate=gate)
                if j + 1 in space.depths:
                    outs.append(h)
            h = sum(g_depth[u, d].to(dtype) * out for d, out in enumerate(outs))
        logits = net.classifier(net.feature_mix(net.pool(net.final_expand(h))))
        return logits * g_res[r].to(dtype)

    # ---- costs and the discrete architecture ----------------------------------------------------
    def expected_costs(self) -> list[torch.Tensor | None]:
        """E[c] under softmax(alpha) for each additive constraint (None for the others)."""
        p_r = torch.softmax(self.resolution, -1)
        p_d = torch.softmax(self.depth, -1)
        p_ke = (torch.softmax(self.kernel, -1)[..., :, None] * torch.softmax(self.expand, -1)[..., None, :]).flatten(-2)
        out: list[torch.Tensor | None] = []
        for terms in self.terms:
            if terms is None:
                out.append(None)
                continue
            base, A, delta = terms
            block = (delta * p_ke[None]).sum(-1)  # (R, U, J): each block's expected term
            prefix = block.cumsum(-1)[:, :, self._depths - 1]  # (R, U, D): the first d blocks
            unit = ((A + prefix) * p_d[None]).sum(-1)  # (R, U)
            out.append((p_r * (base + unit.sum(-1))).sum())
        return out

    def argmax(self) -> np.ndarray:
        """The genome of the most likely choice of every gene."""
        g = genome_of(self.space)
        genome = np.zeros(g.length, np.int64)
        with torch.no_grad():
            genome[0] = self.allowed[int(self.resolution.argmax())]
            genome[1:1 + len(self.space.units)] = self.depth.argmax(-1).numpy()
            genome[g.kernel] = self.kernel.argmax(-1).flatten().numpy()
            genome[g.expand] = self.expand.argmax(-1).flatten().numpy()
        return g.canonical(genome[None])[0]

    def set_onehot(self, genome: np.ndarray, scale: float = 60.0) -> None:
        """Logits concentrated on `genome` (tests: the expected cost is then the table's value)."""
        g = genome_of(self.space)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.resolution[int(np.searchsorted(self.allowed, genome[0]))] = scale
            for u in range(len(self.space.units)):
                self.depth[u, genome[1 + u]] = scale
            J = self.space.max_depth
            for s, (kk, ee) in enumerate(zip(genome[g.kernel], genome[g.expand])):
                self.kernel[s // J, s % J, kk] = scale
                self.expand[s // J, s % J, ee] = scale

