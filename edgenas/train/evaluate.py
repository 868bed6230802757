"""Accuracy of subnets: materialize, recalibrate BatchNorm on training images, then test.

    results = evaluate_archs(supernet, archs, dataset, split="val")   # the accuracy predictor's data
    results[0].accuracy, results[0].macs

The supernet is never modified: each subnet is a standalone copy (`supernet.subnet`) whose
BatchNorm statistics are re-estimated on the same seeded sample of training images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.data import ImageDataset
from edgenas.nn.static import fold_batchnorm
from edgenas.space import Arch, arch_cost
from edgenas.supernet import Supernet
from edgenas.train.bn import resize


@dataclass(frozen=True)
class EvalResult:
    arch: Arch
    accuracy: float  # top-1 accuracy in [0, 1]
    loss: float  # mean cross-entropy
    images: int  # images evaluated
    macs: int  # multiply-accumulates of one forward pass
    params: int  # parameters (BatchNorm included)

    def to_dict(self) -> dict:
        return {"arch": str(self.arch), "resolution": self.arch.resolution, "accuracy": self.accuracy,
                "loss": self.loss, "images": self.images, "macs": self.macs, "params": self.params}


def calibration_images(dataset: ImageDataset, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded sample of `n` training images (all of them when the split is smaller)."""
    return dataset.sample_images("train", n, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def accuracy(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], resolution: int | None = None,
             device: torch.device | str = "cpu", channels_last: bool = False) -> tuple[float, float, int]:
    """(accuracy, mean loss, images) of `net` in eval mode over `batches`, resized to `resolution`."""
    was_training = net.training
    net.eval()
    correct, loss, seen = 0, 0.0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            if resolution:
                x = resize(x, resolution)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = net(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    finally:
        net.train(was_training)
    return correct / max(seen, 1), loss / max(seen, 1), seen


def evaluate_archs(supernet: Supernet, archs: Iterable[Arch], dataset: ImageDataset, split: str = "test",
                   bn_images: int | torch.Tensor = 2000, batch_size: int = 500, seed: int = 0,
                   device: torch.device | str | None = None, channels_last: bool | None = None,
                   on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
    """Accuracy on `split` of each arch after BatchNorm recalibration on `bn_images` training images
    (a count, or the images themselves). The same images calibrate every arch."""
    device = torch.device(device) if device is not None else next(supernet.parameters()).device
    channels_last = device.type == "cpu" if channels_last is None else channels_last
    calib = calibration_images(dataset, bn_images, seed) if isinstance(bn_images, int) else bn_images
    results = []
    for arch in archs:
        net = supernet.subnet(arch, calib, batch_size=batch_size, device=device, channels_last=channels_last)
        fold_batchnorm(net)  # the statistics are final: one pass less per layer on the test images
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        acc, loss, seen = accuracy(net, dataset.batches(split, batch_size), arch.resolution, device, channels_last)
        cost = arch_cost(supernet.space, arch)
        result = EvalResult(arch, acc, loss, seen, cost.macs, cost.params)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
