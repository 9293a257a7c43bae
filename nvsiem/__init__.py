"""nvsiem: the NeuVector SIEM pack's command line and collector."""
__version__ = "0.1.0"
