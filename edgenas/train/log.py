"""The run directory's record: `train_log.jsonl` (one JSON object per epoch and per phase) and
`train_plot.png` (loss and accuracy per epoch, phases marked)."""
from __future__ import annotations

import json
from pathlib import Path

from edgenas.errors import ConfigError
from edgenas.io import atomic_write_text
from edgenas.validate import loads_json, read_text

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "train_plot.png"


class RunLog:
    """Epoch and phase records, kept in memory and rewritten atomically (runs have few epochs)."""

    def __init__(self, run_dir: Path, keep_epochs: int | None = None):
        self.path = Path(run_dir) / LOG_NAME
        self.records: list[dict] = []
        if keep_epochs is not None and self.path.is_file():
            # Resuming: keep what the checkpoint covers, drop what came after it.
            for line in read_text(self.path, "training log (JSON lines)", max_bytes=1 << 30).splitlines():
                try:
                    rec = loads_json(line, str(self.path), allow_nan=True)
                except ConfigError:
                    continue  # a torn line: the log is rewritten from what is kept
                if not isinstance(rec, dict) or isinstance(rec.get("global_epoch", 0), bool) \
                        or not isinstance(rec.get("global_epoch", 0), int):
                    continue
                # An epoch record carries the number of epochs before it, phase and final records the number after.
                done = rec.get("global_epoch", 0) + (1 if rec.get("event") == "epoch" else 0)
                if done <= keep_epochs:
                    self.records.append(rec)

    def add(self, record: dict) -> None:
        self.records.append(record)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def epochs(self) -> list[dict]:
        return [r for r in self.records if r.get("event") == "epoch"]

    def plot(self, path: Path | None = None) -> Path | None:
        """Loss and accuracy per epoch with phase boundaries; None when there is nothing to plot."""
        epochs = self.epochs()
        if not epochs:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.path.with_name(PLOT_NAME)
        x = [r["global_epoch"] + 1 for r in epochs]
        fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        ax_loss.plot(x, [r["loss"] for r in epochs], marker=".", label="train loss")
        ax_loss.set_ylabel("loss")
        ax_acc.plot(x, [100 * r["train_acc"] for r in epochs], marker=".", label="train (sampled subnets)")
        for key, label in (("val_acc_largest", "val, largest"), ("val_acc_smallest", "val, smallest")):
            pts = [(xi, 100 * r[key]) for xi, r in zip(x, epochs) if r.get(key) is not None]
            if pts:
                ax_acc.plot(*zip(*pts), marker="o", label=label)
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_xlabel("epoch")
        start, labels = 0, []
        for i, r in enumerate(epochs):
            if i + 1 == len(epochs) or epochs[i + 1]["phase"] != r["phase"]:
                for ax in (ax_loss, ax_acc):
                    ax.axvspan(start + 0.5, x[i] + 0.5, alpha=0.08 if r["phase_index"] % 2 else 0.0, color="k")
                labels.append((ax_loss.text((start + x[i] + 1) / 2, 1.0, r["phase"], ha="center", va="bottom",
                                            fontsize=8, transform=ax_loss.get_xaxis_transform()), start, x[i]))
                start = x[i]
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        from edgenas.plotting import fit_labels

        ax_loss.get_xlim()  # settle the autoscaled limits before reading the transform
        px = ax_loss.transData.transform([(0.5, 0), (1.5, 0)])
        per_epoch = abs(px[1][0] - px[0][0])  # pixels per epoch, after the layout
        fit_labels(fig, [t for t, _, _ in labels], [per_epoch * (b - a) for _, a, b in labels])
        from edgenas.io import atomic_write

        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        return path
