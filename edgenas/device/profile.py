"""Device profiles: which device to measure on, how to reach it, and how to run models there.

A profile is a small YAML file (see `device_profiles/README.md` for commented examples). It is
read with `edgenas.validate.read_yaml` (the safe loader) and checked strictly: an unknown key, a value of the wrong type, or a
missing required field raises `ConfigError` naming the field and the file.

Schema (``*`` marks a required field)::

    name*            str   short device name, used in latency-table names ("raspberry-pi4")
    description      str   free text for people; ignored by the code
    transport*       str   "local" (this machine, a subprocess) or "ssh"
    ssh:                   required when transport is "ssh", refused otherwise
      host*          str   host name or address
      port           int   22
      user*          str   login name on the device
      identity_file  str   private key file (~ expanded); without it paramiko tries the
                           ssh-agent and the default keys in ~/.ssh
      known_hosts    str   host keys to verify against (~ expanded), default ~/.ssh/known_hosts
      trust_on_first_use bool  false; true accepts an unknown host key once and saves it to
                           known_hosts (a *changed* key is still refused)
      password_env   str   NAME of an environment variable holding the password; a literal
                           `password:` key is refused so passwords never live in files
      connect_timeout  number  seconds for TCP connect, banner and authentication, default 10
      command_timeout  number  seconds a remote command may stay silent before it is abandoned,
                           default 600 (the agent prints one line per model, so this bounds
                           the time for one model, not for the whole batch)
      retries        int   extra connection attempts after the first, default 3
      backoff        number  seconds before the first retry, doubled each time, default 1.0
    python           str   interpreter on the device; default "python3" over ssh and the
                           current interpreter (sys.executable) for transport "local"
    runtime*         str   "onnxruntime" or "tflite"
    runtime_options:       depends on the runtime; unknown keys are refused
      # onnxruntime
      providers      list  execution providers in priority order, default [CPUExecutionProvider];
                           any of CPUExecutionProvider, CUDAExecutionProvider,
                           TensorrtExecutionProvider
      spinning       bool  whether idle intra-op threads spin (onnxruntime's
                           session.intra_op.allow_spinning), default true; false keeps
                           multi-thread measurements on a shared or busy machine from
                           fighting other processes for the cores (the table key gets -nospin)
      # tflite
      delegate       str   "xnnpack" (default), "gpu" or "none" (plain builtin kernels)
      delegate_library str path or name of the GPU delegate shared library, default
                           "libtensorflowlite_gpu_delegate.so" (only with delegate: gpu)
      interpreter    str   "auto" (default: ai_edge_litert, then tflite_runtime),
                           "ai_edge_litert" or "tflite_runtime"
    threads          int   CPU threads the runtime may use, default 1 (onnxruntime: intra-op
                           threads, inter-op 1, sequential execution; tflite: the
                           interpreter's num_threads, which XNNPACK uses)
    warmup           int   untimed runs before timing each model, default 10
    runs             int   timed runs per model, default 50
    rounds           int   split the timed runs into this many rounds and report the lowest
                           round median, default 1 (plain median); use 3-5 on shared machines,
                           where bursts of load from other processes disturb single rounds
    workdir          str   base directory on the device for per-run temporary directories,
                           default /tmp (Termux: /data/data/com.termux/files/usr/tmp)
    env              map   extra environment variables for the agent process (str -> str)

`DeviceProfile.key()` (also `.slug`) is a readable string that identifies device x runtime x
options x threads, e.g. ``raspberry-pi4_onnxruntime-cpu_t4``; latency tables are named by it.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import math

from edgenas.errors import ConfigError
from edgenas.validate import _known_key, echo, message, read_yaml, user_path

TRANSPORTS = ("local", "ssh")
RUNTIMES = ("onnxruntime", "tflite")
ORT_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
TFLITE_DELEGATES = ("xnnpack", "gpu", "none")
TFLITE_INTERPRETERS = ("auto", "ai_edge_litert", "tflite_runtime")

# Short names used in profile keys.
_PROVIDER_SHORT = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "trt",
}

# Where `load_profile("name")` looks for a bare profile name.
PROFILE_DIR = Path("device_profiles")


@dataclass(frozen=True)
class SSHConfig:
    """How to reach a device over SSH. See the module docstring for every field."""

    host: str
    user: str
    port: int = 22
    identity_file: str | None = None  # ~ already expanded
    known_hosts: str = "~/.ssh/known_hosts"  # ~ already expanded by the loader
    trust_on_first_use: bool = False
    password_env: str | None = None  # NAME of an env var, never the password itself
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    retries: int = 3
    backoff: float = 1.0


@dataclass(frozen=True)
class DeviceProfile:
    """One device x runtime x options x threads combination. Build it with `load_profile`."""

    name: str
    transport: str  # "local" | "ssh"
    runtime: str  # "onnxruntime" | "tflite"
    python: str  # interpreter command on the device
    runtime_options: Mapping[str, Any] = field(default_factory=dict)  # normalised, defaults filled
    threads: int = 1
    warmup: int = 10  # untimed runs per model
    runs: int = 50  # timed runs per model
    rounds: int = 1  # the runs are split into rounds; the lowest round median is reported
    workdir: str = "/tmp"
    env: Mapping[str, str] = field(default_factory=dict)
    ssh: SSHConfig | None = None
    description: str = ""
    source: str = "<dict>"  # the file it was loaded from, for messages

    def key(self) -> str:
        """A readable identifier of device x runtime x options x threads, safe in file names."""
        if self.runtime == "onnxruntime":
            opts = "+".join(_PROVIDER_SHORT.get(p, p.lower()) for p in self.runtime_options["providers"])
            if not self.runtime_options.get("spinning", True):
                opts += "-nospin"
        else:
            opts = self.runtime_options["delegate"]
        raw = f"{self.name}_{self.runtime}-{opts}_t{self.threads}"
        return re.sub(r"[^A-Za-z0-9.+_-]+", "-", raw)

    @property
    def slug(self) -> str:
        return self.key()

    @property
    def command_timeout(self) -> float:
        """Seconds a device command may stay silent (ssh: from the profile; local: 600)."""
        return self.ssh.command_timeout if self.ssh else 600.0

    def agent_options(self) -> dict[str, Any]:
        """The measurement settings the device agent needs (its JSON job header)."""
        opts: dict[str, Any] = {
            "runtime": self.runtime,
            "threads": self.threads,
            "warmup": self.warmup,
            "runs": self.runs,
            "rounds": self.rounds,
        }
        if self.runtime == "onnxruntime":
            opts["providers"] = list(self.runtime_options["providers"])
            opts["spinning"] = bool(self.runtime_options.get("spinning", True))
        else:
            opts["delegate"] = self.runtime_options["delegate"]
            opts["delegate_library"] = self.runtime_options["delegate_library"]
            opts["interpreter"] = self.runtime_options["interpreter"]
        return opts

    def thread_settings(self) -> dict[str, Any]:
        """How the runtime is told to use threads, as the agent sets it (for table headers)."""
        if self.runtime == "onnxruntime":
            return {"intra_op_threads": self.threads, "inter_op_threads": 1, "execution_mode": "sequential",
                    "spinning": bool(self.runtime_options.get("spinning", True))}
        return {"num_threads": self.threads, "delegate": self.runtime_options["delegate"],
                "xnnpack_threads": self.threads if self.runtime_options["delegate"] == "xnnpack" else None}

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for embedding in latency tables); secrets are never part of a profile."""
        d: dict[str, Any] = {
            "name": self.name,
            "transport": self.transport,
            "python": self.python,
            "runtime": self.runtime,
            "runtime_options": dict(self.runtime_options),
            "threads": self.threads,
            "warmup": self.warmup,
            "runs": self.runs,
            "rounds": self.rounds,
            "workdir": self.workdir,
            "env": dict(self.env),
        }
        if self.ssh is not None:
            d["ssh"] = {k: getattr(self.ssh, k) for k in SSHConfig.__dataclass_fields__}
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "DeviceProfile":
        return _Parser(source).profile(data)


