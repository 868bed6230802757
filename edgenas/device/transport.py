"""Transports: run commands and copy files on a device, locally or over SSH.

Both transports share one small interface::

    with open_transport(profile) as t:          # connects once, makes a private temp dir
        t.put_many([(local_path, "agent.py"), ...])   # batched upload into t.tmpdir
        res = t.run(["python3", "-V"], timeout=30)    # -> Result(rc, stdout, stderr)
        for line in t.stream([...], timeout=600):     # stdout lines as they arrive
            ...
    # the temp dir is removed here, on success and on failure alike

`stream`'s timeout is an *idle* timeout: the longest the command may go without printing a
line. A command that exits with a non-zero status raises `CommandError` (with rc and stderr);
a dropped connection raises `ConnectionLost`. Both are `DeviceError`s.

The SSH transport uses paramiko (the optional extra ``edgenas[ssh]``), imported only when an
SSH transport is opened. Host keys are verified against the profile's known_hosts file and an
unknown or changed key is refused, unless the profile opts into trust-on-first-use (which
still refuses a changed key). A run uses one SSH connection and one SFTP session.
"""
from __future__ import annotations

import logging
import os
import posixpath
import queue
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from edgenas.device.profile import DeviceProfile
from edgenas.errors import DeviceError, require

log = logging.getLogger(__name__)

_STDERR_KEEP = 64 * 1024  # bytes of stderr kept for error messages


@dataclass(frozen=True)
class Result:
    """The outcome of `Transport.run`."""

    rc: int
    stdout: str
    stderr: str


class CommandError(DeviceError):
    """A device command exited with a non-zero status."""

    def __init__(self, message: str, rc: int, stderr: str = ""):
        super().__init__(message)
        self.rc = rc
        self.stderr = stderr


class ConnectionLost(DeviceError):
    """The connection to the device dropped while a command was running."""


class Transport(ABC):
    """Runs commands and stores files on one device, inside a per-run temporary directory."""

    profile: DeviceProfile
    tmpdir: str  # absolute path on the device; exists between __enter__ and close()

    # -- lifecycle ------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> "Transport":
        """Connect and create `tmpdir`."""

    @abstractmethod
    def close(self) -> None:
        """Remove `tmpdir` (best effort when the connection is gone) and disconnect."""

    def __enter__(self) -> "Transport":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- files ----------------------------------------------------------------------------
    def put(self, local_path: str | os.PathLike, remote_name: str | None = None) -> str:
        """Copy one file into `tmpdir`; returns its path on the device."""
        return self.put_many([(local_path, remote_name)])[0]

    def put_many(self, files: Iterable[tuple[str | os.PathLike, str | None]]) -> list[str]:
        """Copy files into `tmpdir` in one batch; returns their paths on the device."""
        items = []
        seen = set()
        for local, name in files:
            local = Path(local)
            name = name or local.name
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"remote name must be a plain file name, got {name!r}")
            if name in seen:
                raise ValueError(f"remote name {name!r} is used twice in one upload")
            if not local.is_file():
                raise DeviceError(f"cannot upload {local}: no such file")
            seen.add(name)
            items.append((local, name))
        return self._put_many(items)

    @abstractmethod
    def _put_many(self, items: list[tuple[Path, str]]) -> list[str]: ...

    def remove(self, remote_names: Iterable[str]) -> None:
        """Delete files from `tmpdir` (e.g. a processed chunk of models); missing ones are ignored."""
        self._remove([n for n in remote_names if n and "/" not in n])

    @abstractmethod
    def _remove(self, names: list[str]) -> None: ...

    # -- commands -------------------------------------------------------------------------
    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float | None = None, input: str | bytes | None = None) -> Result:
        """Run a command to completion (total `timeout` seconds); never raises on a non-zero rc."""

    @abstractmethod
    def stream(self, argv: Sequence[str], timeout: float | None = None) -> Iterator[str]:
        """Yield the command's stdout lines (without newline) as they arrive.

        `timeout` bounds the silence between lines. Raises `CommandError` if the command
        exits non-zero (after yielding everything it printed).
        """

    def describe(self) -> str:
        return f"device '{self.profile.name}'"


def open_transport(profile: DeviceProfile) -> Transport:
    """The transport for a profile, not yet open: use it as a context manager."""
    if profile.transport == "local":
        return LocalTransport(profile)
    if profile.transport == "ssh":
        return SSHTransport(profile)
    raise DeviceError(f"unknown transport {profile.transport!r}")  # the profile loader prevents this


