"""Training configs: YAML files, schedule presets, type-checked --set overrides, phase choices."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgenas.cli import main
from edgenas.errors import ConfigError
from edgenas.space import load_space
from edgenas.train import SCHEDULES, PhaseSampler, apply_overrides, load_config
from edgenas.train.schedule import lr_factor, resolve_choice

SPACE = load_space("mbv3-tiny")
REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_progressive_shrinking_on_digits():
    cfg = load_config()
    assert cfg.space == "mbv3-tiny" and cfg.data.name == "digits"
    names = [p.name for p in cfg.schedule.phases]
    assert names == ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    assert [p.sort_channels for p in cfg.schedule.phases] == [False] * 4 + [True, False]
    assert cfg.schedule.phases[0].distill == "none" and all(p.distill == "teacher" for p in cfg.schedule.phases[1:])


def test_yaml_file_round_trip_and_schedule_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("space: mbv3-tiny\nschedule: {name: sandwich}\ntrain: {batch_size: 32, weight_decay: 1e-4}\n")
    cfg = load_config(path)
    assert cfg.train.batch_size == 32 and cfg.train.weight_decay == pytest.approx(1e-4)  # 1e-4: a string to PyYAML
    assert [p.name for p in cfg.schedule.phases] == [p["name"] for p in SCHEDULES["sandwich"]]
    assert cfg.schedule.phases[0].sampler == "sandwich" and cfg.schedule.phases[0].distill == "inplace"
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(again).to_dict() == cfg.to_dict()


def test_set_overrides_dotted_keys_and_list_indices():
    cfg = load_config(None, ["schedule.phases.0.epochs=2", "train.batch_size=16", "data.limit=100",
                             "schedule.phases.2.depths=[3, 4]", "train.steps_per_epoch=null"])
    assert cfg.schedule.phases[0].epochs == 2 and cfg.train.batch_size == 16 and cfg.data.limit == 100
    assert cfg.schedule.phases[2].depths == [3, 4] and cfg.train.steps_per_epoch is None
    assert [p.name for p in load_config(None, ["schedule.name=sandwich"]).schedule.phases] == ["sandwich"]


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=abc", ["train.batch_size", "integer", "abc"]),
    ("train.batch_size=2.5", ["train.batch_size", "integer"]),
    ("train.nesterov=3", ["train.nesterov", "true or false"]),
    ("schedule.phases.0.sampler=greedy", ["schedule.phases.0.sampler", "got 'greedy', expected one of random, sandwich"]),
    ("train.batch_sise=64", ["unknown key", "train.batch_sise"]),
    ("schedule.phases.9.epochs=1", ["unknown key", "schedule.phases.9"]),
    ("schedule.phases.0.epochs.x=1", ["unknown key", "schedule.phases.0.epochs.x"]),
    ("data.colour=red", ["unknown key", "data.colour"]),
    ("train.batch_size", ["key=value"]),
    ("schedule.phases.0.epochs=0", ["key 'schedule.phases.0.epochs': got 0, expected an integer from 1"]),
    ("schedule.phases.0.lr=.nan", ["key 'schedule.phases.0.lr': got NaN, expected a number > 0"]),
    ("schedule.phases.0.lr=nan", ["key 'schedule.phases.0.lr': got 'nan', expected a number > 0"]),
    ("train.weight_decay=-1", ["key 'train.weight_decay': got -1, expected a number from 0 to 1"]),
    ("train.batch_size=0", ["key 'train.batch_size': got 0, expected an integer from 1"]),
    ("train.batch_size=" + "9" * 5000, ["train.batch_size", "expected an integer"]),
    ("schedule.phases.0.expand_ratios=[.nan]", ["key 'schedule.phases.0.expand_ratios.0': got NaN"]),
    ("schedule.phases.0.depths=biggest", ["key 'schedule.phases.0.depths': got 'biggest', expected all, max, min, topN"]),
    ("schedule.phases=[]", ["key 'schedule.phases': got a list [], expected a non-empty list"]),
    ("train.device=gpu", ["key 'train.device': got 'gpu', expected cpu, cuda, cuda:N or auto"]),
    ("schedule.phases.٠.epochs=1", ["unknown key", "schedule.phases.٠"]),
])
def test_bad_overrides_are_errors_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for w in words:
        assert w in str(err.value)


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  batch_sise: 64\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'train\.batch_sise'"):
        load_config(path)
    path.write_text("schedule:\n  phases:\n    - {name: a, epochs: 1, lr: 0.1, kernels: all}\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'schedule\.phases\.0\.kernels'"):
        load_config(path)
    path.write_text("data: {name: digits, colour: red}\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'data\.colour'"):
        load_config(path)
    path.write_text("schedule:\n  phases:\n    - {name: a, lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"key 'schedule\.phases\.0\.epochs': got nothing \(the key is missing\)"):
        load_config(path)


@pytest.mark.parametrize("text, words", [
    (b"schedule:\n  phases: []\n", "key 'schedule.phases': got a list [], expected a non-empty list"),
    (b"schedule:\n  phases:\n    - {name: a, epochs: 1, lr: .nan}\n", "key 'schedule.phases.0.lr': got NaN"),
    (b"train: {weight_decay: -1}\n", "key 'train.weight_decay': got -1"),
    (b"train: {batch_size: 1}\ntrain: {batch_size: 2}\n", "line 2: got key 'train' twice"),
    (b"train: [1, 2]\n", "key 'train': got a list [1, 2], expected a mapping of batch_size"),
    (b"- 1\n", "got a list [1], expected a mapping (a training config"),
    (b"seed: 1 # r\xe9sum\xe9\n", "line 1: got byte 0xe9, which is not UTF-8"),
    (b"PK\x03\x04\x00\x00binary", "got binary data"),
    (b"schedule:\n  phases:\n    - {name: a, epochs: 1, lr: 0.1}\n    - {name: a, epochs: 1, lr: 0.1}\n",
     "key 'schedule.phases.1.name': got 'a', expected a phase name not used by another phase"),
])
def test_bad_config_files_name_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and words in msg and len(msg) < 300, msg


@pytest.mark.parametrize("name", ["digits-tiny", "fashion-mnist-tiny"])
def test_shipped_configs_load_and_their_phases_fit_the_space(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    space = load_space(cfg.space)
    samplers = [PhaseSampler(space, p, i) for i, p in enumerate(cfg.schedule.phases)]
    assert [p.name for p in cfg.schedule.phases][:2] == ["full", "kernel"] and samplers[-1].depths == space.depths


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "train.bogus" in err and "Traceback" not in err
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cuda"] if not _cuda() else ["train", "--set", "x=1"]) == 2
    err = capsys.readouterr().err
    assert ("CUDA" in err) if not _cuda() else ("'x'" in err)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- phase choices and sampling ---------------------------------------------------------------------

def test_choices_resolve_against_the_space():
    assert resolve_choice("all", SPACE.depths, "d") == (2, 3, 4)
    assert resolve_choice("max", SPACE.depths, "d") == (4,)
    assert resolve_choice("min", SPACE.kernel_sizes, "k") == (3,)
    assert resolve_choice("top2", SPACE.depths, "d") == (3, 4)
    assert resolve_choice([6, 4], SPACE.expand_ratios, "e") == (4, 6)
    with pytest.raises(ConfigError, match="key 'schedule.phases.1.kernel_sizes': got a list that has 9, expected values the space offers"):
        resolve_choice([9], SPACE.kernel_sizes, "schedule.phases.1.kernel_sizes")
    with pytest.raises(ConfigError, match="topN"):
        resolve_choice("biggest", SPACE.depths, "d")


def test_phase_samplers_draw_only_their_choices():
    cfg = load_config()
    rng = np.random.default_rng(0)
    seen = {}
    for i, phase in enumerate(cfg.schedule.phases):
        sampler = PhaseSampler(SPACE, phase, i)
        archs = [a for _ in range(200) for a in sampler.step(rng)]
        seen[phase.name] = (
            {k for a in archs for u in a.units for k, _ in u}, {e for a in archs for u in a.units for _, e in u},
            {len(u) for a in archs for u in a.units}, {a.resolution for a in archs})
    assert seen["full"] == ({7}, {6}, {4}, {24, 28, 32})
    assert seen["kernel"] == ({3, 5, 7}, {6}, {4}, {24, 28, 32})
    assert seen["depth-1"][1:3] == ({6}, {3, 4})
    assert seen["depth-2"][1:3] == ({6}, {2, 3, 4})
    assert seen["expand-1"][1] == {4, 6} and seen["expand-2"][1] == {3, 4, 6}


def test_sandwich_steps_start_with_largest_and_smallest_and_are_seeded():
    cfg = load_config(None, ["schedule.name=sandwich"])
    sampler = PhaseSampler(SPACE, cfg.schedule.phases[0])
    steps = [sampler.step(np.random.default_rng(7)) for _ in range(2)]
    assert steps[0] == steps[1]  # same seed, same subnets (what keeps distributed ranks in step)
    first = steps[0]
    assert len(first) == 3 and first[0] == sampler.largest() and first[1] == sampler.smallest()
    assert first[0].resolution == 32 and first[1].resolution == 24


def test_lr_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == pytest.approx(0.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
