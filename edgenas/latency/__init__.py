"""Latency: op enumeration, single-op models, the profiler, and the latency lookup table.

    report = profile_device("device_profiles/local-cpu.yaml", "mbv3-tiny")   # builds the table
    table = LatencyTable.load("latency_tables/local-cpu_onnxruntime-cpu_t1-mbv3-tiny.yaml")
    table.predict(arch)                       # ms, one arch
    table.predictor(space)(genomes)           # ms, vectorised over genomes (search)
    validate_table(table, profile, n=100)     # predicted vs measured on the device
    profile_few_shot("pi4.yaml", None, 20, reference=table)   # a new device from 20 whole subnets
"""
from edgenas.latency.formats import ModelFormat, model_format, register_format
from edgenas.latency.ops import enumerate_ops, estimate_seconds
from edgenas.latency.profiler import ProfileReport, calibration_archs, default_table_path, profile_device, profile_many
from edgenas.latency.table import Calibration, LatencyPredictor, LatencyTable, MissingKeyError, fit_calibration
from edgenas.latency.validate import ValidationReport, validate_table
from edgenas.latency.fewshot import design_subnets, profile_few_shot

__all__ = [
    "Calibration", "LatencyPredictor", "LatencyTable", "MissingKeyError", "ModelFormat", "ProfileReport",
    "ValidationReport", "calibration_archs", "default_table_path", "design_subnets", "enumerate_ops", "estimate_seconds",
    "fit_calibration", "model_format", "profile_device", "profile_few_shot", "profile_many", "register_format",
    "validate_table",
]
