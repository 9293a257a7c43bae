"""Readers of CEF and LEEF written from their specifications, independent of the sink that writes them.

CEF (ArcSight "Implementing ArcSight CEF"): ``CEF:Version|Device Vendor|
Device Product|Device Version|Signature ID|Name|Severity|Extension``. In the
header a pipe or a backslash inside a field is preceded by a backslash. The
extension is ``key=value`` pairs separated by spaces; a value may hold
spaces and runs up to the space before the next key, so an equals sign
inside a value is escaped (``\\=``), as are a backslash (``\\\\``), a line
feed (``\\n``) and a carriage return (``\\r``).

LEEF 2.0 (IBM QRadar): ``LEEF:2.0|Vendor|Product|Version|EventID|
Delimiter|attributes``, the attributes ``key=value`` separated by the
delimiter (``x09``: a tab). LEEF defines no escape inside a value; the sink
under test writes ``\\\\``, ``\\t``, ``\\n`` and ``\\r`` (docs/syslog.md), read
back here.

Both readers are strict: an escape sequence the format does not define, a
duplicate key or a missing field is an AssertionError, not a guess.
"""
import json
import re
import socket
from datetime import datetime, timezone
from typing import Dict, List, NamedTuple, Optional, Tuple

_CEF_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
_LEEF_VALUE_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_KEY = re.compile(r"[A-Za-z0-9_]+\Z")


class Cef(NamedTuple):
    version: str
    vendor: str
    product: str
    device_version: str
    signature: str
    name: str
    severity: str
    extension: Dict[str, str]


class Leef(NamedTuple):
    vendor: str
    product: str
    version: str
    event_id: str
    delimiter: str
    attributes: Dict[str, str]


def split_header(text: str, count: int) -> Tuple[List[str], str]:
    """The first ``count`` pipe-separated fields (``\\|`` and ``\\\\`` read back), and the rest unread."""
    fields, current, i = [], [], 0
    while len(fields) < count:
        assert i < len(text), "only %d of %d header fields in %r" % (len(fields), count, text[:200])
        char = text[i]
        if char == "\\":
            following = text[i + 1:i + 2]
            assert following in ("|", "\\"), "undefined header escape \\%s in %r" % (following, text[:200])
            current.append(following)
            i += 2
        elif char == "|":
            fields.append("".join(current))
            current = []
            i += 1
        else:
            assert char not in "\r\n", "a line break in a header field: %r" % text[:200]
            current.append(char)
            i += 1
    return fields, text[i:]


def parse_cef(text: str) -> Cef:
    assert text.startswith("CEF:"), "not CEF: %r" % text[:80]
    fields, extension = split_header(text, 7)
    version = fields[0][len("CEF:"):]
    return Cef(version, *fields[1:], extension=parse_extension(extension))


def parse_extension(text: str) -> Dict[str, str]:
    """CEF ``key=value key=value``: a key is the word before an unescaped ``=``."""
    equals = _unescaped_equals(text)
    pairs: Dict[str, str] = {}
    starts = []
    for position in equals:
        space = text.rfind(" ", 0, position)
        key_start = space + 1
        key = text[key_start:position]
        assert _KEY.match(key), "not a key before '=' at %d: %r in %r" % (position, key, text[:200])
        starts.append((key_start, key, position))
    for n, (key_start, key, position) in enumerate(starts):
        end = starts[n + 1][0] - 1 if n + 1 < len(starts) else len(text)
        if n + 1 < len(starts):
            assert text[end] == " ", "pairs not separated by a space in %r" % text[:200]
        assert key not in pairs, "key %s twice" % key
        pairs[key] = _unescape(text[position + 1:end], _CEF_VALUE_ESCAPES)
    assert not text or (starts and starts[0][0] == 0), "text before the first key: %r" % text[:80]
    return pairs


def _unescaped_equals(text: str) -> List[int]:
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            found.append(i)
        i += 1
    return found


def _unescape(value: str, escapes: Dict[str, str]) -> str:
    out, i = [], 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            following = value[i + 1:i + 2]
            assert following in escapes, "undefined escape \\%s in %r" % (following, value[:200])
            out.append(escapes[following])
            i += 2
        else:
            assert char not in "\r\n", "a raw line break in a value: %r" % value[:200]
            out.append(char)
            i += 1
    return "".join(out)


