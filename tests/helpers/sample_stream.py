"""NeuVector lines to send through a real peer, and the check of what came out.

``sample_lines(n)``: every one-line syslog sample of the reference (each
notification type, text and JSON mode, one of them 11.7 KB) once, then
numbered copies (``listen_harness.numbered``) of those that hold a record
id, up to ``n`` lines, all different. What a peer delivers is compared,
record by record and with JSON types, to what nvparser makes of the same
lines.
"""
import collections
import json
from typing import Iterable, List

from nvparser import Record, event_time, parse_frame

from helpers.listen_harness import _ID, numbered
from helpers.nvsamples import _typed, load_samples


def _one_line_syslog() -> List[bytes]:
    return [s.lines[0] for s in load_samples()
            if s.mode in ("text", "json") and len(s.lines) == 1 and s.lines[0].startswith(b"<")]


def sample_lines(count: int) -> List[bytes]:
    """``count`` distinct NeuVector syslog lines (no LF); at least every one-line sample once."""
    lines = _one_line_syslog()
    numberable = [line for line in lines if _ID.search(line)]
    n = 0
    while len(lines) < count:
        lines.append(numbered(numberable[n % len(numberable)], n))
        n += 1
    return lines


def parsed(line: bytes) -> dict:
    """The record nvparser makes of one line."""
    event = parse_frame(line)
    assert isinstance(event, Record), event
    return event.data


def _key(record: dict) -> str:
    return json.dumps(_typed(record), sort_keys=True)


def missing(got: Iterable[dict], lines: List[bytes]) -> int:
    """How many of the records of ``lines`` are not in ``got``."""
    return len({_key(parsed(line)) for line in lines} - {_key(record) for record in got})


def assert_delivered(got: Iterable[dict], lines: List[bytes], at_least_once: bool = False) -> None:
    """``got`` holds the record of every line, the same fields with the same JSON types, and nothing else.

    Exactly once each, or (``at_least_once``) some more than once.
    """
    expected = collections.Counter(_key(parsed(line)) for line in lines)
    seen = collections.Counter(_key(record) for record in got)
    missing, foreign = expected.keys() - seen.keys(), seen.keys() - expected.keys()
    assert not missing and not foreign, "%d of %d records missing, %d not from the lines sent; first missing: %s" % (
        len(missing), len(expected), len(foreign), next(iter(missing), None))
    if not at_least_once:
        repeated = seen - expected
        assert not repeated, "%d records delivered more than once" % sum(repeated.values())


def event_seconds(record: dict) -> int:
    """The event time a Forward sink gives the record (nvparser.event_time, whole seconds)."""
    return int(event_time(record))
