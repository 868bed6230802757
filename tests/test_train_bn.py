"""BatchNorm recalibration: exact statistics, nothing left behind, the supernet untouched."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.space import largest, load_space, smallest
from edgenas.supernet import Supernet
from edgenas.train import recalibrate_bn

SPACE = load_space("mbv3-tiny")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def subnet():
    torch.manual_seed(0)
    return Supernet(SPACE).materialize(smallest(SPACE))


def test_recalibration_sets_exact_input_means(subnet):
    images = torch.randn(40, 3, 32, 32)
    stem_bn = subnet[0].bn
    before = stem_bn.running_mean.clone()
    recalibrate_bn(subnet, images, batch_size=20)  # resized to the subnet's 24 px
    with torch.no_grad():
        conv_out = subnet[0].conv(F.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False))
    assert not torch.allclose(before, stem_bn.running_mean)
    assert torch.allclose(stem_bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert stem_bn.num_batches_tracked == 2


def test_recalibration_restores_mode_and_momentum_even_after_an_exception(subnet):
    bns = [m for m in subnet.modules() if isinstance(m, nn.BatchNorm2d)]
    bns[3].momentum = 0.3
    subnet.eval()
    calls = []

    def explode(module, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")

    handle = subnet[2].register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        recalibrate_bn(subnet, torch.randn(30, 3, 24, 24), batch_size=10)
    handle.remove()
    assert not subnet.training and not any(m.training for m in subnet.modules())
    assert bns[3].momentum == 0.3 and all(bn.momentum == 0.1 for i, bn in enumerate(bns) if i != 3)
    # And a later recalibration and forward work as usual.
    recalibrate_bn(subnet, torch.randn(8, 3, 24, 24))
    assert subnet(torch.randn(2, 3, 24, 24)).shape == (2, 10)


def test_recalibrating_a_materialized_subnet_leaves_the_supernet_alone():
    torch.manual_seed(0)
    net = Supernet(SPACE)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sub = net.materialize(largest(SPACE))
    recalibrate_bn(sub, torch.randn(16, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not torch.equal(sub[0].bn.running_mean, net.stem.bn.running_mean)


def test_folding_batchnorm_for_evaluation_keeps_the_function():
    from edgenas.nn.static import fold_batchnorm

    torch.manual_seed(1)
    net = Supernet(SPACE).materialize(largest(SPACE))
    recalibrate_bn(net, torch.randn(32, 3, 32, 32), batch_size=16)
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = net.eval()(images)
        folded = fold_batchnorm(net)
        after = folded(images)
    assert folded is net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
