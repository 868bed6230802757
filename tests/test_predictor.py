"""Accuracy predictor: training quality on a learnable target, files, resumable sharded measurement."""
import json

import numpy as np
import pytest
import torch

from edgenas.errors import CheckpointError
from edgenas.search import ArchBatch, Constraint, Metric, cost_metric, search
from edgenas.search.measure import measure_archs, predictor_sample, read_measurements, subnet_accuracy
from edgenas.search.predictor import AccuracyPredictor, train_predictor
from edgenas.space import Arch, decode, encode, load_space, sample_genomes


def proxy_accuracy(space, genomes, rng=None):
    """A documented synthetic target: grows with log MACs, the resolution and the depth, plus noise."""
    batch = ArchBatch(space, genomes)
    macs = batch.costs()["macs"] / 1e6
    depth = np.asarray(space.depths)[genomes[:, 1:1 + len(space.units)]].sum(1)
    acc = 40 + 6 * np.log(macs) + 0.5 * depth + genomes[:, 0]
    return acc + (rng.normal(0, 0.2, len(acc)) if rng is not None else 0)


def test_predictor_learns_a_proxy_target():
    space = load_space("mbv3-w1.2")
    rng = np.random.default_rng(0)
    genomes = sample_genomes(space, rng, 500)
    predictor, report = train_predictor(space, genomes, proxy_accuracy(space, genomes, rng), epochs=40, seed=0)
    assert report.n_test == 100 and report.n_train == 400
    assert report.spearman > 0.9
    assert report.spearman_low <= report.spearman <= report.spearman_high and report.spearman_low > 0.8
    assert report.rmse < 1.5  # 40 epochs; trained in logit space, 1.1 pp here (the unbounded MLP had 0.9)
    # The untrained network starting from the mean is much worse: training is what helped.
    fresh = AccuracyPredictor(space, seed=0)
    err = fresh.predict_genomes(genomes) - proxy_accuracy(space, genomes)
    assert np.sqrt(np.mean(err ** 2)) > 3 * report.rmse


def test_save_load_round_trip_and_space_check(tmp_path):
    space = load_space("mbv3-tiny")
    genomes = sample_genomes(space, np.random.default_rng(1), 50)
    predictor, report = train_predictor(space, genomes, proxy_accuracy(space, genomes), epochs=5)
    path = predictor.save(tmp_path / "p.pt")
    loaded = AccuracyPredictor.load(path, space)
    np.testing.assert_array_equal(loaded.predict_genomes(genomes), predictor.predict_genomes(genomes))
    assert loaded.report == report
    # The metric interface: a plain list of Arch works as well as an ArchBatch.
    archs = decode(space, genomes[:4])
    np.testing.assert_allclose(loaded(archs), loaded(ArchBatch(space, genomes[:4])))

    other = space.replace(resolutions=(24, 28))
    with pytest.raises(CheckpointError, match="built for space mbv3-tiny"):
        AccuracyPredictor.load(path, other)
    with pytest.raises(CheckpointError, match="not found"):
        AccuracyPredictor.load(tmp_path / "missing.pt", space)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        AccuracyPredictor.load(tmp_path / "junk.pt", space)
    # No temporary files left beside it (atomic write).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt", "p.pt"]


def test_a_predictor_drives_the_search():
    space = load_space("mbv3-tiny")
    genomes = sample_genomes(space, np.random.default_rng(2), 200)
    predictor, _ = train_predictor(space, genomes, proxy_accuracy(space, genomes), epochs=20)
    acc = Metric("accuracy", predictor, goal="max", unit="%")
    result = search(space, acc, [Constraint(cost_metric("mflops"), 5.0)], population=20, generations=5)
    assert result.best["macs"] / 1e6 <= 5.0
    best = encode(space, [Arch.parse(result.best["arch"], space)])
    assert result.best["accuracy"] == pytest.approx(predictor.predict_genomes(best)[0])


