"""The once-for-all supernet and the converter from the reference OFA implementation."""
from edgenas.supernet.supernet import Supernet

__all__ = ["Supernet"]
