import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.latency.ops import enumerate_ops
from edgenas.export import tflite_export as te
from edgenas.export.tflite_layers import convert_layers_int8, _deployable, Parallel
from edgenas.export.graph import ChannelsLastLayer
torch.set_num_threads(1)
t=time.time(); src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32)); print("source", time.time()-t)
space = load_space("mbv3-w1.0")
ops = enumerate_ops(space, [224])
print(len(ops), "ops at 224")
group = ops[40:72]
t=time.time(); layers, inputs = zip(*(src.layer(op) for op in group)); print("prepare", time.time()-t)
te.require_litert()
q = te.full_int_quantizer()
t=time.time()
graphs=[te.quantized_graph(_deployable(m), x, q, layout=ChannelsLastLayer) for m,x in zip(layers, inputs)]
print("pt2e per layer total", time.time()-t)
from litert_torch.quantize.quant_config import QuantConfig
import litert_torch
examples = tuple(te._nhwc_example(x.shape[-1], channels=x.shape[1]) for x in inputs)
t=time.time()
with te._quiet(), torch.no_grad():
    p=Parallel(graphs); p.training=False
    content = litert_torch.convert(p, examples, quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
print("litert convert", time.time()-t)
import cProfile, pstats
pr=cProfile.Profile(); pr.enable()
with te._quiet(), torch.no_grad():
    p=Parallel(graphs[:16]); p.training=False
    content = litert_torch.convert(p, examples[:16], quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
pr.disable()
st=pstats.Stats(pr); st.sort_stats("cumulative").print_stats(45)
