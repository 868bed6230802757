"""Static layers and the standalone subnet, built from `OpSpec`s.

Nothing in here is elastic: a materialized subnet, an exported model and a single-op model for
the profiler are all plain `nn.Module`s made of these layers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.space.ops import OpSpec


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm (optional) -> activation; 'same' padding for odd kernels."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, act: str = "relu",
                 groups: int = 1, bn: bool = True, device=None):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False, device=device)
        if bn:
            self.bn = nn.BatchNorm2d(out_ch, device=device)
        if act != "none":
            self.act = make_act(act)


class SqueezeExcite(nn.Module):
    """Channel attention: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid -> scale."""

    def __init__(self, channels: int, hidden: int, device=None):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True, device=device)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project [+ input]."""

    def __init__(self, op: OpSpec, device=None):
        super().__init__()
        m = op.mid_ch
        self.expand = ConvBNAct(op.in_ch, m, 1, act=op.act, device=device) if op.expand_conv else None
        self.dw = ConvBNAct(m, m, op.kernel, op.stride, act=op.act, groups=m, device=device)
        self.se = SqueezeExcite(m, op.se_ch, device=device) if op.se_ch else None
        self.project = ConvBNAct(m, op.out_ch, 1, act="none", device=device)
        self.residual = op.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class Classifier(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.0, device=None):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_ch, num_classes, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(torch.flatten(x, 1)))


def build_op(op: OpSpec, dropout: float = 0.0, device=None) -> nn.Module:
    """The static module for one layer (`device="meta"` builds it without allocating weights)."""
    if op.kind == "stem":
        return ConvBNAct(op.in_ch, op.out_ch, op.kernel, op.stride, act=op.act, device=device)
    if op.kind == "mbconv":
        return MBConv(op, device=device)
    if op.kind == "final_expand":
        return ConvBNAct(op.in_ch, op.out_ch, 1, act=op.act, device=device)
    if op.kind == "pool":
        return GlobalPool()
    if op.kind == "feature_mix":
        return ConvBNAct(op.in_ch, op.out_ch, 1, act=op.act, bn=False, device=device)
    if op.kind == "classifier":
        return Classifier(op.in_ch, op.out_ch, dropout, device=device)
    raise ValueError(f"unknown op kind {op.kind!r}")


class StaticNet(nn.Sequential):
    """A standalone subnet: `layers` in order, plus the arch string and space name it came from."""

    def __init__(self, ops: Sequence[OpSpec], arch: str = "", space: str = "", dropout: float = 0.0, device=None):
        super().__init__(*[build_op(op, dropout, device) for op in ops])
        self.arch = arch
        self.space = space
        self.resolution = ops[0].in_size
        self.in_channels = ops[0].in_ch
        self.num_classes = ops[-1].out_ch

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # a slice (e.g. `net[:-1]`, a feature extractor) is a plain Sequential
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, space={self.space!r}"


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing bn(conv(x)) in eval mode (folded in float64, rounded once)."""
    w, dtype = conv.weight, conv.weight.dtype
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, device=w.device, dtype=dtype)
    folded.weight.copy_((w.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    folded.bias.copy_(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype))
    return folded


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every ConvBNAct's BatchNorm into its conv, in place, for evaluation: the same function
    in eval mode (up to float rounding) with one memory pass less per layer. Returns `net`."""
    for module in net.modules():
        if isinstance(module, ConvBNAct) and hasattr(module, "bn"):
            module.conv = fold_bn(module.conv, module.bn)
            del module.bn
    return net
