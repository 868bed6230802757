"""Load checkpoints of the reference once-for-all implementation (OFA-MobileNetV3).

    net = load_ofa_checkpoint("ofa_mbv3_d234_e346_k357_w1.0", "mbv3-w1.0")

OFA's `OFAMobileNetV3` names its layers `first_conv`, `blocks.B` (block 0 is the fixed first
block, then `max(depths)` blocks per unit), `final_expand_layer`, `feature_mix_layer` and
`classifier`; its elastic layers wrap a plain module one level deeper (`bn.bn.weight`,
`conv.conv.weight`, `linear.linear.weight`), and older checkpoints call the block body
`mobile_inverted_conv` instead of `conv`. The networks compute the same function as ours
(same channel rounding, SE width, activations and kernel transforms), so converting is renaming
plus shape checks.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from edgenas.errors import CheckpointError
from edgenas.validate import load_torch, user_path
from edgenas.space import SearchSpace, load_space
from edgenas.supernet.supernet import Supernet

# Canonical OFA prefix -> our prefix, for everything outside the elastic units.
_FIXED = [
    ("first_conv.", "stem."),
    ("blocks.0.conv.depth_conv.se.fc.", "first_block.se."),
    ("blocks.0.conv.depth_conv.", "first_block.dw."),
    ("blocks.0.conv.point_linear.", "first_block.project."),
    ("final_expand_layer.", "final_expand."),
    ("feature_mix_layer.", "feature_mix."),
    ("classifier.linear.", "classifier.linear."),
]
# Inside a block of a unit: canonical OFA suffix -> ours.
_BLOCK = [
    ("inverted_bottleneck.", "expand."),
    ("depth_conv.se.fc.", "se."),
    ("depth_conv.", "dw."),
    ("point_linear.", "project."),
]
_MATRIX = re.compile(r"(\d+)to(\d+)_matrix$")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.conv\.(.*)$")


def _canonical(key: str) -> str:
    """One spelling for every OFA variant: static-module names, `conv` as the block body."""
    if key.startswith("module."):  # saved from a DistributedDataParallel wrapper
        key = key[len("module."):]
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    key = key.replace(".bn.bn.", ".bn.").replace(".linear.linear.", ".linear.")
    return key.replace(".conv.conv.weight", ".conv.weight")


def _our_name(key: str, max_depth: int) -> str | None:
    """Our parameter name for a canonical OFA key, or None if it is not part of the network."""
    for ofa, ours in _FIXED:
        if key.startswith(ofa):
            return ours + key[len(ofa):]
    m = _BLOCK_KEY.match(key)
    if not m or int(m.group(1)) == 0:
        return None
    unit, depth = divmod(int(m.group(1)) - 1, max_depth)
    rest = m.group(2)
    matrix = _MATRIX.search(rest)
    if matrix and rest == f"depth_conv.conv.{matrix.group(0)}":
        return f"units.{unit}.{depth}.dw.conv.transform_{matrix.group(1)}to{matrix.group(2)}"
    for ofa, ours in _BLOCK:
        if rest.startswith(ofa):
            return f"units.{unit}.{depth}.{ours}{rest[len(ofa):]}"
    return None


def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def convert_ofa_state_dict(state_dict: Mapping, space: SearchSpace | str) -> dict[str, torch.Tensor]:
    """Rename an OFA-MobileNetV3 state dict (or a checkpoint dict holding one under 'state_dict')
    to our `Supernet` names, checking every shape against `space`.

    The result loads with `Supernet(space).load_state_dict(result)` (strict). BatchNorm
    `num_batches_tracked` counters, which old checkpoints lack, default to 0.
    """
    space = load_space(space)
    return _convert(state_dict, space, Supernet(space).state_dict())


def _convert(state_dict, space: SearchSpace, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError("an OFA checkpoint must be a state dict of tensors or a dict with one under 'state_dict'")
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, map(_canonical, state_dict)) if m}
    if blocks and max(blocks) != len(space.units) * space.max_depth:
        raise CheckpointError(
            f"the checkpoint has {max(blocks)} elastic blocks but space '{space.name}' has {len(space.units)} units "
            f"of up to {space.max_depth} blocks ({len(space.units) * space.max_depth}); its depth list differs"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = _our_name(_canonical(key), space.max_depth)
        if name is None or name not in expected:
            raise CheckpointError(
                f"checkpoint key '{key}' has no counterpart in the supernet of space '{space.name}' "
                f"(is it an OFA-MobileNetV3 checkpoint with {len(space.units)} units of up to {space.max_depth} "
                f"blocks and kernel sizes {list(space.kernel_sizes)}?)"
            )
        if name in out:
            raise CheckpointError(f"checkpoint key '{key}' duplicates another spelling of the same parameter '{name}'")
        if value.shape != expected[name].shape:
            raise CheckpointError(
                f"checkpoint key '{key}' has shape {_shape(value)} but space '{space.name}' expects "
                f"{_shape(expected[name])} for '{name}'; the checkpoint was made for another width multiplier, "
                f"search space or number of classes"
            )
        out[name] = value
    for name, tensor in expected.items():  # old checkpoints lack the BatchNorm step counters
        if name not in out and name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=tensor.dtype)
    missing = [name for name in expected if name not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"the checkpoint lacks '{missing[0]}' of space '{space.name}'{more}; "
            f"it is not a complete OFA-MobileNetV3 supernet of this space"
        )
    return out


def load_ofa_checkpoint(path: str | Path, space: SearchSpace | str) -> Supernet:
    """A `Supernet` of `space` with the weights of an OFA-MobileNetV3 checkpoint file, e.g. OFA's
    published `ofa_mbv3_d234_e346_k357_w1.0` into `mbv3-w1.0` (w1.2 into `mbv3-w1.2`)."""
    path = user_path(path, "OFA checkpoint", CheckpointError)
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"OFA checkpoint not found: {path}")
    # weights_only: a checkpoint from the internet must not run code while it is read
    checkpoint = load_torch(path, "OFA checkpoint (a torch file of tensors)")
    net = Supernet(space)
    net.load_state_dict(_convert(checkpoint, net.space, net.state_dict()))
    return net
