"""The network as it is exported: a copy of a `StaticNet` rewritten for inference runtimes.

The rewrite keeps the function (parity is always checked against the original net) and only
changes how it is spelled, so that every format gets a small graph and int8 quantization can
cover every op:
- BatchNorm is folded into the conv before it (a third fewer nodes to trace and convert);
- activations are out-of-place (graph capture and PT2E annotation dislike in-place ops);
- global mean pooling is `adaptive_avg_pool2d(1)`, which the int8 quantizer annotates;
- the SE gate `hardsigmoid(conv(s)) = relu6(conv(s) + 3) / 6` becomes `relu6(conv'(s))` with the
  "+3" folded into the conv's bias and the "/6" into the weights of the block's project conv
  (linear, so exact): TFLite then runs conv+ReLU6 as one int8 op, where hardsigmoid has no int8
  kernel and a separate "x 1/6" multiply ended up between two RESHAPEs;
- dropout is gone.
For TFLite files `split_depthwise` spells depthwise kernels of more than 25 taps (7x7) as sums of
narrower ones (see `SplitDepthwise`), and for int8 files `int8_friendly` also spells h-swish with
ADD/ReLU6/MUL (see `HardSwishParts`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.nn.static import Classifier, ConvBNAct, GlobalPool, MBConv, SqueezeExcite, fold_bn


class GatedSE(nn.Module):
    """SqueezeExcite spelled for export: pool -> 1x1 -> ReLU -> 1x1 (bias + 3) -> ReLU6 -> scale.

    Its output is 6x SqueezeExcite's; `_rewrite` divides the next conv's weights by 6.
    """

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.reduce = copy.deepcopy(se.reduce)
        self.expand = copy.deepcopy(se.expand)
        with torch.no_grad():
            self.expand.bias.add_(3.0)  # hardsigmoid(z) = relu6(z + 3) / 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(self.reduce(s))
        return x * F.relu6(self.expand(s))


def _rewrite(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, MBConv) and child.se is not None:
            _rewrite(child)  # folds the project conv's BN first
            with torch.no_grad():
                child.project.conv.weight.div_(6.0)  # GatedSE's gate is 6x hardsigmoid
            continue
        if isinstance(child, ConvBNAct) and hasattr(child, "bn"):
            child.conv = fold_bn(child.conv, child.bn)
            del child.bn
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, GatedSE(child))
            continue
        elif isinstance(child, GlobalPool):
            setattr(module, name, nn.AdaptiveAvgPool2d(1))
            continue
        elif isinstance(child, (nn.ReLU, nn.Hardswish)):
            child.inplace = False
        elif isinstance(child, Classifier):
            child.dropout = nn.Identity()
        _rewrite(child)


def deployable(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` (a StaticNet) rewritten for export; `net` is not changed."""
    out = copy.deepcopy(net).eval()
    _rewrite(out)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class HardSwishParts(nn.Module):
    """h-swish as x * relu6(x + 3) * (1/6), for int8 files: XNNPACK has int8 kernels for ADD, MUL
    and ReLU6 but not for HARD_SWISH, and each op it cannot take splits the graph in two, which in
    a MobileNetV3 made the int8 file five times slower than the fp32 one.

    The constants are 4-D tensors: the quantizer turns constants into tensors, and litert-torch
    keeps an op in NHWC only when all its inputs are 4-D, else it wraps it in two TRANSPOSEs.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0))
        self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + self.three) * self.sixth


def _replaced(module: nn.Module, replacement) -> nn.Module:
    """A copy of `module` with each submodule for which `replacement(child)` returns a module
    swapped for that module (None keeps the child)."""
    out = copy.deepcopy(module)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
    return out


def int8_friendly(module: nn.Module) -> nn.Module:
    """A copy of a `deployable` module with every h-swish spelled as `HardSwishParts`."""
    return _replaced(module, lambda child: HardSwishParts() if isinstance(child, nn.Hardswish) else None)


# XNNPACK (TFLite's CPU delegate) has one-pass depthwise kernels up to 25 taps; above that it
# falls back to a multi-pass path that is several times slower, in int8 most of all.
MAX_DEPTHWISE_TAPS = 25


class SplitDepthwise(nn.Module):
    """A depthwise conv whose kernel has more than `max_taps` taps, as the sum of depthwise convs
    over groups of its kernel's columns (a 7x7 kernel: columns 0-2, 3-5 and 6, i.e. 7x3 + 7x3 + 7x1
    taps: the same multiply-adds, no part above 25). Exact up to float rounding.

    Each part is a plain conv on the whole input: the part starting at kernel column c must read
    the input c columns further right than the original, so it pads P = k*stride - c + pad columns
    on each side and its output starts k columns in (k the least that keeps P >= 0 and the
    output wide enough, see `_column_shift`). No explicit pad op: in int8 files litert-torch
    lowered one in NCHW, with TRANSPOSE and QUANTIZE around it.

    Measured with XNNPACK on one thread, a 7x7 depthwise layer at 112x112x64 (stride 1): fp32
    65 -> 8.9 ms, int8 392 -> 7.1 ms; a w1.0 subnet at 224 px: fp32 38 -> 14 ms, int8 154 -> 10 ms
    (benchmarks/export/README.md).
    """

    def __init__(self, conv: nn.Conv2d, max_taps: int = MAX_DEPTHWISE_TAPS):
        super().__init__()
        kh, kw = conv.kernel_size
        width = max(1, max_taps // kh)
        sw = conv.stride[1]
        ph, pw = conv.padding
        self.parts = nn.ModuleList()
        self.shifts = []  # output columns each part's result starts at
        for c in range(0, kw, width):
            n = min(width, kw - c)
            k = _column_shift(c, n, kw, sw, pw)
            part = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, n), conv.stride, (ph, k * sw - c + pw),
                             groups=conv.groups, bias=conv.bias is not None and c == 0)
            with torch.no_grad():
                part.weight.copy_(conv.weight[..., c:c + n])
                if part.bias is not None:
                    part.bias.copy_(conv.bias)
            part.requires_grad_(False)
            self.parts.append(part)
            self.shifts.append(k)
        self.kernel_width, self.stride_w, self.pad_w = kw, sw, pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_w = (x.shape[-1] + 2 * self.pad_w - self.kernel_width) // self.stride_w + 1
        out = None
        for part, k in zip(self.parts, self.shifts):
            y = part(x)[..., k:k + out_w]
            out = y if out is None else out + y
        return out


def _column_shift(c: int, n: int, kw: int, stride: int, pad: int) -> int:
    """For the part of a kw-wide kernel that starts at column c and is n wide: the least k >= 0
    with padding P = k*stride - c + pad >= 0 whose output, for every input width, still has
    the original output's width after dropping its first k columns (k*stride >= 2c - kw + n +
    stride - 1 is sufficient: the padded width grows by at least k*stride + stride - 1)."""
    need = max(c - pad, 2 * c - kw + n + stride - 1, 0)
    return -(-need // stride)


def split_depthwise(module: nn.Module, max_taps: int = MAX_DEPTHWISE_TAPS) -> nn.Module:
    """A copy of `module` with every depthwise conv of more than `max_taps` taps as `SplitDepthwise`."""
    def split(child: nn.Module) -> nn.Module | None:
        if (isinstance(child, nn.Conv2d) and child.groups == child.in_channels == child.out_channels
                and child.groups > 1 and child.kernel_size[0] * child.kernel_size[1] > max_taps
                and child.dilation == (1, 1) and isinstance(child.padding, tuple)):
            return SplitDepthwise(child, max_taps)
        return None

    return _replaced(module, split)


class ChannelsLast(nn.Module):
    """Takes NHWC input (the layout TFLite kernels use) and feeds `net` NCHW; litert-torch cancels
    this permute against its own layout change, so the file starts with no TRANSPOSE."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


class ChannelsLastLayer(ChannelsLast):
    """`ChannelsLast` that also returns a 4-D output as NHWC: a single layer of a latency table,
    timed as it runs inside a TFLite network (NHWC from layer to layer), without the TRANSPOSE
    back to NCHW that a file ending in a feature map would otherwise get (litert-torch cancels
    both permutes against its own layout changes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x.permute(0, 3, 1, 2))
        return y.permute(0, 2, 3, 1) if y.dim() == 4 else y
