"""Why int8 can be slower than fp32 under XNNPACK: depthwise convolutions by kernel size and stride.

    python benchmarks/export/bench_dwconv.py

Each model is stem conv (3->64, stride 2) -> ReLU -> depthwise k x k (stride s) -> ReLU -> 1x1 conv
at 224 px, converted to fp32 and int8 TFLite with the export code, then timed in-process with one
thread: XNNPACK (the default delegate) and the builtin kernels, 3 warm-up runs, median of 20.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class DWBlock(nn.Module):
    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, 2, 1)
        self.dw = nn.Conv2d(64, 64, kernel, stride, kernel // 2, groups=64)
        self.pw = nn.Conv2d(64, 64, 1)

    def forward(self, x):
        return self.pw(torch.relu(self.dw(torch.relu(self.stem(x)))))


def median_ms(path: Path, delegate: bool) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    mode = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=mode)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(3):
        it.invoke()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    from edgenas.export.tflite_export import convert_fp32, convert_int8

    gen = torch.Generator().manual_seed(0)
    calib = torch.randn(16, 3, 224, 224, generator=gen)
    print(f"{'kernel':>6} {'stride':>6} | {'XNNPACK fp32':>12} {'int8':>8} {'ratio':>6} | {'builtin fp32':>12} {'int8':>8} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as d:
        for kernel, stride in [(3, 1), (5, 1), (7, 1), (3, 2), (5, 2), (7, 2)]:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = DWBlock(kernel, stride).eval()
            f32, f8 = Path(d) / "m.tflite", Path(d) / "m8.tflite"
            convert_fp32(model, 224, f32)
            convert_int8(model, 224, calib, f8)
            x32, x8, b32, b8 = median_ms(f32, True), median_ms(f8, True), median_ms(f32, False), median_ms(f8, False)
            print(f"{kernel:>6} {stride:>6} | {x32:>9.2f} ms {x8:>5.2f} ms {x32 / x8:>5.2f}x | "
                  f"{b32:>9.2f} ms {b8:>5.2f} ms {b32 / b8:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
