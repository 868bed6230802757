"""Profiling over SSH against a real OpenSSH server on 127.0.0.1 (fixture in tests/sshd.py)."""
import pytest

from sshd import ssh_server, sshd_server  # noqa: F401  (fixtures)

from edgenas.errors import DeviceError
from edgenas.latency import LatencyTable, enumerate_ops, profile_device

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.ssh

FAST = dict(resolutions=[24], calibrate=0, progress=False)


def test_profile_over_ssh_builds_the_table(ssh_server, tmp_path):
    profile = ssh_server.profile(workdir=str(tmp_path))
    report = profile_device(profile, "mbv3-tiny", out=tmp_path / "t.yaml", **FAST)
    keys = {op.key for op in enumerate_ops(report.table.space(), [24])}
    assert set(report.measured) == keys and not report.failed
    table = LatencyTable.load(tmp_path / "t.yaml")
    assert set(table.ops) == keys
    assert table.header["device"]["transport"] == "ssh"
    assert [p.name for p in tmp_path.iterdir()] == ["t.yaml"]  # the device's temp dir is gone


def test_an_unknown_host_key_is_refused(ssh_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    profile = ssh_server.profile(workdir=str(tmp_path), ssh={"known_hosts": str(empty)})
    with pytest.raises(DeviceError, match="host key"):
        profile_device(profile, "mbv3-tiny", out=tmp_path / "t.yaml", **FAST)
    assert not (tmp_path / "t.yaml").exists()
    assert empty.read_text() == ""  # nothing was trusted


def test_killing_sshd_mid_run_then_resuming_measures_nothing_twice(ssh_server, tmp_path):
    profile = ssh_server.profile(workdir=str(tmp_path))
    out = tmp_path / "t.yaml"
    first = []

    def kill_sshd(key, result):
        first.append(key)
        if len(first) == 25:
            ssh_server.stop()  # kills the listener and its sessions by PID: the link drops mid-run

    with pytest.raises(DeviceError, match="rerun the same command"):
        profile_device(profile, "mbv3-tiny", out=out, on_result=kill_sshd, chunk_size=40, **FAST)
    saved = set(LatencyTable.load(out).ops)
    assert set(first) == saved and 25 <= len(saved) < 96

    ssh_server.start()
    second = profile_device(profile, "mbv3-tiny", out=out, **FAST)
    assert second.reused == len(saved)
    assert not set(second.measured) & saved  # nothing measured twice
    assert len(second.measured) == len(set(second.measured)) == 96 - len(saved)
    table = LatencyTable.load(out)
    assert set(table.ops) == {op.key for op in enumerate_ops(table.space(), [24])}
