"""Elastic layers: one max-size weight, sliced to the active size on every forward.

Every elastic layer follows one small protocol:
- its constructor takes the largest configuration it must serve;
- its active configuration is set by the owner (`ElasticMBConv.set_active`) or read off the input;
- `static_state(prefix)` returns the weights of the equivalent static layer (`edgenas.nn.static`),
  sliced and copied, so that a materialized subnet owns its tensors.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.space.space import make_divisible


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    return F.relu(x) if name == "relu" else F.hardswish(x)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first C channels of its max-size statistics, C = input channels.

    Running statistics of the active slice are updated in place, exactly as a static BatchNorm of
    size C would update its own; `momentum=None` (a cumulative average, used for recalibration)
    works the same way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        if c == self.num_features:
            return super().forward(x)
        momentum = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.track_running_stats else None,
            self.running_var[:c] if self.track_running_stats else None,
            self.weight[:c], self.bias[:c], use_batch_stats, momentum, self.eps,
        )

    def static_state(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}weight": self.weight[:c], f"{prefix}bias": self.bias[:c],
            f"{prefix}running_mean": self.running_mean[:c], f"{prefix}running_var": self.running_var[:c],
            f"{prefix}num_batches_tracked": self.num_batches_tracked,
        }


class ElasticPointwise(nn.Module):
    """1x1 conv (no bias) whose input and output channels are sliced from the max-size weight."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_ch: int) -> torch.Tensor:
        return F.conv2d(x, self.weight[:out_ch, : x.size(1)])

    def static_state(self, in_ch: int, out_ch: int, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}weight": self.weight[:out_ch, :in_ch]}