def parse_leef(text: str) -> Leef:
    assert text.startswith("LEEF:2.0|"), "not LEEF 2.0: %r" % text[:80]
    fields, attributes = split_header(text, 6)
    delimiter = fields[5]
    assert delimiter == "x09", "delimiter %r, not a tab (x09)" % delimiter
    pairs: Dict[str, str] = {}
    for attribute in attributes.split("\t") if attributes else []:
        key, equals, value = attribute.partition("=")
        assert equals and _KEY.match(key), "not key=value: %r" % attribute[:200]
        assert key not in pairs, "attribute %s twice" % key
        pairs[key] = _unescape(value, _LEEF_VALUE_ESCAPES)
    return Leef(*fields[1:5], delimiter="\t", attributes=pairs)


class Syslog5424(NamedTuple):
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: str


def parse_rfc5424(text: str) -> Syslog5424:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`` with SD ``-`` (all this sink writes)."""
    m = re.match(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-) (.*)\Z", text, re.S)
    assert m, "not an RFC 5424 message without structured data: %r" % text[:200]
    return Syslog5424(int(m.group(1)), *m.groups()[1:])


# What a record must become, from the rules docs/syslog.md states (the table itself is the package's
# ``mapping.TABLE``; every value's text is derived here on its own).

#: CEF severity per NeuVector level, as docs/syslog.md gives it.
CEF_SEVERITY = {"Emergency": 10, "Alert": 9, "Critical": 8, "Error": 7, "Warning": 5, "Notice": 3, "Info": 1,
                "Debug": 0}
#: RFC 5424 severity per level (RFC 5424 section 6.2.1, NeuVector's levels are its names).
SYSLOG_SEVERITY = {"Emergency": 0, "Alert": 1, "Critical": 2, "Error": 3, "Warning": 4, "Notice": 5, "Info": 6,
                   "Debug": 7}
#: IANA protocol numbers -> the names CEF's proto takes.
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
CEF_NUMBER_KEYS = {"rt", "spt", "dpt", "cnt", "cn1", "cn2", "cn3", "proto"}
LEEF_NUMBER_KEYS = {"devTime", "srcPort", "dstPort", "proto"}
#: Names a NeuVector field may not take in LEEF (predefined attributes this sink writes itself or maps to).
LEEF_RESERVED = {"sev", "devTime", "devTimeFormat", "cat", "src", "dst", "srcPort", "dstPort", "proto", "usrName"}


def value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def camel(field: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", field) if word)


def event_seconds(record: dict):
    """The event time docs/syslog.md names: reported_timestamp, else reported_at, else the header's."""
    if type(record.get("reported_timestamp")) is int and record["reported_timestamp"] > 0:
        return record["reported_timestamp"]
    for stamp in (record.get("reported_at"), (record.get("syslog") or {}).get("timestamp")):
        if isinstance(stamp, str) and stamp:
            try:
                return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _one_line(text: str) -> str:
    """A CEF header field has no escape for a line break: the sink writes a space."""
    return re.sub(r"\r\n|[\r\n]", " ", text)


def expected_name(record: dict) -> str:
    name = record.get("name")
    if isinstance(name, str) and name:
        return _one_line(name)
    return "Network.Violation" if record.get("notification") == "violation" else str(record.get("notification"))


def expected_signature(record: dict) -> str:
    if record.get("notification") == "threat" and record.get("threat_id") not in (None, ""):
        return str(record["threat_id"])
    return expected_name(record)


def _level(record: dict) -> str:
    level = record.get("level")
    return level.capitalize() if isinstance(level, str) else ""


def _table(notification):
    from nvsiem_syslog.mapping import TABLE  # the table under test; the values' text is derived here
    if notification in TABLE:
        return TABLE[notification]
    # Another notification type has the rows every type shares.
    return {field: row for field, row in TABLE["violation"].items() if all(t.get(field) == row for t in TABLE.values())}


def _rows(record: dict):
    """(field, value, CEF column, LEEF column) for each field that has a non-empty value."""
    table = _table(record.get("notification"))
    for field, value in record.items():
        if field == "syslog" or value is None or value == "":
            continue
        row = table.get(field)
        yield (field, value, "-", "-") if row is None else (field, value, row.cef, row.leef)


