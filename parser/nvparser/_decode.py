"""One frame -> one event: header, then a text or JSON body, then types."""
import codecs
import re

from ._codec import json_dumps, json_loads
from ._events import DeadLetter, Record, Skipped
from ._header import split_header
from .schema import FIELDS
from ._fast import fast_record
from ._framing import OCTET_COUNT
from ._gotypes import coerce_floats, type_values
from ._text import parse_pairs


def _replace_each_byte(error: UnicodeDecodeError):
    # Go's encoding/json turns every invalid byte into U+FFFD; Python's
    # "replace" merges a truncated sequence into one. Match Go, so text mode
    # and JSON mode give the same string for a description cut mid-character.
    return "\ufffd" * (error.end - error.start), error.end


codecs.register_error("nvparser.replace", _replace_each_byte)

_CRI = re.compile(r"(\d{4}-\d\d-\d\dT\S+) (stdout|stderr) ([FP]) ")
_CONTROLLER_LOG = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\|[A-Z]+\|")


def decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "nvparser.replace")


def parse_frame(raw: bytes, offset: int = 0):
    """Decode one frame (no trailing LF) into a Record, DeadLetter or Skipped."""
    try:
        return fast_record(raw, offset) or _parse(raw, offset)
    except Exception as exc:  # noqa: BLE001 - a stream must never raise
        return _internal_error(raw, offset, exc)


def parse_declined(raw: bytes, offset: int = 0):
    """``parse_frame`` for a frame the fast path has already declined."""
    try:
        return _parse(raw, offset)
    except Exception as exc:  # noqa: BLE001 - a stream must never raise
        return _internal_error(raw, offset, exc)


def _internal_error(raw: bytes, offset: int, exc: Exception) -> DeadLetter:
    return DeadLetter(raw, "internal parser error (%s: %s); please report it with this frame"
                      % (type(exc).__name__, exc), offset)


def _parse(raw: bytes, offset: int):
    if raw[:1].isdigit():
        counted = OCTET_COUNT.match(raw)
        if counted is not None and int(counted.group(1)) == len(raw) - counted.end():
            return _octet_counted(raw, offset, counted.end())
    line = decode_text(raw)
    if line[-1:] == "\n":  # octet-counted frames may carry NeuVector's LF
        line = line[:-1]
    if line[-1:] == "\r":
        line = line[:-1]
    if not line.strip():
        return Skipped(raw, "blank line", offset)
    cri = None
    if line[:1].isdigit():
        m = _CRI.match(line)
        if m:
            cri = {"timestamp": m.group(1), "stream": m.group(2)}
            line = _join_cri(line)
        if _CONTROLLER_LOG.match(line):
            return Skipped(raw, "controller log line, not a notification", offset)
    syslog, body, reason = split_header(line)
    if body is None:
        return DeadLetter(raw, reason, offset)
    if body[:1] == "\ufeff":
        body = body[1:]
    notes = []
    if body[:1] == "{":
        data = _json_body(body, notes)
        if isinstance(data, str):
            return DeadLetter(raw, data, offset)
    else:
        data = text_record(body, notes)
        if isinstance(data, str):
            return DeadLetter(raw, data, offset)
    if syslog is not None:
        data["syslog"] = syslog
    if cri is not None:
        data["cri"] = cri
    return Record(data, raw, offset, tuple(notes))


def _octet_counted(raw: bytes, offset: int, start: int):
    """An RFC 6587 frame ``LEN SP MSG``: the header is read from MSG.

    The event keeps the whole frame as ``raw`` (and its offset), so the
    count's bytes stay accounted for; MSG may end with NeuVector's LF.
    """
    msg = raw[start:]
    event = fast_record(msg[:-1] if msg[-1:] == b"\n" else msg, offset) or _parse(msg, offset)
    return event._replace(raw=raw)


def text_record(body: str, notes: list, notification: str = ""):
    """A key=value body -> typed dict, or a reason string when it is not one.

    ``notification`` is given for webhook bodies, which lack the key.
    """
    if notification:
        schema_name = notification
    else:
        head, _, _ = body.partition(",")
        if head[:13] != "notification=":
            return "text body does not start with 'notification=<type>,'"
        schema_name = head[13:]
    if schema_name not in FIELDS:
        pairs = [tuple(p.partition("=")[::2]) for p in body.split(",") if "=" in p]
        notes.append("unknown notification type %r: values kept as text" % schema_name)
        return dict(pairs)
    pairs, pair_notes = parse_pairs(body, schema_name)
    notes.extend(pair_notes)
    return type_values(dict(pairs), schema_name, notes)


def _join_cri(line: str) -> str:
    """Strip CRI prefixes; a ``P`` (partial) line continues on the next line."""
    out = []
    for segment in line.split("\n"):
        m = _CRI.match(segment)
        if m is None:
            out.append(segment)
            out.append("\n")
        else:
            out.append(segment[m.end():])
            if m.group(3) == "F":
                out.append("\n")
    if out[-1] == "\n":
        out.pop()
    return "".join(out)


def json_object(text: str, what: str = "JSON body"):
    """The JSON object in ``text``, or a reason string when it is not one."""
    try:
        data = json_loads(text)
    except ValueError as exc:
        return "invalid %s: %s" % (what, exc)
    if not isinstance(data, dict):
        return "%s is not an object" % what
    return data


def _json_body(body: str, notes: list):
    data = json_object(body)
    if isinstance(data, str):
        return data
    return _typed_json(data, notes)


def _typed_json(data: dict, notes: list):
    """A decoded JSON-mode body as its record's data, or the reason it is none."""
    notification = data.get("notification")
    if not isinstance(notification, str):
        return "JSON body has no \"notification\" string"
    if notification not in FIELDS:
        notes.append("unknown notification type %r" % notification)
    return coerce_floats(data, notification)


def json_record(data: dict, raw: bytes = b""):
    """The record of an already decoded JSON-mode body (``{"notification": …, …}``), as ``parse_frame`` gives it.

    For bodies that arrive decoded, such as the elements of the controller's
    REST lists; ``raw`` is what they came in, if the caller keeps it. A
    Record, or a DeadLetter when the body names no notification type.
    """
    notes: list = []
    typed = _typed_json(data, notes)
    if isinstance(typed, str):
        return DeadLetter(raw or json_dumps(data), typed, 0)
    return Record(typed, raw, 0, tuple(notes))