class ElasticDepthwise(nn.Module):
    """Depthwise conv with elastic kernel size.

    The weight is stored at the largest kernel. A smaller kernel is the centre crop of the next
    larger one passed through a learned linear map over its k*k positions (`transform_7to5`,
    `transform_5to3`, initialised to identity), as in OFA: the small kernels share the large
    kernel's centre without being forced to equal it.
    """

    def __init__(self, max_ch: int, kernel_sizes: Sequence[int], stride: int):
        super().__init__()
        self.kernel_sizes = sorted(kernel_sizes)
        self.stride = stride
        kmax = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(max_ch, 1, kmax, kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        for big, small in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1]):
            self.register_parameter(f"transform_{big}to{small}", nn.Parameter(torch.eye(small * small)))

    def kernel(self, channels: int, k: int) -> torch.Tensor:
        """The (channels, 1, k, k) filter for kernel size k."""
        w = self.weight[:channels]
        for big, small in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1]):
            if big <= k:
                break
            start = (big - small) // 2
            crop = w[:, :, start:start + small, start:start + small].reshape(channels, small * small)
            w = F.linear(crop, getattr(self, f"transform_{big}to{small}")).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = x.size(1)
        return F.conv2d(x, self.kernel(c, k), None, self.stride, k // 2, 1, c)

    def static_state(self, channels: int, k: int, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}weight": self.kernel(channels, k)}


class ElasticSE(nn.Module):
    """Squeeze-excite whose channels follow the input and whose hidden width follows the channels."""

    def __init__(self, max_ch: int, reduction: int):
        super().__init__()
        self.reduction = reduction
        hidden = make_divisible(max_ch // reduction)
        self.reduce = nn.Conv2d(max_ch, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, max_ch, 1, bias=True)

    def hidden(self, c: int) -> int:
        return make_divisible(c // self.reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        h = self.hidden(c)
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.reduce.weight[:h, :c], self.reduce.bias[:h]))
        s = F.hardsigmoid(F.conv2d(s, self.expand.weight[:c, :h], self.expand.bias[:c]))
        return x * s

    def static_state(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        h = self.hidden(c)
        return {
            f"{prefix}reduce.weight": self.reduce.weight[:h, :c], f"{prefix}reduce.bias": self.reduce.bias[:h],
            f"{prefix}expand.weight": self.expand.weight[:c, :h], f"{prefix}expand.bias": self.expand.bias[:c],
        }


class _ConvBN(nn.Module):
    """Holder so elastic parameter names mirror the static ConvBNAct (`conv.weight`, `bn.*`)."""

    def __init__(self, conv: nn.Module, channels: int):
        super().__init__()
        self.conv = conv
        self.bn = ElasticBatchNorm2d(channels)


class ElasticMBConv(nn.Module):
    """MBConv block with elastic kernel size and expand ratio.

    The middle width for expand ratio e is make_divisible(round(in_ch * e)), sliced from the
    largest. Parameter names match `edgenas.nn.static.MBConv`, so the static state is a slice.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_sizes: Sequence[int], expand_ratios: Sequence[float],
                 stride: int, act: str, se: bool, se_reduction: int = 4):
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.act = in_ch, out_ch, stride, act
        self.residual = stride == 1 and in_ch == out_ch
        max_mid = self.mid_channels(max(expand_ratios))
        self.expand = _ConvBN(ElasticPointwise(in_ch, max_mid), max_mid)
        self.dw = _ConvBN(ElasticDepthwise(max_mid, kernel_sizes, stride), max_mid)
        self.se = ElasticSE(max_mid, se_reduction) if se else None
        self.project = _ConvBN(ElasticPointwise(max_mid, out_ch), out_ch)
        self.active_kernel = max(kernel_sizes)
        self.active_expand = max(expand_ratios)

    def mid_channels(self, expand_ratio: float) -> int:
        return make_divisible(round(self.in_ch * expand_ratio))

    def set_active(self, kernel: int, expand_ratio: float) -> None:
        self.active_kernel, self.active_expand = kernel, expand_ratio

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """The active block; `gate` (a scalar, the differentiable search's path weight) scales the
        block's own branch, before the residual is added."""
        mid = self.mid_channels(self.active_expand)
        y = _act(self.expand.bn(self.expand.conv(x, mid)), self.act)
        y = _act(self.dw.bn(self.dw.conv(y, self.active_kernel)), self.act)
        if self.se is not None:
            y = self.se(y)
        y = self.project.bn(self.project.conv(y, self.out_ch))
        if gate is not None:
            y = y * gate
        return x + y if self.residual else y

    def static_state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        mid = self.mid_channels(self.active_expand)
        state = {}
        state.update(self.expand.conv.static_state(self.in_ch, mid, f"{prefix}expand.conv."))
        state.update(self.expand.bn.static_state(mid, f"{prefix}expand.bn."))
        state.update(self.dw.conv.static_state(mid, self.active_kernel, f"{prefix}dw.conv."))
        state.update(self.dw.bn.static_state(mid, f"{prefix}dw.bn."))
        if self.se is not None:
            state.update(self.se.static_state(mid, f"{prefix}se."))
        state.update(self.project.conv.static_state(mid, self.out_ch, f"{prefix}project.conv."))
        state.update(self.project.bn.static_state(self.out_ch, f"{prefix}project.bn."))
        return state

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the middle channels (and SE hidden units) by importance, most important first,
        so that a smaller expand ratio keeps the channels that matter most. Importance is the L1
        norm of the weights that read each channel. The block computes the same function after."""
        if self.se is not None:
            order = self.se.expand.weight.abs().sum((0, 2, 3)).argsort(descending=True)
            self.se.expand.weight.copy_(self.se.expand.weight[:, order])
            self.se.reduce.weight.copy_(self.se.reduce.weight[order])
            self.se.reduce.bias.copy_(self.se.reduce.bias[order])
        order = self.project.conv.weight.abs().sum((0, 2, 3)).argsort(descending=True)
        self.project.conv.weight.copy_(self.project.conv.weight[:, order])
        for bn in (self.dw.bn, self.expand.bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        self.dw.conv.weight.copy_(self.dw.conv.weight[order])
        self.expand.conv.weight.copy_(self.expand.conv.weight[order])
        if self.se is not None:
            self.se.reduce.weight.copy_(self.se.reduce.weight[:, order])
            self.se.expand.weight.copy_(self.se.expand.weight[order])
            self.se.expand.bias.copy_(self.se.expand.bias[order])
