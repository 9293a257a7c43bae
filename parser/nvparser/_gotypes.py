"""How NeuVector's Go prints each field type with %v, read back; and the schema's lookup tables.

One place for the rules both text-mode paths apply: the general path
(``_text``: any frame, every oddity noted) and the fast path (``_fast``:
frames exactly as NeuVector sends them). The C accelerator
(``_speedups.c``) is their only twin, held to them by tests/test_speedups.py.

* keys: a text body is ``key=%v`` pairs joined by ``,`` with no quoting;
  ``KEY_CUT`` finds every candidate ``,key=``;
* ``int``: ASCII digits, maybe a "-" (``is_go_int``); ``float`` (float32):
  ``10``, ``7.5``, ``1e+06`` (``is_go_float``); ``bool``: ``true``/``false``;
* ``[]string``: ``[a b c]`` (``[""]`` prints as ``[]``); compliance ``items``
  hold spaces (``split_items``); ``map[string]string``: ``map[k:v k2:v2]``,
  nil as ``map[]``.
"""
import re
from typing import Dict, List, Optional, Tuple

from .schema import FIELDS, ITEM_LEVELS, typed_keys

KEY_CUT = re.compile(r",([A-Za-z_][A-Za-z0-9_]*)=")


class Schema:
    """Per-notification lookup tables, built once."""

    __slots__ = ("notification", "names", "position", "types", "conversions", "ints", "bools", "floats", "lists",
                 "maps", "verdicts")

    def __init__(self, notification: str):
        fields = FIELDS[notification]
        self.notification = notification
        self.names = {f.name: f.name for f in fields}  # one string object per key name
        self.position = {f.name: i for i, f in enumerate(fields)}
        self.types = {f.name: f.type for f in fields}
        # (key, converter) for every field that is not a string, in wire order
        self.conversions = tuple((f.name, CONVERTERS[f.type]) for f in fields if f.type != "str")
        self.ints = typed_keys(notification, "int")
        self.bools = typed_keys(notification, "bool")
        self.floats = typed_keys(notification, "float")
        self.lists = typed_keys(notification, "list")
        self.maps = typed_keys(notification, "map")
        # key sequence -> True when it can be taken as is (fast path)
        self.verdicts: Dict[Tuple[str, ...], bool] = {}

    def in_order(self, keys: Tuple[str, ...]) -> bool:
        verdict = self.verdicts.get(keys)
        if verdict is None:
            last = -1
            verdict = True
            for key in keys:
                pos = self.position.get(key, -1)
                if pos <= last:
                    verdict = False
                    break
                last = pos
            if len(self.verdicts) > 4096:  # bounded: odd streams must not grow it
                self.verdicts.clear()
            self.verdicts[keys] = verdict
        return verdict


def is_go_int(text: str) -> bool:
    """Whether ``text`` is an integer as Go prints one: ASCII digits, maybe a "-".

    ``int()`` takes more (``4_43``, `` 443``, ``+443``, Arabic-Indic digits):
    such a value is kept as text and noted, like ``0x1bb``.
    """
    return text.isascii() and (text.isdigit() or text[:1] == "-" and text[1:].isdigit())


# A float32 as Go's %v prints it: 10, 7.5, -0.5, 1e+06 (ASCII only).
_GO_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?\Z")


def is_go_float(text: str) -> bool:
    """Whether ``text`` is a number as Go prints a float32.

    ``float()`` takes more (``1_0``, `` 7.5``, ``nan``, non-ASCII digits):
    such a value is kept as text and noted.
    """
    return _GO_FLOAT.match(text) is not None


BOOLS = {"true": True, "false": False}


def type_values(record: dict, schema_name: str, notes: List[str]) -> dict:
    """Convert text values to the JSON types NeuVector's JSON mode gives them.

    A value that does not fit its type is kept as sent, and noted.
    """
    for key, convert in SCHEMAS[schema_name].conversions:
        value = record.get(key)
        if value is not None:
            try:
                record[key] = convert(key, value)
            except (ValueError, KeyError):
                notes.append("%s is not %s: %r" % (key, _KINDS[convert], value))
    return record


def _to_int(key: str, value: str) -> int:
    if not is_go_int(value):
        raise ValueError(value)
    return int(value)


def _to_float(key: str, value: str) -> float:
    if not is_go_float(value):
        raise ValueError(value)
    return float(value)


def _to_bool(key: str, value: str) -> bool:
    return BOOLS[value]


def _to_list(key: str, value: str) -> List[str]:
    if value[:1] != "[" or value[-1:] != "]":
        raise ValueError(value)
    return split_list(key, value[1:-1])


def _to_map(key: str, value: str) -> Optional[Dict[str, str]]:
    if value[:4] != "map[" or value[-1:] != "]":
        raise ValueError(value)
    return split_map(value[4:-1])


CONVERTERS = {"int": _to_int, "float": _to_float, "bool": _to_bool, "list": _to_list, "map": _to_map}
_KINDS = {_to_int: "an integer", _to_float: "a number", _to_bool: "a boolean",
          _to_list: "a [list]", _to_map: "a map[...]"}


def split_list(key: str, inner: str) -> List[str]:
    """``a b c`` -> elements. Go prints ``[""]`` as ``[]``, so ``""`` -> ``[""]``.

    Compliance ``items`` hold spaces: see ``split_items``.
    """
    if key == "items":
        return split_items(inner)
    return inner.split(" ")


_LEVELS = frozenset(ITEM_LEVELS)


def split_items(inner: str) -> List[str]:
    """Compliance items joined by spaces -> the items.

    An item starts after a space with ``<check> <LEVEL> - ``, where the check
    is one word with at most one inner "/" (``D.5.4``, ``group/test``). A
    description may hold such words, and the split takes them as starts too:
    nothing in the text tells them apart. Found from each " - " (one scan)
    rather than by a regex lookahead at every space: about twice as fast.
    """
    items = []
    start = 0
    at = inner.find(" - ")
    while at >= 0:
        before_level = inner.rfind(" ", 0, at)
        if before_level >= 0 and inner[before_level + 1:at] in _LEVELS:
            space = inner.rfind(" ", 0, before_level)  # before the check
            check = inner[space + 1:before_level]
            if space >= 0 and check and check.count("/") <= 1 and check[0] != "/" and check[-1] != "/":
                items.append(inner[start:space])
                start = space + 1
        at = inner.find(" - ", at + 1)
    items.append(inner[start:])
    return items


def split_map(inner: str) -> Optional[Dict[str, str]]:
    """``k:v k2:v2`` -> dict; Go prints a nil map as ``map[]`` (JSON null)."""
    if not inner:
        return None
    out = {}
    for pair in inner.split(" "):
        key, _, value = pair.partition(":")
        out[key] = value
    return out


#: notification type -> its float fields, for the types that have any (audit's scores)
FLOAT_KEYS = {name: typed_keys(name, "float") for name in FIELDS if typed_keys(name, "float")}


def coerce_floats(data: dict, notification: str) -> dict:
    """Go prints float32 10 as ``10``: keep the type's float fields floats, as text mode does.

    Only the schema's: a key this version does not know keeps what JSON gave it.
    """
    for key in FLOAT_KEYS.get(notification, ()):
        value = data.get(key)
        if type(value) is int:
            data[key] = float(value)
    return data


SCHEMAS = {name: Schema(name) for name in FIELDS}