def _with_env(profile: DeviceProfile, argv: Sequence[str]) -> list[str]:
    if not profile.env:
        return list(argv)
    return ["env", *[f"{k}={v}" for k, v in profile.env.items()], *argv]


def _tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------
# local


class LocalTransport(Transport):
    """This machine: commands are subprocesses, files go to a local temporary directory."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.tmpdir = ""

    def open(self) -> "LocalTransport":
        base = os.path.expanduser(self.profile.workdir)
        try:
            os.makedirs(base, exist_ok=True)
            self.tmpdir = tempfile.mkdtemp(prefix="edgenas-", dir=base)
        except OSError as exc:
            raise DeviceError(f"cannot create a temporary directory in {base} ({exc}); set 'workdir' in {self.profile.source}") from exc
        return self

    def close(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = ""

    def _put_many(self, items):
        out = []
        for local, name in items:
            dst = os.path.join(self.tmpdir, name)
            shutil.copyfile(local, dst)
            out.append(dst)
        return out

    def _remove(self, names):
        for n in names:
            try:
                os.unlink(os.path.join(self.tmpdir, n))
            except FileNotFoundError:
                pass

    def _env(self):
        env = dict(os.environ)
        env.update(self.profile.env)
        return env

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return [os.fspath(a) for a in argv]

    def run(self, argv, timeout=None, input=None):
        if isinstance(input, str):
            input = input.encode()
        try:
            p = subprocess.run(
                self._argv(argv), input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=timeout, env=self._env(), cwd=self.tmpdir or None,
            )
        except FileNotFoundError:
            return Result(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{self.describe()}: command {argv[0]} timed out after {timeout:g} s") from exc
        return Result(p.returncode, _decode(p.stdout), _decode(p.stderr))

    def stream(self, argv, timeout=None):
        argv = self._argv(argv)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self._env(), cwd=self.tmpdir or None,
            )
        except FileNotFoundError:
            raise CommandError(f"{self.describe()}: {argv[0]}: command not found", 127, "") from None
        # Reader threads feed one queue so the idle timeout works and stderr never blocks.
        q: queue.Queue = queue.Queue()
        err_chunks: list[bytes] = []

        def read_out():
            for line in iter(proc.stdout.readline, b""):
                q.put(line)
            q.put(None)

        def read_err():
            size = 0
            for chunk in iter(lambda: proc.stderr.read1(4096), b""):
                err_chunks.append(chunk)
                size += len(chunk)
                while size > _STDERR_KEEP and len(err_chunks) > 1:
                    size -= len(err_chunks.pop(0))

        threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
        for t in threads:
            t.start()
        finished = False
        try:
            def next_line():
                try:
                    return q.get(timeout=timeout)
                except queue.Empty:
                    raise DeviceError(
                        f"{self.describe()}: {os.path.basename(argv[0])} printed nothing for {timeout:g} s; stopped it"
                    ) from None

            for line in iter(next_line, None):  # None: stdout reached EOF
                yield _decode(line).rstrip("\r\n")
            rc = proc.wait()
            threads[1].join(timeout=5)
            finished = True
            if rc != 0:
                stderr = _decode(b"".join(err_chunks))
                raise CommandError(
                    f"{self.describe()}: command exited with status {rc}: {_tail(stderr, 500) or '(no stderr)'}", rc, stderr
                )
        finally:
            if not finished and proc.poll() is None:
                proc.kill()
                proc.wait()
            for t in threads:  # they end at EOF, which the exit (or the kill) brings
                t.join(timeout=2)
            for f in (proc.stdout, proc.stderr):
                f.close()


# ----------------------------------------------------------------------------------------------
# ssh


def _host_label(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SSHTransport(Transport):
    """A device over SSH (paramiko): one connection and one SFTP session per run."""

    def __init__(self, profile: DeviceProfile):
        if profile.ssh is None:
            raise DeviceError(f"{profile.source}: transport ssh needs an 'ssh:' section")
        self.profile = profile
        self.cfg = profile.ssh
        self.tmpdir = ""
        self.client = None
        self.sftp = None

    def describe(self) -> str:
        return f"device '{self.profile.name}' ({self.cfg.user}@{self.cfg.host}:{self.cfg.port})"

    # -- connecting -----------------------------------------------------------------------
    def open(self) -> "SSHTransport":
        paramiko = require("paramiko", "ssh")
        try:
            self.client = self._connect(paramiko)
            self.client.get_transport().set_keepalive(15)
            self.sftp = self.client.open_sftp()
            self.sftp.get_channel().settimeout(self.cfg.command_timeout)
            self.tmpdir = self._make_tmpdir()
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, paramiko, attempts: int | None = None):
        cfg = self.cfg
        label = _host_label(cfg.host, cfg.port)
        kh = cfg.known_hosts
        keyscan = f"ssh-keyscan -p {cfg.port} {cfg.host} >> {kh}"
        password = None
        if cfg.password_env:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise DeviceError(
                    f"{self.describe()}: environment variable {cfg.password_env} (ssh.password_env in "
                    f"{self.profile.source}) is not set; export it or use a key"
                )
        if cfg.identity_file and not os.path.isfile(cfg.identity_file):
            raise DeviceError(
                f"{self.describe()}: identity_file {cfg.identity_file} does not exist; fix ssh.identity_file in {self.profile.source}"
            )

        class UnknownHostKey(paramiko.SSHException):
            def __init__(self, key):
                super().__init__("unknown host key")
                self.key = key

        class Reject(paramiko.RejectPolicy):
            """RejectPolicy that keeps the offered key so the message can show its fingerprint."""

            def missing_host_key(self, client, hostname, key):
                raise UnknownHostKey(key)

        class TrustOnFirstUse(paramiko.AutoAddPolicy):
            """AutoAddPolicy that appends the one new key instead of rewriting known_hosts.

            (paramiko's own policy rewrites the whole file, dropping comments and lines it
            cannot parse.)"""

            def missing_host_key(self, client, hostname, key):
                client.get_host_keys().add(hostname, key.get_name(), key)
                _touch_private(kh)
                with open(kh, "a", encoding="ascii") as f:
                    f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
                log.warning("trusting the new host key %s of %s (saved to %s)", _fingerprint(key), hostname, kh)

        attempts = cfg.retries + 1 if attempts is None else attempts
        last_exc: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                delay = cfg.backoff * (2 ** (attempt - 1))
                log.info("%s: connection failed (%s); retry %d/%d in %.1f s",
                         self.describe(), last_exc, attempt, cfg.retries, delay)
                time.sleep(delay)
            client = paramiko.SSHClient()
            if os.path.exists(kh):
                try:
                    # Into the "system" set so paramiko never rewrites the file itself.
                    client.load_system_host_keys(kh)
                except (OSError, paramiko.SSHException) as exc:
                    raise DeviceError(f"{self.describe()}: cannot read known_hosts {kh} ({exc})") from exc
            client.set_missing_host_key_policy(TrustOnFirstUse() if cfg.trust_on_first_use else Reject())
            try:
                client.connect(
                    cfg.host, port=cfg.port, username=cfg.user, password=password,
                    key_filename=cfg.identity_file, allow_agent=True,
                    look_for_keys=cfg.identity_file is None,
                    timeout=cfg.connect_timeout, banner_timeout=cfg.connect_timeout,
                    auth_timeout=cfg.connect_timeout, channel_timeout=cfg.connect_timeout,
                )
                return client
            except UnknownHostKey as exc:
                client.close()
                fp = _fingerprint(exc.key)
                where = kh if os.path.exists(kh) else f"{kh} (which does not exist)"
                raise DeviceError(
                    f"{self.describe()}: host key of {label} ({fp}) is not in {where}; check it is the "
                    f"device's key, then add it with: {keyscan}  (or set ssh.trust_on_first_use: true "
                    f"in {self.profile.source})"
                ) from None
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise DeviceError(
                    f"{self.describe()}: the host key of {label} has CHANGED ({_fingerprint(exc.key)}, "
                    f"known_hosts has {_fingerprint(exc.expected_key)}); this may be an attack. If the "
                    f"device was reinstalled, remove the old key with: ssh-keygen -R '{label}' -f {kh} "
                    f"and add the new one with: {keyscan}"
                ) from None
            except paramiko.PasswordRequiredException:
                client.close()
                raise DeviceError(
                    f"{self.describe()}: the key {cfg.identity_file} is encrypted; load it into ssh-agent "
                    f"(ssh-add {cfg.identity_file}) and remove ssh.identity_file from {self.profile.source}"
                ) from None
            except paramiko.AuthenticationException as exc:
                client.close()
                how = (f"key {cfg.identity_file}" if cfg.identity_file else
                       f"password from ${cfg.password_env}" if cfg.password_env else "ssh-agent / ~/.ssh keys")
                raise DeviceError(
                    f"{self.describe()}: authentication failed ({exc}) using {how}; install your public "
                    f"key with: ssh-copy-id -p {cfg.port} {cfg.user}@{cfg.host}"
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:  # refused, timeout, banner...
                client.close()
                last_exc = exc
        raise DeviceError(
            f"{self.describe()}: cannot connect after {attempts} attempt(s): {last_exc or 'unknown error'}"
        )

    def _make_tmpdir(self) -> str:
        base = self.profile.workdir
        if base == "~" or base.startswith("~/"):
            base = posixpath.join(self.sftp.normalize("."), base[2:])
        path = posixpath.join(base, "edgenas-" + secrets.token_hex(6))
        try:
            self.sftp.mkdir(path, mode=0o700)
        except OSError as exc:
            raise DeviceError(
                f"{self.describe()}: cannot create {path} ({exc}); set 'workdir' in {self.profile.source} "
                "to a writable directory on the device"
            ) from exc
        return path

    def close(self) -> None:
        tmp, self.tmpdir = self.tmpdir, ""
        try:
            if tmp and self.client is not None:
                self._remove_tmpdir(tmp)
        finally:
            if self.sftp is not None:
                try:
                    self.sftp.close()
                except Exception:
                    pass
                self.sftp = None
            if self.client is not None:
                self.client.close()
                self.client = None

    def _remove_tmpdir(self, tmp: str) -> None:
        """Delete the run's directory over SFTP (no shell needed), falling back to rm -rf.

        After a dropped connection, one fresh connection is tried to do it.
        """
        if not self._alive():
            log.info("%s: connection lost; reconnecting once to remove %s", self.describe(), tmp)
            try:
                self.client.close()
                self.client = self._connect(require("paramiko", "ssh"), attempts=1)
                self.sftp = self.client.open_sftp()
                self.sftp.get_channel().settimeout(self.cfg.command_timeout)
            except Exception as exc:
                log.warning("%s: could not remove %s: cannot reconnect (%s)", self.describe(), tmp, exc)
                return
        try:
            self._sftp_rmtree(tmp)
            return
        except Exception as exc:  # e.g. a file the agent made read-only; let rm try
            log.debug("%s: SFTP removal of %s failed (%s); using rm -rf", self.describe(), tmp, exc)
        try:
            res = self.run(["rm", "-rf", "--", tmp], timeout=min(60.0, self.cfg.command_timeout))
            if res.rc != 0:
                log.warning("%s: could not remove %s: %s", self.describe(), tmp, res.stderr.strip())
        except Exception as exc:
            log.warning("%s: could not remove %s (%s)", self.describe(), tmp, exc)

    def _sftp_rmtree(self, path: str) -> None:
        import stat

        for entry in self.sftp.listdir_attr(path):
            child = posixpath.join(path, entry.filename)
            if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                self._sftp_rmtree(child)
            else:
                self.sftp.remove(child)
        self.sftp.rmdir(path)

    # -- files ----------------------------------------------------------------------------
    def _put_many(self, items):
        out = []
        for local, name in items:
            dst = posixpath.join(self.tmpdir, name)
            try:
                self.sftp.put(os.fspath(local), dst)
            except (OSError, EOFError) as exc:
                self._raise_if_lost(exc)
                raise DeviceError(f"{self.describe()}: upload of {local} failed ({exc})") from exc
            out.append(dst)
        return out

    def _remove(self, names):
        for n in names:
            try:
                self.sftp.remove(posixpath.join(self.tmpdir, n))
            except FileNotFoundError:
                pass
            except (OSError, EOFError) as exc:
                self._raise_if_lost(exc)
                raise DeviceError(f"{self.describe()}: cannot remove {n} ({exc})") from exc

    # -- commands -------------------------------------------------------------------------
    def _alive(self) -> bool:
        t = self.client.get_transport() if self.client is not None else None
        return bool(t and t.is_active())

    def _raise_if_lost(self, exc: BaseException | None = None):
        if not self._alive():
            raise ConnectionLost(f"{self.describe()}: connection lost" + (f" ({exc})" if exc else "")) from exc

    # Every command runs as  sh -c 'echo "$$"; exec "$@"' edgenas ARGV...  : the shell prints its
    # PID, then becomes the command (same PID), so a command we give up on (timeout, consumer
    # stopped reading) can be killed; without a pty, closing the channel would not stop it.
    _WRAP = ["sh", "-c", 'echo "$$"; exec "$@"', "edgenas"]

    def _open_channel(self, argv, wrap: bool = True):
        if self.client is None:
            raise DeviceError(f"{self.describe()}: transport is not open")
        full = _with_env(self.profile, [os.fspath(a) for a in argv])
        cmd = shlex.join(self._WRAP + full if wrap else full)
        try:
            chan = self.client.get_transport().open_session(timeout=self.cfg.connect_timeout)
            chan.exec_command(cmd)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise DeviceError(f"{self.describe()}: cannot start {argv[0]} ({exc})") from exc
        return chan

    def _kill(self, pid: int | None) -> None:
        """Best effort: stop a remote command we stopped waiting for."""
        if pid is None or not self._alive():
            return
        try:
            chan = self._open_channel(["kill", "-KILL", str(pid)], wrap=False)
            chan.settimeout(5)
            chan.recv_exit_status()
            chan.close()
        except Exception as exc:
            log.debug("%s: could not kill remote pid %s (%s)", self.describe(), pid, exc)

    def _pump(self, chan, idle: float | None, deadline: float | None, argv):
        """Yield ("out"|"err", bytes) chunks until the channel ends; enforce the timeouts."""
        import select

        last = time.monotonic()
        ended = eof_seen = False
        while not ended:
            got = False
            while chan.recv_ready():
                data = chan.recv(65536)
                if not data:
                    break
                got = True
                yield "out", data
            while chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                if not data:
                    break
                got = True
                yield "err", data
            if got:
                last = time.monotonic()
                continue
            if chan.eof_received or chan.closed:
                # Data that arrived just before the EOF may still be buffered: drain once more
                # after seeing it; the pass after that ends.
                ended = eof_seen
                eof_seen = True
                continue
            if not self._alive():
                raise ConnectionLost(f"{self.describe()}: connection lost while {posixpath.basename(argv[0])} was running")
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise DeviceError(f"{self.describe()}: {posixpath.basename(argv[0])} timed out")
            if idle is not None and now - last > idle:
                raise DeviceError(
                    f"{self.describe()}: {posixpath.basename(argv[0])} printed nothing for {idle:g} s; stopped it"
                )
            select.select([chan], [], [], 0.2)

    def _lines(self, chan, argv, idle, deadline, err: bytearray, state: dict):
        """Yield stdout lines; the first line (the wrapper's PID) goes to state["pid"]."""
        buf = b""
        for kind, data in self._pump(chan, idle, deadline, argv):
            if kind == "err":
                err += data
                if len(err) > _STDERR_KEEP:
                    del err[: len(err) - _STDERR_KEEP]
                continue
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if "pid" not in state:
                    state["pid"] = int(line) if line.strip().isdigit() else None
                    continue
                yield _decode(line).rstrip("\r")
        if buf:
            yield _decode(buf).rstrip("\r")

    def run(self, argv, timeout=None, input=None):
        chan = self._open_channel(argv)
        out = bytearray()
        err = bytearray()
        finished = False
        try:
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
            deadline = time.monotonic() + timeout if timeout else None
            for kind, data in self._pump(chan, None, deadline, argv):
                (out if kind == "out" else err).extend(data)
            rc = self._exit_status(chan, argv)
            finished = True
            _, _, body = bytes(out).partition(b"\n")  # drop the wrapper's PID line
            return Result(rc, _decode(body), _decode(bytes(err)))
        finally:
            chan.close()
            if not finished:
                head = bytes(out).split(b"\n", 1)
                self._kill(int(head[0]) if len(head) == 2 and head[0].strip().isdigit() else None)

    def _exit_status(self, chan, argv) -> int:
        end = time.monotonic() + 10
        while not chan.exit_status_ready():
            if not self._alive():
                raise ConnectionLost(f"{self.describe()}: connection lost while {posixpath.basename(argv[0])} was running")
            if time.monotonic() > end:
                break
            time.sleep(0.01)
        return chan.recv_exit_status() if chan.exit_status_ready() else -1

    def stream(self, argv, timeout=None):
        chan = self._open_channel(argv)
        state: dict = {}
        finished = False
        try:
            chan.shutdown_write()
            err = bytearray()
            yield from self._lines(chan, argv, timeout, None, err, state)
            rc = self._exit_status(chan, argv)
            finished = True
            if rc != 0:
                stderr = _decode(bytes(err))
                if rc == -1 and not self._alive():
                    raise ConnectionLost(f"{self.describe()}: connection lost")
                raise CommandError(
                    f"{self.describe()}: command exited with status {rc}: {_tail(stderr, 500) or '(no stderr)'}", rc, stderr
                )
        finally:
            chan.close()
            if not finished:
                self._kill(state.get("pid"))


def _fingerprint(key) -> str:
    try:
        return f"{key.get_name()} {key.fingerprint}"  # paramiko >= 3: "SHA256:..."
    except Exception:
        return key.get_name()


def _touch_private(path: str) -> None:
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
