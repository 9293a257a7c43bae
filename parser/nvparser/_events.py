"""What the parser gives back: one event per frame.

Every frame the parser sees becomes exactly one of these, so a caller can
account for every byte it fed in.
"""
from datetime import datetime
from typing import NamedTuple, Optional, Tuple


class Record(NamedTuple):
    """A NeuVector notification, decoded and typed.

    ``data`` carries NeuVector's own field names at top level with the JSON
    types NeuVector's JSON mode gives them (``notification`` included), plus
    a ``syslog`` object when the frame had a syslog header, ``cri`` when it
    came from a CRI log file and ``webhook`` when it came from a webhook.
    ``notes`` lists what a newer or odd sender did that the schema did not
    expect (unknown keys, values of the wrong type): the data is kept as sent.
    """

    data: dict
    raw: bytes
    offset: int = 0
    notes: Tuple[str, ...] = ()


class DeadLetter(NamedTuple):
    """A frame that could not be decoded: the bytes as received and why."""

    raw: bytes
    reason: str
    offset: int = 0


class Skipped(NamedTuple):
    """A frame that is not a notification and is not an error either.

    Blank lines and the controller's own log lines interleaved in a pod log
    land here, so they are counted rather than reported as failures.
    """

    raw: bytes
    reason: str
    offset: int = 0


def event_time(data: dict) -> Optional[float]:
    """When the event happened, in Unix seconds, or None when the record cannot say.

    ``reported_timestamp`` first, then ``reported_at`` (RFC 3339), then the
    syslog header's time. The header time is when the controller sent the
    message, which can be much later than the event, so it comes last.
    """
    reported = data.get("reported_timestamp")
    if type(reported) is int and reported > 0:
        return reported
    header = data.get("syslog")
    for stamp in (data.get("reported_at"), header.get("timestamp") if isinstance(header, dict) else None):
        if isinstance(stamp, str) and stamp:
            try:
                # Python 3.9's fromisoformat does not take a trailing "Z".
                moment = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is not None:
                return moment.timestamp()
    return None