def test_samples_are_spread_over_resolutions():
    space = load_space("mbv3-w1.2")
    genomes = predictor_sample(space, 103, seed=0)
    counts = np.bincount(genomes[:, 0], minlength=len(space.resolutions))
    assert len(genomes) == 103 and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(predictor_sample(space, 103, seed=0), genomes)
    # Asking for more keeps the first ones, so a measurement log carries over to a larger --samples.
    np.testing.assert_array_equal(predictor_sample(space, 250, seed=0)[:103], genomes)
    assert not np.array_equal(predictor_sample(space, 103, seed=1), genomes)
    # At some resolutions only (those a supernet trained): they take turns the same way.
    some = predictor_sample(space, 103, seed=0, resolutions=[224, 176])
    counts = np.bincount(some[:, 0], minlength=len(space.resolutions))
    assert counts[[0, 2, 3]].sum() == 0 and abs(int(counts[1]) - int(counts[4])) <= 1 and len(some) == 103
    np.testing.assert_array_equal(predictor_sample(space, 250, seed=0, resolutions=[176, 224])[:103], some)


# ---- measurement ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny supernet, a small digits split, and 16 images for BN recalibration."""
    from edgenas.data import DataConfig, load_dataset
    from edgenas.supernet.supernet import Supernet
    from edgenas.train.evaluate import calibration_images

    torch.manual_seed(0)
    net = Supernet(load_space("mbv3-tiny")).eval()
    data = load_dataset(DataConfig(name="digits", limit=64, val_fraction=0.05))
    return net, subnet_accuracy(net, data, calibration_images(data, 16))


def test_measurement_resumes_after_a_kill(tiny, tmp_path):
    net, evaluate = tiny
    archs = decode(net.space, predictor_sample(net.space, 4, seed=0))
    log = tmp_path / "m.jsonl"
    calls = []

    def dies_after_three(arch):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(str(arch))
        return 10.0 + len(calls)

    with pytest.raises(KeyboardInterrupt):
        measure_archs(net, archs, dies_after_three, log)
    assert list(read_measurements(log, net.space)) == [str(a) for a in archs[:3]]
    with open(log, "a") as f:  # a kill in the middle of a line
        f.write('{"arch": "r3')
    done = measure_archs(net, archs, evaluate, log)  # the real evaluation for the rest
    assert set(done) == {str(a) for a in archs}
    assert [done[str(a)] for a in archs[:3]] == [11.0, 12.0, 13.0]
    assert all(0.0 <= done[str(a)] <= 100.0 for a in archs[3:])
    assert read_measurements(log, net.space) == done
    assert measure_archs(net, archs, lambda a: pytest.fail("re-measured"), log) == done

    with pytest.raises(CheckpointError, match="space hash"):
        read_measurements(log, net.space.replace(resolutions=(32,)))
    good = log.read_bytes()
    for line, words in ((b'{"arch": "r32_x"}\n', "key 'accuracy': got null, expected a number from 0 to 100"),
                        (b'{"arch": "r32_x", "accuracy": NaN}\n', "got NaN, expected finite numbers"),
                        (b'[1, 2]\n', "got a list [1, 2], expected a JSON object"),
                        (b'{"arch": 5, "accuracy": 50}\n', "key 'arch': got 5, expected a string")):
        log.write_bytes(good + line + b'{"arch": "r32_y", "accuracy": 50}\n')
        with pytest.raises(CheckpointError) as err:
            read_measurements(log, net.space)
        assert str(err.value).startswith(f"{log}: line ") and words in str(err.value), str(err.value)


def test_ranks_share_the_work(tiny, tmp_path):
    net, _ = tiny
    archs = decode(net.space, predictor_sample(net.space, 7, seed=1))
    log = tmp_path / "m.jsonl"
    seen = {0: [], 1: []}
    for rank in (0, 1):
        measure_archs(net, archs, lambda a, r=rank: seen[r].append(str(a)) or 50.0, log, rank=rank, world_size=2)
    assert len(seen[0]) == 4 and len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl.rank0", "m.jsonl.rank1"]
    assert set(read_measurements(log, net.space)) == {str(a) for a in archs}
    header = json.loads((tmp_path / "m.jsonl.rank1").read_text().splitlines()[0])
    assert header["space_hash"] == net.space.hash


