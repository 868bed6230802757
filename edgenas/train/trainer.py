"""The supernet training loop: phases in order, checkpoints that lose nothing, clean stops.

    result = train(load_config("configs/digits-tiny.yaml"), "runs/digits")
    result.metrics["final"]        # test accuracy of the largest and smallest subnets

Reproducibility: the data order, the subnets and the dropout masks of an epoch are derived from
(seed, phase, epoch[, rank]), so a run stopped anywhere and resumed from its checkpoint (which keeps
the optimiser, scheduler and RNG states and the step reached) ends with the same weights as a run
that was never stopped. SIGINT or SIGTERM finish the current step, write the checkpoint and return.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import TensorSplit, load_dataset
from edgenas.errors import CheckpointError, ConfigError, EdgeNASError
from edgenas.io import atomic_write_text
from edgenas.space import Arch, largest, load_space
from edgenas.supernet import Supernet
from edgenas.train import checkpoint as ckpt
from edgenas.train.augment import augment
from edgenas.train.bn import resize
from edgenas.train.config import PhaseConfig, TrainConfig
from edgenas.train.distributed import Dist, setup
from edgenas.train.evaluate import calibration_images, evaluate_archs
from edgenas.train.log import RunLog
from edgenas.train.schedule import PhaseSampler, lr_factor

log = logging.getLogger("edgenas.train")

_DATA, _ARCHS, _DROPOUT, _AUGMENT = 1, 2, 3, 4  # streams of derived seeds


class TrainingDiverged(EdgeNASError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class StepEvent:
    """What `train(on_step=...)` receives after every optimiser step."""

    phase: PhaseConfig
    phase_index: int
    epoch: int
    step: int
    archs: list[Arch]  # the subnets trained in this step, in order
    loss: float  # mean loss over those subnets


@dataclass
class TrainResult:
    run_dir: Path
    supernet: Supernet  # the trained supernet (in train mode, on the training device)
    status: str  # "done" or "stopped" (by a signal; resume with --resume)
    metrics: dict[str, Any] = field(default_factory=dict)  # "last", "best" (validation), "final" (test)
    signal: int | None = None  # the signal that stopped the run


def seed_of(*parts: int) -> int:
    """A 63-bit seed derived from integers (the run seed, a stream tag, phase, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EdgeNASError("CUDA was asked for (--device cuda or train.device) but torch sees no CUDA device "
                               f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
        return torch.device("cuda", dist.local_rank) if dist.active else torch.device(name)
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r}: use cpu, cuda or auto")
    return torch.device("cpu")


class _StopSignals:
    """While active, SIGINT and SIGTERM set `signum` instead of killing the process; a second one
    interrupts at once. The previous handlers are restored on exit, whatever happens."""

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("\nreceived %s: finishing the current step and writing a checkpoint (send again to abort)",
                    signal.Signals(signum).name)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool | None = None,
          on_step: Callable[[StepEvent], None] | None = None) -> TrainResult:
    """Train a supernet with `cfg`'s schedule, writing checkpoints, the log and the plot to `run_dir`.

    `resume` continues from `run_dir/checkpoint.pt`. `progress` shows tqdm bars (default: when
    stderr is a terminal). Under torchrun (or in an initialised process group) it trains on every
    rank and rank 0 writes the files.
    """
    return run_trainer(_Trainer, cfg, run_dir, resume, progress, on_step)


def run_trainer(cls, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool | None = None,
                on_step: Callable[[StepEvent], None] | None = None, **extra):
    """Run `cls` (`_Trainer` or a subclass, e.g. the fine-tuner) in a process group, with the stop
    signals caught and the torch thread count and RNG state restored afterwards."""
    dist = setup(cfg.train.device)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()  # restored afterwards
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        with _StopSignals() as signals:
            return cls(cfg, Path(run_dir), resume, dist, signals, progress, on_step, **extra).run()
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        dist.close()


