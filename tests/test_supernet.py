import io

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.nn import elastic
from edgenas.space import Arch, largest, load_space, sample, smallest
from edgenas.supernet import Supernet

PRESETS = ["mbv3-w1.0", "mbv3-w1.2", "mbv3-tiny"]


def randomized_supernet(space_name: str, seed: int = 0) -> Supernet:
    """A supernet whose BN statistics, affine terms and kernel transforms are not at their
    initial values, so a slicing or transform mistake changes the output."""
    torch.manual_seed(seed)
    net = Supernet(load_space(space_name))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        for name, p in net.named_parameters():
            if "transform_" in name:
                p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("name", PRESETS)
def test_materialized_subnet_equals_active_supernet(name):
    net = randomized_supernet(name)
    space = net.space
    rng = np.random.default_rng(0)
    archs = [largest(space), smallest(space)] + sample(space, rng, 4)
    for arch in archs:
        x = torch.randn(1, 3, arch.resolution, arch.resolution)
        net.set_active(arch)
        with torch.no_grad():
            expected = net(x)
            sub = net.materialize(arch)
            got = sub(x)
        assert (expected - got).abs().max().item() <= 1e-5, str(arch)
        assert sub.arch == str(arch) and sub.space == space.name and not sub.training


def test_materialized_subnet_is_static_and_standalone():
    net = randomized_supernet("mbv3-tiny")
    arch = sample(net.space, np.random.default_rng(1))
    sub = net.materialize(arch)
    elastic_types = (elastic.ElasticMBConv, elastic.ElasticPointwise, elastic.ElasticDepthwise,
                     elastic.ElasticSE, elastic.ElasticBatchNorm2d)
    assert not any(isinstance(m, elastic_types) for m in sub.modules())
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    before = sub(x)
    with torch.no_grad():  # the subnet owns its weights: changing the supernet changes nothing
        for p in net.parameters():
            p.mul_(0.5)
    assert torch.equal(before, sub(x))
    # Its saved state holds only its own weights (no storage shared with the supernet).
    buf = io.BytesIO()
    torch.save(sub.state_dict(), buf)
    n_floats = sum(t.numel() for t in sub.state_dict().values() if t.is_floating_point())
    assert len(buf.getvalue()) < 4 * n_floats * 1.05 + 200_000
    # A fresh static net with the same arch loads it.
    twin = Supernet(net.space).materialize(arch)
    twin.load_state_dict(sub.state_dict())
    assert torch.equal(twin.eval()(x), before)


def test_materialize_keeps_the_active_arch_and_mode():
    net = randomized_supernet("mbv3-tiny").train()
    a, b = sample(net.space, np.random.default_rng(2), 2)
    net.set_active(a)
    sub = net.materialize(b)
    assert net.active == a and sub.training


def test_depth_keeps_the_first_blocks():
    net = randomized_supernet("mbv3-tiny")
    space = net.space
    deep = largest(space)
    shallow = Arch(deep.resolution, tuple(unit[:2] for unit in deep.units))
    sub = net.materialize(shallow)
    full = net.materialize(deep)
    # Block j of the shallow subnet carries the weights of block j of the unit.
    assert torch.equal(sub[2].expand.conv.weight, full[2].expand.conv.weight)
    assert torch.equal(sub[2 + 2].project.conv.weight, full[2 + 4].project.conv.weight)


def test_small_kernels_use_the_learned_transforms():
    net = randomized_supernet("mbv3-tiny")
    space = net.space
    k3 = Arch(32, tuple(((3, 6),) * 4 for _ in space.units))
    k7 = Arch(32, tuple(((7, 6),) * 4 for _ in space.units))
    x = torch.randn(1, 3, 32, 32)
    first_block = lambda arch: net.materialize(arch)[:3](x)  # stem, fixed block, first elastic block
    before3, before7 = first_block(k3), first_block(k7)
    with torch.no_grad():
        net.units[0][0].dw.conv.transform_5to3.mul_(1.5)
    assert (first_block(k3) - before3).abs().max() > 1e-3
    assert torch.equal(first_block(k7), before7)
    # The 3x3 kernel is the transformed centre of the transformed 5x5 centre of the 7x7 weight.
    dw = net.units[0][0].dw.conv
    w = dw.weight[:4]
    w5 = (w[:, :, 1:6, 1:6].reshape(4, 25) @ dw.transform_7to5.T).reshape(4, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(4, 9) @ dw.transform_5to3.T).reshape(4, 1, 3, 3)
    assert torch.allclose(dw.kernel(4, 3), w3)


def test_sort_channels_keeps_the_full_network_and_orders_by_importance():
    net = randomized_supernet("mbv3-tiny")
    arch = largest(net.space)
    x = torch.randn(2, 3, 32, 32)
    net.set_active(arch)
    before = net(x)
    net.sort_channels()
    assert torch.allclose(net(x), before, atol=1e-5)
    importance = net.units[1][0].project.conv.weight.abs().sum((0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_training_mode_updates_only_the_active_bn_slice():
    net = randomized_supernet("mbv3-tiny").train()
    arch = smallest(net.space)
    net.set_active(arch)
    bn = net.units[0][0].expand.bn
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, arch.resolution, arch.resolution)).sum().backward()
    mid = net.units[0][0].mid_channels(arch.units[0][0][1])
    assert not torch.equal(bn.running_mean[:mid], before[:mid])
    assert torch.equal(bn.running_mean[mid:], before[mid:])


def test_subnet_is_materialize_then_bn_recalibration_in_eval_mode():
    from edgenas.data import load_dataset
    from edgenas.train.bn import recalibrate_bn
    from edgenas.train.evaluate import calibration_images

    net = randomized_supernet("mbv3-tiny")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = sample(net.space, np.random.default_rng(3))
    images = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    manual = recalibrate_bn(net.materialize(arch), images).eval()
    x = torch.randn(4, 3, arch.resolution, arch.resolution)
    for got in (net.subnet(arch, images), net.subnet(str(arch), images)):
        assert not got.training and torch.allclose(got(x), manual(x), atol=1e-5)
        assert not torch.allclose(got(x), net.materialize(arch).eval()(x), atol=1e-3)  # not the stale statistics
    data = load_dataset(None)  # the embedded digits: `bn_images` seeded training images of it
    by_data = net.subnet(arch, data, bn_images=30, seed=2)
    assert torch.allclose(by_data(x), recalibrate_bn(net.materialize(arch), calibration_images(data, 30, 2)).eval()(x),
                          atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the supernet is untouched
