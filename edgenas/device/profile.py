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
    precision        str   "fp32" (default) or "int8": the models measured and the latency
                           table built (onnxruntime int8: static QDQ as `edgenas export
                           --format onnx-int8` writes it; tflite int8: full-integer PT2E as
                           `--format tflite-int8` writes it, with delegate xnnpack or none, not
                           gpu, which computes in float); the table key gets _int8
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
from typing import Any, Mapping, Optional

import math

from edgenas.errors import ConfigError
from edgenas.validate import Invalid, build, echo, message, read_yaml, section_of, spec, user_path

TRANSPORTS = ("local", "ssh")
RUNTIMES = ("onnxruntime", "tflite")
PRECISIONS = ("fp32", "int8", "fp16")
# The precisions whose latency tables edgenas builds, per runtime; fp16 is not built (below).
RUNTIME_PRECISIONS = {"onnxruntime": ("fp32", "int8"), "tflite": ("fp32", "int8")}
# TFLite delegates that run int8 kernels: XNNPACK and the builtin ones ("none"). The GPU delegate
# computes in fp16/fp32 and runs an int8 model by dequantizing it, so an int8 table of it would
# time float kernels under an int8 name.
INT8_DELEGATES = ("xnnpack", "none")
# Why a profile's `precision: fp16` is refused, per runtime (edgenas.export.tflite_fp16 has the measurements).
FP16_LACKS = {
    "onnxruntime": "onnxruntime's CPU execution provider has no fp16 kernels on x86: it casts an fp16 model back "
                   "to fp32 (2.9x slower than the fp32 file); use fp32 or int8",
    "tflite": "edgenas builds no fp16 TFLite tables: XNNPACK on x86 computes a tflite-fp16 file (fp16 weights, "
              "edgenas export --formats tflite-fp16) in fp32, as fast as the fp32 file, so profile it with fp32",
}
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
    precision: str = "fp32"  # of the models measured: "fp32" | "int8" (see RUNTIME_PRECISIONS)
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
        raw = f"{self.name}_{self.runtime}-{opts}_t{self.threads}" + ("" if self.precision == "fp32" else f"_{self.precision}")
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
            if "delegate_library" in self.runtime_options:
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
            "precision": self.precision,
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
# validation: the file's schema as dataclasses (edgenas.validate), then defaults filled in

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECONDS = "a positive number of seconds"


@dataclass(frozen=True)
class _SSHFile:
    host: str = field(metadata=spec(min_len=1, max_len=253))
    user: str = field(metadata=spec(min_len=1, max_len=256))
    port: Optional[int] = field(default=None, metadata=spec(min=1, max=65535))
    identity_file: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096))
    known_hosts: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096))
    trust_on_first_use: Optional[bool] = None
    password_env: Optional[str] = field(default=None, metadata=spec(max_len=255))
    connect_timeout: Optional[float] = field(default=None, metadata=spec(gt=0, max=86400, doc=_SECONDS))
    command_timeout: Optional[float] = field(default=None, metadata=spec(gt=0, max=10**7, doc=_SECONDS))
    retries: Optional[int] = field(default=None, metadata=spec(min=0, max=100))
    backoff: Optional[float] = field(default=None, metadata=spec(min=0, max=3600))

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise Invalid("host", self.host, "a non-empty host name or address")
        if self.password_env is not None and not _NAME.fullmatch(self.password_env):
            # never echo it: it may be the password itself
            raise Invalid("password_env", "a value that is not a variable name",
                          "the NAME of an environment variable, not a password", rendered=True)


@dataclass(frozen=True)
class _OrtOptions:
    providers: Optional[tuple[str, ...]] = field(default=None, metadata=spec(
        min_len=1, max_len=len(ORT_PROVIDERS), each=spec(choices=ORT_PROVIDERS),
        doc=f"a list of at least one provider of {', '.join(ORT_PROVIDERS)}"))
    spinning: Optional[bool] = None  # onnxruntime's intra-op thread spinning (default on)

    def __post_init__(self) -> None:
        if self.providers is not None and len(set(self.providers)) != len(self.providers):
            raise Invalid("providers", list(self.providers), "each provider once")


@dataclass(frozen=True)
class _TFLiteOptions:
    delegate: Optional[str] = field(default=None, metadata=spec(choices=TFLITE_DELEGATES))
    delegate_library: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096))
    interpreter: Optional[str] = field(default=None, metadata=spec(choices=TFLITE_INTERPRETERS))


