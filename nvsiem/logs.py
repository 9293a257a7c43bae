"""Structured logs for long-running commands: one JSON object per line on stderr.

``log.info("msg", extra={"sink": label})`` puts ``sink`` into the object.
Messages never contain secrets: sinks are named by ``Sink.describe()``.
"""
import json
import logging
import sys
from datetime import datetime, timezone

#: The values of ``--log-format`` and ``--log-level``.
FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    """Log to stderr; ``fmt`` and ``level`` as ``config`` checked them (``FORMATS``, ``LEVELS``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
