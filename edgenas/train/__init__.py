"""Supernet training: schedules, distillation, BN recalibration, checkpoints."""
from edgenas.train.bn import recalibrate_bn, resize

__all__ = ["recalibrate_bn", "resize"]
