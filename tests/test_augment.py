"""Training augmentation: random crops with padding and flips, seeded per step."""
from __future__ import annotations

import pytest
import torch

from edgenas.errors import ConfigError
from edgenas.train import apply_overrides
from edgenas.train.augment import augment


def batch(b=6, c=3, h=8, w=9):
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


def test_off_is_the_identity():
    x = batch()
    assert torch.equal(augment(x, torch.zeros(3)), x)


def test_each_crop_is_a_shift_of_its_image_padded_with_the_fill():
    x, fill, p = torch.randn(6, 3, 8, 9), torch.tensor([-0.7, -1.3, -2.9]), 2
    out = augment(x, fill, crop_padding=p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for i in range(len(x)):
        padded = torch.empty(3, 8 + 2 * p, 9 + 2 * p)
        padded[:] = fill.view(3, 1, 1)
        padded[:, p:p + 8, p:p + 9] = x[i]
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if torch.equal(out[i], padded[:, dy:dy + 8, dx:dx + 9])]
        assert found, f"image {i} is not a padded crop"
        shifts.add(found[0])
    assert len(shifts) > 1  # the offsets are random, not one for the whole batch


def test_flip_mirrors_about_half_the_images_and_the_same_seed_repeats():
    x = torch.randn(400, 3, 4, 5)
    out = augment(x, torch.zeros(3), flip=True, generator=torch.Generator().manual_seed(1))
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 150 < sum(mirrored) < 250
    again = augment(x, torch.zeros(3), flip=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_negative_padding_is_a_config_error():
    with pytest.raises(ConfigError, match="crop_padding"):
        apply_overrides({"space": "mbv3-tiny"}, ["train.crop_padding=-1"])
