"""The fast path for frames exactly as NeuVector sends them.

Nearly every frame is ``<PRI>1 TS HOST APP PID neuvector - `` (or a relay's
RFC 3164 rewrite of it) followed by a text body whose keys are all known
and in struct order, or by a JSON body.
For those, this module does the work of the general path in one function
with a handful of C-level calls, and remembers per key sequence which
fields need typing. Anything else returns None and takes the general path,
which gives the same record (the tests hold the two paths to that).

Where the time goes is memory, more than instructions: a ~1 KB frame gives
~80 strings, and every byte a record keeps alive is a cache line written
fresh. So the body is never copied out of the line (the key=value split
runs over the whole line and the header is read from a short prefix), and
a record's keys are the plan's own strings, shared by every record, rather
than ones a split makes.

The two steps that make those objects, splitting a body (``_split_body``)
and building its typed dict (``_build``), have C twins in the optional
``_speedups`` module, which halve the cost of a text record; both give the
same results (tests/test_speedups.py).
"""
import re
from typing import Dict, Optional, Tuple, Union

from ._codec import json_loads_from
from ._events import Record
from ._header import split_header
from .schema import FIELDS, FREE_TEXT
from ._gotypes import BOOLS, FLOAT_KEYS, KEY_CUT, SCHEMAS, coerce_floats, is_go_float, is_go_int, split_items, split_map

# NeuVector's header is ~100 characters; one longer takes the general path.
_HEADER_SPAN = 256
# Record(...) runs a Python-level __new__; the tuple's own skips that frame.
_new_record = tuple.__new__


class _Plan:
    """How to type the values of one key sequence, found once and reused."""

    __slots__ = ("template", "keys", "glue", "ints", "bools", "floats", "lists", "maps", "items")

    def __init__(self, schema, keys: Tuple[str, ...], glue: tuple) -> None:
        # The schema's own key strings: every record shares them.
        self.keys = tuple(schema.names[k] for k in keys)
        # (start, end) slices of the split to join back into one value
        self.glue = glue
        # Copying a dict that already holds every key in order is cheaper
        # than growing a new one key by key ("syslog" comes last).
        self.template = dict.fromkeys(("notification",) + self.keys + ("syslog",))
        self.template["notification"] = schema.notification
        index = {k: i for i, k in enumerate(keys)}
        self.ints = tuple(index[k] for k in schema.ints if k in index)
        self.bools = tuple(index[k] for k in schema.bools if k in index)
        self.floats = tuple(index[k] for k in schema.floats if k in index)
        self.lists = tuple(index[k] for k in schema.lists if k in index and k != "items")
        self.maps = tuple(index[k] for k in schema.maps if k in index)
        # compliance items hold spaces: split where each starts (split_items), not at every space
        self.items = index.get("items")


# (notification type, the keys after it joined by ",") -> the plan for that key
# sequence, or False when it needs the general path.
_PLANS: Dict[Tuple[str, str], Union[_Plan, bool]] = {}


def _plan(signature: Tuple[str, str]) -> Union[_Plan, bool]:
    notification, joined = signature
    keys = tuple(joined.split(",")) if joined else ()
    if notification not in FIELDS:
        return False
    schema = SCHEMAS[notification]
    if schema.in_order(keys):
        return _Plan(schema, keys, ())
    glue = _glue(schema, keys)
    if glue is None:
        return False
    return _Plan(schema, tuple(k for k in keys if k in schema.position), glue)


def _glue(schema, keys: Tuple[str, ...]) -> Optional[tuple]:
    """Where unknown keys sit inside free-text values, as the general path reads them.

    When the known keys are in struct order and each unknown key follows a
    free-text string field (``proc_cmd=curl ...?a=1,os=linux``), the general
    path takes every known key as real and puts each ``,unknown=`` back into
    the value before it. Returns the ``(start, end)`` slices of the split
    (``[head, key0, value0, key1, value1, ...]``) to join back into one value,
    or None when the general path must decide.
    """
    runs: list = []
    last = -1
    free = False
    for i, key in enumerate(keys):
        pos = schema.position.get(key)
        if pos is None:
            if not free:
                return None
            if runs and runs[-1][1] == 2 * i + 1:  # right after another unknown key
                runs[-1] = (runs[-1][0], 2 * i + 3)
            else:
                runs.append((2 * i, 2 * i + 3))  # the value before it, the key, its value
            continue
        if pos <= last:
            return None
        last = pos
        free = key in FREE_TEXT and schema.types[key] == "str"
    return tuple(reversed(runs))  # joined from the end, so earlier slices stay put


