"""The accuracy predictor: an MLP from an architecture's one-hot features to its accuracy (%).

As in OFA: three hidden layers of 400 ReLU units over `edgenas.space.features`, the output bias
initialised to the mean training accuracy, trained with Adam on squared error. The file records
the space hash; loading it for another space is a `CheckpointError`.

    predictor, report = train_predictor(space, genomes, accuracies, seed=0)
    report.rmse, report.spearman          # on the held-out 20%
    predictor.save("pred.pt"); AccuracyPredictor.load("pred.pt", space)
    predictor.predict_genomes(genomes)    # -> float64 accuracies, vectorised
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edgenas.errors import CheckpointError
from edgenas.io import atomic_torch_save
from edgenas.validate import Invalid, build, echo, load_torch, message, spec, user_path, value_of, verify_checksum, with_checksum
from edgenas.search.objectives import ArchBatch
from edgenas.space import Arch, SearchSpace, encode, features, genome_of

FORMAT = "edgenas-accuracy-predictor"
FORMAT_VERSION = 1


@dataclass
class PredictorReport:
    """How well the predictor does on architectures it was not trained on."""

    rmse: float = field(metadata=spec(min=0))  # root mean squared error, percentage points
    # rank correlation between predicted and measured accuracy (NaN with fewer than 2 test points)
    spearman: float = field(metadata=spec(min=-1, max=1, finite=False))
    n_train: int = field(metadata=spec(min=0))
    n_test: int = field(metadata=spec(min=0))
    mean_accuracy: float = field(metadata=spec(min=0, max=100))  # of the training targets, %


class AccuracyPredictor:
    def __init__(self, space: SearchSpace, hidden: Sequence[int] = (400, 400, 400), seed: int = 0):
        self.space = space
        self.hidden = tuple(int(h) for h in hidden)
        width = features(space, np.zeros((1, genome_of(space).length), np.int64)).shape[1]
        layers: list[nn.Module] = []
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = nn.Sequential(*layers)
        self.model.eval()
        self.report: PredictorReport | None = None

    # ---- prediction ------------------------------------------------------------------------
    def predict_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Predicted accuracy (%) for each genome row, float64."""
        h = torch.from_numpy(features(self.space, np.asarray(genomes)))
        linears = [m for m in self.model if isinstance(m, nn.Linear)]
        # The Sequential's layers called directly (addmm, in-place ReLU): search calls this once
        # per generation on a few dozen rows, where module dispatch is a tenth of the time.
        with torch.inference_mode():
            for i, layer in enumerate(linears):
                h = torch.addmm(layer.bias, h, layer.weight.t())
                if i < len(linears) - 1:
                    h.relu_()
        return h[:, 0].double().numpy()

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """The metric interface: a batch of archs (an ArchBatch or any sequence of Arch)."""
        genomes = archs.genomes if isinstance(archs, ArchBatch) else encode(self.space, archs)
        return self.predict_genomes(genomes)

    # ---- training --------------------------------------------------------------------------
    def fit(self, genomes: np.ndarray, accuracies: np.ndarray, epochs: int = 200, batch_size: int = 128,
            lr: float = 1e-3, weight_decay: float = 1e-5, seed: int = 0) -> "AccuracyPredictor":
        """Train on (genome, accuracy %) pairs; the output bias starts at their mean."""
        x = torch.from_numpy(features(self.space, np.asarray(genomes)))
        y = torch.as_tensor(np.asarray(accuracies, np.float32))
        last = self.model[-1]
        with torch.no_grad():
            last.bias.fill_(float(y.mean()))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * max(1, -(-len(x) // batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        self.model.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a small MLP: one thread is as fast, and far faster on a busy machine
        try:
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), batch_size):
                    idx = order[start:start + batch_size]
                    loss = nn.functional.mse_loss(self.model(x[idx])[:, 0], y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        finally:
            torch.set_num_threads(threads)
            self.model.eval()
        return self

    # ---- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, with_checksum({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "space": self.space.to_dict(),
            "space_hash": self.space.hash,
            "hidden": list(self.hidden),
            "state_dict": self.model.state_dict(),
            "report": asdict(self.report) if self.report else None,
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
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(message(src, "format_version", echo(data.get("format_version")),
                                          f"{FORMAT_VERSION}: rebuild it with `edgenas predictor build`"))
        verify_checksum(data, src, "rebuild it with `edgenas predictor build`")
        for key, tp, want in (("space", dict, "a mapping"), ("space_hash", str, "a string"),
                              ("hidden", list, "a list of layer widths"), ("state_dict", dict, "a mapping of tensors")):
            if not isinstance(data.get(key), tp):
                got = "nothing (the key is missing)" if key not in data else echo(data[key])
                raise CheckpointError(message(src, key, got, f"{want}: the predictor file is damaged"))
        try:
            hidden = value_of(list[int], data["hidden"], "hidden", {"min_len": 1, "max_len": 16, "each": {"min": 1, "max": 65536}})
        except Invalid as exc:
            raise exc.at(src, CheckpointError) from None
        report = data.get("report")
        if report is not None:
            report = build(PredictorReport, report, src, path="report", error=CheckpointError)
        own = build(SearchSpace, data["space"], src, path="space", error=CheckpointError)
        if space is not None and data["space_hash"] != space.hash:
            raise CheckpointError(
                f"predictor {path} was built for space {own.name} (hash {data['space_hash']}), not {space.name} "
                f"(hash {space.hash}); rebuild it for this supernet with `edgenas predictor build CKPT`"
            )
        predictor = cls(space or own, hidden)
        try:
            predictor.model.load_state_dict(data["state_dict"])
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(message(src, "state_dict", f"weights that do not fit ({str(exc).splitlines()[0][:80]})",
                                          "an MLP of the recorded widths: the predictor file is damaged")) from None
        predictor.report = report
        return predictor


def default_predictor_path(checkpoint: str | Path) -> Path:
    """Where `edgenas predictor build CKPT` saves by default, and `edgenas search` looks: beside
    the checkpoint, `NAME.predictor.pt` (inside it, `supernet.predictor.pt`, for a run directory)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        return checkpoint / "supernet.predictor.pt"
    return checkpoint.with_name(checkpoint.stem + ".predictor.pt")


# ---- training with a held-out report ------------------------------------------------------------

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def train_predictor(space: SearchSpace, genomes: np.ndarray, accuracies: np.ndarray, holdout: float = 0.2,
                    seed: int = 0, hidden: Sequence[int] = (400, 400, 400), **fit_options: Any,
                    ) -> tuple[AccuracyPredictor, PredictorReport]:
    """Train on a seeded (1 - holdout) share of the pairs and report RMSE and Spearman on the rest."""
    genomes, accuracies = np.asarray(genomes), np.asarray(accuracies, np.float64)
    if len(genomes) < 5:
        raise ValueError(f"need at least 5 measured architectures to train and test a predictor, got {len(genomes)}")
    order = np.random.default_rng(seed).permutation(len(genomes))
    n_test = max(1, int(round(holdout * len(genomes))))
    test, train = order[:n_test], order[n_test:]
    predictor = AccuracyPredictor(space, hidden, seed=seed).fit(genomes[train], accuracies[train], seed=seed, **fit_options)
    pred = predictor.predict_genomes(genomes[test])
    report = PredictorReport(
        rmse=float(np.sqrt(np.mean((pred - accuracies[test]) ** 2))),
        spearman=spearman(pred, accuracies[test]),
        n_train=len(train), n_test=len(test), mean_accuracy=float(accuracies[train].mean()),
    )
    predictor.report = report
    return predictor, report
