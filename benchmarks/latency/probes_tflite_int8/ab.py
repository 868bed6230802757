import os; os.makedirs("/tmp/s16", exist_ok=True)  # where the probes write their files
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.latency.ops import enumerate_ops
from edgenas.export import tflite_export as te
from edgenas.export.tflite_layers import convert_layers_int8, _deployable, Parallel, split_signatures
from edgenas.export.graph import ChannelsLastLayer
torch.set_num_threads(1)
src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32))
space = load_space("mbv3-w1.0")
ops = enumerate_ops(space, [160, 176, 192, 208, 224])
import random; random.Random(1).shuffle(ops)
layers, inputs = zip(*(src.layer(op) for op in ops[:32]))
names=[f"o{i}" for i in range(32)]
def old():
    litert_torch = te.require_litert()
    from litert_torch.quantize.quant_config import QuantConfig
    q = te.full_int_quantizer()
    graphs = [te.quantized_graph(_deployable(m), x, q, layout=ChannelsLastLayer) for m, x in zip(layers, inputs)]
    ex = tuple(te._nhwc_example(x.shape[-1], channels=x.shape[1]) for x in inputs)
    with te._quiet(), torch.no_grad():
        p = Parallel(graphs); p.training = False
        c = litert_torch.convert(p, ex, quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
    open("/tmp/s16/old.tflite","wb").write(split_signatures(c, names))
def new():
    convert_layers_int8(list(layers), list(inputs), names, "/tmp/s16/new.tflite")
convert_layers_int8(list(layers[:2]), list(inputs[:2]), ["a","b"], "/tmp/s16/w.tflite")
for f in [old, new, old, new]:
    t=time.time(); f(); print(f.__name__, round(time.time()-t,1), flush=True)
from edgenas.export.tflite_layers import signature_structure
print("same", signature_structure("/tmp/s16/old.tflite")==signature_structure("/tmp/s16/new.tflite"))
