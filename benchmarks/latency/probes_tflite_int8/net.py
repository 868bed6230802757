import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench_configs as bc
from edgenas.space import load_space
from edgenas.space.arch import sample
from edgenas.export import tflite_export as te
from edgenas.export.graph import deployable
torch.set_num_threads(1)
src = bc.activation_source("mbv3-w1.0", bc.calibration_images(32))
space = load_space("mbv3-w1.0")
import numpy as np
rng = np.random.default_rng(0)
te.require_litert(); q = te.full_int_quantizer()
from litert_torch.quantize.quant_config import QuantConfig
import litert_torch
for r in (160, 224):
    a = sample(space, rng); a = type(a)(r, a.units)
    net = deployable(src.supernet.materialize(a).eval())
    x = src.images_at(a.resolution)
    t=time.time(); g = te.quantized_graph(net, x, q); t1=time.time()
    with te._quiet(), torch.no_grad():
        c = litert_torch.convert(g, (te._nhwc_example(a.resolution, channels=3),), quant_config=QuantConfig(pt2e_quantizer=q)).model_content()
    print(a.resolution, "pt2e", round(t1-t,1), "convert", round(time.time()-t1,1), flush=True)
