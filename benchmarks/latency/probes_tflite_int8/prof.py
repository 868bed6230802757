exec(open(__import__("pathlib").Path(__file__).with_name("scale.py")).read().split("for n in")[0].replace("ops[:96]","ops[:64]"))
import cProfile, pstats
n=64
pr=cProfile.Profile(); pr.enable()
with te._quiet(), torch.no_grad():
    p=Parallel(graphs[:n]); p.training=False
    content = litert_torch.convert(p, examples[:n], quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
pr.disable()
st=pstats.Stats(pr); st.sort_stats("tottime").print_stats(30)
