"""`edgenas finetune` through the real CLI, on the digits, from the supernet and the search results
the demo wrote (`demo_run`): the fine-tune itself, export of its checkpoint with the card's entry,
resume, a SIGTERM mid-epoch, a NaN loss, and bad input answered in one line with exit 2."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from edgenas.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
EXPORT_QUICK = ["--bn-images", "200", "--eval-images", "200"]


def edgenas(*args, timeout=900, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgenas", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)


@pytest.fixture(scope="module")
def demo(demo_run):
    assert demo_run["run"].returncode == 0, demo_run["run"].stderr[-3000:]
    return demo_run["out"]


@pytest.fixture(scope="module")
def tuned(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "ft"
    proc = edgenas("finetune", "--supernet", demo / "train", "--from", demo / "search.json", "--epochs", "2",
                   "--out", out, "--set", "train.threads=1")
    return out, proc


def _one_line(argv, capsys) -> str:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith("edgenas") and "Traceback" not in err, err[-2000:]
    return err


def test_finetune_from_search_results(demo, tuned):
    from edgenas.data import load_dataset
    from edgenas.search import load_results
    from edgenas.train import load_supernet
    from edgenas.train.checkpoint import load_subnet
    from edgenas.train.evaluate import accuracy, calibration_images

    out, proc = tuned
    assert proc.returncode == 0, proc.stderr[-3000:]
    net, info = load_subnet(out)
    best = load_results(demo / "search.json").entry(1)
    assert info.arch == best.arch == net.arch and info.kind == "subnet"
    r = info.finetune
    supernet, sinfo = load_supernet(demo / "train")
    assert r["epochs"] == 2 and r["supernet"] == str(sinfo.path) and r["source"] == {"results": str(demo / "search.json"), "rank": 1}
    assert r["teacher"] == {"checkpoint": None, "arch": str(sinfo.trained().largest()), "what": "the supernet's largest subnet"}
    assert r["lr"] == pytest.approx(sinfo.config.schedule.phases[0].lr / 10) and r["kd_ratio"] == sinfo.config.train.kd_ratio
    assert 0 <= r["accuracy_before"] <= 100 and 0 <= r["accuracy_after"] <= 100 and r["seconds"] > 0
    assert f"{r['accuracy_before']:.2f}% -> {r['accuracy_after']:.2f}%" in proc.stdout
    # "Before" is the materialized subnet with BatchNorm recalibrated, tested on the whole test split.
    t = info.config.train
    data = load_dataset(info.data)
    start = supernet.subnet(best.arch, calibration_images(data, t.bn_recal_images, info.config.seed), batch_size=t.eval_batch_size)
    acc, _, seen = accuracy(start, data.batches("test", 500), start.resolution)
    assert seen == r["images"] == len(data.test)
    assert abs(100 * acc - r["accuracy_before"]) <= 100 / seen + 1e-6  # the CLI ran on other threads
    # ... and training changed it; "after" is the saved subnet's own accuracy.
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), net.state_dict().values()))
    acc, _, _ = accuracy(net, data.batches("test", 500), net.resolution)
    assert abs(100 * acc - r["accuracy_after"]) <= 100 / seen + 1e-6
    # The run's record: the supernet trainer's log, plot and config, with its one phase.
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(x["phase"], x["epoch"]) for x in log if x["event"] == "epoch"] == [("finetune", 1), ("finetune", 2)]
    assert (out / "train_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    phase = info.config.schedule.phases[0]
    assert phase.arch == best.arch and phase.distill == "teacher" and info.config.data == sinfo.config.data


def test_export_of_the_finetuned_checkpoint_records_it_in_the_card(demo, tuned, tmp_path, capsys):
    from edgenas.export import load_card
    from edgenas.train.checkpoint import load_subnet

    out, proc = tuned
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = edgenas("export", "--checkpoint", out / "finetuned.pt", "--from", demo / "search.json",
                       "--format", "onnx", "--out", tmp_path / "export", *EXPORT_QUICK)
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = load_card(tmp_path / "export")
    _, info = load_subnet(out)
    ft = card["finetune"]
    assert card["arch"] == info.arch and card["source"]["finetuned"] is True and card["source"]["rank"] == 1
    assert ft["epochs"] == 2 and ft["teacher"] == info.finetune["teacher"]
    assert (ft["accuracy_before"], ft["accuracy_after"]) == (info.finetune["accuracy_before"], info.finetune["accuracy_after"])
    assert card["latency"]["budget_ms"] is not None  # --from still gives the search's budget
    assert "->" in exported.stdout
    # A supernet export's card says it was not fine-tuned.
    plain = edgenas("export", "--supernet", demo / "train", "--from", demo / "search.json", "--format", "onnx",
                    "--out", tmp_path / "plain", *EXPORT_QUICK)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert load_card(tmp_path / "plain")["finetune"] is None
    # The fine-tuned file given as a supernet, or with another arch, is one line and exit 2.
    line = _one_line(["export", "--supernet", str(out / "finetuned.pt"), "--arch", info.arch, "--out",
                      str(tmp_path / "x")], capsys)
    assert "--checkpoint" in line
    from edgenas.space import smallest

    other = str(smallest(info.space))
    line = _one_line(["export", "--checkpoint", str(out), "--arch", other, "--out", str(tmp_path / "x")], capsys)
    assert "fine-tune of" in line


def test_a_finished_finetune_resumes_to_done_and_a_new_one_needs_another_out(demo, tuned, capsys):
    out, proc = tuned
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = (out / "finetuned.pt").read_bytes()
    again = edgenas("finetune", "--out", out, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "finetuned.pt").read_bytes() == before
    line = _one_line(["finetune", "--supernet", str(demo / "train"), "--from", str(demo / "search.json"),
                      "--epochs", "1", "--out", str(out)], capsys)
    assert "already holds a run" in line and "--resume" in line
    # The fine-tune's own directory is no supernet to fine-tune from (it would replace its files).
    line = _one_line(["finetune", "--supernet", str(out), "--arch", "x", "--epochs", "1", "--out", str(out)], capsys)
    assert "replace" in line


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(demo, tmp_path):
    from edgenas.train.checkpoint import read

    # 2 epochs of 36 steps (288 training images, batches of 8): the progress lines come every 3 steps.
    quick = ["--supernet", demo / "train", "--from", demo / "search.json", "--epochs", "2", "--progress",
             "--set", "train.steps_per_epoch=null", "--set", "data.limit=400", "--set", "train.batch_size=8",
             "--set", "train.threads=1"]
    proc = subprocess.Popen([sys.executable, "-m", "edgenas", "finetune", *map(str, quick), "--out", str(tmp_path / "a")],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"finetune 1/2: (\d+)/(\d+) step", line)
            if m and int(m.group(1)) < int(m.group(2)):
                os.kill(proc.pid, signal.SIGTERM)  # mid-epoch 1
                break
        _, rest = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(seen) + (rest or "")
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "received SIGTERM" in err and "edgenas finetune --out" in err and "--resume" in err
    _, info = read(tmp_path / "a" / "checkpoint.pt")
    steps = 36
    assert info.progress["epoch"] == 0 and 0 < info.progress["step"] < steps, info.progress
    assert info.arch is not None and not (tmp_path / "a" / "finetuned.pt").exists()

    resumed = edgenas("finetune", "--out", tmp_path / "a", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = edgenas("finetune", *quick, "--out", tmp_path / "b")
    assert reference.returncode == 0, reference.stderr[-3000:]
    got, want = (read(tmp_path / d / "finetuned.pt")[0]["model"] for d in ("a", "b"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), rtol=0, atol=1e-6), k
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "train_log.jsonl").read_text().splitlines())
               if r["event"] == "epoch"] for d in ("a", "b")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1])


def test_nan_loss_stops_the_finetune_in_one_line(demo, tmp_path):
    proc = edgenas("finetune", "--supernet", demo / "train", "--from", demo / "search.json", "--epochs", "1",
                   "--out", tmp_path / "nan", "--set", "schedule.phases.0.lr=1e30",
                   "--set", "schedule.phases.0.warmup_epochs=0", "--set", "train.threads=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgenas: error:") and "NaN" in last and "schedule.phases.0.lr=" in last, last
    assert "Traceback" not in proc.stderr and not (tmp_path / "nan" / "finetuned.pt").exists()


@pytest.fixture(scope="module")
def other_space_supernet(tmp_path_factory):
    """A supernet of another space (mbv3-tiny with a narrower feature mix), trained one step by `edgenas train`."""
    import yaml

    d = tmp_path_factory.mktemp("other-space")
    space = yaml.safe_load((REPO / "edgenas/space/presets/mbv3-tiny.yaml").read_text())
    space.update(name="mbv3-tiny-narrow", feature_mix_channels=256)
    (d / "narrow.yaml").write_text(yaml.safe_dump(space))
    assert main(["-q", "train", "--out", str(d / "run"), "--no-progress", "--set", f"space={d / 'narrow.yaml'}",
                 "--set", "schedule.name=sandwich", "--set", "schedule.phases.0.epochs=1",
                 "--set", "train.steps_per_epoch=1", "--set", "train.validate=false", "--set", "train.test_at_end=false",
                 "--set", "data.limit=64", "--set", "train.threads=1"]) == 0
    return d / "run" / "supernet.pt"


def test_bad_inputs_are_one_line_and_exit_2(demo, other_space_supernet, tmp_path, capsys):
    from edgenas.space import largest, load_space

    base = ["finetune", "--supernet", str(demo / "train"), "--out", str(tmp_path / "ft")]
    w10 = str(largest(load_space("mbv3-w1.0")))
    line = _one_line(base + ["--arch", w10, "--epochs", "1"], capsys)
    assert "is not in space mbv3-tiny" in line
    line = _one_line(base + ["--from", str(demo / "search.json"), "--rank", "999", "--epochs", "1"], capsys)
    assert "--rank 999" in line
    line = _one_line(base + ["--from", str(demo / "search.json"), "--epochs", "0"], capsys)
    assert "--epochs" in line
    line = _one_line(base + ["--from", str(demo / "search.json"), "--epochs", "1", "--teacher",
                             str(other_space_supernet)], capsys)
    assert "belongs to space mbv3-tiny-narrow" in line
    line = _one_line(["finetune", "--supernet", str(other_space_supernet), "--from", str(demo / "search.json"),
                      "--epochs", "1", "--out", str(tmp_path / "ft")], capsys)
    assert "searched in space" in line
    line = _one_line(["finetune", "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert "nothing to resume" in line
    line = _one_line(base + ["--epochs", "1"], capsys)
    assert "--arch" in line
    assert not (tmp_path / "ft").exists()


# ---- two processes (gloo on the CPU), as `torchrun --nproc_per_node 2 -m edgenas finetune` runs it ----

DDP_QUICK = ["train.threads=1", "data.limit=400", "train.batch_size=8", "train.steps_per_epoch=6"]


def _ddp_worker(rank: int, world: int, init_file: str, supernet: str, arch: str, out: str) -> None:
    """One rank of a 2-process fine-tune through the API; saves what this rank trained and the
    training images it was given (TensorSplit.batch is spied on, not replaced)."""
    import torch.distributed as dist

    from edgenas.data.dataset import TensorSplit
    from edgenas.train.finetune import finetune

    seen: list[tuple[int, list[int]]] = []
    batch = TensorSplit.batch

    def spy(self, indices):
        seen.append((len(self), [int(i) for i in indices]))  # the test keeps the training split's
        return batch(self, indices)

    TensorSplit.batch = spy
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        steps: list[tuple[int, int, str]] = []
        result = finetune(supernet, arch, out, epochs=2, overrides=DDP_QUICK,
                          progress=False, on_step=lambda e: steps.append((e.epoch, e.step, str(e.archs[0]))))
        torch.save({"state": result.net.state_dict(), "steps": steps, "seen": seen, "status": result.status},
                   f"{out}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_fine_tune_identical_weights_on_disjoint_shards_and_rank_0_writes(demo, tmp_path):
    import torch.multiprocessing as mp

    from edgenas.data import load_dataset
    from edgenas.search import load_results
    from edgenas.space import Arch
    from edgenas.train import load_supernet
    from edgenas.train.checkpoint import load_subnet

    arch = str(load_results(demo / "search.json").entry(1).arch)
    out = tmp_path / "ft"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(demo / "train"), arch, str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.rank{r}.pt", weights_only=True) for r in (0, 1))
    net, info = load_subnet(out)
    assert r0["status"] == r1["status"] == "done"
    # The same 2 epochs x 6 steps of the same subnet on both ranks ...
    assert r0["steps"] == r1["steps"] and len(r0["steps"]) == 12 and {s[2] for s in r0["steps"]} == {arch}
    # ... each rank on its own half of every global batch of 8: 4 images, none shared with the other rank.
    n_train = len(load_dataset(info.data).train)
    seen = [[i for n, i in r["seen"] if n == n_train and len(i) < 20] for r in (r0, r1)]  # BN draws hundreds
    assert len(seen[0]) == len(seen[1]) == 12
    for a, b in zip(*seen):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
    assert len({i for s in seen[0][:6] + seen[1][:6] for i in s}) == 48  # epoch 1: 48 distinct images
    # Identical weights on both ranks (gradients and BatchNorm statistics averaged), equal to what
    # rank 0 alone wrote, and moved away from the subnet fine-tuning started from.
    saved = net.state_dict()
    assert r0["state"].keys() == r1["state"].keys() == saved.keys()
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        assert torch.equal(v, saved[k]), k
    assert info.finetune["epochs"] == 2 and info.finetune["accuracy_after"] is not None
    sn, _ = load_supernet(demo / "train")
    init = sn.materialize(Arch.parse(arch, sn.space)).state_dict()
    assert any(not torch.equal(init[k], saved[k]) for k in saved if k.endswith("weight"))
    # Only rank 0 wrote files: nothing per rank, and no temporary file left behind by an atomic write.
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["checkpoint.pt", "finetuned.pt", "train_log.jsonl", "train_plot.png", "config.yaml"]), names


def test_torchrun_finetune_cli_then_resume_to_done(demo, tmp_path):
    from edgenas.train.checkpoint import load_subnet

    out = tmp_path / "ft"

    def torchrun(*args):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "edgenas", "finetune", *map(str, args)],
                              env=ENV, capture_output=True, text=True, timeout=900)

    sets = [x for item in DDP_QUICK for x in ("--set", item)]
    proc = torchrun("--supernet", demo / "train", "--from", demo / "search.json", "--epochs", "1", "--out", out, *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr and "->" in proc.stdout
    net, info = load_subnet(out)
    r = info.finetune
    assert r["epochs"] == 1 and r["accuracy_before"] is not None and r["accuracy_after"] is not None
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(x["phase"], x["epoch"]) for x in log if x["event"] == "epoch"] == [("finetune", 1)]
    before = (out / "finetuned.pt").read_bytes()
    again = torchrun("--out", out, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "finetuned.pt").read_bytes() == before
