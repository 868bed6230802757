"""The once-for-all supernet over an OFA-MobileNetV3 search space.

    net = Supernet(load_space("mbv3-tiny"))
    net.set_active(arch)          # the forward pass now computes that subnet
    sub = net.materialize(arch)   # a standalone static nn.Module with its own weights
    sub = net.subnet(arch, data)  # the same, with BatchNorm recalibrated: ready to evaluate or export

Elastic dimensions: kernel size and expand ratio per block (`ElasticMBConv`), depth per unit
(the first D blocks run), and resolution (any input size works; the training loop resizes).
"""
from __future__ import annotations

import torch
from torch import nn

from edgenas.nn.elastic import ElasticMBConv
from edgenas.nn.static import GlobalPool, StaticNet, build_op
from edgenas.space import Arch, SearchSpace, arch_ops, largest, load_space, validate


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace | str, dropout: float = 0.1):
        super().__init__()
        self.space = space = load_space(space)
        self.dropout = dropout
        ops = arch_ops(space, largest(space))
        self.stem = build_op(ops[0])
        self.first_block = build_op(ops[1])
        units = []
        c = space.first_block_channels
        for unit in space.units:
            blocks = []
            for j in range(space.max_depth):
                blocks.append(ElasticMBConv(c, unit.channels, space.kernel_sizes, space.expand_ratios,
                                            unit.stride if j == 0 else 1, unit.act, unit.se, space.se_reduction))
                c = unit.channels
            units.append(nn.ModuleList(blocks))
        self.units = nn.ModuleList(units)
        self.final_expand = build_op(ops[-4])
        self.pool = GlobalPool()
        self.feature_mix = build_op(ops[-2])
        self.classifier = build_op(ops[-1], dropout)
        self.active: Arch = largest(space)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # ---- the active subnet ---------------------------------------------------------------
    def set_active(self, arch: Arch) -> None:
        validate(arch, self.space)
        for blocks, active in zip(self.units, arch.units):
            for block, (k, e) in zip(blocks, active):
                block.set_active(k, e)
        self.active = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for blocks, active in zip(self.units, self.active.units):
            for block in blocks[: len(active)]:
                x = block(x)
        x = self.feature_mix(self.pool(self.final_expand(x)))
        return self.classifier(x)

    # ---- static subnets ---------------------------------------------------------------------
    @torch.no_grad()
    def materialize(self, arch: Arch | None = None) -> StaticNet:
        """A standalone static network computing `arch` (default: the active one) with copies of
        this supernet's weights; it is in the same train/eval mode as the supernet."""
        previous = self.active
        arch = previous if arch is None else arch
        self.set_active(arch)
        threads = torch.get_num_threads()
        # Hundreds of small slices and copies: with several threads each is a parallel region
        # that waits for every core, which costs far more than the copy (5x on a busy 2-core CPU).
        torch.set_num_threads(1)
        try:
            ops = arch_ops(self.space, arch)
            net = StaticNet(ops, arch=str(arch), space=self.space.name, dropout=self.dropout, device="meta")
            state = {}
            fixed = [(0, self.stem), (1, self.first_block)]
            index = 2
            for blocks, active in zip(self.units, arch.units):
                for block in blocks[: len(active)]:
                    state.update(block.static_state(f"{index}."))
                    index += 1
            fixed += [(index, self.final_expand), (index + 2, self.feature_mix), (index + 3, self.classifier)]
            for i, module in fixed:
                state.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
            _assign_copies(net, state)
        finally:
            torch.set_num_threads(threads)
            self.set_active(previous)
        return net.train(self.training)

    def subnet(self, arch: Arch | str, images, *, bn_images: int = 2000, seed: int = 0, batch_size: int = 250,
               device: torch.device | str | None = None, channels_last: bool = False) -> StaticNet:
        """`materialize(arch)`, then its BatchNorm statistics re-estimated (`recalibrate_bn`) on
        `images`: a normalised image tensor [N, 3, H, W], or a dataset (an `ImageDataset`), of
        which `bn_images` training images drawn with `seed` are used. Returns the subnet in eval
        mode, on `device` (default: the supernet's), ready to evaluate or export.

        `arch` is an `Arch` or its string. The supernet itself is not modified."""
        from edgenas.train.bn import recalibrate_bn

        if isinstance(arch, str):
            arch = Arch.parse(arch, self.space)
        if not torch.is_tensor(images):
            from edgenas.train.evaluate import calibration_images

            images = calibration_images(images, bn_images, seed)
        net = self.materialize(arch)
        if device is not None:
            net = net.to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        recalibrate_bn(net, images, resolution=arch.resolution, batch_size=batch_size)
        return net.eval()

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder every block's middle channels by importance (before the elastic-expand phase)."""
        for blocks in self.units:
            for block in blocks:
                block.sort_channels()


def _assign_copies(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give the meta-device `net` copies of `state` as its parameters and buffers.

    The floating-point tensors are copied into one flat buffer: a single allocation is much
    cheaper than hundreds (materialize runs in the search and export loops), and the copies still
    share nothing with the supernet, so saving the subnet saves only its own weights.
    """
    expected = {name for name, _ in net.named_parameters()} | {name for name, _ in net.named_buffers()}
    if expected != set(state):
        raise RuntimeError(f"materialize: state keys differ: {sorted(expected ^ set(state))[:5]}")
    floats = [k for k, v in state.items() if v.is_floating_point()]
    ref = state[floats[0]]
    flat = torch.empty(sum(state[k].numel() for k in floats), dtype=ref.dtype, device=ref.device)
    copies, offset = {}, 0
    for k in floats:
        v = state[k]
        copies[k] = flat[offset: offset + v.numel()].view(v.shape).copy_(v)
        offset += v.numel()
    for k, v in state.items():
        if k not in copies:
            copies[k] = v.detach().clone()
    modules = dict(net.named_modules())
    for key, tensor in copies.items():
        path, _, name = key.rpartition(".")
        module = modules[path]
        if name in module._parameters:
            module._parameters[name] = nn.Parameter(tensor, requires_grad=module._parameters[name].requires_grad)
        else:
            module._buffers[name] = tensor
