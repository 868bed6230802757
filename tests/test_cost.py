"""The analytic cost model equals counts taken on the materialized networks."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgenas.nn.static import ConvBNAct, GlobalPool, MBConv, SqueezeExcite, Classifier
from edgenas.space import CostTable, arch_cost, encode, largest, load_space, sample, smallest
from edgenas.supernet import Supernet

PRESETS = ["mbv3-w1.0", "mbv3-w1.2", "mbv3-tiny"]


def measured_peak_activations(net, x) -> int:
    """Run the net and record, per step, the elements of its input, its output and (inside a
    residual block, after the block's first step) the block input held for the final add."""
    peaks, hooks, held = [], [], {"n": 0, "first": False}

    def step_hook(module, inputs, output):
        extra = held["n"] if not held["first"] else 0
        held["first"] = False
        peaks.append(inputs[0].numel() + output.numel() + extra)

    def block_pre(module, inputs):
        held["n"] = inputs[0].numel() if module.residual else 0
        held["first"] = module.expand is not None  # the expand step runs before anything is held

    def block_post(module, inputs, output):
        held["n"] = 0

    for m in net.modules():
        if isinstance(m, (ConvBNAct, SqueezeExcite, GlobalPool, Classifier)):
            hooks.append(m.register_forward_hook(step_hook))
        if isinstance(m, MBConv):
            hooks.append(m.register_forward_pre_hook(block_pre))
            hooks.append(m.register_forward_hook(block_post))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return max(peaks)


@pytest.mark.parametrize("name", PRESETS)
def test_cost_model_equals_counts_on_the_materialized_net(name):
    space = load_space(name)
    supernet = Supernet(space).eval()
    rng = np.random.default_rng(0)
    archs = [largest(space), smallest(space)] + sample(space, rng, 50)
    table = CostTable(space)
    vectorised = table(encode(space, archs))
    for i, arch in enumerate(archs):
        cost = arch_cost(space, arch)
        # Count on the materialized net moved to the meta device: same modules and shapes, no arithmetic.
        net = supernet.materialize(arch).to("meta")
        x = torch.zeros(1, 3, arch.resolution, arch.resolution, device="meta")
        with FlopCounterMode(display=False) as counter:
            with torch.no_grad():
                net(x)
        assert counter.get_total_flops() == 2 * cost.macs, str(arch)
        assert sum(p.numel() for p in net.parameters()) == cost.params
        assert 4 * measured_peak_activations(net, x) == cost.peak_activation_bytes
        assert vectorised["macs"][i] == cost.macs
        assert vectorised["params"][i] == cost.params
        assert vectorised["peak_activation_bytes"][i] == cost.peak_activation_bytes


def test_costs_grow_with_the_arch():
    space = load_space("mbv3-w1.0")
    small, big = arch_cost(space, smallest(space)), arch_cost(space, largest(space))
    assert small.macs < big.macs and small.params < big.params
    assert small.peak_activation_bytes < big.peak_activation_bytes
