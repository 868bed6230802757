"""Latency: op enumeration, single-op models, the profiler, and the latency lookup table.

    report = profile_device("device_profiles/local-cpu.yaml", "mbv3-tiny")   # builds the table
    table = LatencyTable.load("latency_tables/local-cpu_onnxruntime-cpu_t1-mbv3-tiny.yaml")
    table.predict(arch)                       # ms, one arch
    table.predictor(space)(genomes)           # ms, vectorised over genomes (search)
    validate_table(table, profile, n=100)     # predicted vs measured on the device
"""
from edgenas.latency.formats import ModelFormat, model_format, register_format
from edgenas.latency.ops import enumerate_ops, estimate_seconds
from edgenas.latency.profiler import ProfileReport, calibration_archs, default_table_path, profile_device, profile_many
from edgenas.latency.table import Calibration, LatencyPredictor, LatencyTable, MissingKeyError, fit_calibration
from edgenas.latency.validate import ValidationReport, validate_table

__all__ = [
    "Calibration", "LatencyPredictor", "LatencyTable", "MissingKeyError", "ModelFormat", "ProfileReport",
    "ValidationReport", "calibration_archs", "default_table_path", "enumerate_ops", "estimate_seconds",
    "fit_calibration", "model_format", "profile_device", "profile_many", "register_format", "validate_table",
]
