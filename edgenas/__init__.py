"""edgenas: hardware-aware once-for-all neural architecture search for edge devices.

The whole path from Python uses only the names in `__all__`, e.g. `edgenas.train_supernet`,
`load_supernet`, `build_predictor`, `profile_device`, `search_subnets`, `Supernet.subnet` (a
subnet with BatchNorm recalibrated), `export_subnet` and `measure_exports`: see the README's
"Python API" section, whose snippet tests/test_readme_api.py runs as written, and edgenas/demo.py.

Names are imported on first use (PEP 562), so `import edgenas` stays fast and does not import
torch. `train_supernet` and `search_subnets` are not called `train` and `search` because those
are the names of the subpackages `edgenas.train` and `edgenas.search`, which Python binds on the
package once they are imported.
"""

__version__ = "0.1.0"

# name -> module it comes from (the attribute of that name, or of the name after ":")
_EXPORTS = {
    # search spaces and architectures
    "SearchSpace": "edgenas.space", "load_space": "edgenas.space", "Arch": "edgenas.space",
    "sample": "edgenas.space", "arch_cost": "edgenas.space",
    # data
    "DataConfig": "edgenas.data", "load_dataset": "edgenas.data",
    # the supernet and its training
    "Supernet": "edgenas.supernet", "TrainConfig": "edgenas.train.config", "load_config": "edgenas.train.config",
    "train_supernet": "edgenas.api", "load_supernet": "edgenas.train.checkpoint",
    "finetune_subnet": "edgenas.api", "load_subnet": "edgenas.train.checkpoint",
    # devices and latency
    "DeviceProfile": "edgenas.device.profile", "load_profile": "edgenas.device.profile",
    "profile_device": "edgenas.latency.profiler", "LatencyTable": "edgenas.latency.table",
    # accuracy predictor and search
    "AccuracyPredictor": "edgenas.search.predictor", "default_predictor_path": "edgenas.search.predictor",
    "build_predictor": "edgenas.search.measure",
    "Metric": "edgenas.search.objectives", "latency_metric": "edgenas.search.objectives",
    "predictor_metric": "edgenas.search.objectives", "cost_metric": "edgenas.search.objectives",
    "Constraint": "edgenas.search.constraints", "metric_range": "edgenas.search.constraints",
    "search_subnets": "edgenas.search.engine:search", "SearchResult": "edgenas.search.results",
    # export and measurement
    "ExportMetadata": "edgenas.export.api", "export_subnet": "edgenas.export.api",
    "measure_exports": "edgenas.export.measure",
    # errors
    "EdgeNASError": "edgenas.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'edgenas' has no attribute {name!r}")
    import importlib

    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