def _joined(pieces: list) -> str:
    """``[value, key, value, key, value]`` -> ``value,key=value,key=value``."""
    out = [pieces[0]]
    for i in range(1, len(pieces), 2):
        out.append("," + pieces[i] + "=" + pieces[i + 1])
    return "".join(out)


# Every byte but "," and "=": translate() deletes them, leaving the separators.
_NOT_SEPARATOR = bytes(b for b in range(256) if b not in b",=")
# What the separators of "notification=t,k=v,...,k=v" are, for up to 4096 keys.
_ALTERNATING = b"=," * 4096

# header bytes ("<PRI>1 TS HOST APP PID MSGID") -> the record's syslog object,
# or False when the general path must read it. One controller sends the same
# header for every event of a second, so it is split and decoded once, and
# each record gets a copy.
_HEADERS: Dict[bytes, Union[dict, bool]] = {}
# RFC 5424's structured data may hold a "notification=": only the whole line tells where it ends.
_RFC5424_START = re.compile(rb"<\d{1,3}>1 ")
# The same for the other heads (``_relayed_header``), keyed by all bytes before the body.
_RELAYED_HEADERS: Dict[bytes, Union[dict, bool]] = {}


def _header(head: bytes) -> Union[dict, bool]:
    parts = head.split(b" ")
    if len(parts) != 6 or b"," in head or b"=" in head:
        return False
    pri = parts[0]
    if pri[-2:] != b">1" or pri[:1] != b"<" or len(pri) > 6 or not pri[1:-2].isdigit() or int(pri[1:-2]) > 191:
        # "<134>1" (at most 3 digits): anything else (RFC 3164, no PRI) is the general path's
        return False
    try:
        timestamp, hostname, app_name, procid, msgid = (None if p == b"-" else p.decode("utf-8") for p in parts[1:])
    except UnicodeDecodeError:
        return False
    number = int(pri[1:-2])
    return {
        "pri": number, "facility": number >> 3, "severity": number & 7, "version": 1,
        "timestamp": timestamp, "hostname": hostname, "app_name": app_name,
        "procid": procid, "msgid": msgid,
    }


def _relayed_header(head: bytes) -> Union[dict, bool]:
    """The syslog object for ``head``, the bytes before a body, as the general path reads it.

    For heads a relay writes (RFC 3164 ``<PRI>Mmm dd hh:mm:ss HOST TAG: ``)
    and other ``<PRI>`` heads but RFC 5424's: their reading depends on the
    head alone (the body starts at the first ``notification=`` or
    ``{"notification"``), so it is done once per head by the general path's
    own function. RFC 5424 heads with structured data, and heads without a
    PRI, stay the general path's.
    """
    if head[:1] != b"<" or _RFC5424_START.match(head) or not head.isascii() or b"," in head or b"=" in head:
        return False  # a "," or "=" before the body would mislead _split_body's alternation check
    syslog, body, _ = split_header(head.decode("ascii") + "notification=")
    return syslog if syslog is not None and body == "notification=" else False


def _remember(cache: dict, head: bytes, read) -> Union[dict, bool]:
    """``read(head)``, kept in ``cache`` for the next frames with that head."""
    if len(cache) > 1024:  # bounded: a new key each second at most per controller
        cache.clear()
    header = cache[head] = read(head)
    return header


def fast_record(raw: bytes, offset: int) -> Optional[Record]:
    # The header is read from the bytes: a JSON body then goes to the JSON
    # decoder as bytes (which checks its UTF-8 itself), never decoded to a
    # 1 KB string and copied first. Header fields hold no spaces, so the
    # first " - " is the (empty) structured data before the body.
    if raw[-1:] in (b"\n", b"\r"):
        return None
    end = raw.find(b" - ", 0, _HEADER_SPAN)
    header = False
    if end >= 0:
        head = raw[:end]
        header = _HEADERS.get(head)
        if header is None:
            header = _remember(_HEADERS, head, _header)
        start = end + 3  # where the body starts
    if not header:  # a relay's header: the body starts at its first key
        start = raw.find(b"notification=", 0, _HEADER_SPAN)
        json_start = raw.find(b'{"notification"', 0, _HEADER_SPAN if start < 0 else start)
        if json_start >= 0:
            start = json_start
        if start <= 0:
            return None
        head = raw[:start]
        header = _RELAYED_HEADERS.get(head)
        if header is None:
            header = _remember(_RELAYED_HEADERS, head, _relayed_header)
        if not header:
            return None
    try:
        if raw.startswith(b"notification=", start):
            if not head.isascii():
                return None  # character and byte offsets differ: the general path's
            data = _text_body(raw, start)
        elif raw[start:start + 1] == b"{":
            data = json_loads_from(raw, start)
            if type(data) is not dict:
                return None
            notification = data.get("notification")
            if type(notification) is not str or notification not in FIELDS:
                return None
            if notification in FLOAT_KEYS:
                coerce_floats(data, notification)
        else:
            return None
    except ValueError:  # invalid JSON or UTF-8 (UnicodeDecodeError is one)
        return None
    if data is None:
        return None
    data["syslog"] = header.copy()
    return _new_record(Record, (data, raw, offset, ()))


