import os; os.makedirs("/tmp/s16", exist_ok=True)  # where the probes write their files
exec(open(__import__("pathlib").Path(__file__).with_name("net.py")).read().split("for r in")[0])
from edgenas.export.tflite_layers import signature_structure
a = sample(space, rng); a = type(a)(192, a.units)
net = deployable(src.supernet.materialize(a).eval()); x = src.images_at(192)
g = te.quantized_graph(net, x, q)
for kw in [{}, {"lightweight_conversion": True}, {"lightweight_conversion": True, "runtime_constant_folding": False}]:
    t=time.time()
    with te._quiet(), torch.no_grad():
        c = litert_torch.convert(g, (te._nhwc_example(192, channels=3),), quant_config=QuantConfig(pt2e_quantizer=q), **kw).model_content()
    open("/tmp/s16/l.tflite","wb").write(c)
    s = signature_structure("/tmp/s16/l.tflite")
    print(kw, round(time.time()-t,1), len(c), [len(v) for v in s.values()], hash(str(s)), flush=True)
