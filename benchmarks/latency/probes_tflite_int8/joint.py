import os; os.makedirs("/tmp/s16", exist_ok=True)  # where the probes write their files
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.latency.ops import enumerate_ops
from edgenas.export import tflite_export as te
from edgenas.export.tflite_layers import _deployable, Parallel
from edgenas.export.graph import ChannelsLastLayer, split_depthwise, int8_friendly
from torchao.quantization.pt2e import move_exported_model_to_eval
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
torch.set_num_threads(1)
src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32))
space = load_space("mbv3-w1.0")
ops = enumerate_ops(space, [192])
te.require_litert()
q = te.full_int_quantizer()
N=int(sys.argv[1])
layers, inputs = zip(*(src.layer(op) for op in ops[30:30+N]))
te.quantized_graph(_deployable(layers[0]), inputs[0], q, layout=ChannelsLastLayer)
t=time.time()
graphs=[te.quantized_graph(_deployable(m), x, q, layout=ChannelsLastLayer) for m,x in zip(layers, inputs)]
print("separate", round(time.time()-t,1), flush=True)
t=time.time()
net = Parallel([ChannelsLastLayer(int8_friendly(split_depthwise(_deployable(m)))).eval() for m in layers]).eval()
with te._quiet(), torch.no_grad():
    batch = torch.export.Dim("batch", min=1, max=4096)
    ex = tuple(te._nhwc_example(x.shape[-1], 2, channels=x.shape[1]) for x in inputs)
    g = torch.export.export(net, ex, dynamic_shapes=(tuple({0: batch} for _ in ex),)).module(); t1=time.time(); print(" export", round(t1-t,1))
    g = prepare_pt2e(g, q); t2=time.time(); print(" prepare", round(t2-t1,1))
    g(*[te.to_nhwc(x) for x in inputs]); t3=time.time(); print(" calib", round(t3-t2,1))
    g = convert_pt2e(g, fold_quantize=False); print(" convert", round(time.time()-t3,1))
print("joint", round(time.time()-t,1), flush=True)
move_exported_model_to_eval(g); g.training=False
from litert_torch.quantize.quant_config import QuantConfig
import litert_torch
from edgenas.export.tflite_layers import split_signatures, signature_structure
examples = tuple(te._nhwc_example(x.shape[-1], channels=x.shape[1]) for x in inputs)
names=[f"op{i}" for i in range(N)]
res={}
for label, mod in [("parallel", None), ("joint", g)]:
    t=time.time()
    with te._quiet(), torch.no_grad():
        if mod is None:
            mod = Parallel(graphs); mod.training=False
        c = litert_torch.convert(mod, examples, quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
    print(label, "convert", round(time.time()-t,1), flush=True)
    open(f"/tmp/s16/{label}.tflite","wb").write(split_signatures(c, names))
    res[label]=signature_structure(f"/tmp/s16/{label}.tflite")
same = [res["parallel"][n]==res["joint"][n] for n in names]
print("same structure", sum(same), "/", N)
for n in names:
    if res["parallel"][n]!=res["joint"][n]:
        a,b=res["parallel"][n],res["joint"][n]
        print(n, len(a), len(b), [x[0] for x in a][:8], [x[0] for x in b][:8])
        for x,y in zip(a,b):
            if x!=y: print(" ", x, "\n ", y); break
        break
