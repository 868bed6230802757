"""Zero-cost proxies: training-free scores of a network from a few batches.

    batches = proxy_batches(dataset, batches=2, batch_size=32, seed=0)     # seeded training images
    score = compute_proxy("naswot", net, batches)                          # any nn.Module
    metric = proxy_metric(supernet, "synflow", batches)                    # a batch Metric over archs

Each proxy maps (network, batches of (images, labels)) to one number, larger meaning "expected to
be more accurate":

  synflow    sum over conv/linear weights of theta * dR/dtheta, where R is the sum of the outputs of
             the network with every parameter replaced by its absolute value, BatchNorm removed, on an
             all-ones input, in float64 (Tanaka et al. 2020; Abdelfattah et al. 2021). Data-free.
  grad_norm  sum over conv/linear weights of the L2 norm of d(cross-entropy)/dtheta on the batches.
  snip       sum over conv/linear weights of |theta * d(cross-entropy)/dtheta| (Lee et al. 2019).
  naswot     log|det K| with K[i, j] = A - hamming(c_i, c_j), c_i the binary pattern (input > 0) of
             every ReLU / hard-swish unit for image i of the first batch, A the number of units
             (Mellor et al. 2021).
  zico       sum over conv/linear weights W of log( sum over W's entries of mean|g| / std(g) ), g the
             entry's gradient over the batches (at least two; one batch is split in halves), entries
             whose gradient does not vary left out (Li et al. 2023).

Networks are scored in training mode (BatchNorm on batch statistics, as at initialisation) with
dropout off, on a copy: the network passed in is not changed. On CPU the result depends only on the
network and the batches, so a seeded sample of batches gives the same score every time.

On a supernet, `proxy_metric` materializes each architecture (its inherited weights, or those of a
freshly initialised supernet for scores "at initialisation") and scores it on the batches resized
to the architecture's resolution.

As inputs of the accuracy predictor (feature names "proxy:NAME", `edgenas predictor build
--features onehot costs proxy:synflow`), `ProxyFeatures` computes them on the batches a
`ProxySetup` names (recorded in the predictor file, so that search scores new subnets on the same
images), memoized per architecture, each as a signed log: sign(s) * log(1 + |s|), because
synflow, grad_norm and snip span orders of magnitude between subnets. A score that is not finite
(naswot of a singular kernel) becomes 0, below the value of any subnet whose kernel is not singular.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.search.objectives import ArchBatch, Metric
from edgenas.validate import spec

Batch = tuple[torch.Tensor, torch.Tensor]
ProxyFn = Callable[[nn.Module, Sequence[Batch]], float]

_WEIGHTED = (nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.Hardswish)


def _weights(net: nn.Module) -> list[torch.Tensor]:
    """The conv and linear weights: the layers every proxy sums over."""
    return [m.weight for m in net.modules() if isinstance(m, _WEIGHTED)]


def _prepare(net: nn.Module) -> nn.Module:
    """A copy in training mode with dropout off and fresh gradients."""
    net = copy.deepcopy(net)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    return net


def _loss_gradients(net: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """d(mean cross-entropy over the batches)/d(weights), one backward pass per batch."""
    weights = _weights(net)
    for x, y in batches:
        loss = F.cross_entropy(net(x), y) / len(batches)
        loss.backward()
    return [w.grad if w.grad is not None else torch.zeros_like(w) for w in weights]


def synflow(net: nn.Module, batches: Sequence[Batch]) -> float:
    net = _prepare(net)
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, nn.Identity())
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = batches[0][0]
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    return float(sum((w.detach() * w.grad).sum() for w in _weights(net) if w.grad is not None))


def grad_norm(net: nn.Module, batches: Sequence[Batch]) -> float:
    net = _prepare(net)
    return float(sum(g.norm() for g in _loss_gradients(net, batches)))


def snip(net: nn.Module, batches: Sequence[Batch]) -> float:
    net = _prepare(net)
    grads = _loss_gradients(net, batches)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(_weights(net), grads)))


def naswot(net: nn.Module, batches: Sequence[Batch]) -> float:
    net = _prepare(net)
    x = batches[0][0]
    codes: list[torch.Tensor] = []

    def record(module, inputs):
        codes.append((inputs[0] > 0).flatten(1).to(torch.float64))

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    if not codes:
        raise ConfigError("naswot needs a network with ReLU or hard-swish activations")
    c = torch.cat(codes, 1)
    # A - hamming(c_i, c_j) = (units where both are on) + (units where both are off)
    kernel = c @ c.t() + (1 - c) @ (1 - c).t()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


def zico(net: nn.Module, batches: Sequence[Batch]) -> float:
    if len(batches) < 2:  # the gradient's spread needs two samples of it at least
        x, y = batches[0]
        half = len(x) // 2
        if half < 1:
            raise ConfigError("zico needs at least two images")
        batches = [(x[:half], y[:half]), (x[half:], y[half:])]
    net = _prepare(net)
    weights = _weights(net)
    per_batch = []
    for x, y in batches:
        for w in weights:
            w.grad = None
        F.cross_entropy(net(x), y).backward()
        per_batch.append([(w.grad if w.grad is not None else torch.zeros_like(w)).detach().double().flatten()
                          for w in weights])
    score = 0.0
    for layer in zip(*per_batch):
        g = torch.stack(layer)
        std = g.std(0, unbiased=False)
        keep = std != 0
        total = float((g.abs().mean(0)[keep] / std[keep]).sum())
        if total > 0:
            score += math.log(total)
    return score


PROXIES: dict[str, ProxyFn] = {"synflow": synflow, "grad_norm": grad_norm, "snip": snip, "naswot": naswot,
                               "zico": zico}


def check_proxy(name: str) -> str:
    """`name` if it is a known proxy, else a ConfigError listing them."""
    if name not in PROXIES:
        raise ConfigError(f"unknown zero-cost proxy {name!r}; expected one of {', '.join(PROXIES)}")
    return name


def compute_proxy(name: str, net: nn.Module, batches: Sequence[Batch]) -> float:
    """The proxy `name` of `net` on `batches` [(images float [B, C, H, W], labels int64 [B]), ...]."""
    if not batches:
        raise ConfigError("a zero-cost proxy needs at least one batch of images")
    return PROXIES[check_proxy(name)](net, batches)


def proxy_batches(dataset, batches: int = 2, batch_size: int = 32, seed: int = 0, split: str = "train") -> list[Batch]:
    """`batches` seeded batches of `batch_size` images and labels from `split` of an ImageDataset."""
    part = dataset.split(split)
    n = min(batches * batch_size, len(part))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(part), generator=gen)[:n]
    if hasattr(part, "batch"):
        x, y = part.batch(idx)
    else:
        items = [part[int(i)] for i in idx]
        x, y = torch.stack([a for a, _ in items]), torch.as_tensor([b for _, b in items])
    size = max(1, n // batches)
    return [(x[i:i + size], y[i:i + size]) for i in range(0, size * batches, size) if len(x[i:i + size])]


def proxy_metric_name(name: str) -> str:
    """"proxy:synflow": the metric name of a proxy in results files and `edgenas eval --json`."""
    return f"proxy:{name}"


def arch_proxies(supernet, arch, names: Sequence[str], batches: Sequence[Batch]) -> dict[str, float]:
    """{proxy: score} of one architecture of `supernet`, on `batches` resized to its resolution."""
    from edgenas.train.bn import resize

    device = next(supernet.parameters()).device
    net = supernet.materialize(arch)
    sized = [(resize(x.to(device), arch.resolution), y.to(device)) for x, y in batches]
    return {n: compute_proxy(n, net, sized) for n in names}


def proxy_metric(supernet, name: str, batches: Sequence[Batch], on_result: Callable[[int], None] | None = None) -> Metric:
    """The proxy `name` as a batch metric (goal "max") over architectures of `supernet`'s space.

    Deterministic for fixed `batches` (see the module docstring), as the search's memo needs."""
    check_proxy(name)

    def fn(archs: ArchBatch) -> np.ndarray:
        out = np.empty(len(archs))
        for i, arch in enumerate(archs):
            out[i] = arch_proxies(supernet, arch, [name], batches)[name]
            if not math.isfinite(out[i]):  # naswot of a singular kernel: rank it below every other
                out[i] = -1e300
            if on_result is not None:
                on_result(1)
        return out

    return Metric(proxy_metric_name(name), fn, goal="max", label=f"zero-cost proxy {name}")


