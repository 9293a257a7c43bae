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
from bisect import bisect_left
from typing import List, Optional, Tuple

from ._gotypes import KEY_CUT, SCHEMAS, Schema, is_go_float, is_go_int
from .schema import FREE_TEXT


def parse_pairs(body: str, schema_name: str) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Split ``k=v,k=v`` text (first pair included) into pairs, by schema.

    Returns the pairs and the notes about keys the schema does not know.
    """
    parts = KEY_CUT.split(body)
    first_key, sep, first_value = parts[0].partition("=")
    keys = tuple(parts[1::2])
    schema = SCHEMAS[schema_name]
    if sep and schema.in_order(keys):
        pairs = [(first_key, first_value)]
        pairs.extend(zip(keys, parts[2::2]))
        return pairs, []
    return _resolve(parts, schema, first_key, first_value, sep)


def _resolve(parts, schema: Schema, first_key: str, first_value: str, sep: str):
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


def _boundaries(first_key: str, first_value: str, keys, values, schema: Schema) -> set:
    """Indexes of the candidates that are real keys.

    Real keys appear in struct order and their values fit their types. Of
    the ways to read the candidates as increasing runs of known keys, take
    the one with the most keys, less a penalty for each value that would not
    fit its type (``monitor=false,message=x,packet=0``: ``packet`` is a fake
    key inside ``message``, or ``monitor`` would hold ``false,message=x``).
    Between equally good readings, cut each value at the nearest key, as
    NeuVector's field order suggests; of two occurrences of the same key the
    first is real (NeuVector never sends a key twice: the second sits inside
    a value, and no reading drops the bytes of either). Quadratic in
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
                return x < y
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


_SCALAR_FITS = {"int": is_go_int, "float": is_go_float, "bool": lambda text: text in ("true", "false")}


def _longest_increasing(keys, position) -> set:
    """Indexes of the longest run of known keys in strictly increasing schema order.

    Among equally long runs the first occurrence of a key wins, as in
    ``_boundaries``.
    """
    tails: List[int] = []  # schema positions
    tail_index: List[int] = []  # index into keys of each tail
    previous: List[Optional[int]] = [None] * len(keys)
    for i, key in enumerate(keys):
        pos = position.get(key)
        if pos is None:
            continue
        j = bisect_left(tails, pos)
        if j < len(tails) and tails[j] == pos:
            continue  # the same key again: the first occurrence stays the key
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
