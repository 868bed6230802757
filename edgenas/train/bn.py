"""BatchNorm recalibration.

The running statistics a supernet accumulates in training mix many subnets, so before a subnet is
evaluated or exported its BatchNorm statistics are re-estimated on training images. This works on
a static network (normally `supernet.materialize(arch)`), so the supernet is never modified.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of a NCHW batch to resolution x resolution (no-op when it already is)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


@torch.no_grad()
def recalibrate_bn(net: nn.Module, images: torch.Tensor, resolution: int | None = None, batch_size: int = 250) -> nn.Module:
    """Replace every BatchNorm's running mean and variance by exact averages over `images`.

    The images are resized to `resolution` (default: `net.resolution` when the net has one) and
    fed in batches; each BatchNorm uses a cumulative average (momentum=None) so every batch counts
    equally. The net's train/eval mode and BN momenta are restored even if this raises.
    """
    resolution = resolution or getattr(net, "resolution", None)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn, bn.momentum) for bn in bns]
    was_training = net.training
    device = next(net.parameters()).device
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        net.train()
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            net(resize(batch, resolution) if resolution else batch)
    finally:
        for bn, momentum in saved:
            bn.momentum = momentum
        net.train(was_training)
    return net