def test_corrupt_tampered_and_pre_checksum_predictors(tmp_path, caplog):
    import torch

    space = load_space("mbv3-tiny")
    genomes = sample_genomes(space, np.random.default_rng(1), 20)
    predictor, _ = train_predictor(space, genomes, proxy_accuracy(space, genomes), epochs=1)
    path = predictor.save(tmp_path / "p.pt")
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 2048] = bytes(b ^ 0xFF for b in blob[mid:mid + 2048])
    (tmp_path / "flipped.pt").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        AccuracyPredictor.load(tmp_path / "flipped.pt", space)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["weights.0"][0, 0, 0] += 1.0
    torch.save(data, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match=r"key 'checksum': got contents that do not match it"):
        AccuracyPredictor.load(tmp_path / "tampered.pt", space)
    data = torch.load(path, weights_only=True)
    del data["checksum"]
    torch.save(data, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="edgenas"):
        AccuracyPredictor.load(tmp_path / "old.pt", space)
    assert "has no checksum" in caplog.text and "edgenas predictor build" in caplog.text
    for change, words in ((lambda d: d.pop("hidden"), "key 'hidden': got nothing (the key is missing)"),
                          (lambda d: d.update(hidden=[400, -1]), "key 'hidden.1': got -1"),
                          (lambda d: d.update(state_dict=[1]), "key 'state_dict': got a list [1]"),
                          (lambda d: d.update(report={"rmse": float("nan")}), "key 'report.rmse': got NaN"),
                          (lambda d: d.update(space={"name": "x"}), "key 'space.units': got nothing"),
                          (lambda d: d.update(members=0), "key 'members': got 0"),
                          (lambda d: d.update(features=["onehot", "zc-nope"]), "key 'features.1': got 'zc-nope'"),
                          (lambda d: d.update(features=["onehot", "proxy:synflo"]), "key 'features.1': got 'proxy:synflo'"),
                          (lambda d: d.update(features=["costs", "costs"]), "key 'features': got a list"),
                          (lambda d: d.update(proxies={"batches": 0}), "key 'proxies.batches': got 0"),
                          (lambda d: d.update(proxies={"weights": "random"}), "key 'proxies.weights': got 'random'"),
                          (lambda d: d["state_dict"]["weights.1"].fill_(float("nan")), "weights that are NaN"),
                          (lambda d: d.update(extra=1), "key 'extra': got an unknown key")):
        data = torch.load(path, weights_only=True)
        change(data)
        data["checksum"] = __import__("edgenas.validate", fromlist=["checksum"]).checksum(data)
        torch.save(data, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError) as err:
            AccuracyPredictor.load(tmp_path / "bad.pt", space)
        assert str(err.value).startswith(str(tmp_path / "bad.pt")) and words in str(err.value), str(err.value)


# ---- range by construction, the ensemble's spread, the old format -----------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from edgenas.space import genome_of  # noqa: E402


@pytest.fixture(scope="module")
def small_predictor():
    space = load_space("mbv3-tiny")
    genomes = sample_genomes(space, np.random.default_rng(3), 60)
    predictor, _ = train_predictor(space, genomes, proxy_accuracy(space, genomes), hidden=(32, 32), epochs=5)
    return predictor


@settings(max_examples=60, deadline=None)
@given(data=st.data(), scale=st.sampled_from([1.0, 10.0, 1e3, 1e6]), k=st.floats(0, 10), sign=st.sampled_from([1, -1]))
def test_any_genome_is_predicted_within_0_and_100(small_predictor, data, scale, k, sign):
    """Whatever the genome, and with the last layer's weights blown up so that the logit is huge
    (either sign), every prediction (mean, spread, cautious) stays in [0, 100]."""
    space = small_predictor.space
    choices = genome_of(space).choices
    rows = data.draw(st.lists(st.tuples(*[st.integers(0, int(c) - 1) for c in choices]), min_size=1, max_size=8))
    genomes = np.array(rows, np.int64)
    last = small_predictor.model.weights[-1]
    saved = last.detach().clone()
    try:
        with torch.no_grad():
            last.mul_(sign * scale)
        mean, sd = small_predictor.predict_spread(genomes)
        lower = small_predictor.predict_lower(genomes, k)
    finally:
        with torch.no_grad():
            last.copy_(saved)
    for values in (mean, lower, small_predictor.predict_genomes(genomes)):
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 100).all(), values
    assert np.isfinite(sd).all() and (sd >= 0).all() and (sd <= 50).all()
    assert (lower <= mean + 1e-9).all()


