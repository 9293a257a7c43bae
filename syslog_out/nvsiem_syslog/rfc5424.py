"""The RFC 5424 header of each message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - ``.

* PRI: the ``facility=`` of the URL and the severity of the record's level
  (Emergency 0 ... Debug 7; a record without a known level keeps the
  severity of the header it came with, else Info).
* TIMESTAMP: the event's time (``nvparser.event_time``: NeuVector's
  ``reported_timestamp``, else ``reported_at``, else the received header's),
  in UTC; ``-`` when the record has none, or one past year 9999 (a
  ``reported_timestamp`` in milliseconds, say: the record is still sent).
* HOSTNAME: the controller that sent the record (the received header's
  hostname), else this machine's name.
* APP-NAME: ``app_name=`` (``neuvector``); MSGID: the notification type.
* No PROCID and no structured data (``-``); the MSG is not preceded by a
  BOM, so receivers see ``CEF:0|``, ``LEEF:2.0|`` or ``{`` first.
"""
import socket
from datetime import datetime, timezone
from typing import Optional, Tuple

from nvparser import event_time

from .mapping import SYSLOG_SEVERITY
from .memo import Memo

NIL = "-"
#: 9999-12-31T23:59:59Z: RFC 5424 years have four digits (a reported_timestamp in milliseconds is far past it).
LAST_SECOND = 253402300799


def header_field(text, limit: int) -> Optional[str]:
    """``text`` as an RFC 5424 header field (1 to ``limit`` printable US-ASCII), or None when it is not one."""
    if isinstance(text, str) and 0 < len(text) <= limit and text.isascii() and text.isprintable() \
            and " " not in text:
        return text
    return None


def timestamp(moment: Optional[float]) -> str:
    """``moment`` (Unix seconds) in UTC; ``-`` when there is none or RFC 5424 cannot say it."""
    if moment is None or moment > LAST_SECOND:
        return NIL
    try:
        stamp = datetime.fromtimestamp(moment, timezone.utc)
    except (ValueError, OverflowError, OSError):  # before year 1
        return NIL
    spec = "seconds" if stamp.microsecond == 0 else "microseconds"
    return stamp.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


class HeaderWriter:
    def __init__(self, facility: int, app_name: str) -> None:
        self._facility = facility * 8
        self._app_name = app_name
        self._this_host = header_field(socket.gethostname(), 255) or NIL
        self._around_time = Memo(self._around)
        self._last_moment: object = object()
        self._last_stamp = NIL

    def header(self, record: dict) -> str:
        moment = event_time(record)
        if moment != self._last_moment:  # records come in bursts within the same second
            self._last_moment, self._last_stamp = moment, timestamp(moment)
        received = record.get("syslog")
        if not isinstance(received, dict):
            received = {}
        before, after = self.around_time(record.get("level"), record.get("notification"),
                                         received.get("hostname"), received.get("severity"))
        return before + self._last_stamp + after

    def around_time(self, level, notification, hostname, received_severity) -> Tuple[str, str]:
        """What comes before the timestamp (``<PRI>1 ``) and after it (`` HOST APP - MSGID - ``)."""
        return self._around_time.get_for((level, notification, hostname, received_severity))

    def _around(self, level, notification, hostname, received_severity) -> Tuple[str, str]:
        severity = SYSLOG_SEVERITY.get(level.lower() if isinstance(level, str) else "")
        if severity is None:
            severity = received_severity if type(received_severity) is int and 0 <= received_severity <= 7 else 6
        host = header_field(hostname, 255) or self._this_host
        msgid = header_field(notification, 32) or NIL
        return "<%d>1 " % (self._facility + severity), " %s %s - %s - " % (host, self._app_name, msgid)
