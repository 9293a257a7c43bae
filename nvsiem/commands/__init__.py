"""The nvsiem subcommands, one module each."""
