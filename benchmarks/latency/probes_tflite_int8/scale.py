import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.latency.ops import enumerate_ops
from edgenas.export import tflite_export as te
from edgenas.export.tflite_layers import _deployable, Parallel
from edgenas.export.graph import ChannelsLastLayer
torch.set_num_threads(1)
src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32))
space = load_space("mbv3-w1.0")
ops = enumerate_ops(space, [224])
te.require_litert()
q = te.full_int_quantizer()
from litert_torch.quantize.quant_config import QuantConfig
import litert_torch
group = ops[:96]
layers, inputs = zip(*(src.layer(op) for op in group))
t=time.time()
graphs=[te.quantized_graph(_deployable(m), x, q, layout=ChannelsLastLayer) for m,x in zip(layers, inputs)]
print("pt2e 96", time.time()-t, flush=True)
examples = tuple(te._nhwc_example(x.shape[-1], channels=x.shape[1]) for x in inputs)
for n in [int(a) for a in sys.argv[1:]]:
    t=time.time()
    with te._quiet(), torch.no_grad():
        p=Parallel(graphs[:n]); p.training=False
        content = litert_torch.convert(p, examples[:n], quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
    print("convert", n, round(time.time()-t,1), flush=True)
