"""Render a typed record the way NeuVector's Go code puts it on the wire.

A test oracle, written from the wire-format reference (§1.2 header, §3.1-§3.2
text mode, §4 JSON mode), independent of the parser: tests render a record
here and check that the parser gives the record back.

A record is the parser's shape: NeuVector keys with JSON types (``int``,
``bool``, ``float`` for Go float32, ``list`` for []string, ``map`` for
map[string]string with ``None`` for the nil map). ``schema`` is a sequence of
fields with ``name``, ``type`` and ``omitempty``, in struct order. A key
missing from the record is not rendered (an older sender did not have it);
an ``omitempty`` key whose value is the zero value is dropped, as Go does.
"""
import math
import struct
from typing import Mapping, NamedTuple, Optional, Sequence

APP_NAME = "/usr/local/bin/controller"
MSGID = "neuvector"
FACILITY_LOCAL0 = 16
SEVERITY = {  # NeuVector level -> syslog severity (§1.3)
    "Emergency": 0, "Alert": 1, "Critical": 2, "Error": 3,
    "Warning": 4, "Notice": 5, "Info": 6, "Debug": 7,
}


class Header(NamedTuple):
    """The parts of an RFC 5424 header that vary between controllers."""

    timestamp: str
    hostname: str
    procid: str


def rfc5424(header: Header, level: str) -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - `` (§1.2)."""
    pri = FACILITY_LOCAL0 * 8 + SEVERITY[level]
    return f"<{pri}>1 {header.timestamp} {header.hostname} {APP_NAME} {header.procid} {MSGID} - "


def receiver_printed(header: Header) -> str:
    """The header as a receiver displays it, PRI and version stripped (§1.2, docs samples)."""
    return f"{header.timestamp} {header.hostname} {APP_NAME} {header.procid} {MSGID} - "


def syslog_object(header: Header, level: Optional[str]) -> dict:
    """The ``syslog`` object of a parsed record; ``level=None`` for a receiver-printed header."""
    severity = None if level is None else SEVERITY[level]
    return {
        "pri": None if level is None else FACILITY_LOCAL0 * 8 + severity,
        "facility": None if level is None else FACILITY_LOCAL0,
        "severity": severity,
        "version": None if level is None else 1,
        "timestamp": header.timestamp,
        "hostname": header.hostname,
        "app_name": APP_NAME,
        "procid": header.procid,
        "msgid": MSGID,
    }


def _is_zero(value) -> bool:
    return value in ("", 0, False, None) or (isinstance(value, (list, dict)) and not value)


def _present(record: Mapping, schema: Sequence):
    """(field, value) in struct order, as Go emits them."""
    for field in schema:
        if field.name not in record:
            continue
        value = record[field.name]
        if field.omitempty and _is_zero(value):
            continue
        yield field, value


# -- text mode: fmt %v -------------------------------------------------------

def _float32_digits(value: float):
    """Shortest decimal digits that read back as the same float32, and the
    decimal exponent of the first digit (strconv's shortest formatting)."""
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    for precision in range(1, 10):
        text = f"{f32:.{precision - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            break
    mantissa, exponent = text.lstrip("-").split("e")
    return mantissa.replace(".", "").rstrip("0") or "0", int(exponent)


def _fixed(digits: str, exponent: int) -> str:
    point = exponent + 1  # digits before the decimal point
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _scientific(digits: str, exponent: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def go_float32_v(value: float) -> str:
    """fmt ``%v`` of a float32: %g with the shortest digits; %e form when the
    exponent is < -4 or >= 6 (strconv uses precision 6 for that choice)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, exponent = _float32_digits(abs(value))
    if exponent < -4 or exponent >= 6:
        return sign + _scientific(digits, exponent)
    return sign + _fixed(digits, exponent)


def go_value(type_: str, value) -> str:
    """One value as ``fmt.Sprintf("%v")`` prints it (§3.2)."""
    if type_ == "str":
        return value
    if type_ == "int":
        return str(value)
    if type_ == "bool":
        return "true" if value else "false"
    if type_ == "float":
        return go_float32_v(value)
    if type_ == "list":  # nil and [""] both print []
        return "[" + " ".join(value or ()) + "]"
    if type_ == "map":  # fmt sorts map keys; nil prints map[]
        return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value or {})) + "]"
    raise ValueError(f"unknown field type {type_!r}")


def to_text(notification: str, record: Mapping, schema: Sequence) -> str:
    """The text-mode MSG: ``notification=<t>,key=value,...`` with no escaping (§3.1)."""
    pairs = [f"notification={notification}"]
    pairs += [f"{f.name}={go_value(f.type, v)}" for f, v in _present(record, schema)]
    return ",".join(pairs)


# -- JSON mode: encoding/json ------------------------------------------------

_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_UNICODE = set("<>&\u2028\u2029")  # HTML-safe escaping, on by default in json.Marshal


def go_json_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in _JSON_SHORT:
            out.append(_JSON_SHORT[ch])
        elif ch < " " or ch in _JSON_UNICODE:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # non-ASCII stays raw UTF-8
    out.append('"')
    return "".join(out)


def go_json_float32(value: float) -> str:
    """encoding/json float32: shortest digits, 'f' form unless < 1e-6 or >= 1e21."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, exponent = _float32_digits(abs(value))
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent)}"
    return sign + _fixed(digits, exponent)


def go_json_value(type_: str, value) -> str:
    if type_ == "str":
        return go_json_string(value)
    if type_ == "int":
        return str(value)
    if type_ == "bool":
        return "true" if value else "false"
    if type_ == "float":
        if math.isnan(value) or math.isinf(value):
            raise ValueError("json.Marshal fails on NaN and Inf: NeuVector sends nothing")
        return go_json_float32(value)
    if type_ == "list":
        if value is None:
            return "null"
        return "[" + ",".join(go_json_string(v) for v in value) + "]"
    if type_ == "map":  # json.Marshal sorts map keys; nil map -> null
        if value is None:
            return "null"
        return "{" + ",".join(f"{go_json_string(k)}:{go_json_string(value[k])}" for k in sorted(value)) + "}"
    raise ValueError(f"unknown field type {type_!r}")


def to_json(notification: str, record: Mapping, schema: Sequence) -> str:
    """The JSON-mode MSG: ``{"notification": "<t>", `` + json.Marshal(record)[1:] (§4)."""
    body = ",".join(f"{go_json_string(f.name)}:{go_json_value(f.type, v)}" for f, v in _present(record, schema))
    return f'{{"notification": {go_json_string(notification)}, {body}}}'
