"""How a NeuVector record becomes a Splunk event: sourcetype, time, host.

Shared by the HEC sink (collector side) and the modular inputs (inside the
Splunk app), so both paths index a record the same way. Standard library
only: the app vendors this module next to ``nvparser``.
"""
import base64
from typing import Optional

from nvparser.schema import NOTIFICATIONS

SOURCETYPE_PREFIX = "neuvector:"
#: Frames the parser could not decode, indexed with their raw bytes and reason.
DEADLETTER_SOURCETYPE = SOURCETYPE_PREFIX + "deadletter"
#: A decoded record whose ``notification`` is not one of the six NeuVector sends.
UNKNOWN_SOURCETYPE = SOURCETYPE_PREFIX + "unknown"


def sourcetype(data: dict) -> str:
    """``neuvector:<notification>`` for the six types NeuVector sends."""
    notification = data.get("notification")
    if notification in NOTIFICATIONS:
        return SOURCETYPE_PREFIX + notification
    return UNKNOWN_SOURCETYPE


def event_host(data: dict) -> Optional[str]:
    """The controller that sent the record (syslog HOSTNAME), when known."""
    header = data.get("syslog")
    host = header.get("hostname") if isinstance(header, dict) else None
    return host if isinstance(host, str) and host else None


def deadletter(raw: bytes, reason: str, offset: int = 0) -> dict:
    """The event body for bytes that could not be decoded.

    ``raw`` holds the bytes as text; when they are not valid UTF-8 the text
    is lossy, so ``raw_base64`` carries them exactly.
    """
    body = {"reason": reason, "offset": offset, "raw": raw.decode("utf-8", "replace")}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        body["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return body
