"""CEF and LEEF messages written by ``_speedups`` (C) straight from the spooled JSON bytes.

Decoding a record into Python objects and picking its values out again
costs more than the rest of the collector spends on it, so where the C
module is built a record's extension (attributes) is written from its
bytes. Python still decides everything: the first record of each key and
value-type sequence (its *signature*) goes the Python way, and its form is
made from it then (``PairEncoder.native_form``); the header comes from the
same Python code, fed the few fields C hands back. C declines what it does
not handle exactly (``_speedups.c``), and such records go the Python way.
``tests/test_syslog_native.py`` holds both ways to the same bytes.
"""
from typing import Optional

from nvparser import json_loads

from nvsiem.sinks.api import decode_record

from .memo import Memo
from .rfc5424 import HeaderWriter, timestamp

try:
    from . import _speedups
except ImportError:  # not built (no C compiler): the Python way only
    _speedups = None

_MAX_FORMS = 4096


class NativeMessages:
    """``native(item)``: the message of a spooled record, or None: write it the Python way."""

    def __init__(self, header: HeaderWriter, body, leef: bool) -> None:
        self._header = header
        self._body = body
        self._leef = leef
        #: signature -> the form, or False: records with that signature go the Python way.
        self._forms: dict = {}
        #: header fields -> the message's bytes before the timestamp, after it, and before the pairs.
        self._parts = Memo(self._make_parts)
        self._syslog_json: Optional[bytes] = None
        self._received: tuple = (None, None)
        self._moment: Optional[int] = None
        self._stamp = b""

    def __call__(self, item: bytes) -> Optional[bytes]:
        found = _speedups.extension(item, self._forms, self._leef)
        if found is None:
            return None
        notification, name, threat_id, level, moment, _, syslog, text, signature = found
        if text is None:
            self._learn(item, signature)
            return None
        if type(moment) is not int or moment <= 0:
            return None  # the event's time is found elsewhere: the Python way
        if syslog != self._syslog_json:  # the received header: the same for a burst of records
            received = json_loads(syslog) if syslog is not None else {}
            self._syslog_json, self._received = syslog, (received.get("hostname"), received.get("severity"))
        try:
            before, after, joiner = self._parts[(notification, name, threat_id, level) + self._received]
        except TypeError:  # a received hostname that is a list...: not a key
            return None
        if moment != self._moment:
            self._moment, self._stamp = moment, timestamp(moment).encode("ascii")
        return before + self._stamp + after + joiner + text if text else before + self._stamp + after

    def _make_parts(self, notification, name, threat_id, level, hostname, received_severity) -> tuple:
        before, after = self._header.around_time(level, notification, hostname, received_severity)
        # Any int for the time: only records with their own reported_timestamp come this way.
        prefix, joiner = self._body.around({"notification": notification, "name": name, "threat_id": threat_id,
                                            "level": level, "reported_timestamp": 1})
        return before.encode("utf-8", "replace"), (after + prefix).encode("utf-8", "replace"), joiner.encode()

    def _learn(self, item: bytes, signature: bytes) -> None:
        record = decode_record(item)
        form = None
        if len(record) == signature.count(b'"'):  # else a key came twice: the decoded record has it once
            form = self._body.encoder.native_form(record, _speedups)
        if len(self._forms) >= _MAX_FORMS:  # a stream of ever new key sets: start afresh rather than grow
            self._forms.clear()
        self._forms[signature] = form if form is not None else False


def native_built() -> bool:
    return _speedups is not None
