"""Network and file sources for nvsiem listen."""
