"""Supernet training: schedules as data, distillation, BN recalibration, checkpoints, evaluation.

    from edgenas.train import load_config, train, load_supernet, evaluate_archs
    result = train(load_config("configs/digits-tiny.yaml"), "runs/digits")
    supernet, info = load_supernet("runs/digits/supernet.pt")
    results = evaluate_archs(supernet, archs, load_dataset(info.data), split="val")
"""
from edgenas.train.bn import recalibrate_bn, resize
from edgenas.train.checkpoint import CheckpointInfo, load_supernet
from edgenas.train.config import (
    SCHEDULES, PhaseConfig, ScheduleConfig, TrainConfig, TrainSettings, apply_overrides, load_config,
)
from edgenas.train.evaluate import EvalResult, calibration_images, evaluate_archs
from edgenas.train.schedule import PhaseSampler
from edgenas.train.trainer import StepEvent, TrainingDiverged, TrainResult, train

__all__ = [
    "CheckpointInfo", "EvalResult", "PhaseConfig", "PhaseSampler", "SCHEDULES", "ScheduleConfig", "StepEvent",
    "TrainConfig", "TrainResult", "TrainSettings", "TrainingDiverged", "apply_overrides", "calibration_images",
    "evaluate_archs", "load_config", "load_supernet", "recalibrate_bn", "resize", "train",
]
