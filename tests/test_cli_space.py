"""`edgenas space` as a user runs it: a subprocess, its output and exit code."""
import json
import subprocess
import sys

import pytest
import yaml

from edgenas.space import load_space


def edgenas(*args):
    return subprocess.run([sys.executable, "-m", "edgenas", *args], capture_output=True, text=True, timeout=120)


def test_space_info_prints_choices_size_and_cost_range():
    out = edgenas("space", "info", "mbv3-w1.0")
    assert out.returncode == 0, out.stderr
    assert "kernel sizes:  [3, 5, 7]" in out.stdout and "resolutions:   [128, 144" in out.stdout
    assert f"{load_space('mbv3-w1.0').num_subnets():,}" in out.stdout
    assert "MACs:" in out.stdout and "M (largest)" in out.stdout


def test_space_info_json():
    out = edgenas("space", "info", "mbv3-tiny", "--json")
    data = json.loads(out.stdout)
    assert data["hash"] == load_space("mbv3-tiny").hash
    assert data["macs"][0] < data["macs"][1]


@pytest.mark.parametrize("make_args, fragment", [
    (lambda tmp: ["space", "info", "mbv9"], "unknown search space 'mbv9'"),
    (lambda tmp: ["space", "info", str(tmp / "bad.yaml")], "key 'colour': got an unknown key"),
    (lambda tmp: ["space", "info", str(tmp / "types.yaml")], "key 'depths.0': got 'two', expected an integer"),
    (lambda tmp: ["space", "info", str(tmp / "broken.yaml")], "not valid YAML"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, make_args, fragment):
    data = load_space("mbv3-tiny").to_dict()
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**data, "colour": "red"}))
    (tmp_path / "types.yaml").write_text(yaml.safe_dump({**data, "depths": ["two"]}))
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    out = edgenas(*make_args(tmp_path))
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    out = edgenas("space", "info", "mbv9", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


def test_help_lists_subcommands_with_examples():
    out = edgenas("--help")
    assert out.returncode == 0 and "space" in out.stdout
    out = edgenas("space", "--help")
    assert "examples:" in out.stdout
