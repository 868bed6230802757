exec(open(__import__("pathlib").Path(__file__).with_name("net.py")).read().split("for r in")[0])
import cProfile, pstats
a = sample(space, rng); a = type(a)(192, a.units)
net = deployable(src.supernet.materialize(a).eval()); x = src.images_at(192)
g = te.quantized_graph(net, x, q)
pr=cProfile.Profile(); pr.enable()
with te._quiet(), torch.no_grad():
    c = litert_torch.convert(g, (te._nhwc_example(192, channels=3),), quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
pr.disable()
st=pstats.Stats(pr); st.sort_stats("cumulative").print_stats("litert_torch|exported_program.py|_trace.py", 40)