def load_profile(path: str | os.PathLike) -> DeviceProfile:
    """Load and validate a profile YAML file.

    `path` is a file, or a bare name such as ``local-cpu`` that is looked up as
    ``device_profiles/<name>.yaml`` relative to the current directory.
    """
    p = user_path(path, "device profile")
    if not p.exists() and p.suffix == "" and len(p.parts) == 1:
        candidate = PROFILE_DIR / f"{p.name}.yaml"
        if candidate.exists():
            p = candidate
    if not p.exists():
        raise ConfigError(f"device profile {str(path)!r} not found; pass a YAML file such as device_profiles/local-cpu.yaml")
    return _Parser(str(p)).profile(read_yaml(p, "device profile YAML file", max_bytes=1 << 20))


# --------------------------------------------------------------------------------------------
# validation

_MISSING = object()


class _Parser:
    """Checks one mapping section by section; every message names the field and the file."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field_name: str, value: Any, expected: str, rendered: bool = False) -> ConfigError:
        return ConfigError(message(self.source, field_name, value if rendered else echo(value), expected))

    def section(self, data: Any, where: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where or None, data, f"a mapping of {', '.join(allowed)}")
        for k in data:
            if not isinstance(k, str) or k not in allowed:
                name = f"{where}.{k}" if where else str(k)
                raise self.fail(name, "an unknown key", _known_key(k, list(allowed)), rendered=True)
        return data

    def get(self, data: dict, key: str, where: str, types, default=_MISSING, choices=None, minimum=None):
        name = f"{where}.{key}" if where else key
        value = data.get(key, _MISSING)
        if not isinstance(types, tuple):
            types = (types,)
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        if choices is not None:
            want = f"one of {', '.join(map(str, choices))}"
        elif minimum is not None:
            want += f" >= {minimum}"
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise self.fail(name, "nothing (the key is required)", want, rendered=True)
            return default
        # bool is an int in Python; never accept it where a number is meant.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if ok and isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**9:
            raise self.fail(name, value, f"{want} and <= {10**9}")
        if ok and isinstance(value, str) and len(value) > 4096:
            raise self.fail(name, f"a string of {len(value)} characters", "at most 4096 characters", rendered=True)
        if not ok or (choices is not None and value not in choices) or (minimum is not None and value < minimum):
            raise self.fail(name, value, want)
        return value

    def profile(self, data: Any) -> DeviceProfile:
        if data is None:
            raise self.fail(None, "an empty file", "a device profile (see device_profiles/README.md)", rendered=True)
        top = (
            "name", "description", "transport", "ssh", "python", "runtime", "runtime_options",
            "threads", "warmup", "runs", "rounds", "workdir", "env",
        )
        d = self.section(data, "", top)
        name = self.get(d, "name", "", str)
        if not name.strip():
            raise self.fail("name", name, "a non-empty string")
        transport = self.get(d, "transport", "", str, choices=TRANSPORTS)
        runtime = self.get(d, "runtime", "", str, choices=RUNTIMES)
        ssh = None
        if transport == "ssh":
            if d.get("ssh") is None:
                raise self.fail("ssh", "nothing", "an ssh section (host, user, ...) when transport is ssh", rendered=True)
            ssh = self.ssh(d["ssh"])
        elif d.get("ssh") is not None:
            raise self.fail("ssh", "an ssh section", "none: it is only allowed with transport: ssh", rendered=True)
        default_python = sys.executable if transport == "local" else "python3"
        python = self.get(d, "python", "", str, default=default_python)
        options = self.runtime_options(runtime, d.get("runtime_options"))
        env_raw = d.get("env")
        env: dict[str, str] = {}
        if env_raw is not None:
            if not isinstance(env_raw, dict):
                raise self.fail("env", env_raw, "a mapping of NAME: value")
            for k, v in env_raw.items():
                if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                    raise self.fail(f"env.{echo(k)[1:-1] if isinstance(k, str) else k}", "an invalid name", "an environment variable NAME (letters, digits, _)", rendered=True)
                if isinstance(v, (dict, list)) or v is None:
                    raise self.fail(f"env.{k}", v, "a string")
                env[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return DeviceProfile(
            name=name,
            description=self.get(d, "description", "", str, default=""),
            transport=transport,
            runtime=runtime,
            python=python,
            runtime_options=options,
            threads=self.get(d, "threads", "", int, default=1, minimum=1),
            warmup=self.get(d, "warmup", "", int, default=10, minimum=0),
            runs=self.get(d, "runs", "", int, default=50, minimum=1),
            rounds=self.get(d, "rounds", "", int, default=1, minimum=1),
            workdir=self.get(d, "workdir", "", str, default="/tmp"),
            env=env,
            ssh=ssh,
            source=self.source,
        )

    def ssh(self, data: Any) -> SSHConfig:
        if isinstance(data, dict) and "password" in data:
            raise self.fail(
                "ssh.password", "a password (refused: passwords never live in profiles)",
                "'password_env: NAME' with NAME exported in the shell, or better a key (identity_file) or ssh-agent",
                rendered=True,
            )
        keys = (
            "host", "port", "user", "identity_file", "known_hosts", "trust_on_first_use",
            "password_env", "connect_timeout", "command_timeout", "retries", "backoff",
        )
        d = self.section(data, "ssh", keys)
        num = (int, float)
        identity = self.get(d, "identity_file", "ssh", str, default=None)
        password_env = self.get(d, "password_env", "ssh", str, default=None)
        if password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env):
            raise self.fail("ssh.password_env", "a value that is not a variable name",
                            "the NAME of an environment variable, not a password", rendered=True)
        port = self.get(d, "port", "ssh", int, default=22, minimum=1)
        if port > 65535:
            raise self.fail("ssh.port", port, "an integer from 1 to 65535")
        host = self.get(d, "host", "ssh", str)
        if not host.strip():
            raise self.fail("ssh.host", host, "a non-empty host name or address")
        connect_timeout = float(self.get(d, "connect_timeout", "ssh", num, default=10.0))
        command_timeout = float(self.get(d, "command_timeout", "ssh", num, default=600.0))
        backoff = float(self.get(d, "backoff", "ssh", num, default=1.0, minimum=0))
        for fname, v in (("connect_timeout", connect_timeout), ("command_timeout", command_timeout)):
            if v <= 0:
                raise self.fail(f"ssh.{fname}", v, "a positive number of seconds")
        return SSHConfig(
            host=host,
            user=self.get(d, "user", "ssh", str),
            port=port,
            identity_file=os.path.expanduser(identity) if identity else None,
            known_hosts=os.path.expanduser(self.get(d, "known_hosts", "ssh", str, default="~/.ssh/known_hosts")),
            trust_on_first_use=self.get(d, "trust_on_first_use", "ssh", bool, default=False),
            password_env=password_env,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            retries=self.get(d, "retries", "ssh", int, default=3, minimum=0),
            backoff=backoff,
        )

    def runtime_options(self, runtime: str, data: Any) -> dict[str, Any]:
        if data is None:
            data = {}
        if runtime == "onnxruntime":
            d = self.section(data, "runtime_options", ("providers", "spinning"))
            providers = self.get(d, "providers", "runtime_options", list, default=["CPUExecutionProvider"])
            if not providers:
                raise self.fail("runtime_options.providers", providers, "a list of at least one provider")
            for i, p in enumerate(providers):
                if p not in ORT_PROVIDERS:
                    raise self.fail(f"runtime_options.providers.{i}", p, f"one of {', '.join(ORT_PROVIDERS)}")
            if len(set(providers)) != len(providers):
                raise self.fail("runtime_options.providers", providers, "each provider once")
            spinning = self.get(d, "spinning", "runtime_options", bool, default=True)
            return {"providers": list(providers), "spinning": spinning}
        d = self.section(data, "runtime_options", ("delegate", "delegate_library", "interpreter"))
        return {
            "delegate": self.get(d, "delegate", "runtime_options", str, default="xnnpack", choices=TFLITE_DELEGATES),
            "delegate_library": self.get(
                d, "delegate_library", "runtime_options", str, default="libtensorflowlite_gpu_delegate.so"
            ),
            "interpreter": self.get(
                d, "interpreter", "runtime_options", str, default="auto", choices=TFLITE_INTERPRETERS
            ),
        }


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a mapping"}


def _tname(value: Any) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )
