"""A real OpenSSH server for tests: `SSHServer` and the `sshd_server` pytest fixture.

The server listens on 127.0.0.1 on a free port, with its own host key, a user key and
authorized_keys in a temporary directory, and logs to `server.log_path`. The login user is the
current user. Use it from a test module with::

    from sshd import sshd_server, ssh_server  # noqa: F401  (fixtures)

    @pytest.mark.ssh
    def test_x(ssh_server):
        profile = ssh_server.profile(workdir=str(tmp))       # a DeviceProfile for this server
        ...
        ssh_server.stop()       # kill the listener AND its live sessions (a dropped connection)
        ssh_server.start()      # same port and host key again

Where sshd (or ssh-keygen, or paramiko) is missing the tests are skipped with the reason; with
CI=true in the environment they fail instead, so CI never silently skips them.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under CI=true, where a missing tool is a broken setup."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: ssh tests must run, not skip)")
    pytest.skip(reason)


def find_sshd() -> str | None:
    for c in SSHD_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("sshd")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (Linux /proc); sshd runs each session in a child process."""
    if not os.path.isdir("/proc"):
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class _PortTaken(Exception):
    pass


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


class SSHServer:
    """One sshd started by a test. `.pid` is the listener's; `.stop()` ends it and its sessions."""

    def __init__(self, root: Path, sshd: str):
        self.root = Path(root)
        self.sshd = sshd
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.identity_file = self.root / "id_ed25519"
        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.config = self.root / "sshd_config"
        self.log_path = self.root / "sshd.log"
        self.pid_file = self.root / "sshd.pid"
        _keygen(self.host_key, "edgenas-test-host")
        _keygen(self.identity_file, "edgenas-test-user")
        shutil.copyfile(f"{self.identity_file}.pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o600)
        self._started_once = False
        self._write_config()

    def _write_config(self) -> None:
        pub = Path(f"{self.host_key}.pub").read_text().split()
        self.host_key_line = f"[{self.host}]:{self.port} {pub[0]} {pub[1]}"
        self.known_hosts.write_text(self.host_key_line + "\n")
        self.config.write_text(
            "\n".join([
                f"Port {self.port}",
                f"ListenAddress {self.host}",
                f"HostKey {self.host_key}",
                f"PidFile {self.pid_file}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "X11Forwarding no",
                "PrintMotd no",
                "LogLevel VERBOSE",  # logs each connection and session: tests count them
                "MaxStartups 50",
                "Subsystem sftp internal-sftp",
                "",
            ])
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> "SSHServer":
        """Start sshd and wait until it accepts connections (same port and key on a restart)."""
        if self.pid is not None:
            return self
        for _ in range(3):  # the free port may be taken by someone else before sshd binds it
            try:
                return self._start(timeout)
            except _PortTaken:
                if self._started_once:
                    raise RuntimeError(f"port {self.port} was taken while sshd was stopped:\n{self.log()}")
                self.port = _free_port()
                self._write_config()
        raise RuntimeError(f"sshd could not bind a free port:\n{self.log()}")

    def _start(self, timeout: float) -> "SSHServer":
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                if b"Address already in use" in self._log_bytes(log_start):
                    raise _PortTaken()
                raise RuntimeError(f"sshd exited:\n{self.log()}")
            # sshd logs this once it has bound and listens (a bare connect could reach whoever
            # else took the port).
            if f"Server listening on {self.host} port {self.port}.".encode() in self._log_bytes(log_start):
                self._started_once = True
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not accept connections on port {self.port} within {timeout} s:\n{self.log()}")

    def kill_sessions(self) -> None:
        """Kill every live session (and the commands in it) but keep the listener: a dropped link."""
        if self.proc is None:
            return
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop the sshd this object started, by PID, and the sessions it spawned."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill_sessions()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> "SSHServer":
        self.stop()
        return self.start()

    def log(self) -> str:
        return self._log_bytes().decode("utf-8", "replace").replace("\r\n", "\n")

    def _log_bytes(self, start: int = 0) -> bytes:
        try:
            return self.log_path.read_bytes()[start:]
        except OSError:
            return b""

    def count_log(self, text: str) -> int:
        return self.log().count(text)

    def profile_dict(self, **overrides) -> dict:
        """A profile mapping for this server (python: the interpreter running the tests)."""
        ssh = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "connect_timeout": 5,
            "command_timeout": 60,
            "retries": 0,
            "backoff": 0.1,
        }
        ssh.update(overrides.pop("ssh", {}))
        d = {
            "name": "test-sshd",
            "transport": "ssh",
            "ssh": ssh,
            "python": sys.executable,
            "runtime": "onnxruntime",
            "runtime_options": {"providers": ["CPUExecutionProvider"]},
            "threads": 1,
            "warmup": 1,
            "runs": 3,
        }
        d.update(overrides)
        return d

    def write_profile(self, path: Path, **overrides) -> Path:
        import yaml

        path = Path(path)
        path.write_text(yaml.safe_dump(self.profile_dict(**overrides), sort_keys=False))
        return path

    def profile(self, **overrides):
        from edgenas.device import DeviceProfile

        return DeviceProfile.from_dict(self.profile_dict(**overrides), source="<test sshd>")


def require_ssh_tools() -> str:
    """The sshd path, or skip (fail under CI=true) when sshd, ssh-keygen or paramiko is missing."""
    sshd = find_sshd()
    if sshd is None:
        skip_or_fail("OpenSSH server (sshd) is not installed (Debian: apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        skip_or_fail("ssh-keygen is not installed (Debian: apt-get install openssh-client)")
    try:
        import paramiko  # noqa: F401
    except ImportError:
        skip_or_fail("paramiko is not installed (pip install 'edgenas[ssh]')")
    return sshd


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory):
    """A running SSHServer shared by a module's tests; restarted if a test stopped it."""
    sshd = require_ssh_tools()
    server = SSHServer(tmp_path_factory.mktemp("sshd"), sshd).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_server(sshd_server):
    """The module's server, running (a previous test may have stopped it)."""
    sshd_server.start()
    return sshd_server