def _text_body(raw: bytes, start: int) -> Optional[dict]:
    """The typed fields of a body ``notification=…`` starting at ``raw[start]``."""
    notification, joined, values = split_body(raw, start)
    signature = (notification, joined)
    plan = _PLANS.get(signature)
    if plan is None:
        if len(_PLANS) > 4096:  # bounded: odd streams must not grow it
            _PLANS.clear()
        plan = _PLANS[signature] = _plan(signature)
    if not plan:
        return None
    if plan.glue:
        values = _rejoined(notification, joined, values, plan.glue)
    data = build(plan.template, plan.keys, values, plan.ints, plan.floats, plan.bools, plan.lists, plan.maps)
    if data is None:
        return None
    if plan.items is not None:
        value = values[plan.items]
        if value[:1] != "[" or value[-1:] != "]":
            return None
        data["items"] = split_items(value[1:-1])
    return data


def _split_body(raw: bytes, start: int) -> Tuple[str, str, list]:
    """``notification=TYPE,k1=v1,…`` at ``raw[start]`` -> ``(TYPE, "k1,k2,…", [v1, v2, …])``.

    Cut at every ``,key=`` as ``KEY_CUT`` cuts. Where the separators
    alternate (no value holds "," or "="), one ``str.split`` cuts at each of
    them at half the cost; that reads ``, application=`` as a key too, which
    no plan knows, so the record comes out the same. The order is checked,
    not the count: ``rest_request=a=rest_body,b`` has one "=" and one ","
    too many, and would read as two fields. The header holds no ","
    or "=" (``_header``): both splits run over the whole line, with no copy
    of the body. The keys come joined: one string hashes faster than a tuple
    of ~40 fresh ones. Raises UnicodeDecodeError on invalid UTF-8.
    """
    line = raw.decode("utf-8")
    if _ALTERNATING.startswith(raw.translate(None, _NOT_SEPARATOR)):
        kv = line.replace(",", "=").split("=")
        if not len(kv) % 2:  # else a "," ended the body: the regex keeps it in the value
            return kv[1], ",".join(kv[2::2]), kv[3::2]
    kv = KEY_CUT.split(line)
    return kv[0][start + 13:], ",".join(kv[1::2]), kv[2::2]


def _build(template: dict, keys: tuple, values: list, ints: tuple, floats: tuple, bools: tuple,
           lists: tuple, maps: tuple) -> Optional[dict]:
    """``template`` with ``keys[i]`` set to ``values[i]``; None when a typed value does not fit.

    The values at the indexes in ``ints`` … ``maps`` are read as Go's %v
    prints those types (``_gotypes``). Any other value is the general
    path's, which keeps it as text and notes it.
    """
    for i in ints:  # typed in place: the caller reads only other values after
        value = values[i]
        if not is_go_int(value):
            return None
        values[i] = int(value)
    for i in floats:
        value = values[i]
        if not is_go_float(value):
            return None
        values[i] = float(value)
    try:
        for i in bools:
            values[i] = BOOLS[values[i]]
    except KeyError:
        return None  # not true or false: the general path notes it
    for i in lists:  # lists of words; the plan leaves compliance items to split_items
        value = values[i]
        if value[:1] != "[" or value[-1:] != "]":
            return None
        values[i] = value[1:-1].split(" ")
    for i in maps:
        value = values[i]
        if value[:4] != "map[" or value[-1:] != "]":
            return None
        values[i] = split_map(value[4:-1])
    data = template.copy()
    data.update(zip(keys, values))
    return data


try:  # the same two functions in C, where they were compiled (setup.py)
    from ._speedups import build, split_body
except ImportError:  # pragma: no cover - which runs depends on the install
    build, split_body = _build, _split_body


def _rejoined(notification: str, joined: str, values: list, glue: tuple) -> list:
    """The values with unknown keys put back into the values before them (see ``_glue``)."""
    kv = [notification] * (2 * len(values) + 1)  # [head, key0, value0, key1, value1, ...]
    kv[1::2] = joined.split(",")
    kv[2::2] = values
    for first, end in glue:
        kv[first:end] = [_joined(kv[first:end])]
    return kv[2::2]