@dataclass(frozen=True)
class _ProfileFile:
    name: str = field(metadata=spec(min_len=1, max_len=100))
    transport: str = field(metadata=spec(choices=TRANSPORTS))
    runtime: str = field(metadata=spec(choices=RUNTIMES))
    description: Optional[str] = None
    ssh: Optional[_SSHFile] = None
    python: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096))
    runtime_options: Optional[dict] = None  # checked by the runtime's own schema
    threads: Optional[int] = field(default=None, metadata=spec(min=1, max=1024))
    warmup: Optional[int] = field(default=None, metadata=spec(min=0, max=10**6))
    runs: Optional[int] = field(default=None, metadata=spec(min=1, max=10**6))
    rounds: Optional[int] = field(default=None, metadata=spec(min=1, max=1000))
    precision: Optional[str] = field(default=None, metadata=spec(choices=PRECISIONS))
    workdir: Optional[str] = field(default=None, metadata=spec(min_len=1, max_len=4096))
    env: Optional[dict] = None  # NAME: scalar, checked below

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise Invalid("name", self.name, "a non-empty device name")
        if self.transport == "ssh" and self.ssh is None:
            raise Invalid("ssh", "nothing", "an ssh section (host, user, ...) when transport is ssh", rendered=True)
        if self.transport != "ssh" and self.ssh is not None:
            raise Invalid("ssh", "an ssh section", "none: it is only allowed with transport: ssh", rendered=True)
        if self.precision == "fp16" and self.runtime in FP16_LACKS:
            raise Invalid("precision", self.precision, f"one of {', '.join(RUNTIME_PRECISIONS[self.runtime])} "
                          f"({FP16_LACKS[self.runtime]})")
        if _or(self.precision, "fp32") not in RUNTIME_PRECISIONS[self.runtime]:
            raise Invalid("precision", self.precision, f"one of {', '.join(RUNTIME_PRECISIONS[self.runtime])} for "
                          f"runtime {self.runtime} (edgenas builds no {self.precision} latency tables for it yet)")


def _or(value, default):
    return default if value is None else value


class _Parser:
    """Checks one profile mapping against the schema above; every message names the key and the file."""

    def __init__(self, source: str):
        self.source = source

    def profile(self, data: Any) -> DeviceProfile:
        if data is None:
            raise ConfigError(message(self.source, None, "an empty file", "a device profile (see device_profiles/README.md)"))
        if isinstance(data, dict) and isinstance(data.get("ssh"), dict) and "password" in data["ssh"]:
            raise ConfigError(message(
                self.source, "ssh.password", "a password (refused: passwords never live in profiles)",
                "'password_env: NAME' with NAME exported in the shell, or better a key (identity_file) or ssh-agent"))
        f = build(_ProfileFile, data, self.source)
        try:
            options = self.runtime_options(f.runtime, f.runtime_options)
            env = self.env(f.env)
            if f.runtime == "tflite" and f.precision == "int8" and options["delegate"] not in INT8_DELEGATES:
                raise Invalid("runtime_options.delegate", options["delegate"],
                              f"{' or '.join(INT8_DELEGATES)} with precision int8 (the {options['delegate']} "
                              "delegate computes in fp16/fp32 and dequantizes int8 models, so it has no int8 "
                              "latency to table)")
        except Invalid as exc:
            raise exc.at(self.source) from None
        ssh = None
        if f.ssh is not None:
            s = f.ssh
            ssh = SSHConfig(
                host=s.host, user=s.user, port=_or(s.port, 22),
                identity_file=os.path.expanduser(s.identity_file) if s.identity_file else None,
                known_hosts=os.path.expanduser(_or(s.known_hosts, "~/.ssh/known_hosts")),
                trust_on_first_use=_or(s.trust_on_first_use, False), password_env=s.password_env,
                connect_timeout=_or(s.connect_timeout, 10.0), command_timeout=_or(s.command_timeout, 600.0),
                retries=_or(s.retries, 3), backoff=_or(s.backoff, 1.0),
            )
        return DeviceProfile(
            name=f.name, description=_or(f.description, ""), transport=f.transport, runtime=f.runtime,
            python=_or(f.python, sys.executable if f.transport == "local" else "python3"),
            runtime_options=options, threads=_or(f.threads, 1), warmup=_or(f.warmup, 10), runs=_or(f.runs, 50),
            rounds=_or(f.rounds, 1), precision=_or(f.precision, "fp32"), workdir=_or(f.workdir, "/tmp"), env=env,
            ssh=ssh, source=self.source,
        )

    @staticmethod
    def runtime_options(runtime: str, data: Any) -> dict[str, Any]:
        if runtime == "onnxruntime":
            o = section_of(_OrtOptions, {} if data is None else data, "runtime_options")
            return {"providers": list(_or(o.providers, ("CPUExecutionProvider",))), "spinning": _or(o.spinning, True)}
        o = section_of(_TFLiteOptions, {} if data is None else data, "runtime_options")
        opts = {"delegate": _or(o.delegate, "xnnpack"), "interpreter": _or(o.interpreter, "auto")}
        if opts["delegate"] == "gpu":  # the library only the GPU delegate loads (not recorded for the others)
            opts["delegate_library"] = _or(o.delegate_library, "libtensorflowlite_gpu_delegate.so")
        return opts

    @staticmethod
    def env(data: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for k, v in (data or {}).items():
            if not isinstance(k, str) or not _NAME.fullmatch(k) or len(k) > 255:
                raise Invalid(f"env.{echo(k)[1:-1] if isinstance(k, str) else k}", "an invalid name",
                              "an environment variable NAME (letters, digits, _)", rendered=True)
            if isinstance(v, (dict, list)) or v is None or (isinstance(v, str) and len(v) > 4096):
                raise Invalid(f"env.{k}", v, "a string of at most 4096 characters")
            if isinstance(v, float) and not math.isfinite(v):
                raise Invalid(f"env.{k}", v, "a string")
            env[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return env
