"""edgenas: hardware-aware once-for-all neural architecture search for edge devices."""

__version__ = "0.1.0"
