"""Zero-cost proxies: each against a value worked out by hand on a tiny network, determinism on
subnets of a supernet, and the three ways they are used through the CLI (eval --proxies, search
--accuracy proxy:NAME, predictor build --features ... proxy:NAME and the search that uses it)."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import ConfigError
from edgenas.search.proxies import PROXIES, compute_proxy, init_supernet, proxy_metric
from edgenas.search import ArchBatch
from edgenas.space import load_space, sample_genomes

pytestmark = pytest.mark.usefixtures("one_thread")


def linear(weight, bias=False):
    layer = nn.Linear(len(weight[0]), len(weight), bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return layer


def test_synflow_of_a_two_layer_linear_net_is_twice_the_path_sum():
    # R = 1' |W2| |W1| 1; theta * dR/dtheta summed over either layer's entries is R itself.
    w1, w2 = [[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]], [[2.0, -1.0, 1.0]]
    net = nn.Sequential(linear(w1), linear(w2))
    r = sum(abs(w2[0][i]) * sum(abs(v) for v in w1[i]) for i in range(3))  # 2*3 + 1*3.5 + 1*1 = 10.5
    assert r == 10.5
    x = torch.randn(4, 2)
    assert compute_proxy("synflow", net, [(x, torch.zeros(4, dtype=torch.long))]) == pytest.approx(2 * r)
    assert net[0].weight[0, 1] == -2.0  # the network passed in is left alone


def test_synflow_ignores_batchnorm():
    # With BatchNorm removed, conv(1x1, weight 3) -> BN -> linear(weight 2) on a 1x1 all-ones image: R = 6.
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(-3.0)
    net = nn.Sequential(conv, nn.BatchNorm2d(1), nn.Flatten(), linear([[2.0]]))
    assert compute_proxy("synflow", net, [(torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.long))]) == pytest.approx(12.0)


def softmax_gradient():
    """One linear layer W = I (2 classes), input x = (1, 2), label 0: logits (1, 2), so
    p = (1, e) / (1 + e) and dL/dW = (p - onehot) x' = [[-q, -2q], [q, 2q]] with q = e / (1 + e)."""
    q = math.e / (1 + math.e)
    return linear([[1.0, 0.0], [0.0, 1.0]]), [(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))], q


def test_grad_norm_of_one_linear_layer():
    net, batches, q = softmax_gradient()
    assert compute_proxy("grad_norm", net, batches) == pytest.approx(q * math.sqrt(1 + 4 + 1 + 4), rel=1e-6)


def test_snip_of_one_linear_layer():
    net, batches, q = softmax_gradient()
    # |W * dL/dW| summed: only the diagonal of W is non-zero: |-q| + |2q|
    assert compute_proxy("snip", net, batches) == pytest.approx(3 * q, rel=1e-6)


def test_naswot_on_known_activation_patterns():
    # Identity then ReLU: the patterns of (1, 1), (1, -1), (-1, -1) are 11, 10, 00; with 2 units,
    # K = 2 - hamming = [[2, 1, 0], [1, 2, 1], [0, 1, 2]], det K = 4.
    net = nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]]), nn.ReLU())
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert compute_proxy("naswot", net, [(x, torch.zeros(3, dtype=torch.long))]) == pytest.approx(math.log(4.0))
    # Two images with the same pattern make K singular.
    same = torch.tensor([[1.0, 1.0], [2.0, 3.0]])
    assert compute_proxy("naswot", net, [(same, torch.zeros(2, dtype=torch.long))]) == -math.inf


def test_zico_of_one_linear_layer_over_two_batches():
    # W = 0, 2 classes, label 0: p - onehot = (-1/2, 1/2), so dL/dW = [[-x1/2, -x2/2], [x1/2, x2/2]].
    # Batches x = (1, 0) and (3, 0): the first column's entries are -1/2, -3/2 and 1/2, 3/2 (mean
    # |g| 1, std 1/2, ratio 2 each); the second column never varies and is left out: log(2 + 2).
    net = linear([[0.0, 0.0], [0.0, 0.0]])
    batches = [(torch.tensor([[1.0, 0.0]]), torch.tensor([0])), (torch.tensor([[3.0, 0.0]]), torch.tensor([0]))]
    assert compute_proxy("zico", net, batches) == pytest.approx(math.log(4.0))
    # One batch of the two images is split in halves: the same score.
    one = [(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 0]))]
    assert compute_proxy("zico", net, one) == pytest.approx(math.log(4.0))


def test_an_unknown_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown zero-cost proxy 'synflo'; expected one of synflow"):
        compute_proxy("synflo", nn.Linear(2, 2), [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))])


