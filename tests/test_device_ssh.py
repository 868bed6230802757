"""The SSH transport, the runner and `edgenas device check` against a real OpenSSH server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sshd import SSHServer, require_ssh_tools, sshd_server, ssh_server  # noqa: F401  (fixtures)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from edgenas.cli import main as cli_main  # noqa: E402
from edgenas.device import ConnectionLost, device_fingerprint, measure_models, open_transport  # noqa: E402
from edgenas.errors import DeviceError  # noqa: E402

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[1]


def tiny_models(d: Path) -> list[Path]:
    """Three tiny ONNX models (float, int8 input, uint8 input) and a corrupt one."""
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, tp, op in (("relu", TensorProto.FLOAT, "Relu"), ("int8", TensorProto.INT8, "Abs"),
                         ("uint8", TensorProto.UINT8, "Neg")):
        nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node(op, ["f"], ["y"])]
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", tp, [1, 2, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(d / f"{name}.onnx"))
        out.append(d / f"{name}.onnx")
    (d / "broken.onnx").write_bytes(b"\x00not a model")
    out.append(d / "broken.onnx")
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("ssh-models"))


@pytest.fixture
def workdir(tmp_path):
    """The 'remote' base directory (the server is this machine, so the test can look inside)."""
    w = tmp_path / "remote"
    w.mkdir()
    return w


def write_profile(server, path: Path, **overrides) -> Path:
    return server.write_profile(path, **overrides)


# ------------------------------------------------------------------------------- device check


def test_device_check_over_ssh(ssh_server, workdir, tmp_path, capsys):
    prof = ssh_server.write_profile(tmp_path / "dev.yaml", workdir=str(workdir))
    assert cli_main(["device", "check", str(prof)]) == 0
    out = capsys.readouterr().out
    import onnxruntime

    for word in (f"root@127.0.0.1:{ssh_server.port}" if ssh_server.user == "root" else "127.0.0.1",
                 "cpu", "cores", "python", f"onnxruntime {onnxruntime.__version__}", "CPUExecutionProvider", "ready"):
        assert word in out, (word, out)

    assert list(workdir.iterdir()) == []


def test_device_check_reports_missing_python_over_ssh(ssh_server, workdir, tmp_path, capsys):
    prof = ssh_server.write_profile(tmp_path / "dev.yaml", workdir=str(workdir), python="/nonexistent/bin/python3")
    assert cli_main(["device", "check", str(prof)]) == 1
    out = capsys.readouterr().out
    assert "python (/nonexistent/bin/python3)" in out and "install Python 3" in out


def test_wrong_profile_field_names_field_and_file(tmp_path, capsys):
    # Needs no server: a profile error is found before connecting.
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "transport": "ssh", "runtime": "onnxruntime",
                                    "ssh": {"hostname": "127.0.0.1", "user": "root"}}))
    assert cli_main(["device", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ssh.hostname" in err and str(path) in err


# ------------------------------------------------------------------------------- measuring


def test_measure_models_over_ssh_one_connection_one_sftp_session(ssh_server, workdir, models):
    profile = ssh_server.profile(workdir=str(workdir))
    before = {k: ssh_server.count_log(k) for k in ("Accepted publickey", "subsystem 'sftp'", "Starting session: command")}
    seen = []
    results = measure_models(profile, models, on_result=seen.append, chunk_size=2)
    after = {k: ssh_server.count_log(k) for k in before}
    assert [r.model for r in seen] == [p.name for p in models]
    assert [r.model for r in results] == [p.name for p in models]
    for r in results[:3]:
        assert r.ok and r.count == profile.runs and 0 < r.p10_ms <= r.median_ms <= r.p90_ms, r
    assert not results[3].ok and results[3].error
    assert after["Accepted publickey"] - before["Accepted publickey"] == 1  # one connection
    assert after["subsystem 'sftp'"] - before["subsystem 'sftp'"] == 1  # all uploads in one SFTP session
    # two chunks -> the agent ran twice; no command per file (uploads and cleanup use SFTP)
    assert after["Starting session: command"] - before["Starting session: command"] == 2
    assert list(workdir.iterdir()) == []  # the remote temp dir is gone


def test_dropped_connection_raises_and_a_rerun_resumes(ssh_server, workdir, models, tmp_path):
    """Kill sshd (and its sessions) after the first result: the run fails fast with
    ConnectionLost, the results so far are kept, and a rerun measures the rest."""
    # The second model stalls the agent (a test hook makes it sleep), so the drop is certain
    # to happen while a model is being measured.
    slow = tmp_path / "slow.onnx"
    model = onnx.load(str(models[0]))
    model.doc_string = "EDGENAS_TEST_SLOW"
    onnx.save(model, str(slow))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time, onnxruntime\n"
        "_Base = onnxruntime.InferenceSession\n"
        "class _Slow(_Base):\n"
        "    def __init__(self, path, *a, **k):\n"
        "        with open(path, 'rb') as f:\n"
        "            if b'EDGENAS_TEST_SLOW' in f.read():\n"
        "                time.sleep(60)\n"
        "        super().__init__(path, *a, **k)\n"
        "onnxruntime.InferenceSession = _Slow\n"
    )
    batch = [models[0], slow, models[1]]
    profile = ssh_server.profile(workdir=str(workdir), env={"PYTHONPATH": str(hook)})
    saved = {}

    def save(r):
        saved[r.model] = r
        if len(saved) == 1:
            ssh_server.stop()   # the connection drops mid-run
            ssh_server.start()  # the device comes back (so the temp dir can be cleaned up)

    start = time.monotonic()
    with pytest.raises(ConnectionLost):
        measure_models(profile, batch, on_result=save)
    assert time.monotonic() - start < 30
    assert list(saved) == ["relu.onnx"]
    assert list(workdir.iterdir()) == []  # removed over a fresh connection after the drop

    rest = [p for p in batch if p.name not in saved]
    for r in measure_models(ssh_server.profile(workdir=str(workdir)), rest):
        saved[r.model] = r
    assert list(saved) == ["relu.onnx", "slow.onnx", "int8.onnx"] and all(r.ok for r in saved.values())


def test_missing_runtime_over_ssh_is_a_device_error_and_cleans_up(ssh_server, workdir, models, tmp_path):
    fake = tmp_path / "fake"
    (fake / "onnxruntime").mkdir(parents=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    profile = ssh_server.profile(workdir=str(workdir), env={"PYTHONPATH": str(fake)})  # env crosses ssh
    with pytest.raises(DeviceError, match="pip install onnxruntime"):
        measure_models(profile, models[:1])
    assert list(workdir.iterdir()) == []


# ------------------------------------------------------------------------------- temp dir


def test_remote_tmpdir_removed_after_success_and_after_failure(ssh_server, workdir, tmp_path):
    profile = ssh_server.profile(workdir=str(workdir))
    f = tmp_path / "payload.bin"
    f.write_bytes(b"x" * 1000)
    with open_transport(profile) as t:
        tmp = Path(t.tmpdir)
        assert tmp.parent == workdir and tmp.is_dir()
        assert oct(tmp.stat().st_mode & 0o777) == oct(0o700)
        remote = t.put(f, "payload.bin")
        assert Path(remote).read_bytes() == f.read_bytes()
        os.makedirs(tmp / "made" / "by" / "agent")  # nested output is removed too
        res = t.run(["sh", "-c", f"wc -c < {remote}; echo err >&2; exit 5"], timeout=30)
        assert (res.rc, res.stdout.strip(), res.stderr.strip()) == (5, "1000", "err")
    assert not tmp.exists()

    with pytest.raises(RuntimeError, match="boom"):
        with open_transport(profile) as t:
            tmp = Path(t.tmpdir)
            t.put(f, "payload.bin")
            raise RuntimeError("boom")
    assert not tmp.exists()
    assert list(workdir.iterdir()) == []


def _processes_running(cmdline: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip() == cmdline.encode():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ssh_stream_idle_timeout_stops_the_remote_command(ssh_server, workdir):
    profile = ssh_server.profile(workdir=str(workdir))
    with open_transport(profile) as t:
        got = []
        start = time.monotonic()
        with pytest.raises(DeviceError, match="printed nothing for 1 s"):
            for line in t.stream(["sh", "-c", "echo first; exec sleep 31.25"], timeout=1):
                got.append(line)
        assert got == ["first"] and time.monotonic() - start < 15
        # Closing the channel alone would leave it running (no pty); the transport kills it.
        deadline = time.monotonic() + 5
        while _processes_running("sleep 31.25") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_running("sleep 31.25") == []
    assert list(workdir.iterdir()) == []


# ------------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused(ssh_server, workdir, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    profile = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(kh)})
    with pytest.raises(DeviceError) as info:
        device_fingerprint(profile)
    msg = str(info.value)
    assert f"ssh-keyscan -p {ssh_server.port} 127.0.0.1 >> {kh}" in msg
    assert "ssh-ed25519 SHA256:" in msg and "trust_on_first_use" in msg
    assert kh.read_text() == ""  # nothing was added

    missing = tmp_path / "nowhere" / "known_hosts"
    profile = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(missing)})
    with pytest.raises(DeviceError, match="does not exist"):
        device_fingerprint(profile)
    assert not missing.exists()


def test_changed_host_key_is_refused_even_with_trust_on_first_use(ssh_server, workdir, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{ssh_server.port} {kind} {b64}\n")
    for tofu in (False, True):
        profile = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(kh), "trust_on_first_use": tofu})
        with pytest.raises(DeviceError) as info:
            device_fingerprint(profile)
        msg = str(info.value)
        assert "CHANGED" in msg and f"ssh-keygen -R '[127.0.0.1]:{ssh_server.port}'" in msg
    assert kh.read_text() == f"[127.0.0.1]:{ssh_server.port} {kind} {b64}\n"


def test_trust_on_first_use_accepts_and_records_the_key(ssh_server, workdir, tmp_path):
    kh = tmp_path / "fresh" / "known_hosts"
    profile = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(kh), "trust_on_first_use": True})
    with open_transport(profile) as t:
        assert t.tmpdir
    assert kh.read_text().strip() == ssh_server.host_key_line
    # ...and from now on it is an ordinary known host, also without trust_on_first_use.
    strict = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(kh)})
    with open_transport(strict) as t:
        assert t.tmpdir
    assert kh.read_text().strip() == ssh_server.host_key_line  # not appended twice


def test_trust_on_first_use_keeps_existing_entries(ssh_server, workdir, tmp_path):
    kh = tmp_path / "known_hosts"
    keep = "# my comment\nexample.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKm+LbLuV8JYPp7yWu7L0ONxL6p6Db6m3vEEsPqBu7Ye\n"
    kh.write_text(keep)
    profile = ssh_server.profile(workdir=str(workdir), ssh={"known_hosts": str(kh), "trust_on_first_use": True})
    with open_transport(profile):
        pass
    assert kh.read_text() == keep + ssh_server.host_key_line + "\n"


# ------------------------------------------------------------------------------- connecting


def test_wrong_key_is_an_authentication_error_without_retries(ssh_server, workdir, tmp_path):
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    profile = ssh_server.profile(workdir=str(workdir), ssh={"identity_file": str(stranger), "retries": 3, "backoff": 5})
    start = time.monotonic()
    with pytest.raises(DeviceError, match="authentication failed.*ssh-copy-id"):
        device_fingerprint(profile)
    assert time.monotonic() - start < 5  # no backoff: retrying cannot fix a wrong key

    locked = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    profile = ssh_server.profile(workdir=str(workdir), ssh={"identity_file": str(locked)})
    with pytest.raises(DeviceError, match=f"encrypted.*ssh-add {locked}"):
        device_fingerprint(profile)


def test_connect_retries_are_bounded_with_backoff(tmp_path):
    require_ssh_tools()  # paramiko
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    from edgenas.device import DeviceProfile

    profile = DeviceProfile.from_dict({
        "name": "nobody", "transport": "ssh", "runtime": "onnxruntime", "python": sys.executable,
        "ssh": {"host": "127.0.0.1", "port": port, "user": "root", "known_hosts": str(kh),
                "connect_timeout": 2, "retries": 2, "backoff": 0.2},
    })
    start = time.monotonic()
    with pytest.raises(DeviceError, match=r"cannot connect after 3 attempt\(s\)"):
        device_fingerprint(profile)
    elapsed = time.monotonic() - start
    assert 0.2 + 0.4 <= elapsed < 10, elapsed  # slept 0.2 s, then 0.4 s, then gave up


def test_password_env_must_be_set(ssh_server, workdir, monkeypatch):
    monkeypatch.delenv("EDGENAS_TEST_PW", raising=False)
    profile = ssh_server.profile(workdir=str(workdir), ssh={"password_env": "EDGENAS_TEST_PW"})
    with pytest.raises(DeviceError, match="EDGENAS_TEST_PW.*is not set"):
        device_fingerprint(profile)


def test_server_helper_stops_only_what_it_started(tmp_path):
    server = SSHServer(tmp_path, require_ssh_tools()).start()
    pid = server.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    server.stop()
    assert server.pid is None
    assert not Path(f"/proc/{pid}").exists()  # terminated and reaped
    assert "terminating" in server.log()  # it got our SIGTERM


def test_missing_sshd_skips_locally_but_fails_under_ci(monkeypatch):
    import sshd as sshd_helpers

    monkeypatch.setattr(sshd_helpers, "find_sshd", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="sshd"):
        sshd_helpers.require_ssh_tools()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        sshd_helpers.require_ssh_tools()
