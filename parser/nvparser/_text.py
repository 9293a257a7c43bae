"""Text (key=value) mode bodies -> typed records.

NeuVector writes ``key=%v`` pairs joined by ``,`` with no quoting, so a
comma or ``,word=`` inside a value is indistinguishable from a separator
by syntax alone. The schema resolves it: real keys are known names that
appear in struct order. One C-level ``re.split`` finds every candidate
``,key=``; when all candidates are known keys in increasing schema order
(the common case, cached per key sequence) they are the boundaries. Otherwise
the boundaries are the longest increasing run of known keys, and the other
candidates go back into the value they interrupted.
"""
import re
from bisect import bisect_left
from typing import Dict, List, Optional, Tuple

from .schema import FIELDS, FREE_TEXT, ITEM_LEVELS, typed_keys

_CANDIDATE = re.compile(r",([A-Za-z_][A-Za-z0-9_]*)=")


class _Schema:
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




def parse_pairs(body: str, schema_name: str) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Split ``k=v,k=v`` text (first pair included) into pairs, by schema.

    Returns the pairs and the notes about keys the schema does not know.
    """
    parts = _CANDIDATE.split(body)
    first_key, sep, first_value = parts[0].partition("=")
    keys = tuple(parts[1::2])
    schema = _SCHEMAS[schema_name]
    if sep and schema.in_order(keys):
        pairs = [(first_key, first_value)]
        pairs.extend(zip(keys, parts[2::2]))
        return pairs, []
    return _resolve(parts, schema, first_key, first_value, sep)


def _resolve(parts, schema: _Schema, first_key: str, first_value: str, sep: str):
    """Slow path: pick the real boundaries among the candidates.

    Values are built from pieces and joined once, so a frame full of
    ``,x=`` stays cheap.
    """
    keys = parts[1::2]
    values = parts[2::2]
    notes: List[str] = []
    if sep:
        pairs = [(first_key, [first_value])]
    else:
        # No key at the start: keep the text under a key that says so.
        pairs = [("_unkeyed", [parts[0]])]
        notes.append("text before the first key")
    accepted = _boundaries(pairs[0][0], pairs[0][1][0], keys, values, schema)
    accepted_keys = {keys[i] for i in accepted}
    seen = {pairs[0][0]}
    for i, (key, value) in enumerate(zip(keys, values)):
        current = pairs[-1][0]
        if i in accepted or (key not in schema.position and current not in FREE_TEXT and key not in seen):
            if i not in accepted:
                # A key from a newer NeuVector: kept, and reported.
                notes.append("unknown key %r" % key)
            pairs.append((key, [value]))
            seen.add(key)
        else:
            if key in schema.position and key not in accepted_keys:
                # Never in NeuVector's own output (it writes struct order), but
                # a hand-written or reordered line reads this way: say so.
                notes.append("%r read as part of %r: out of NeuVector's field order" % (key, current))
            pairs[-1][1].append("," + key + "=" + value)
    return [(k, "".join(pieces)) for k, pieces in pairs], notes


_KEY_POINTS = 10   # each real key found
_MISFIT = 15       # a value that cannot be its field's type costs more than a key


def _boundaries(first_key: str, first_value: str, keys, values, schema: _Schema) -> set:
    """Indexes of the candidates that are real keys.

    Real keys appear in struct order and their values fit their types. Of
    the ways to read the candidates as increasing runs of known keys, take
    the one with the most keys, less a penalty for each value that would not
    fit its type (``monitor=false,message=x,packet=0``: ``packet`` is a fake
    key inside ``message``, or ``monitor`` would hold ``false,message=x``).
    Between equally good readings, cut each value at the nearest key, as
    NeuVector's field order suggests; but of two occurrences of the same key
    the later one is real, the earlier sitting inside a value. Quadratic in
    the number of known candidates, so above a bound the longest run decides.
    """
    position = schema.position
    known = [i for i, key in enumerate(keys) if key in position]
    if len(known) > 96:
        return _longest_increasing(keys, position)
    types = schema.types
    n = len(keys)

    def misfit(start: int, end: int) -> int:
        """Penalty for the value of candidate ``start`` (-1: the first key) running up to candidate ``end``."""
        kind = types.get(first_key if start < 0 else keys[start])
        if kind is None or kind == "str":
            return 0
        head = first_value if start < 0 else values[start]
        if kind in ("list", "map"):
            tail = values[end - 1] if end - 1 > start else head
            fits = head.startswith("[" if kind == "list" else "map[") and tail.endswith("]")
        else:
            fits = end == start + 1 and _SCALAR_FITS[kind](head)
        return 0 if fits else _MISFIT

    def better(score_a, chain_a, score_b, chain_b) -> bool:
        if score_a != score_b:
            return score_a > score_b
        for x, y in zip(chain_a, chain_b):
            if x != y:
                return x > y if keys[x] == keys[y] else x < y
        return len(chain_a) > len(chain_b)

    start_pos = position.get(first_key, -1)
    if _increasing([start_pos] + [position[keys[i]] for i in known]):
        # Only unknown keys were in the way (a newer NeuVector, or ",word="
        # inside free text): every known key is real if every value fits.
        cuts = [-1] + known + [n]
        if not any(misfit(a, b) for a, b in zip(cuts, cuts[1:])):
            return set(known)
    best = {}  # candidate -> (score, chain of candidates ending with it)
    for j in known:
        pos = position[keys[j]]
        top = None
        if pos > start_pos:
            top = (_KEY_POINTS - misfit(-1, j), (j,))
        for i in known:
            if i >= j:
                break
            if i in best and position[keys[i]] < pos:
                score, chain = best[i]
                option = (score + _KEY_POINTS - misfit(i, j), chain + (j,))
                if top is None or better(*option, *top):
                    top = option
        if top is not None:
            best[j] = top
    final = (-misfit(-1, n), ())
    for i, (score, chain) in best.items():
        option = (score - misfit(i, n), chain)
        if better(*option, *final):
            final = option
    return set(final[1])


def _increasing(positions) -> bool:
    return all(a < b for a, b in zip(positions, positions[1:]))


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


_SCALAR_FITS = {"int": is_go_int, "float": is_go_float, "bool": lambda text: text in ("true", "false")}


def _longest_increasing(keys, position) -> set:
    """Indexes of the longest run of known keys in strictly increasing schema order.

    Among equally long runs the later occurrence of a key wins: a fake key
    sits inside an earlier field's value, before the real one.
    """
    tails: List[int] = []  # schema positions
    tail_index: List[int] = []  # index into keys of each tail
    previous: List[Optional[int]] = [None] * len(keys)
    for i, key in enumerate(keys):
        pos = position.get(key)
        if pos is None:
            continue
        j = bisect_left(tails, pos)
        if j == len(tails):
            tails.append(pos)
            tail_index.append(i)
        else:
            tails[j] = pos
            tail_index[j] = i
        previous[i] = tail_index[j - 1] if j else None
    chosen = set()
    i = tail_index[-1] if tail_index else None
    while i is not None:
        chosen.add(i)
        i = previous[i]
    return chosen


BOOLS = {"true": True, "false": False}


def type_values(record: dict, schema_name: str, notes: List[str]) -> dict:
    """Convert text values to the JSON types NeuVector's JSON mode gives them.

    A value that does not fit its type is kept as sent, and noted.
    """
    for key, convert in _SCHEMAS[schema_name].conversions:
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


_SCHEMAS = {name: _Schema(name) for name in FIELDS}
