"""The measurement layer: device profiles, transports (local, ssh) and the on-device agent.

    profile = load_profile("device_profiles/raspberry-pi4.yaml")
    print(device_fingerprint(profile)["cpu_model"])
    for r in measure_models(profile, [Path("a.onnx"), Path("b.onnx")]):
        print(r.model, r.median_ms)

paramiko is imported only when an SSH transport is opened (extra ``edgenas[ssh]``).
"""
from edgenas.device.profile import DeviceProfile, SSHConfig, load_profile
from edgenas.device.runner import AGENT_PATH, CpuLoad, MeasureResult, device_fingerprint, measure_models, measure_written
from edgenas.device.transport import (
    CommandError,
    ConnectionLost,
    LocalTransport,
    Result,
    SSHTransport,
    Transport,
    open_transport,
)

__all__ = [
    "AGENT_PATH",
    "CommandError",
    "CpuLoad",
    "ConnectionLost",
    "DeviceProfile",
    "LocalTransport",
    "MeasureResult",
    "Result",
    "SSHConfig",
    "SSHTransport",
    "Transport",
    "device_fingerprint",
    "load_profile",
    "measure_models",
    "measure_written",
    "open_transport",
]
