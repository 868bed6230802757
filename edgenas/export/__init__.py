"""Export a subnet to ONNX and TFLite (fp32, int8), validate every file, write its model card.

    from edgenas.export import export_subnet, measure_exports
    report = export_subnet(net, "onnx,tflite,tflite-int8", "out/", calib_images, (test_x, test_y), metadata)
    measure_exports(report, "device_profiles/local-cpu.yaml")

See `edgenas.export.api` for the checks and `edgenas.export.card` for the model card format.
TFLite needs the extra `edgenas[tflite]` (litert-torch, ai-edge-litert); ONNX needs `edgenas[onnx]`.
"""
from edgenas.export.api import (
    FILE_NAMES, FORMATS, ExportMetadata, ExportReport, FormatResult, check_dependencies, export_subnet,
    parse_formats,
)
from edgenas.export.card import CARD_NAME, load_card, sha256_file
from edgenas.export.measure import LatencyComparison, measure_exports
from edgenas.export.onnx_export import OnnxRunner, read_metadata
from edgenas.export.tflite_export import TFLiteRunner
from edgenas.export.validate import (
    ATOL, MAX_DROP_PP, MIN_AGREEMENT, ExportValidationError, ParityError, QuantizationError, ShapeError,
)

__all__ = [
    "ATOL", "CARD_NAME", "FILE_NAMES", "FORMATS", "MAX_DROP_PP", "MIN_AGREEMENT", "ExportMetadata", "ExportReport",
    "ExportValidationError", "FormatResult", "LatencyComparison", "OnnxRunner", "ParityError", "QuantizationError",
    "ShapeError", "TFLiteRunner", "check_dependencies", "export_subnet", "load_card",
    "measure_exports", "parse_formats", "read_metadata", "sha256_file",
]
