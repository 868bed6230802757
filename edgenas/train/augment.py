"""Training-time augmentation on normalised batches: random crops with padding, horizontal flips.

    x = augment(x, fill, crop_padding=2, flip=True, generator=g)

Each image is padded by `crop_padding` pixels of `fill` (the normalised value of a black pixel,
per channel) and cropped back to its size at a random offset, then mirrored with probability
1/2. Everything is drawn from `generator`, so a step seeded from (seed, phase, epoch, rank, step)
augments the same way when a stopped run resumes.
"""
from __future__ import annotations

import torch


def augment(x: torch.Tensor, fill: torch.Tensor, crop_padding: int = 0, flip: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """x: [B, C, H, W] float; fill: [C] (the value padding takes). Returns a new tensor."""
    b, c, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = fill.view(1, c, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
        x = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mirror.view(b, 1, 1, 1), x.flip(3), x)
    return x.contiguous()