def test_every_proxy_is_deterministic_on_subnets_of_a_supernet():
    space = load_space("mbv3-tiny")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(2)]
    genomes = sample_genomes(space, np.random.default_rng(0), 3)
    scores = {}
    for run in range(2):
        net = init_supernet(space, seed=0)
        for name in PROXIES:
            scores.setdefault(name, []).append(proxy_metric(net, name, batches)(ArchBatch(space, genomes)))
    for name, (a, b) in scores.items():
        assert np.isfinite(a).all(), name
        assert np.array_equal(a, b), name
        assert len(set(a.tolist())) == 3, name  # the three subnets differ
    other = init_supernet(space, seed=1)
    assert not np.array_equal(proxy_metric(other, "snip", batches)(ArchBatch(space, genomes)), scores["snip"][0])


# ---- through the CLI, on a small digits checkpoint -------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A mbv3-tiny supernet checkpoint on 64 digits images (weights as initialised) and a latency table."""
    from conftest import write_table
    from edgenas.data import DataConfig
    from edgenas.supernet import Supernet
    from edgenas.train import TrainConfig
    from edgenas.train import checkpoint as ckpt

    d = tmp_path_factory.mktemp("proxies")
    space = load_space("mbv3-tiny")
    cfg = TrainConfig(space="mbv3-tiny", data=DataConfig(name="digits", limit=64, val_fraction=0.1))
    net = init_supernet(space, seed=0)
    ckpt.save(d / "supernet.pt", ckpt.payload("supernet", cfg, space, net, {"done": True}, {}))
    return {"dir": d, "ckpt": d / "supernet.pt", "table": write_table(space, d / "t.yaml", "dev"), "space": space}


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgenas", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_eval_proxies_scores_each_subnet(files):
    args = ["eval", files["ckpt"], "--arch", "smallest", "--arch", "largest", "--proxies", "naswot,synflow",
            "--proxy-batch-size", "8", "--bn-images", "16", "--json"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    doc = json.loads(first.stdout)
    assert doc["proxy_setup"] == {"batches": 2, "batch_size": 8, "weights": "trained"}
    small, large = (r["proxies"] for r in doc["results"])
    assert set(small) == {"naswot", "synflow"} and all(math.isfinite(v) for v in small.values())
    assert large["synflow"] > small["synflow"]  # more weights, more paths: synflow grows with the network
    assert json.loads(second.stdout)["results"] == doc["results"]  # the same seed, the same scores
    table = run_cli(*args[:-1])
    assert table.returncode == 0 and "naswot" in table.stdout and "synflow" in table.stdout


def test_search_by_a_proxy_through_the_cli(files):
    from edgenas.search import load_results

    out = files["dir"] / "proxy.json"
    args = ["search", "--supernet", files["ckpt"], "--latency-table", files["table"], "--latency-ms", "12",
            "--accuracy", "proxy:snip", "--evaluations", "12", "--population", "6", "--proxy-batch-size", "8",
            "--out", out]
    run = run_cli(*args)
    assert run.returncode == 0, run.stderr[-2000:]
    results = load_results(out)
    assert results.objective == "proxy:snip" and results.strategy == "evolution"
    assert results.data["proxy"] == {"name": "snip", "batches": 2, "batch_size": 8, "weights": "trained",
                                     "data": "digits"}
    assert "predictor" not in results.data and 12 <= results.data["evaluations"] <= 18
    scores = [e["proxy:snip"] for e in results.top]
    assert scores == sorted(scores, reverse=True)
    assert all(e["latency_ms"]["dev"] <= 12 for e in results.top + results.front)
    # The best subnet's score is its proxy, recomputed the same way.
    from edgenas.data import load_dataset
    from edgenas.search.proxies import arch_proxies, proxy_batches
    from edgenas.space import Arch
    from edgenas.train import load_supernet

    net, info = load_supernet(files["ckpt"])
    batches = proxy_batches(load_dataset(info.data), 2, 8, 0)
    assert arch_proxies(net, Arch.parse(results.top[0]["arch"], files["space"]), ["snip"], batches)["snip"] == \
        pytest.approx(results.top[0]["proxy:snip"], rel=1e-3)  # other threads, other rounding
    again = run_cli(*args[:-1], files["dir"] / "again.json")
    assert json.loads((files["dir"] / "again.json").read_text())["top"] == results.top


def test_proxy_features_are_the_signed_log_of_each_proxy_computed_once_per_subnet(files):
    from edgenas.data import load_dataset
    from edgenas.search.proxies import ProxyFeatures, ProxySetup, arch_proxies, proxy_batches
    from edgenas.space import decode
    from edgenas.train import load_supernet

    net, info = load_supernet(files["ckpt"])
    dataset = load_dataset(info.data)
    scored = []
    feats = ProxyFeatures(net, dataset, ProxySetup(batch_size=8, seed=3), on_compute=scored.append)
    genomes = sample_genomes(files["space"], np.random.default_rng(5), 3)
    cols = feats.columns(files["space"], genomes, ["synflow", "naswot"])
    batches = proxy_batches(dataset, 2, 8, 3)
    for row, arch in zip(cols, decode(files["space"], genomes)):
        raw = arch_proxies(net, arch, ["synflow", "naswot"], batches)
        assert raw["synflow"] > 1e3  # a sum over every path: orders of magnitude, hence the log
        assert row.tolist() == pytest.approx([math.log1p(raw["synflow"]), math.copysign(math.log1p(abs(raw["naswot"])),
                                                                                          raw["naswot"])], rel=1e-5)
    assert len(scored) == 3
    assert np.array_equal(feats.columns(files["space"], genomes[::-1], ["naswot"])[:, 0], cols[::-1, 1])
    assert len(scored) == 3  # remembered: no subnet scored twice
    feats.columns(files["space"], genomes[:1], ["snip"])
    assert len(scored) == 4  # a proxy not asked before scores the subnet again


def test_a_predictor_on_proxy_features_is_built_and_searched_with_through_the_cli(files):
    from edgenas.data import load_dataset
    from edgenas.search import load_results
    from edgenas.search.predictor import AccuracyPredictor, feature_matrix
    from edgenas.search.proxies import ProxyFeatures, ProxySetup
    from edgenas.space import Arch, encode
    from edgenas.train import load_supernet

    pred = files["dir"] / "zc.predictor.pt"
    build = run_cli("predictor", "build", files["ckpt"], "--samples", "10", "--calib-images", "16", "--epochs", "5",
                    "--threads", "1",
                    "--features", "onehot", "costs", "proxy:synflow", "--proxy-batch-size", "8", "--seed", "2",
                    "--out", pred)
    assert build.returncode == 0, build.stderr[-2000:]
    assert "features: onehot costs proxy:synflow" in build.stdout and "zero-cost proxies" in build.stderr
    space = files["space"]
    predictor = AccuracyPredictor.load(pred, space)
    assert predictor.features == ("onehot", "costs", "proxy:synflow") and predictor.needs_supernet
    assert predictor.proxy_setup == ProxySetup(batches=2, batch_size=8, seed=2, weights="trained")
    with pytest.raises(ValueError, match="attach the supernet"):
        predictor.predict_genomes(sample_genomes(space, np.random.default_rng(0), 1))

    out = files["dir"] / "zc-search.json"
    run = run_cli("search", "--supernet", files["ckpt"], "--predictor", pred, "--latency-table", files["table"],
                  "--latency-ms", "12", "--evaluations", "12", "--population", "6", "--out", out)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "proxy features" in run.stderr
    results = load_results(out)
    assert all(e["latency_ms"]["dev"] <= 12 for e in results.top)
    # The search's accuracy is the ensemble on [onehot, costs, log(1 + synflow)] of the subnet, its
    # synflow computed on the batches the file records.
    net, info = load_supernet(files["ckpt"])
    proxies = ProxyFeatures(net, load_dataset(info.data), predictor.proxy_setup)
    genomes = encode(space, [Arch.parse(e["arch"], space) for e in results.top])
    x = torch.from_numpy(feature_matrix(space, genomes, predictor.features, proxies))
    expected = 100 / (1 + np.exp(-predictor.model.logits(x).double().numpy().mean(0)))
    assert [e["accuracy"] for e in results.top] == pytest.approx(expected.tolist(), abs=1e-3)
    x[:, -1] += 1.0  # the proxy column is an input the ensemble uses
    assert not np.allclose(100 / (1 + np.exp(-predictor.model.logits(x).double().numpy().mean(0))), expected, atol=1e-3)


@pytest.mark.parametrize("args,expected", [
    (["eval", "CKPT", "--sample", "1", "--proxies", "naswot,synflo"], "--proxies: expected proxy names from"),
    (["predictor", "build", "CKPT", "--features", "onehot", "proxy:nasw0t"],
     "--features: expected one of onehot, costs, proxy:NAME with NAME one of synflow"),
    (["search", "--supernet", "CKPT", "--accuracy", "proxy:zicoo", "--out", "x.json"],
     "--accuracy: expected 'predictor' or proxy:NAME"),
    (["search", "--supernet", "CKPT", "--accuracy", "proxy:zico", "--predictor", "p.pt", "--out", "x.json"],
     "--predictor and --accuracy proxy:zico exclude each other"),
])
def test_bad_proxy_input_is_one_line_and_exit_2(files, args, expected):
    run = run_cli(*[files["ckpt"] if a == "CKPT" else a for a in args])
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in run.stderr, run.stderr
