"""JSON in and out: orjson when it is installed, the standard library otherwise.

orjson is about ten times faster at both ends; the standard-library path
gives the same values, so it is an accelerator, never a requirement.
"""
import json
from typing import Dict, List, Optional

try:  # pragma: no cover - which branch runs depends on the environment
    import orjson
except ImportError:  # pragma: no cover
    orjson = None

try:  # pragma: no cover - built where a C compiler is found
    from ._speedups import split_lists as _split_lists
except ImportError:  # pragma: no cover
    _split_lists = None

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _dumps_std(obj) -> bytes:
    return _encoder.encode(obj).encode("utf-8", "surrogatepass")


def loads_from_std(raw: bytes, start: int):
    """The JSON document in ``raw[start:]`` (strict UTF-8, as Go writes it)."""
    return json.loads(raw[start:].decode("utf-8"))


if orjson is not None:
    json_loads = orjson.loads

    def json_loads_from(raw: bytes, start: int):
        """The JSON document in ``raw[start:]``, read in place (no copy of the body)."""
        return orjson.loads(memoryview(raw)[start:])

    def json_dumps(obj) -> bytes:
        """Compact UTF-8 JSON."""
        try:
            return orjson.dumps(obj)
        except TypeError:
            # Lone surrogates and ints beyond 64 bits: the slower path copes.
            return _dumps_std(obj)

else:
    json_loads = json.loads
    json_loads_from = loads_from_std
    json_dumps = _dumps_std


def json_lists(payload: bytes) -> Optional[Dict[str, List[bytes]]]:
    """A JSON object whose every member is an array (a NeuVector REST list reply), cut into each array's
    elements as JSON bytes, undecoded, so they can be decoded a few at a time; None without the C
    accelerator, or for any other document: decode that whole."""
    return _split_lists(payload) if _split_lists is not None and type(payload) is bytes else None
