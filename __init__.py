"""loa: an open real-time broadcast server for IP loudspeaker clusters and electronic bulletin boards."""

__version__ = "0.1.0"
__all__ = ["__version__"]
