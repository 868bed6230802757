import os; os.makedirs("/tmp/s16", exist_ok=True)  # where the probes write their files
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.latency.ops import enumerate_ops
from edgenas.export.tflite_layers import convert_layers_int8
torch.set_num_threads(1)
src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32))
space = load_space("mbv3-w1.0")
ops = enumerate_ops(space, [160, 192, 224])
import random; random.Random(0).shuffle(ops)
group = ops[:48]
layers, inputs = zip(*(src.layer(op) for op in group))
convert_layers_int8(list(layers[:2]), list(inputs[:2]), ["a","b"], "/tmp/s16/w.tflite")  # warm
for k in [int(a) for a in sys.argv[1:]]:
    t=time.time()
    for s in range(0, 48, k):
        convert_layers_int8(list(layers[s:s+k]), list(inputs[s:s+k]), [f"o{i}" for i in range(len(layers[s:s+k]))], "/tmp/s16/c.tflite")
    print("chunk", k, round((time.time()-t)/48, 2), "s per layer", flush=True)
