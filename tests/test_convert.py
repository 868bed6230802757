"""OFA-MobileNetV3 checkpoints convert to our Supernet and compute the same subnets.

The reference is the real OFA implementation (`pip install --no-deps ofa`), built with random
weights, BatchNorm statistics and kernel-transform matrices, so a wrong mapping shows up.
"""
import numpy as np
import pytest
import torch

from conftest import require_or_skip
from edgenas.errors import CheckpointError
from edgenas.space import load_space, make_arch
from edgenas.supernet import Supernet
from edgenas.supernet.convert import convert_ofa_state_dict, load_ofa_checkpoint
from ofa_stubs import import_ofa_mbv3, ofa_available

TOL = 1e-4


def _random_reference(width: float, resolution: int, seed: int = 0):
    """An OFAMobileNetV3 whose every parameter and statistic is random but well scaled."""
    require_or_skip(ofa_available(), "the reference OFA package is not installed (pip install --no-deps ofa)")
    OFA = import_ofa_mbv3()
    with torch.random.fork_rng():  # OFA initialises its layers from the global generator
        torch.manual_seed(seed)
        net = OFA(n_classes=1000, width_mult=width, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                  depth_list=[2, 3, 4])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):  # not the identity, so a mixed-up transform shows
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bn.weight"):
                p.uniform_(0.5, 1.5, generator=g)
            elif p.dim() == 1:
                p.normal_(0, 0.1, generator=g)
        net.classifier.linear.weight.mul_(10)  # logits of order 1, as in a trained network
        # BN statistics of one real batch keep activations in range through 20 blocks; then
        # they are perturbed, so that mis-sliced statistics change the output
        net.set_bn_param(momentum=1.0, eps=1e-5)
        net.train()(torch.randn(4, 3, resolution, resolution, generator=g))
        net.set_bn_param(momentum=0.1, eps=1e-5)
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            shift = torch.randn(bn.num_features, generator=g)
            bn.running_mean.add_(0.2 * bn.running_var.sqrt() * shift)
            bn.running_var.mul_(torch.empty(bn.num_features).uniform_(0.8, 1.25, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def reference():
    cache = {}

    def get(width: float, resolution: int):
        if width not in cache:
            cache[width] = _random_reference(width, resolution)
        return cache[width]

    return get


def _random_config(rng: np.random.Generator):
    return ([int(k) for k in rng.choice([3, 5, 7], 20)], [int(e) for e in rng.choice([3, 4, 6], 20)],
            [int(d) for d in rng.choice([2, 3, 4], 5)])


def _converted(ofa_net, space_name: str) -> Supernet:
    net = Supernet(load_space(space_name))
    net.load_state_dict(convert_ofa_state_dict(ofa_net.state_dict(), net.space))
    return net.eval()


@pytest.mark.parametrize("width,resolution,n_random", [(1.0, 128, 2), (1.2, 160, 1)])
def test_materialized_subnets_match_ofa_active_subnets(reference, width, resolution, n_random):
    ofa = reference(width, resolution)
    net = _converted(ofa, f"mbv3-w{width}")
    rng = np.random.default_rng(1)
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    configs = [_random_config(rng) for _ in range(n_random)] + [([7] * 20, [6] * 20, [4] * 5)]
    outputs = []
    with torch.no_grad():
        for ks, es, ds in configs:
            ofa.set_active_subnet(ks=ks, e=es, d=ds)
            expected = ofa.get_active_subnet(preserve_weight=True).eval()(x)
            arch = make_arch(net.space, resolution, ks, es, ds)
            got = net.materialize(arch)(x)
            assert (got - expected).abs().max().item() <= TOL, str(arch)
            net.set_active(arch)  # the elastic forward pass agrees too
            assert (net(x) - expected).abs().max().item() <= TOL, str(arch)
            outputs.append(expected)
    # the comparison is meaningful: different subnets give outputs far apart at this tolerance
    assert (outputs[0] - outputs[1]).abs().max().item() > 100 * TOL


def test_ignoring_one_kernel_transform_would_be_detected(reference):
    """Negative control: a converter that dropped OFA's 5to3 matrix of a single block (leaving
    our identity) would fail the comparison above by a wide margin."""
    ofa = reference(1.0, 128)
    net = _converted(ofa, "mbv3-w1.0")
    ks, es, ds = [3] * 20, [4] * 20, [2] * 5
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net.units[2][0].dw.conv.transform_5to3.copy_(torch.eye(9))
        got = net.materialize(make_arch(net.space, 128, ks, es, ds))(x)
        ofa.set_active_subnet(ks=ks, e=es, d=ds)
        expected = ofa(x)
    assert (got - expected).abs().max().item() > 10 * TOL


def test_old_spelling_and_checkpoint_file_load(reference, tmp_path):
    """Published checkpoints call the block body `mobile_inverted_conv` and wrap the weights in
    {'state_dict': ...}; old ones lack num_batches_tracked."""
    ofa = reference(1.0, 128)
    state = ofa.state_dict()
    old = {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v
           for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert any(".mobile_inverted_conv." in k for k in old)
    path = tmp_path / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save({"epoch": 3, "state_dict": old}, path)
    net = load_ofa_checkpoint(path, "mbv3-w1.0")
    direct = convert_ofa_state_dict(state, "mbv3-w1.0")
    loaded = net.state_dict()
    for name, tensor in direct.items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(loaded[name], tensor), name


def test_w12_checkpoint_into_w10_space_names_the_key_and_shapes(reference):
    state = reference(1.2, 160).state_dict()
    with pytest.raises(CheckpointError, match=r"'first_conv\.conv\.weight' has shape \(24, 3, 3, 3\).*expects \(16, 3, 3, 3\)"):
        convert_ofa_state_dict(state, "mbv3-w1.0")


def test_incomplete_or_foreign_state_dicts_are_rejected(reference, tmp_path):
    state = dict(reference(1.0, 128).state_dict())
    del state["blocks.5.conv.depth_conv.conv.7to5_matrix"]
    with pytest.raises(CheckpointError, match=r"lacks 'units\.1\.0\.dw\.conv\.transform_7to5'"):
        convert_ofa_state_dict(state, "mbv3-w1.0")
    shallow = {k: v for k, v in state.items() if not any(k.startswith(f"blocks.{b}.") for b in range(17, 21))}
    with pytest.raises(CheckpointError, match=r"has 16 elastic blocks .* \(20\)"):
        convert_ofa_state_dict(shallow, "mbv3-w1.0")
    with pytest.raises(CheckpointError, match=r"'head\.weight' has no counterpart"):
        convert_ofa_state_dict({"head.weight": torch.zeros(3)}, "mbv3-w1.0")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        convert_ofa_state_dict({"state_dict": [1, 2]}, "mbv3-w1.0")
    with pytest.raises(CheckpointError, match="not found"):
        load_ofa_checkpoint(tmp_path / "missing.pth", "mbv3-w1.0")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="got a corrupt, truncated or non-torch file .*, expected an OFA checkpoint"):
        load_ofa_checkpoint(tmp_path / "junk.pth", "mbv3-w1.0")
    import argparse

    torch.save({"state_dict": {}, "payload": argparse.Namespace(run="code")}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError) as err:
        load_ofa_checkpoint(tmp_path / "pickled.pth", "mbv3-w1.0")
    assert "can run code" in str(err.value) and "weights_only" not in str(err.value)
