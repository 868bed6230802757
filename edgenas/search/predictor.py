"""The accuracy predictor: an ensemble of MLPs from an architecture's features to its accuracy (%).

Each member is an MLP (three hidden ReLU layers of 128) whose output is the *logit* of accuracy / 100, and it
is trained in that space (binary cross-entropy against the measured accuracy / 100 as a soft
target), so a prediction, 100 * sigmoid(logit), lies in [0, 100] by construction: no clamping,
and no extrapolation past 100% where the search would go to find the predictor's largest error.

The members differ by their initial weights and by a bootstrap resample of the training pairs.
Their disagreement is the predictor's uncertainty about an architecture:

    predictor.predict_genomes(genomes)     # -> accuracy %, 100 * sigmoid(mean member logit)
    mean, sd = predictor.predict_spread(genomes)   # sd: of the members' accuracies, in pp
    predictor.predict_lower(genomes, k)    # 100 * sigmoid(mean logit - k * sd of the logits)

The inputs are named feature blocks, concatenated and standardised with the training set's mean
and spread (kept in the file): "onehot" (`edgenas.space.features`) and "costs" (log MACs, params
and peak activation memory), computed from the genome alone (`FEATURES`: a new block is one
function `(space, genomes) -> float32 (n, k)`), and "proxy:NAME", a zero-cost proxy of the subnet
(`edgenas.search.proxies.ProxyFeatures`). Proxy features need the supernet and its data: the file
records how they were computed (`ProxySetup`), and a loaded predictor takes them after
`predictor.attach(supernet, dataset)`, which `edgenas search` and the demo do.

    predictor, report = train_predictor(space, genomes, accuracies, seed=0)
    report.rmse, report.spearman, report.sd     # on the held-out 20%
    predictor.save("pred.pt"); AccuracyPredictor.load("pred.pt", space)

The file records the space hash (loading it for another space is a `CheckpointError`) and a
format version. Version 1 files (one MLP with an unbounded output) are refused with a one-line
`OutdatedPredictorError` saying to rebuild, which reuses the measurements logged beside them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from edgenas.errors import CheckpointError
from edgenas.io import atomic_torch_save
from edgenas.validate import build, echo, load_torch, message, spec, user_path, verify_checksum, with_checksum
from edgenas.search.objectives import ArchBatch, cost_table
from edgenas.search.proxies import ProxyFeatures, ProxySetup, proxy_feature
from edgenas.space import Arch, SearchSpace, encode, features as onehot_features, genome_of

FORMAT = "edgenas-accuracy-predictor"
FORMAT_VERSION = 2
REBUILD = "rebuild it with `edgenas predictor build CKPT` (it reuses the logged measurements)"


# ---- features -----------------------------------------------------------------------------------

def cost_features(space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
    """log MACs, log params and log peak activation bytes (float32, n x 3)."""
    costs = cost_table(space)(genomes)
    return np.log(np.stack([costs["macs"], costs["params"], costs["peak_activation_bytes"]], 1)
                  .astype(np.float64) + 1.0).astype(np.float32)


# Feature block name -> (space, genomes) -> float32 array (n, k) with k fixed for a space. A
# predictor records the names it was trained on; the file refuses names this edgenas lacks.
FEATURES: dict[str, Callable[[SearchSpace, np.ndarray], np.ndarray]] = {
    "onehot": onehot_features,
    "costs": cost_features,
}
DEFAULT_FEATURES = ("onehot", "costs")
# Each member's hidden widths. OFA's single MLP has three layers of 400; five members of 128 cost
# the search about what that one did per call (in-process, 100 rows per call); on the demo's few
# hundred noisy measurements the width is not what limits the held-out ranking.
HIDDEN = (128, 128, 128)


def known_feature(name: str) -> bool:
    return name in FEATURES or proxy_feature(name) is not None


def feature_names() -> str:
    """The feature names a predictor may take, for messages."""
    return ", ".join([*FEATURES, "proxy:NAME"])


def feature_matrix(space: SearchSpace, genomes: np.ndarray, names: Sequence[str],
                   proxies: ProxyFeatures | None = None) -> np.ndarray:
    """The named feature blocks of each genome, side by side (float32); "proxy:NAME" features
    come from `proxies`, one column each."""
    genomes = np.asarray(genomes, np.int64)
    asked = [proxy_feature(n) for n in names if proxy_feature(n)]
    if asked and proxies is None:
        raise ValueError(f"the features {', '.join('proxy:' + n for n in asked)} are zero-cost proxies of the "
                         "supernet's subnets: attach the supernet and its dataset first (AccuracyPredictor.attach)")
    scores = proxies.columns(space, genomes, asked) if asked else None
    blocks = [scores[:, [asked.index(proxy_feature(n))]] if proxy_feature(n)
              else np.asarray(FEATURES[n](space, genomes), np.float32).reshape(len(genomes), -1) for n in names]
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


# ---- the ensemble ----------------------------------------------------------------------------------

class Ensemble(nn.Module):
    """`members` MLPs of the same widths, their layers stacked ([members, in, out] weights), so the
    whole ensemble is one batched matrix product per layer. forward: x (n, in) -> logits (members, n)."""

    def __init__(self, width: int, hidden: Sequence[int], members: int, seed: int = 0):
        super().__init__()
        widths = [width, *hidden, 1]
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths, widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter((torch.rand(members, fan_in, fan_out, generator=gen) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(members, 1, fan_out, generator=gen) * 2 - 1) * bound))
        # the training set's feature mean and spread: inputs are standardised with them
        self.register_buffer("shift", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, in) shared by every member, or (members, n, in); returns logits (members, n)."""
        x = (x - self.shift) / self.scale
        h = x if x.dim() == 3 else x.expand(self.members, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h[..., 0]

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """forward for inference: the first layer is one matrix product for every member (the
        input is shared), then in-place ReLUs. Search calls this once per generation on a few
        dozen rows, where the per-call overhead is most of the time."""
        m = self.members
        x = (x - self.shift) / self.scale
        w0, b0 = self.weights[0], self.biases[0]
        h = torch.addmm(b0.permute(1, 0, 2).reshape(1, -1), x, w0.permute(1, 0, 2).reshape(w0.shape[1], -1))
        h = h.view(len(x), m, -1).transpose(0, 1)
        last = len(self.weights) - 1
        for i in range(1, last + 1):
            h.relu_()
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
        return h[..., 0]


@dataclass
class PredictorReport:
    """How well the predictor does on architectures it was not trained on."""

    rmse: float = field(metadata=spec(min=0))  # root mean squared error, percentage points
    # rank correlation between predicted and measured accuracy (NaN with fewer than 2 test points)
    spearman: float = field(metadata=spec(min=-1, max=1, finite=False))
    n_train: int = field(metadata=spec(min=0))
    n_test: int = field(metadata=spec(min=0))
    mean_accuracy: float = field(metadata=spec(min=0, max=100))  # of the training targets, %
    sd: float = field(default=0.0, metadata=spec(min=0, max=100))  # mean ensemble spread on the test set, pp
    # rank correlation between the spread and the absolute error on the test set (NaN when undefined):
    # positive when the predictor is least sure where it is most wrong
    sd_error_spearman: float = field(default=float("nan"), metadata=spec(min=-1, max=1, finite=False))
    # a 95% bootstrap interval of `spearman` over the test subnets (NaN when undefined): with 60 test
    # subnets it is about +-0.2 wide, so two predictors whose Spearman differs by less rank alike
    spearman_low: float = field(default=float("nan"), metadata=spec(min=-1, max=1, finite=False))
    spearman_high: float = field(default=float("nan"), metadata=spec(min=-1, max=1, finite=False))


@dataclass
class _Header:
    """The keys of a predictor file (format_version 2), checked before the weights are loaded."""

    format: str
    format_version: int
    space: SearchSpace
    space_hash: str = field(metadata=spec(min_len=1, max_len=64))
    hidden: list[int] = field(metadata=spec(min_len=1, max_len=16, each=spec(min=1, max=65536)))
    members: int = field(metadata=spec(min=1, max=256))
    features: list[str] = field(metadata=spec(min_len=1, max_len=64, each=spec(min_len=1, max_len=200)))
    state_dict: dict[str, Any]
    report: Optional[PredictorReport] = None
    proxies: Optional[ProxySetup] = None  # how the "proxy:NAME" features were computed, when there are any
    checksum: Optional[str] = None


class OutdatedPredictorError(CheckpointError):
    """A predictor file in a format this edgenas no longer reads (rebuilding it is cheap)."""


class AccuracyPredictor:
    def __init__(self, space: SearchSpace, hidden: Sequence[int] = HIDDEN, seed: int = 0,
                 members: int = 5, features: Sequence[str] = DEFAULT_FEATURES, proxies: ProxyFeatures | None = None):
        unknown = [n for n in features if not known_feature(n)]
        if unknown or not features or len(set(features)) < len(features):
            raise ValueError(f"predictor features must be distinct names from {feature_names()}, got {list(features)}")
        self.space = space
        self.hidden = tuple(int(h) for h in hidden)
        self.members = int(members)
        self.features = tuple(features)
        # how the proxy features are computed; `proxies` computes them (after `attach`, for a loaded file)
        self.proxy_setup = (proxies.setup if proxies else ProxySetup()) if self.needs_supernet else None
        self.proxies = proxies
        genome = np.zeros((1, genome_of(space).length), np.int64)
        width = sum(1 if proxy_feature(n) else feature_matrix(space, genome, [n]).shape[1] for n in self.features)
        self.model = Ensemble(width, self.hidden, self.members, seed)
        self.model.eval()
        self.report: PredictorReport | None = None

    @property
    def needs_supernet(self) -> bool:
        """Whether some features are zero-cost proxies, which `attach` must provide."""
        return any(proxy_feature(n) for n in self.features)

    def attach(self, supernet, dataset, on_compute: Callable[[int], None] | None = None) -> "AccuracyPredictor":
        """Give a predictor with proxy features the supernet and dataset to compute them from, on
        the batches its file records (a no-op for other predictors)."""
        if self.needs_supernet:
            if supernet.space.hash != self.space.hash:
                raise CheckpointError(f"the predictor was built for space {self.space.name}, not the supernet's "
                                      f"{supernet.space.name}; rebuild it with `edgenas predictor build CKPT`")
            self.proxies = ProxyFeatures(supernet, dataset, self.proxy_setup, on_compute)
        return self

    # ---- prediction ------------------------------------------------------------------------
    def _inputs(self, genomes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(feature_matrix(self.space, genomes, self.features, self.proxies))

    def member_logits(self, genomes: np.ndarray) -> np.ndarray:
        """Each member's logit of accuracy / 100, float64 (members, n)."""
        return self.model.logits(self._inputs(genomes)).double().numpy()

    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Predicted accuracy (%) for each genome row, float64, in [0, 100]: 100 * sigmoid of
        the members' mean logit."""
        return 100.0 * _sigmoid(self.member_logits(genomes).mean(0))

    def predict_spread(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted accuracy %, the standard deviation of the members' accuracies in pp)."""
        z = self.member_logits(genomes)
        return 100.0 * _sigmoid(z.mean(0)), (100.0 * _sigmoid(z)).std(0)

    def predict_lower(self, genomes: np.ndarray, k: float) -> np.ndarray:
        """A cautious accuracy (%) for ranking: 100 * sigmoid(mean logit - k * sd of the members'
        logits). Taken in logit space it stays in [0, 100], and a spread near 100% (where the
        logit stretches) counts for what it is; k = 0 is `predict_genomes`."""
        z = self.member_logits(genomes)
        return 100.0 * _sigmoid(z.mean(0) - k * z.std(0))

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """The metric interface: a batch of archs (an ArchBatch or any sequence of Arch)."""
        return self.predict_genomes(_genomes(self.space, archs))

    # ---- training --------------------------------------------------------------------------
    def fit(self, genomes: np.ndarray, accuracies: np.ndarray, epochs: int = 200, batch_size: int = 128,
            lr: float = 1e-3, weight_decay: float = 1e-5, seed: int = 0, bootstrap: bool = True) -> "AccuracyPredictor":
        """Train every member on (genome, accuracy %) pairs, each on its own bootstrap resample
        (with `bootstrap`) in its own order; the loss is binary cross-entropy of the member's
        logit against accuracy / 100, and the output bias starts at the logit of their mean."""
        x = self._inputs(np.asarray(genomes))
        y = torch.as_tensor(np.asarray(accuracies, np.float64) / 100.0, dtype=torch.float32)
        if len(x) == 0:
            raise ValueError("no training pairs")
        m, n = self.members, len(x)
        model = self.model
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.shift.copy_(x.mean(0))
            model.scale.copy_(torch.where(x.std(0) > 1e-6, x.std(0), torch.ones(())) if n > 1 else torch.ones(x.shape[1]))
            mean = float(y.mean().clamp(1e-4, 1 - 1e-4))
            model.biases[-1].fill_(math.log(mean / (1 - mean)))
        # each member's training rows: a bootstrap resample, or every row
        rows = torch.randint(0, n, (m, n), generator=gen) if bootstrap and m > 1 else torch.arange(n).expand(m, n)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * max(1, -(-n // batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        model.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: one thread is as fast, and far faster on a busy machine
        try:
            for _ in range(epochs):
                order = torch.gather(rows, 1, torch.argsort(torch.rand(m, n, generator=gen), dim=1))
                for start in range(0, n, batch_size):
                    idx = order[:, start:start + batch_size]  # (members, batch) row indices
                    logits = model(x[idx])
                    # summed over members (each member's gradient is its own), averaged over rows
                    loss = nn.functional.binary_cross_entropy_with_logits(logits, y[idx], reduction="sum") / idx.shape[1]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        finally:
            torch.set_num_threads(threads)
            model.eval()
        return self

    # ---- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, with_checksum({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": self.space.to_dict(),
            "space_hash": self.space.hash,
            "hidden": list(self.hidden),
            "members": self.members,
            "features": list(self.features),
            "state_dict": self.model.state_dict(),
            "report": asdict(self.report) if self.report else None,
            "proxies": asdict(self.proxy_setup) if self.proxy_setup else None,
        }))

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace | None = None) -> "AccuracyPredictor":
        """Load a predictor; with `space`, it must have been built for that space."""
        path = user_path(path, "accuracy predictor", CheckpointError)
        if not path.is_file():
            raise CheckpointError(f"accuracy predictor {path} not found: build one with `edgenas predictor build CKPT`")
        data = load_torch(path, "edgenas accuracy predictor")
        src = str(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(message(src, "format", echo(data.get("format")) if isinstance(data, dict) else echo(data),
                                          f"'{FORMAT}': it is not an edgenas accuracy predictor"))
        version = data.get("format_version")
        if version == 1:
            raise OutdatedPredictorError(
                f"{src}: predictor format 1 (an unbounded MLP of an older edgenas) is no longer read; {REBUILD}")
        if version != FORMAT_VERSION:
            raise CheckpointError(message(src, "format_version", echo(version), f"{FORMAT_VERSION}: {REBUILD}"))
        verify_checksum(data, src, "rebuild it with `edgenas predictor build CKPT`")
        head = build(_Header, data, src, error=CheckpointError)
        for i, name in enumerate(head.features):
            if not known_feature(name):
                raise CheckpointError(message(src, f"features.{i}", echo(name),
                                              f"one of {feature_names()} (a feature this edgenas computes)"))
        own = head.space
        if space is not None and head.space_hash != space.hash:
            raise CheckpointError(
                f"predictor {path} was built for space {own.name} (hash {head.space_hash}), not {space.name} "
                f"(hash {space.hash}); rebuild it for this supernet with `edgenas predictor build CKPT`"
            )
        try:
            predictor = cls(space or own, head.hidden, members=head.members, features=head.features)
        except ValueError:
            raise CheckpointError(message(src, "features", echo(head.features),
                                          f"distinct names: the predictor file is damaged; {REBUILD}")) from None
        if predictor.needs_supernet:
            predictor.proxy_setup = head.proxies or ProxySetup()
        try:
            predictor.model.load_state_dict(head.state_dict)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(message(src, "state_dict", f"weights that do not fit ({str(exc).splitlines()[0][:80]})",
                                          "an ensemble of the recorded widths: the predictor file is damaged")) from None
        if not all(torch.isfinite(t).all() for t in predictor.model.state_dict().values()):
            raise CheckpointError(message(src, "state_dict", "weights that are NaN or inf",
                                          f"finite weights: the predictor file is damaged; {REBUILD}"))
        predictor.report = head.report
        return predictor


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large |z|, exactly 0 or 1 only in the limit of float64
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _genomes(space: SearchSpace, archs) -> np.ndarray:
    return archs.genomes if isinstance(archs, ArchBatch) else encode(space, archs)


def default_predictor_path(checkpoint: str | Path) -> Path:
    """Where `edgenas predictor build CKPT` saves by default, and `edgenas search` looks: beside
    the checkpoint, `NAME.predictor.pt` (inside it, `supernet.predictor.pt`, for a run directory)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        return checkpoint / "supernet.predictor.pt"
    return checkpoint.with_name(checkpoint.stem + ".predictor.pt")


# ---- training with a held-out report ------------------------------------------------------------

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined (a constant input)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def spearman_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = 1000,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of spearman(a, b), resampling the pairs with replacement
    (seeded); (NaN, NaN) with fewer than 3 pairs or when no resample is defined."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n < 3:
        return float("nan"), float("nan")
    idx = np.random.default_rng([seed, 7]).integers(0, n, (resamples, n))
    ra, rb = rankdata(a[idx], axis=1), rankdata(b[idx], axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    ok = den > 0
    if not ok.any():
        return float("nan"), float("nan")
    rho = (ra * rb).sum(1)[ok] / den[ok]
    tail = 100 * (1 - level) / 2
    return float(np.percentile(rho, tail)), float(np.percentile(rho, 100 - tail))


def holdout_split(n: int, holdout: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of n pairs: a seeded `holdout` share (at least one) is held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(holdout * n)))
    return order[n_test:], order[:n_test]


def train_predictor(space: SearchSpace, genomes: np.ndarray, accuracies: np.ndarray, holdout: float = 0.2,
                    seed: int = 0, hidden: Sequence[int] = HIDDEN, members: int = 5,
                    features: Sequence[str] = DEFAULT_FEATURES, proxies: ProxyFeatures | None = None,
                    **fit_options: Any) -> tuple[AccuracyPredictor, PredictorReport]:
    """Train on a seeded (1 - holdout) share of the pairs and report RMSE, Spearman and the
    ensemble's spread on the rest. "proxy:NAME" features are computed by `proxies`."""
    genomes, accuracies = np.asarray(genomes), np.asarray(accuracies, np.float64)
    if len(genomes) < 5:
        raise ValueError(f"need at least 5 measured architectures to train and test a predictor, got {len(genomes)}")
    train, test = holdout_split(len(genomes), holdout, seed)
    predictor = AccuracyPredictor(space, hidden, seed=seed, members=members, features=features, proxies=proxies)
    predictor.fit(genomes[train], accuracies[train], seed=seed, **fit_options)
    pred, sd = predictor.predict_spread(genomes[test])
    err = np.abs(pred - accuracies[test])
    report = PredictorReport(
        rmse=float(np.sqrt(np.mean(err ** 2))),
        spearman=spearman(pred, accuracies[test]),
        n_train=len(train), n_test=len(test), mean_accuracy=float(accuracies[train].mean()),
        sd=float(sd.mean()), sd_error_spearman=spearman(sd, err),
        **dict(zip(("spearman_low", "spearman_high"), spearman_interval(pred, accuracies[test], seed))),
    )
    predictor.report = report
    return predictor, report
