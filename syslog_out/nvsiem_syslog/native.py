"""CEF, LEEF and JSON messages written by ``_speedups`` (C) straight from the spooled JSON bytes.

Decoding a record into Python objects and picking its values out again
costs more than the rest of the collector spends on it, so where the C
module is built a batch of records becomes its framed messages in one call.
Python still decides everything: the first record of each key and
value-type sequence (its *signature*) is learnt, and its form made from it
(``PairEncoder.native_form``; JSON needs none, the record is its body), and
so are the header parts of each distinct set of header fields, by the
Python code that writes headers. C declines what it does not handle
exactly (``_speedups.c``), and such records go the Python way.
``tests/test_syslog_native.py`` holds both ways to the same bytes.
"""
from typing import List, Optional, Sequence, Tuple

from nvparser import json_loads

from nvsiem.sinks.api import decode_record

from .rfc5424 import HeaderWriter

try:
    from . import _speedups
except ImportError:  # not built (no C compiler): the Python way only
    _speedups = None

#: A stream of ever new signatures or header fields clears what was learnt at this size rather than grow.
_MAX_LEARNT = 4096


class NativeMessages:
    """``batch(items)``: the framed messages C wrote, and the indexes it left to Python."""

    def __init__(self, header: HeaderWriter, body, leef: bool, framing: Optional[str]) -> None:
        """``body``: the CefBody or LeefBody; None: JSON."""
        self._header = header
        self._body = body
        self._leef = leef
        self._framing = {None: _speedups.UNFRAMED, "octet-counting": _speedups.OCTET_COUNTING,
                         "lf": _speedups.LF}[framing]
        #: signature -> the form, or False: records with that signature go the Python way. None: JSON.
        self._forms: Optional[dict] = {} if body is not None else None
        #: the JSON text of the header fields -> the message before the timestamp, after it, before the pairs.
        self._heads: dict = {}

    def batch(self, items: Sequence[bytes]) -> Tuple[List[Optional[bytes]], List[int]]:
        """The message of each item, framed, and the indexes of those C left to Python (None in the list)."""
        messages, missed = _speedups.messages(items, self._forms, self._heads, self._leef, self._framing)
        if missed and any([self._learn(items[i]) for i in missed]):  # learn from every miss, then try them again
            again, still = _speedups.messages([items[i] for i in missed], self._forms, self._heads, self._leef,
                                              self._framing)
            for i, message in zip(missed, again):
                messages[i] = message
            missed = [missed[j] for j in still]
        return messages, missed

    def _learn(self, item: bytes) -> bool:
        """Learn the form or header parts C missed for this record; False: it has them, or it cannot write it."""
        found = _speedups.fields(item, self._forms)
        if found is None:
            return False
        notification, name, threat_id, level, syslog, key, signature = found
        learnt = False
        if signature is not None:
            record = decode_record(item)
            form = None
            if len(record) == signature.count(b'"'):  # else a key came twice: the decoded record has it once
                form = self._body.encoder.native_form(record, _speedups)
            _bounded(self._forms)[signature] = form if form is not None else False
            if form is None:
                return False
            learnt = True
        if key not in self._heads:
            received = json_loads(syslog) if syslog is not None else {}
            _bounded(self._heads)[key] = self._parts(notification, name, threat_id, level, received.get("hostname"),
                                                     received.get("severity"))
            learnt = True
        return learnt

    def _parts(self, notification, name, threat_id, level, hostname, received_severity) -> tuple:
        before, after = self._header.around_time(level, notification, hostname, received_severity)
        prefix, joiner = "", ""
        if self._body is not None:  # any int for the time: only records with their own reported_timestamp come
            prefix, joiner = self._body.around({"notification": notification, "name": name, "threat_id": threat_id,
                                                "level": level, "reported_timestamp": 1})
        return before.encode("utf-8", "replace"), (after + prefix).encode("utf-8", "replace"), joiner.encode()


def _bounded(learnt: dict) -> dict:
    if len(learnt) >= _MAX_LEARNT:
        learnt.clear()
    return learnt


def native_built() -> bool:
    return _speedups is not None