def expected_cef_extension(record: dict) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for field, value, key, _ in _rows(record):
        if key.startswith("^"):
            continue
        wrong_type = (key in CEF_NUMBER_KEYS and type(value) is not int) or \
                     (key.startswith("cfp") and type(value) not in (int, float))
        if key == "-" or wrong_type:
            out["NeuVector" + camel(field)] = value_text(value)
        elif key == "rt":
            out["rt"] = str(value * 1000)
        elif key == "proto":
            out["proto"] = PROTOCOLS.get(value, str(value))
        else:
            out[key] = value_text(value)
            if re.match(r"(cs|cn|cfp)\d\Z", key):
                out[key + "Label"] = field
    if "rt" not in out and event_seconds(record) is not None:
        out["rt"] = str(int(event_seconds(record) * 1000))
    return out


def leef_time(seconds) -> Optional[str]:
    """devTime as DEV_TIME_FORMAT says it, which has room for the years 1970 to 9999 only (None: left out)."""
    if not 0 <= seconds < 253402300800:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d+0000" % (moment.microsecond // 1000)


def expected_leef_attributes(record: dict) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for field, value, _, key in _rows(record):
        if key.startswith("^"):
            continue
        if key == "-" or (key in LEEF_NUMBER_KEYS and type(value) is not int):
            name = re.sub(r"[^A-Za-z0-9_]", "", field)
            out["NeuVector" + camel(field) if name in LEEF_RESERVED else name] = value_text(value)
        elif key == "devTime":
            if leef_time(value) is not None:
                out["devTime"] = leef_time(value)
        elif key == "proto":
            out["proto"] = PROTOCOLS.get(value, str(value))
        else:
            out[key] = value_text(value)
    if "devTime" not in out and event_seconds(record) is not None and leef_time(event_seconds(record)):
        out["devTime"] = leef_time(event_seconds(record))
    if "devTime" in out:
        out["devTimeFormat"] = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
    if _level(record) in CEF_SEVERITY:
        out["sev"] = str(max(1, CEF_SEVERITY[_level(record)]))
    return out


def expected_header(record: dict, facility: int = 16, app_name: str = "neuvector") -> Syslog5424:
    """The RFC 5424 header fields (MSG left empty) this sink must write for ``record``."""
    seconds = event_seconds(record)
    if seconds is None or seconds >= 253402300800:  # RFC 5424's DATE-FULLYEAR is 4DIGIT: 9999 at most
        stamp = "-"
    else:
        moment = datetime.fromtimestamp(seconds, timezone.utc)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + (".%06d" % moment.microsecond if moment.microsecond else "") + "Z"
    received = record.get("syslog") or {}
    severity = SYSLOG_SEVERITY.get(_level(record))
    if severity is None:
        severity = received.get("severity") if received.get("severity") in range(8) else 6
    return Syslog5424(facility * 8 + severity, stamp, received.get("hostname") or socket.gethostname(),
                      app_name, "-", record.get("notification") or "-", "-", "")


def assert_message_matches(text: str, record: dict, body: str = "cef") -> None:
    """One received message is ``record``: its header and every field, read with the readers above."""
    assert read_message(text, body) == expected_message(record, body)


def read_message(text: str, body: str = "cef") -> dict:
    """A received message as plain data: its RFC 5424 header and its body's fields, read back."""
    message = parse_rfc5424(text)
    out = message._replace(msg="")._asdict()
    if body == "json":
        out["record"] = json.loads(message.msg)
    elif body == "leef":
        out["leef"] = parse_leef(message.msg)._asdict()
    else:
        out["cef"] = parse_cef(message.msg)._asdict()
    return out


def expected_message(record: dict, body: str = "cef") -> dict:
    """What ``read_message`` must give for the message of ``record``."""
    out = expected_header(record)._asdict()
    if body == "json":
        out["record"] = record
    elif body == "leef":
        out["leef"] = Leef("NeuVector", "NeuVector", "5.x", expected_signature(record), "\t",
                           expected_leef_attributes(record))._asdict()
    else:
        out["cef"] = Cef("0", "NeuVector", "NeuVector", "5.x", expected_signature(record), expected_name(record),
                         str(CEF_SEVERITY.get(_level(record), "Unknown")), expected_cef_extension(record))._asdict()
    return out


def canonical(message: dict) -> str:
    return json.dumps(message, sort_keys=True, ensure_ascii=False)
