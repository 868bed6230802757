"""Import the reference OFA implementation (`pip install --no-deps ofa`) for tests and benchmarks.

`ofa.utils` star-imports its ImageNet data-loading helpers, which need torchvision; nothing
the networks use comes from there. We put an empty module in its place before importing, so
only the network code is loaded. Never used by the edgenas package itself.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_DATA = "ofa.utils.my_dataloader"


def ofa_available() -> bool:
    return importlib.util.find_spec("ofa") is not None


def import_ofa_mbv3():
    """The `OFAMobileNetV3` class of the installed ofa package."""
    if importlib.util.find_spec("torchvision") is None and _DATA not in sys.modules:
        sys.modules[_DATA] = types.ModuleType(_DATA)
    return importlib.import_module("ofa.imagenet_classification.elastic_nn.networks.ofa_mbv3").OFAMobileNetV3
