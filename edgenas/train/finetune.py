"""Fine-tune one subnet of a trained supernet, distilled from the supernet's largest subnet.

    result = finetune("runs/digits", arch, "runs/ft", epochs=4)      # or edgenas finetune ...
    net, info = load_subnet("runs/ft")                                # the fine-tuned StaticNet
    info.finetune["accuracy_before"], info.finetune["accuracy_after"]  # test accuracy, %

The subnet starts as `supernet.materialize(arch)` with its BatchNorm recalibrated (its test
accuracy then is "before"), and is trained as a static network by the supernet trainer's own
loop (edgenas.train.trainer): the same atomic checkpoints, exact resume, SIGINT/SIGTERM stop
after the current step, NaN stop, progress bars, train log and plot, and DDP under torchrun.
Only what is trained differs; the run is a `TrainConfig` with one phase, so `--set` reaches every
setting (`schedule.phases.0.lr=0.02`, `train.batch_size=64`, `train.kd_ratio=0` for no teacher).

The config starts from the supernet's own (its dataset, batch size, label smoothing, weight decay,
dropout, evaluation sizes) with one phase: `epochs`, a peak learning rate of a tenth of the
supernet's first phase (the weights are already trained), a linear warm-up over a tenth of the
epochs (at most one) and cosine decay to 0, distilled from the teacher with the supernet's
`kd_ratio`. Augmentation is the supernet config's (`train.crop_padding`, `train.flip`): none for
digits, whose strokes a crop can push off an 8x8-pixel source image and whose digits a flip turns
into other glyphs; for photographs or clothes `--set train.crop_padding=2 --set train.flip=true`.

The teacher is the supernet's largest trained subnet, or a checkpoint named with `teacher` (a
supernet of the same space, whose largest subnet teaches, or a fine-tuned subnet); like the
supernet trainer's teacher its BatchNorms use batch statistics. At the end the subnet's BatchNorm
statistics are recalibrated (exact averages over `train.bn_recal_images` training images, as
before) and it is tested ("after"); `finetuned.pt` holds the subnet and the record, which
`edgenas export --checkpoint` copies into the model card.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgenas.errors import CheckpointError, ConfigError, EdgeNASError
from edgenas.space import Arch
from edgenas.train import checkpoint as ckpt
from edgenas.train.bn import recalibrate_bn
from edgenas.train.config import TrainConfig, apply_overrides
from edgenas.train.evaluate import accuracy, calibration_images
from edgenas.train.trainer import StepEvent, _Trainer, run_trainer

log = logging.getLogger("edgenas.train")

PHASE = "finetune"  # the name of the run's one phase
LR_FRACTION = 0.1  # default peak learning rate: this share of the supernet's first phase's
WARMUP_FRACTION = 0.1  # default warm-up: this share of the epochs, at most one epoch


@dataclass
class FinetuneResult:
    run_dir: Path
    net: nn.Module  # the fine-tuned StaticNet (BatchNorm recalibrated when done)
    status: str  # "done" or "stopped" (by a signal; resume with --resume)
    metrics: dict[str, Any] = field(default_factory=dict)
    signal: int | None = None
    record: dict[str, Any] = field(default_factory=dict)  # what finetuned.pt and the model card carry

    @property
    def path(self) -> Path:
        return self.run_dir / ckpt.FINETUNED_NAME


def finetune_config(info: ckpt.CheckpointInfo, arch: Arch, epochs: int, lr: float | None = None,
                    overrides: list[str] | None = None) -> TrainConfig:
    """The fine-tune's config: the supernet's, with one phase training `arch` (see the module docstring)."""
    base = info.config
    raw = base.to_dict()
    first_lr = base.schedule.phases[0].lr
    raw["schedule"] = {"name": PHASE, "phases": [{
        "name": PHASE, "epochs": epochs, "lr": lr if lr is not None else round(LR_FRACTION * first_lr, 12),
        "warmup_epochs": min(1.0, WARMUP_FRACTION * epochs), "arch": str(arch), "distill": "teacher",
    }]}
    raw["train"]["test_at_end"] = True
    return apply_overrides(raw, list(overrides or []), source=f"fine-tune config of {info.path}")


def check_config(cfg: TrainConfig, arch: Arch, source: str) -> None:
    """A fine-tune trains one static subnet with one phase: what a phase can say otherwise is refused."""
    phases = cfg.schedule.phases
    if len(phases) != 1:
        raise ConfigError(f"{source}: a fine-tune has one phase, got {len(phases)} (schedule.phases)")
    p = phases[0]
    bad = [(k, v, want) for k, v, want in (
        ("arch", p.arch, "the fine-tuned arch"), ("subnets_per_step", p.subnets_per_step, "1"),
        ("sampler", p.sampler, "random"), ("sort_channels", p.sort_channels, "false"),
        ("distill", p.distill, "teacher or none")) if
        (k == "arch" and v != str(arch)) or (k == "subnets_per_step" and v != 1) or (k == "sampler" and v != "random")
        or (k == "sort_channels" and v) or (k == "distill" and v == "inplace")]
    if bad:
        k, v, want = bad[0]
        raise ConfigError(f"{source}: schedule.phases.0.{k} is {v!r}, but a fine-tune trains one static subnet: "
                          f"it must be {want}")


class _Finetuner(_Trainer):
    """The supernet trainer's loop over one static subnet (see the module docstring)."""

    COMMAND = "finetune"
    WHAT = "fine-tuning a subnet of"
    FINAL_NAME = ckpt.FINETUNED_NAME

    def __init__(self, cfg, run_dir, resume, dist, signals, progress, on_step, *, space, record, source=None):
        # space: the supernet's (its classifier fits its dataset); record: what finetuned.pt carries;
        # source: {"supernet": Supernet, "teacher": the teacher's state dict} for a new run, None when resuming
        self.given_space, self.source, self.record = space, source, dict(record)
        self.arch_text = cfg.schedule.phases[0].arch
        super().__init__(cfg, run_dir, resume, dist, signals, progress, on_step)

    def _load_space(self):
        if self.given_space.num_classes != self.dataset.num_classes:
            raise ConfigError(f"the fine-tune's dataset {self.dataset.name} has {self.dataset.num_classes} classes, but "
                              f"the subnet's space {self.given_space.name} has {self.given_space.num_classes} outputs: "
                              "fine-tune on the supernet's dataset (leave data.* as the supernet trained it)")
        return self.given_space

    def _check_resumable(self, info: ckpt.CheckpointInfo) -> None:
        if info.arch is None:
            raise CheckpointError(f"{self.ckpt_path} is a supernet training run, not a fine-tune: continue it "
                                  f"with `edgenas train --out {self.run_dir} --resume`")

    def _new_model(self, resuming: bool) -> nn.Module:
        arch = Arch.parse(self.arch_text, self.space)
        if resuming:
            return ckpt.subnet_skeleton(self.space, arch, self.cfg.train.dropout)
        net = self.source["supernet"].subnet(arch, self._bn_images(), batch_size=self.cfg.train.eval_batch_size)
        for m in net.modules():  # the supernet's dropout rate, or the config's when overridden
            if isinstance(m, nn.Dropout):
                m.p = self.cfg.train.dropout
        return net.train()

    def _bn_images(self) -> torch.Tensor:
        return calibration_images(self.dataset, self.cfg.train.bn_recal_images, self.cfg.seed)

    def _fresh_metrics(self) -> dict[str, Any]:
        before = self._test() if self.cfg.train.test_at_end else None
        if before is not None:
            log.info("before fine-tuning: test accuracy %.2f%% (%d images)", 100 * before[0], before[1])
            self.record.update(accuracy_before=round(100 * before[0], 4), images=before[1])
        return {"before": {"test_acc": None if before is None else before[0]}}

    def _test(self) -> tuple[float, int]:
        arch = Arch.parse(self.arch_text, self.space)
        t = self.cfg.train
        acc, _, seen = accuracy(self.net, self.dataset.batches("test", t.eval_batch_size), arch.resolution,
                                self.device, t.channels_last)
        return acc, seen

    def _activate(self, arch: Arch) -> None:
        pass  # a static net computes its one arch

    def _new_teacher(self) -> nn.Module:
        teacher_arch = Arch.parse(self.record["teacher"]["arch"], self.space)
        teacher = ckpt.subnet_skeleton(self.space, teacher_arch)
        if self.source is not None:
            teacher.load_state_dict(self.source["teacher"])
        return self._freeze(teacher)

    def _subnet_record(self) -> dict:
        return {"arch": self.arch_text, "finetune": self.record}

    def _validate(self, sampler) -> dict:
        net = copy.deepcopy(self.net)
        recalibrate_bn(net, self.val_images, None, self.cfg.train.eval_batch_size)
        acc, _, _ = accuracy(net, self.dataset.batches("val", self.cfg.train.eval_batch_size), net.resolution,
                             self.device, self.cfg.train.channels_last)
        # the keys the log, the plot and the metrics of a supernet run use, for the one subnet
        return {"val_acc_largest": acc, "val_acc_smallest": None, "val_largest": self.arch_text, "val_smallest": None}

    def _finish_model(self) -> None:
        # On every rank, so that each returns the subnet rank 0 writes.
        recalibrate_bn(self.net, self._bn_images(), None, self.cfg.train.eval_batch_size)
        self.net.eval()

    def _final(self) -> None:
        t = self.cfg.train
        seconds = sum(r.get("seconds", 0.0) for r in self.log.epochs())
        self.record.update(epochs=self.cfg.schedule.phases[0].epochs, seconds=round(seconds, 2))
        if t.test_at_end:
            acc, seen = self._test()
            self.metrics["final"] = {"test_acc": acc, "test_acc_before": (self.metrics.get("before") or {}).get("test_acc"),
                                     "arch": self.arch_text}
            self.record.update(accuracy_after=round(100 * acc, 4), images=seen)
            self.log.add({"event": "final", "global_epoch": self.progress["global_epoch"], **self.metrics["final"]})
            before = self.record.get("accuracy_before")
            log.info("after fine-tuning: test accuracy %.2f%%%s", 100 * acc,
                     f" (before: {before:.2f}%)" if before is not None else "")
        ckpt.save(self.ckpt_path, self._payload("checkpoint", {"rng": None, "teacher": None}))
        ckpt.save(self.run_dir / ckpt.FINETUNED_NAME, self._payload("subnet"))
        self.log.plot()
        log.info("fine-tuned subnet: %s", self.run_dir / ckpt.FINETUNED_NAME)

    def _result(self, status: str) -> FinetuneResult:
        return FinetuneResult(self.run_dir, self.net, status, self.metrics,
                              self.signals.signum if status == "stopped" else None, dict(self.record))