class _Trainer:
    def __init__(self, cfg, run_dir, resume, dist, signals, progress, on_step):
        self.cfg, self.run_dir, self.dist, self.signals, self.on_step = cfg, run_dir, dist, signals, on_step
        self.device = dist.device = resolve_device(cfg.train.device, dist)
        self.show_bars = dist.main and (sys.stderr.isatty() if progress is None else progress)
        t = cfg.train
        if t.batch_size % dist.world:
            raise ConfigError(f"train.batch_size {t.batch_size} must be divisible by the {dist.world} processes")
        self.local_batch = t.batch_size // dist.world

        self.dataset = load_dataset(cfg.data)
        train_split = self.dataset.train  # a black pixel, normalised: what random crops pad with
        self.black = -torch.tensor(train_split.mean, dtype=torch.float32) / torch.tensor(train_split.std, dtype=torch.float32)
        self.space = space = self._load_space()
        self.samplers = [PhaseSampler(space, p, i) for i, p in enumerate(cfg.schedule.phases)]
        n_local = len(self.dataset.train) // dist.world
        self.steps = n_local // self.local_batch
        if self.steps < 1:
            raise ConfigError(f"train.batch_size {t.batch_size} is larger than the {len(self.dataset.train)} training images")
        if t.steps_per_epoch:
            self.steps = min(self.steps, t.steps_per_epoch)

        self.ckpt_path = run_dir / ckpt.CHECKPOINT_NAME
        state = None
        if resume:
            state, info = ckpt.read(self.ckpt_path) if self.ckpt_path.is_file() else (None, None)
            if state is None:
                raise CheckpointError(f"nothing to resume: {self.ckpt_path} does not exist (start without --resume)")
            ckpt.check_space(info, space)
            self._check_resumable(info)
            if state["kind"] != "checkpoint":
                raise CheckpointError(f"{self.ckpt_path} holds final weights only and cannot be resumed")
        elif self.ckpt_path.exists():
            raise CheckpointError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")

        torch.manual_seed(cfg.seed)  # the initial weights
        self.net: nn.Module = self._new_model(resuming=state is not None)
        self.progress = {"phase": 0, "epoch": 0, "step": 0, "started": False, "global_epoch": 0, "done": False}
        self.metrics: dict[str, Any] = {}
        self.train_state: dict[str, Any] = {}
        if state is not None:
            self.net.load_state_dict(state["model"])
            self.progress, self.metrics = dict(state["progress"]), dict(state["metrics"])
            self.train_state = state.get("train_state") or {}
        self.net.to(self.device)
        if t.channels_last:
            self.net.to(memory_format=torch.channels_last)
            for q in self.net.parameters():  # [C, 1, k, k] and [O, I, 1, 1]: same bytes either way; the
                if q.dim() == 4 and (q.size(1) == 1 or q.shape[2:] == (1, 1)):  # strides gradients get (and DDP expects)
                    q.data = q.data.contiguous()
        self.dist.broadcast_module(self.net)
        self.model: nn.Module = self.net  # what the forward pass calls: the net, or DDP around it
        if dist.active and t.grad_sync == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            import inspect

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Buffers are averaged at checkpoints instead of broadcast at every forward (the keyword changed in torch 2.13).
            sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                    else "broadcast_buffers")
            self.model = DDP(self.net, device_ids=ids, find_unused_parameters=True, **{sync: False})
        self.teacher = None
        if self.train_state.get("teacher") is not None:
            self.teacher = self._new_teacher()
            self.teacher.load_state_dict(self.train_state["teacher"])
        self.val_images = calibration_images(self.dataset, t.val_bn_images, cfg.seed)
        if state is None and dist.main:
            self.metrics.update(self._fresh_metrics())
        self.log = RunLog(run_dir, keep_epochs=self.progress["global_epoch"] if resume else None) if dist.main else None
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())

    # ---- what a subclass changes (edgenas.train.finetune trains one static subnet) --------------
    COMMAND = "train"  # the CLI command that resumes a run (in messages)
    FINAL_NAME = ckpt.SUPERNET_NAME  # the file the finished run writes
    WHAT = "training"  # the first word of the start message

    def _load_space(self):
        space = load_space(self.cfg.space)
        if space.num_classes != self.dataset.num_classes:
            log.info("space %s: classifier set to the dataset's %d classes", space.name, self.dataset.num_classes)
            space = space.replace(num_classes=self.dataset.num_classes)
        return space

    def _check_resumable(self, info: ckpt.CheckpointInfo) -> None:
        if info.arch is not None:
            raise CheckpointError(f"{self.ckpt_path} is a fine-tune run, not a supernet training run: continue it "
                                  f"with `edgenas finetune --out {self.run_dir} --resume`")

    def _new_model(self, resuming: bool) -> nn.Module:
        """The network trained, with its initial weights (a resumed run then loads the checkpoint's)."""
        return Supernet(self.space, dropout=self.cfg.train.dropout)

    def _fresh_metrics(self) -> dict[str, Any]:
        """Metrics known before the first step of a new run (rank 0 only)."""
        return {}

    def _activate(self, arch: Arch) -> None:
        """Make the net compute `arch` for the next forward pass."""
        self.net.set_active(arch)

    def _subnet_record(self) -> dict | None:
        """`{"arch": ..., "finetune": {...}}` for a fine-tune run's files; None for a supernet's."""
        return None

    def _payload(self, kind: str, train_state: dict | None = None) -> dict[str, Any]:
        return ckpt.payload(kind, self.cfg, self.space, self.net, self.progress, self.metrics, train_state,
                            self._subnet_record())

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        phases = self.cfg.schedule.phases
        # Read before any step, so that every rank agrees on whether the run still has to be finished:
        # rank 0 writes the final file only after the steps' collectives, which wait for every rank.
        # (A resumed run with no step left has none; there the other ranks may skip _finish_model,
        # which is local, and only rank 0's model is written.)
        finished = (self.run_dir / self.FINAL_NAME).is_file()
        if self.dist.main:
            log.info("%s %s on %s (%d steps of %d per epoch, %d process%s, %s) -> %s", self.WHAT,
                     self.space.name, self.dataset.describe(), self.steps, self.cfg.train.batch_size, self.dist.world,
                     "es" if self.dist.world > 1 else "", self.device, self.run_dir)
        for p in range(self.progress["phase"], len(phases)):
            self._run_phase(p)
            if self.signals.signum is not None:
                return self._result("stopped")
        if not finished:
            self._finish_model()
            if self.dist.main:
                self._final()
        self.dist.barrier()
        return self._result("done")

    def _result(self, status: str):
        return TrainResult(self.run_dir, self.net, status, self.metrics, self.signals.signum if status == "stopped" else None)

    def _run_phase(self, p: int) -> None:
        phase, sampler = self.cfg.schedule.phases[p], self.samplers[p]
        if not self.progress["started"]:
            if phase.sort_channels:
                self.net.sort_channels()
            if phase.distill == "teacher" and self.teacher is None:
                self.teacher = self._new_teacher()
            self.progress.update(phase=p, epoch=0, step=0, started=True)
            self.train_state = {}
        optimizer = self._optimizer(phase)
        total, warmup = phase.epochs * self.steps, round(phase.warmup_epochs * self.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
        if self.train_state.get("optimizer") is not None:
            optimizer.load_state_dict(self.train_state["optimizer"])
            scheduler.load_state_dict(self.train_state["scheduler"])
        if self.dist.main:
            log.info("phase %d/%d %s: %d epochs, lr %g, %s", p + 1, len(self.cfg.schedule.phases), phase.name,
                     phase.epochs, phase.lr, sampler.describe())
        started = time.perf_counter()
        for e in range(self.progress["epoch"], phase.epochs):
            record = self._run_epoch(p, e, optimizer, scheduler)
            if record is None:  # stopped by a signal; the checkpoint is written
                return
            last_epoch = e + 1 == phase.epochs
            t = self.cfg.train
            if self.dist.main and t.validate and (last_epoch or (t.val_every and (e + 1) % t.val_every == 0)):
                record.update(self._validate(sampler))
            ge = self.progress["global_epoch"] + 1
            if last_epoch:
                self.progress.update(phase=p + 1, epoch=0, step=0, started=False, global_epoch=ge,
                                     done=p + 1 == len(self.cfg.schedule.phases))
                self.train_state = {}
            else:
                self.progress.update(epoch=e + 1, step=0, global_epoch=ge)
                self.train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            if self.dist.main:
                self._note_metrics(record)
                self.log.add(record)
                (log.debug if self.show_bars else log.info)(_epoch_line(record))
            self._save_checkpoint(None)
        if self.dist.main:
            epochs = [r for r in self.log.epochs() if r["phase"] == phase.name]
            last = epochs[-1] if epochs else {}
            summary = {"event": "phase", "phase": phase.name, "phase_index": p, "global_epoch": self.progress["global_epoch"],
                       "epochs": phase.epochs, "seconds": round(time.perf_counter() - started, 2),
                       **{k: last.get(k) for k in ("loss", "train_acc", "val_acc_largest", "val_acc_smallest")}}
            self.log.add(summary)
            if summary["seconds"] > 60:  # cheap next to the phase; short runs plot once at the end
                self.log.plot()
            log.info("phase %d/%d %s done in %.1f s: loss %.3f, val accuracy largest %s, smallest %s", p + 1,
                     len(self.cfg.schedule.phases), phase.name, summary["seconds"], summary["loss"] or float("nan"),
                     _pct(summary["val_acc_largest"]), _pct(summary["val_acc_smallest"]))

    def _run_epoch(self, p, e, optimizer, scheduler) -> dict | None:
        phase, cfg, t = self.cfg.schedule.phases[p], self.cfg, self.cfg.train
        start = self.progress["step"]
        arch_rng = np.random.default_rng(seed_of(cfg.seed, _ARCHS, p, e))
        step_archs = [self.samplers[p].step(arch_rng) for _ in range(self.steps)]
        if start == 0:
            torch.manual_seed(seed_of(cfg.seed, _DROPOUT, p, e, self.dist.rank))
            sums = torch.zeros(4, dtype=torch.float64)  # loss * images, correct, images (per subnet), data images
        else:
            self._restore_rng()
            sums = self.train_state["epoch_sums"].clone() if self.dist.main else torch.zeros(4, dtype=torch.float64)
        self.net.train()
        batches = self._batches(p, e, start)
        bar = self._bar(p, e, start)
        t0, images0 = time.perf_counter(), float(sums[3])
        params = [q for q in self.net.parameters() if q.requires_grad]
        for s in range(start, self.steps):
            x, y = next(batches)
            if t.crop_padding or t.flip:
                gen = torch.Generator().manual_seed(seed_of(cfg.seed, _AUGMENT, p, e, self.dist.rank, s))
                x = augment(x, self.black, t.crop_padding, t.flip, gen)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            archs = step_archs[s]
            loss_sum, correct, nonfinite = self._forward_backward(phase, archs, x, y)
            flags = self.dist.sync_step(params, [float(self.signals.signum is not None), float(nonfinite)],
                                        average_grads=self.model is self.net)
            if flags[1]:
                raise TrainingDiverged(
                    f"the loss became NaN or infinite in phase '{phase.name}' (epoch {e + 1}, step {s + 1}); "
                    + (f"the last good checkpoint {self.ckpt_path} is kept" if self.ckpt_path.exists() else "no checkpoint was written yet")
                    + f". Lower the learning rate (e.g. --set schedule.phases.{p}.lr={phase.lr / 10:g})"
                    + (" and continue with --resume" if self.ckpt_path.exists() else ""))
            optimizer.step()
            scheduler.step()
            n = len(archs) * len(y)
            sums += torch.tensor([loss_sum, correct, n, len(y)], dtype=torch.float64)
            if self.on_step is not None:
                self.on_step(StepEvent(phase, p, e, s, archs, loss_sum / n))
            if bar is not None:
                rate = (float(sums[3]) - images0) * self.dist.world / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({"loss": f"{sums[0] / sums[2]:.3f}", "acc": f"{100 * sums[1] / sums[2]:.1f}%",
                                 "img/s": f"{rate:.0f}"}, refresh=False)
                bar.update(1)
            if flags[0]:  # a signal on some rank: every rank stops after this same step
                if bar is not None:
                    bar.close()
                self.progress.update(epoch=e, step=s + 1)
                self.train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                    "epoch_sums": self._reduce(sums)}
                self._save_checkpoint(self._rng_states())
                if self.dist.main:
                    self.log.plot()
                    log.warning("stopped in phase '%s' epoch %d step %d/%d; checkpoint %s; continue with: "
                                "edgenas %s --out %s --resume", phase.name, e + 1, s + 1, self.steps,
                                self.ckpt_path, self.COMMAND, self.run_dir)
                if self.signals.signum is None:
                    self.signals.signum = signal.SIGTERM
                return None
        if bar is not None:
            bar.close()
        sums = self._reduce(sums)
        seconds = time.perf_counter() - t0
        return {"event": "epoch", "phase": phase.name, "phase_index": p, "epoch": e + 1,
                "global_epoch": self.progress["global_epoch"], "steps": self.steps,
                "loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2]),
                "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                "images_per_s": round((float(sums[3]) - images0) / max(seconds, 1e-9), 1)}

    def _forward_backward(self, phase: PhaseConfig, archs: list[Arch], x, y) -> tuple[float, int, bool]:
        """Sum the gradients of every subnet of the step; (loss * images, correct, any non-finite loss)."""
        t = self.cfg.train
        self.model.zero_grad(set_to_none=True)
        loss_sum, correct, nonfinite = 0.0, 0, False
        soft_targets: torch.Tensor | None = None
        teacher_cache: dict[int, torch.Tensor] = {}
        for i, arch in enumerate(archs):
            self._activate(arch)
            xr = resize(x, arch.resolution)
            if t.channels_last:
                xr = xr.contiguous(memory_format=torch.channels_last)
            sync = i == len(archs) - 1 or self.model is self.net
            with contextlib.nullcontext() if sync else self.model.no_sync():
                logits = self.model(xr)
                if phase.distill == "inplace" and i > 0:
                    loss = soft_cross_entropy(logits, soft_targets)
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
                    if phase.distill == "teacher" and t.kd_ratio > 0:
                        if arch.resolution not in teacher_cache:
                            with torch.no_grad():
                                teacher_cache[arch.resolution] = F.softmax(self.teacher(xr), dim=1)
                        loss = loss + t.kd_ratio * soft_cross_entropy(logits, teacher_cache[arch.resolution])
                if phase.distill == "inplace" and i == 0:
                    soft_targets = F.softmax(logits.detach(), dim=1)
                loss.backward()
            value = loss.detach().item()
            nonfinite |= not math.isfinite(value)
            loss_sum += value * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
        return loss_sum, correct, nonfinite

    # ---- pieces ----------------------------------------------------------------------------------
    def _optimizer(self, phase: PhaseConfig) -> torch.optim.Optimizer:
        t = self.cfg.train
        decay = [q for q in self.net.parameters() if q.ndim > 1]
        no_decay = [q for q in self.net.parameters() if q.ndim <= 1]  # BatchNorm and biases, as OFA
        return torch.optim.SGD([{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                               lr=phase.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0)

    def _new_teacher(self) -> nn.Module:
        """A frozen copy of the full network. Its BatchNorms use batch statistics (as OFA's teacher in
        train mode does), so it needs no recalibration at the resolutions it is fed."""
        return self._freeze(self.net.materialize(largest(self.space)))

    def _freeze(self, teacher: nn.Module) -> nn.Module:
        """`teacher` frozen, its BatchNorms on batch statistics, on the training device and layout."""
        for m in teacher.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False
                m.running_mean = m.running_var = m.num_batches_tracked = None
        teacher.requires_grad_(False).eval().to(self.device)
        if self.cfg.train.channels_last:
            teacher.to(memory_format=torch.channels_last)
        return teacher

    def _batches(self, p: int, e: int, start: int):
        """This rank's shard of the epoch's seeded order, from batch `start` on."""
        n, world = len(self.dataset.train), self.dist.world
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_of(self.cfg.seed, _DATA, p, e)))
        local = order[: n // world * world][self.dist.rank::world]
        b = self.local_batch
        split = self.dataset.train
        if isinstance(split, TensorSplit):
            return (split.batch(local[s * b:(s + 1) * b]) for s in range(start, self.steps))
        from torch.utils.data import DataLoader, Subset

        subset = Subset(split, local[start * b:self.steps * b].tolist())
        return iter(DataLoader(subset, batch_size=b, num_workers=self.cfg.train.workers))

    def _bar(self, p: int, e: int, start: int):
        if not self.show_bars:
            return None
        from edgenas.progress import progress_bar

        phase = self.cfg.schedule.phases[p]
        return progress_bar(self.steps, f"{p + 1}/{len(self.cfg.schedule.phases)} {phase.name} {e + 1}/{phase.epochs}",
                            "step", initial=start, file=sys.stderr)

    def _reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if not self.dist.active:
            return sums
        import torch.distributed as tdist

        out = sums.to(self.device)
        tdist.all_reduce(out)
        return out.cpu()

    def _rng_states(self) -> list:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return self.dist.gather(state)

    def _restore_rng(self) -> None:
        states = self.train_state.get("rng") or []
        if len(states) != self.dist.world:
            log.warning("the checkpoint was written by %d process(es), this run has %d: the dropout masks of the "
                        "rest of this epoch will differ from an uninterrupted run", len(states), self.dist.world)
            torch.manual_seed(seed_of(self.cfg.seed, _DROPOUT, self.progress["phase"], self.progress["epoch"], self.dist.rank, 1))
            return
        state = states[self.dist.rank]
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _validate(self, sampler: PhaseSampler) -> dict:
        archs = [sampler.largest(), sampler.smallest()]
        results = evaluate_archs(self.net, archs, self.dataset, "val", self.val_images, self.cfg.train.eval_batch_size,
                                 device=self.device, channels_last=self.cfg.train.channels_last)
        return {"val_acc_largest": results[0].accuracy, "val_acc_smallest": results[1].accuracy,
                "val_largest": str(archs[0]), "val_smallest": str(archs[1])}

    def _note_metrics(self, record: dict) -> None:
        keys = ("phase", "epoch", "global_epoch", "loss", "train_acc", "val_acc_largest", "val_acc_smallest")
        self.metrics["last"] = {k: record.get(k) for k in keys}
        acc = record.get("val_acc_largest")
        if acc is not None and acc >= (self.metrics.get("best") or {}).get("val_acc_largest", -1):
            self.metrics["best"] = dict(self.metrics["last"])

    def _save_checkpoint(self, rng: list | None) -> None:
        """Every rank averages BatchNorm statistics (a collective); rank 0 writes."""
        self.dist.average_buffers(self.net)
        if rng is None and self.progress["step"] > 0:
            rng = self._rng_states()
        if not self.dist.main:
            return
        state = dict(self.train_state)
        state["rng"] = rng
        state["teacher"] = None if self.teacher is None else {k: v.cpu() for k, v in self.teacher.state_dict().items()}
        ckpt.save(self.ckpt_path, self._payload("checkpoint", state))

    def _finish_model(self) -> None:
        """What every rank does to the trained model before rank 0 tests and writes it (nothing here)."""

    def _final(self) -> None:
        """Test accuracy of the last phase's largest and smallest subnets; write supernet.pt and the plot."""
        t = self.cfg.train
        if t.test_at_end:
            archs = [self.samplers[-1].largest(), self.samplers[-1].smallest()]
            results = evaluate_archs(self.net, archs, self.dataset, "test", t.bn_recal_images, t.eval_batch_size,
                                     seed=self.cfg.seed, device=self.device, channels_last=t.channels_last)
            self.metrics["final"] = {"test_acc_largest": results[0].accuracy, "test_acc_smallest": results[1].accuracy,
                                     "largest": str(archs[0]), "smallest": str(archs[1]),
                                     "macs_largest": results[0].macs, "macs_smallest": results[1].macs}
            self.log.add({"event": "final", "global_epoch": self.progress["global_epoch"], **self.metrics["final"]})
            log.info("test accuracy: largest subnet %s (%.1f M MACs), smallest %s (%.1f M MACs)", _pct(results[0].accuracy),
                     results[0].macs / 1e6, _pct(results[1].accuracy), results[1].macs / 1e6)
        ckpt.save(self.ckpt_path, self._payload("checkpoint", {"rng": None, "teacher": None}))
        ckpt.save(self.run_dir / ckpt.SUPERNET_NAME, self._payload("supernet"))
        self.log.plot()
        log.info("supernet: %s", self.run_dir / ckpt.SUPERNET_NAME)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _epoch_line(r: dict) -> str:
    val = ""
    if r.get("val_acc_largest") is not None:
        val = f", val largest {_pct(r['val_acc_largest'])} smallest {_pct(r['val_acc_smallest'])}"
    return (f"  {r['phase']} epoch {r['epoch']}: loss {r['loss']:.3f}, train acc {_pct(r['train_acc'])}{val}, "
            f"{r['images_per_s']:.0f} img/s, {r['seconds']:.1f} s")
