"""Device profiles: every shipped profile loads; every kind of mistake names the field and the file."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgenas.device import DeviceProfile, load_profile
from edgenas.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "device_profiles").glob("*.yaml"))

SSH_MIN = {
    "name": "pi",
    "transport": "ssh",
    "ssh": {"host": "pi.local", "user": "pi"},
    "runtime": "onnxruntime",
}


def write(tmp_path: Path, data, name="dev.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def with_(base: dict, **changes) -> dict:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in changes.items():
        if "__" in k:
            sec, key = k.split("__")
            d[sec][key] = v
        else:
            d[k] = v
    return d


def test_the_expected_profiles_ship():
    names = {p.stem for p in SHIPPED}
    assert {"local-cpu", "raspberry-pi4", "jetson-orin-nano", "android-termux", "linux-box"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_profile_loads(path):
    prof = load_profile(path)
    assert prof.name == path.stem
    assert prof.source == str(path)
    key = prof.key()
    assert key.startswith(prof.name + "_") and f"_t{prof.threads}" in key
    assert all(c.isalnum() or c in "._+-" for c in key), key
    assert prof.slug == key
    if prof.transport == "ssh":
        assert prof.ssh is not None and prof.ssh.host and prof.ssh.user


def test_shipped_profile_keys_are_unique():
    keys = [load_profile(p).key() for p in SHIPPED]
    assert len(keys) == len(set(keys))


def test_local_cpu_profile():
    prof = load_profile(REPO / "device_profiles" / "local-cpu.yaml")
    assert prof.transport == "local" and prof.ssh is None
    assert prof.runtime == "onnxruntime"
    assert prof.runtime_options["providers"] == ["CPUExecutionProvider"]
    assert prof.threads == 1
    assert prof.python == sys.executable  # local default: the interpreter running edgenas
    assert prof.key() == "local-cpu_onnxruntime-cpu_t1"


def test_templates_cover_their_devices():
    jetson = load_profile(REPO / "device_profiles" / "jetson-orin-nano.yaml")
    assert {"CUDAExecutionProvider", "TensorrtExecutionProvider"} <= set(jetson.runtime_options["providers"])
    termux = load_profile(REPO / "device_profiles" / "android-termux.yaml")
    assert termux.runtime == "tflite" and termux.ssh.port == 8022
    assert termux.runtime_options["delegate"] in ("xnnpack", "gpu", "none")


def test_bare_name_is_found_in_device_profiles(monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_profile("local-cpu").name == "local-cpu"


def test_ssh_defaults_and_home_expansion(tmp_path):
    data = with_(SSH_MIN, ssh__identity_file="~/.ssh/id_test")
    prof = load_profile(write(tmp_path, data))
    home = os.path.expanduser("~")
    assert prof.ssh.port == 22
    assert prof.ssh.identity_file == os.path.join(home, ".ssh", "id_test")
    assert prof.ssh.known_hosts == os.path.join(home, ".ssh", "known_hosts")
    assert prof.ssh.trust_on_first_use is False
    assert prof.ssh.password_env is None
    assert prof.ssh.retries >= 0 and prof.ssh.backoff > 0
    assert prof.python == "python3"
    assert (prof.threads, prof.warmup, prof.runs, prof.rounds, prof.workdir) == (1, 10, 50, 1, "/tmp")
    assert prof.runtime_options == {"providers": ["CPUExecutionProvider"], "spinning": True}


def test_tflite_defaults(tmp_path):
    prof = load_profile(write(tmp_path, with_(SSH_MIN, runtime="tflite")))
    assert prof.runtime_options["delegate"] == "xnnpack"
    assert prof.runtime_options["interpreter"] == "auto"
    assert prof.key() == "pi_tflite-xnnpack_t1"
    assert "delegate_library" not in prof.runtime_options  # only the GPU delegate loads one (tables record these)
    gpu = load_profile(write(tmp_path, with_(SSH_MIN, runtime="tflite", runtime_options={"delegate": "gpu"})))
    assert gpu.runtime_options["delegate_library"] == "libtensorflowlite_gpu_delegate.so"
    assert gpu.agent_options()["delegate_library"] == "libtensorflowlite_gpu_delegate.so"


def test_key_tracks_runtime_options_and_threads_only():
    base = DeviceProfile.from_dict(SSH_MIN)
    assert base.key() == "pi_onnxruntime-cpu_t1"
    variants = [
        with_(SSH_MIN, threads=4),
        with_(SSH_MIN, name="pi5"),
        with_(SSH_MIN, runtime_options={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}),
        with_(SSH_MIN, runtime="tflite"),
        with_(SSH_MIN, runtime="tflite", runtime_options={"delegate": "none"}),
        with_(SSH_MIN, runtime_options={"spinning": False}),
    ]
    keys = {DeviceProfile.from_dict(v).key() for v in variants}
    assert len(keys) == len(variants) and base.key() not in keys
    # How long we measure does not change what is measured.
    assert DeviceProfile.from_dict(with_(SSH_MIN, warmup=3, runs=7, rounds=3)).key() == base.key()


def test_env_values_become_strings(tmp_path):
    prof = load_profile(write(tmp_path, with_(SSH_MIN, env={"OMP_NUM_THREADS": 1, "FLAG": True, "X": "y"})))
    assert dict(prof.env) == {"OMP_NUM_THREADS": "1", "FLAG": "true", "X": "y"}


BAD = [
    # (change, field named in the message, words in the message)
    (dict(colour="red"), "colour", "got an unknown key, expected one of name, transport, runtime"),
    (dict(ssh__hostname="pi"), "ssh.hostname", "got an unknown key"),
    (dict(threads="four"), "threads", "integer"),
    (dict(threads=True), "threads", "integer"),
    (dict(threads=0), "threads", "got 0, expected an integer from 1 to 1024"),
    (dict(threads=10**40), "threads", "expected an integer from 1 to 1024"),
    (dict(runs=float("nan")), "runs", "got NaN, expected an integer"),
    (dict(ssh__connect_timeout=float("inf")), "ssh.connect_timeout", "got inf, expected a positive number of seconds"),
    (dict(name=["x"] * 1000), "name", "got a list of 1000 items, expected a string"),
    (dict(runs=2.5), "runs", "integer"),
    (dict(rounds=0), "rounds", "got 0, expected an integer from 1 to 1000"),
    (dict(transport="telnet"), "transport", "local, ssh"),
    (dict(runtime="tensorflow"), "runtime", "onnxruntime, tflite"),
    (dict(name=None), "name", "got null, expected a string"),
    (dict(runtime=None), "runtime", "got null, expected one of onnxruntime, tflite"),
    (dict(ssh=None), "ssh", "expected an ssh section (host, user, ...) when transport is ssh"),
    (dict(ssh={"user": "pi"}), "ssh.host", "got nothing (the key is missing)"),
    (dict(ssh={"host": "pi"}), "ssh.user", "got nothing (the key is missing)"),
    (dict(ssh__port="22"), "ssh.port", "integer"),
    (dict(ssh__port=70000), "ssh.port", "65535"),
    (dict(ssh__trust_on_first_use="yes please"), "ssh.trust_on_first_use", "true or false"),
    (dict(ssh__connect_timeout=0), "ssh.connect_timeout", "positive"),
    (dict(ssh__password="hunter2"), "ssh.password", "password_env"),
    (dict(ssh__password_env="hunter2 with spaces"), "ssh.password_env", "NAME"),
    (dict(runtime_options={"delegate": "gpu"}), "runtime_options.delegate", "got an unknown key"),
    (dict(runtime_options={"providers": ["CoreMLExecutionProvider"]}), "runtime_options.providers.0", "CUDAExecutionProvider"),
    (dict(runtime_options={"providers": "CPUExecutionProvider"}), "runtime_options.providers", "list"),
    (dict(runtime_options={"providers": []}), "runtime_options.providers", "at least one"),
    (dict(runtime="tflite", runtime_options={"delegate": "npu"}), "runtime_options.delegate", "xnnpack"),
    (dict(runtime="tflite", runtime_options={"providers": ["CPUExecutionProvider"]}), "runtime_options.providers", "got an unknown key"),
    (dict(runtime_options={"spinning": "off"}), "runtime_options.spinning", "true or false"),
    (dict(runtime="tflite", runtime_options={"spinning": False}), "runtime_options.spinning", "got an unknown key"),
    (dict(env=["A=1"]), "env", "mapping"),
    (dict(env={"BAD-NAME": "1"}), "env.BAD-NAME", "environment variable"),
    (dict(env={"A": [1]}), "env.A", "string"),
]


@pytest.mark.parametrize("change,field,words", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_profiles_name_the_field_and_the_file(tmp_path, change, field, words):
    path = write(tmp_path, with_(SSH_MIN, **change))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    msg = str(info.value)
    assert f"'{field}'" in msg, msg
    assert str(path) in msg, msg
    assert words in msg, msg
    assert "hunter2" not in msg  # a password never ends up in a message


def test_ssh_section_refused_for_local_transport(tmp_path):
    path = write(tmp_path, with_(SSH_MIN, transport="local"))
    with pytest.raises(ConfigError, match=r"'ssh'.*only allowed with transport: ssh"):
        load_profile(path)


@pytest.mark.parametrize(
    "text,words",
    [("", "empty"), ("- a\n- b\n", "mapping"), ("name: [unclosed\n", "not valid YAML")],
)
def test_unreadable_files(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=words) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\ntransport: local\nruntime: onnxruntime\n")
    with pytest.raises(ConfigError):
        load_profile(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_profile_is_immutable_and_round_trips():
    prof = DeviceProfile.from_dict(SSH_MIN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.threads = 2
    again = DeviceProfile.from_dict(prof.to_dict())
    assert again.key() == prof.key() and again.ssh == prof.ssh


def test_cli_reports_a_bad_field_in_one_line(tmp_path):
    path = write(tmp_path, with_(SSH_MIN, ssh__hostname="pi"))
    p = subprocess.run(
        [sys.executable, "-m", "edgenas", "device", "check", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "ssh.hostname" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("runtime, words", [
    ("onnxruntime", "onnxruntime's CPU execution provider has no fp16 kernels on x86"),
    ("tflite", "edgenas builds no fp16 TFLite tables"),
])
def test_precision_fp16_is_one_line_naming_what_lacks_it(runtime, words, tmp_path, capsys):
    from edgenas.cli import main

    path = tmp_path / "fp16.yaml"
    path.write_text(f"name: box\ntransport: local\nruntime: {runtime}\nprecision: fp16\n")
    assert main(["profile", str(path), "--space", "mbv3-tiny", "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.yaml").exists()
