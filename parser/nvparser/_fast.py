"""The fast path for frames exactly as NeuVector sends them.

Nearly every frame is ``<PRI>1 TS HOST APP PID neuvector - `` followed by a
text body whose keys are all known and in struct order, or by a JSON body.
For those, this module does the work of the general path in one function
with a handful of C-level calls, and remembers per key sequence which
fields need typing. Anything else returns None and takes the general path,
which gives the same record (the tests hold the two paths to that).
"""
from typing import Dict, Optional, Tuple, Union

from ._codec import json_loads
from ._events import Record
from .schema import FIELDS
from ._text import _CANDIDATE, _SCHEMAS, BOOLS, coerce_floats, split_list, split_map

# (notification, int keys, bool keys, float keys, list keys, map keys) for a
# key sequence, or False when the sequence needs the general path.
_Plan = Union[Tuple[str, tuple, tuple, tuple, tuple, tuple], bool]
_PLANS: Dict[tuple, _Plan] = {}


def _plan(signature: tuple) -> _Plan:
    head = signature[0]
    keys = signature[1:]
    if head[:13] != "notification=" or head[13:] not in FIELDS:
        return False
    notification = head[13:]
    schema = _SCHEMAS[notification]
    if not schema.in_order(keys):
        return False
    present = set(keys)
    return (notification,) + tuple(
        tuple(k for k in group if k in present)
        for group in (schema.ints, schema.bools, schema.floats, schema.lists, schema.maps)
    )


def fast_record(raw: bytes, offset: int) -> Optional[Record]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = line.split(" ", 7)
    if len(parts) != 8 or parts[6] != "-":
        return None
    head = parts[0]
    if head[-2:] != ">1" or head[:1] != "<" or not head[1:-2].isdigit():
        # "<134>1": anything else (RFC 3164, no PRI) is the general path's
        return None
    pri = int(head[1:-2])
    if pri > 191:
        return None
    body = parts[7]
    if body[-1:] in ("\n", "\r") or body[:1] == "\ufeff":
        return None
    first = body[:1]
    if first == "n":
        kv = _CANDIDATE.split(body)
        keys = kv[1::2]
        signature = (kv[0], *keys)
        plan = _PLANS.get(signature)
        if plan is None:
            if len(_PLANS) > 4096:  # bounded: odd streams must not grow it
                _PLANS.clear()
            plan = _PLANS[signature] = _plan(signature)
        if not plan:
            return None
        notification, ints, bools, floats, lists, maps = plan
        data = {"notification": notification}
        data.update(zip(keys, kv[2::2]))
        try:
            for key in ints:
                data[key] = int(data[key])
            for key in bools:
                data[key] = BOOLS[data[key]]
            for key in floats:
                data[key] = float(data[key])
        except (ValueError, KeyError):
            return None  # a value of the wrong type: the general path notes it
        for key in lists:
            value = data[key]
            if value[:1] != "[" or value[-1:] != "]":
                return None
            data[key] = split_list(key, value[1:-1])
        for key in maps:
            value = data[key]
            if value[:4] != "map[" or value[-1:] != "]":
                return None
            data[key] = split_map(value[4:-1])
    elif first == "{":
        try:
            data = json_loads(body)
        except ValueError:
            return None
        if type(data) is not dict or data.get("notification") not in FIELDS:
            return None
        coerce_floats(data)
    else:
        return None
    data["syslog"] = {
        "pri": pri, "facility": pri >> 3, "severity": pri & 7, "version": 1,
        "timestamp": None if parts[1] == "-" else parts[1],
        "hostname": None if parts[2] == "-" else parts[2],
        "app_name": None if parts[3] == "-" else parts[3],
        "procid": None if parts[4] == "-" else parts[4],
        "msgid": None if parts[5] == "-" else parts[5],
    }
    return Record(data, raw, offset, ())