def _teacher_of(path: str | Path, space) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state dict, arch, what it is) of a teacher checkpoint: a supernet's largest trained subnet,
    or a fine-tuned subnet; CheckpointError for a checkpoint of another space."""
    _, info = ckpt.read(path)
    ckpt.check_space(info, space)
    if info.arch is not None:
        net, _ = ckpt.load_subnet(path)
        return net.state_dict(), info.arch, "a fine-tuned subnet"
    supernet, info = ckpt.load_supernet(path)
    arch = info.trained().largest()
    return supernet.materialize(arch).state_dict(), str(arch), "that supernet's largest subnet"


def finetune(supernet: str | Path | None, arch: Arch | str | None, out: str | Path, epochs: int | None = None, *,
             teacher: str | Path | None = None, lr: float | None = None, overrides: list[str] | None = None,
             resume: bool = False, progress: bool | None = None,
             on_step: Callable[[StepEvent], None] | None = None, source: dict | None = None) -> FinetuneResult:
    """Fine-tune `arch` of the supernet checkpoint `supernet` into the run directory `out`.

    `epochs` and `lr` set the one phase (see `finetune_config`), `overrides` are `--set KEY=VALUE`
    items, `teacher` a checkpoint to distil from instead of the supernet's largest subnet. With
    `resume`, the run continues from `out/checkpoint.pt` and takes its supernet, arch, teacher and
    config from there (`epochs`, `lr` and `overrides` still apply). `source` is recorded as where
    the arch came from (e.g. {"results": ..., "rank": ...})."""
    out = Path(out)
    if resume:
        if supernet is not None or arch is not None or teacher is not None:
            raise EdgeNASError("--resume continues the run in --out with its own supernet, arch and teacher: "
                               "leave out --supernet, --arch/--from and --teacher")
        path = out / ckpt.CHECKPOINT_NAME
        if not path.is_file():
            raise CheckpointError(f"nothing to resume in {out}: it has no {ckpt.CHECKPOINT_NAME} "
                                  "(start without --resume)")
        _, info = ckpt.read(path)
        if info.arch is None:
            raise CheckpointError(f"{path} is a supernet training run, not a fine-tune: continue it with "
                                  f"`edgenas train --out {out} --resume`")
        extra = list(overrides or []) + ([f"schedule.phases.0.epochs={epochs}"] if epochs is not None else []) + \
            ([f"schedule.phases.0.lr={lr!r}"] if lr is not None else [])
        cfg = apply_overrides(info.config, extra, source=str(path))
        arch_obj = Arch.parse(info.arch, info.space)
        check_config(cfg, arch_obj, str(path))
        return run_trainer(_Finetuner, cfg, out, True, progress, on_step, space=info.space, record=info.finetune)
    if supernet is None or arch is None:
        raise EdgeNASError("a fine-tune needs --supernet CKPT and the subnet (--arch ARCH or --from RESULTS)")
    if epochs is None:
        raise EdgeNASError("a fine-tune needs --epochs N (N >= 1)")
    if (out / ckpt.CHECKPOINT_NAME).exists():
        raise CheckpointError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    net, info = ckpt.load_supernet(supernet)
    space = info.space
    arch = Arch.parse(arch, space) if isinstance(arch, str) else arch
    from edgenas.space import validate

    validate(arch, space)
    cfg = finetune_config(info, arch, epochs, lr, overrides)
    check_config(cfg, arch, f"fine-tune config of {info.path}")
    if teacher is not None:
        teacher_state, teacher_arch, what = _teacher_of(teacher, space)
    else:
        teacher_arch, what = str(info.trained().largest()), "the supernet's largest subnet"
        teacher_state = net.materialize(Arch.parse(teacher_arch, space)).state_dict()
    record = {"supernet": str(info.path), "arch": str(arch), "epochs": epochs,
              "teacher": {"checkpoint": str(teacher) if teacher is not None else None, "arch": teacher_arch,
                          "what": what},
              "kd_ratio": cfg.train.kd_ratio if cfg.schedule.phases[0].distill == "teacher" else 0.0,
              "lr": cfg.schedule.phases[0].lr, "accuracy_before": None, "accuracy_after": None, "split": "test",
              "images": None, "seconds": None, **({"source": dict(source)} if source else {})}
    return run_trainer(_Finetuner, cfg, out, False, progress, on_step, space=space, record=record,
                       source={"supernet": net, "teacher": teacher_state})