def init_supernet(space, seed: int = 0):
    """A freshly initialised supernet of `space` (seeded): for proxies "at initialisation"."""
    from edgenas.supernet import Supernet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Supernet(space).eval()


# ---- proxies as accuracy-predictor features ---------------------------------------------------------

FEATURE_PREFIX = "proxy:"


def proxy_feature(name: str) -> str | None:
    """The proxy a predictor feature name "proxy:NAME" names, or None for any other name."""
    if name.startswith(FEATURE_PREFIX) and name[len(FEATURE_PREFIX):] in PROXIES:
        return name[len(FEATURE_PREFIX):]
    return None


@dataclass
class ProxySetup:
    """The images and weights a predictor's proxy features are computed with (kept in its file)."""

    batches: int = field(default=2, metadata=spec(min=1, max=64))
    batch_size: int = field(default=32, metadata=spec(min=2, max=4096))
    seed: int = field(default=0, metadata=spec(min=0, max=2 ** 63 - 1))  # of the batches and of "init" weights
    weights: str = field(default="trained", metadata=spec(choices=("trained", "init")))


class ProxyFeatures:
    """Zero-cost proxies of a supernet's subnets as predictor inputs: `columns(space, genomes,
    names)` -> float32 (n, len(names)), each a signed log of the score (module docstring).

    A subnet is materialized and scored once for all the proxies asked of it, then remembered: a
    search asks about the same subnets again and again. `on_compute(1)` is called per subnet scored."""

    def __init__(self, supernet, dataset, setup: ProxySetup | None = None,
                 on_compute: Callable[[int], None] | None = None):
        self.setup = setup or ProxySetup()
        self.space = supernet.space
        self.net = supernet if self.setup.weights == "trained" else init_supernet(supernet.space, self.setup.seed)
        self.batches = proxy_batches(dataset, self.setup.batches, self.setup.batch_size, self.setup.seed)
        self.on_compute = on_compute
        self._memo: dict[bytes, dict[str, float]] = {}

    def columns(self, space, genomes: np.ndarray, names: Sequence[str]) -> np.ndarray:
        from edgenas.space import decode

        if space.hash != self.space.hash:
            raise ConfigError(f"proxy features of a {self.space.name} supernet asked for subnets of {space.name}")
        genomes = np.asarray(genomes, np.int64)
        out = np.empty((len(genomes), len(names)), np.float32)
        for i, genome in enumerate(genomes):
            known = self._memo.setdefault(genome.tobytes(), {})
            missing = [n for n in names if n not in known]
            if missing:
                scores = arch_proxies(self.net, decode(space, genome[None])[0], missing, self.batches)
                known.update({n: _signed_log(v) for n, v in scores.items()})
                if self.on_compute is not None:
                    self.on_compute(1)
            out[i] = [known[n] for n in names]
        return out


def _signed_log(score: float) -> float:
    return math.copysign(math.log1p(abs(score)), score) if math.isfinite(score) else 0.0