def test_the_ensemble_has_a_spread_and_the_same_seed_gives_the_same_one():
    space = load_space("mbv3-tiny")
    genomes = sample_genomes(space, np.random.default_rng(4), 80)
    acc = proxy_accuracy(space, genomes, np.random.default_rng(5))
    fit = dict(hidden=(32, 32), epochs=20)
    a, report = train_predictor(space, genomes, acc, seed=7, **fit)
    b, _ = train_predictor(space, genomes, acc, seed=7, **fit)
    c, _ = train_predictor(space, genomes, acc, seed=8, **fit)
    probe = sample_genomes(space, np.random.default_rng(6), 50)
    mean, sd = a.predict_spread(probe)
    assert a.members == 5 and (sd > 0).all() and report.sd > 0 and 0 <= report.sd < 10
    np.testing.assert_array_equal(a.member_logits(probe), b.member_logits(probe))
    assert not np.allclose(a.member_logits(probe), c.member_logits(probe))
    np.testing.assert_allclose(a.predict_genomes(probe), mean)
    # ranking by mean - k sd: the cautious value falls as k grows, and k = 0 is the mean
    np.testing.assert_allclose(a.predict_lower(probe, 0.0), mean)
    assert (a.predict_lower(probe, 2.0) < a.predict_lower(probe, 1.0)).all()
    # one member: no spread
    single, _ = train_predictor(space, genomes, acc, members=1, **fit)
    assert (single.predict_spread(probe)[1] == 0).all()


def test_a_format_1_predictor_is_refused_in_one_line_saying_how_to_rebuild(small_predictor, tmp_path):
    """A file as edgenas wrote it before the ensemble (format_version 1, a checksum over it)."""
    from edgenas.search.predictor import OutdatedPredictorError
    from edgenas.validate import checksum

    path = small_predictor.save(tmp_path / "p.pt")
    data = torch.load(path, weights_only=True)
    for key in ("members", "features"):
        del data[key]
    data["format_version"] = 1
    data["checksum"] = checksum(data)
    torch.save(data, tmp_path / "v1.pt")
    with pytest.raises(OutdatedPredictorError) as err:
        AccuracyPredictor.load(tmp_path / "v1.pt", small_predictor.space)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(tmp_path / "v1.pt")) and "format 1" in text
    assert "edgenas predictor build" in text and "reuses the logged measurements" in text and len(text) < 300


def test_the_spearman_interval_covers_the_true_rank_correlation():
    """Pairs from a bivariate normal with correlation r have the population Spearman
    (6 / pi) asin(r / 2): over 200 samples of 60 pairs (a demo's held-out size), the 95% bootstrap
    interval covers it in 88-99% of them (the percentile bootstrap undercovers a little at n = 60),
    and 600 pairs give a narrower interval than 60."""
    from edgenas.search.predictor import spearman_interval

    r = 0.6
    truth = 6 / np.pi * np.arcsin(r / 2)
    rng = np.random.default_rng(0)
    cov = [[1, r], [r, 1]]
    hits, widths = 0, {60: [], 600: []}
    for i in range(200):
        x = rng.multivariate_normal([0, 0], cov, 60)
        lo, hi = spearman_interval(x[:, 0], x[:, 1], seed=i, resamples=400)
        hits += lo <= truth <= hi
        widths[60].append(hi - lo)
    for i in range(20):
        x = rng.multivariate_normal([0, 0], cov, 600)
        lo, hi = spearman_interval(x[:, 0], x[:, 1], seed=i, resamples=400)
        widths[600].append(hi - lo)
    assert 0.88 <= hits / 200 <= 0.99, hits
    assert np.mean(widths[600]) < 0.5 * np.mean(widths[60])
    # Seeded; undefined below 3 pairs or for a constant input.
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert spearman_interval(a, b, seed=3) == spearman_interval(a, b, seed=3)
    assert np.isnan(spearman_interval(a[:2], b[:2])).all() and np.isnan(spearman_interval(np.ones(9), b[:9])).all()
