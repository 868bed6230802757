"""Cost of writing the single-op models of a table: onnx.helper graphs vs torch.onnx.export.

    python benchmarks/latency/bench_build.py [--space mbv3-w1.0] [--resolutions 160 176 192 208 224] [--sample 40]

Writes every op model with the direct builder (weights made in-graph, and stored random weights),
and a seeded sample of ops through torch.onnx.export (extrapolated to all ops).
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgenas.latency import enumerate_ops
from edgenas.latency.onnx_ops import export_onnx, op_graph
from edgenas.nn.static import build_op
from edgenas.space import load_space


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="mbv3-w1.0")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[160, 176, 192, 208, 224])
    ap.add_argument("--sample", type=int, default=40)
    args = ap.parse_args()
    ops = enumerate_ops(load_space(args.space), args.resolutions)
    print(f"{len(ops)} ops; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as d:
        for weights in ("constant", "random"):
            t, size = time.perf_counter(), 0
            for i, op in enumerate(ops):
                data = op_graph(op, weights=weights).SerializeToString()
                (Path(d) / f"{i}.onnx").write_bytes(data)
                size += len(data)
            s = time.perf_counter() - t
            print(f"onnx.helper, {weights} weights: {s:.2f} s for all ({s / len(ops) * 1e3:.1f} ms/op), {size / 1e6:.1f} MB")
        pick = np.random.default_rng(0).choice(len(ops), min(args.sample, len(ops)), replace=False)
        export_onnx(build_op(ops[0]), (1, ops[0].in_ch, ops[0].in_size, ops[0].in_size), Path(d) / "warm.onnx")
        t = time.perf_counter()
        for i in pick:
            op = ops[i]
            export_onnx(build_op(op), (1, op.in_ch, op.in_size, op.in_size), Path(d) / f"t{i}.onnx")
        per = (time.perf_counter() - t) / len(pick)
        print(f"torch.onnx.export: {per * 1e3:.0f} ms/op on {len(pick)} ops, ~{per * len(ops):.0f} s for all")


if __name__ == "__main__":
    main()
