"""nvsiem_syslog._speedups: CEF and LEEF written in C from the spooled bytes, byte for byte as in Python.

The Python path (decode the record, ``pairs.PairEncoder``) is the
reference the oracle tests of test_cef_format.py hold to the CEF and LEEF
specs; here the C path must give the same message for every record, and
leave to Python what it does not handle exactly. A writer learns a form
from the first record of each key and type sequence (written the Python
way), so each record is written twice and the second is compared.
"""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.sample_stream import parsed, sample_lines
from nvparser import json_dumps
from nvparser.schema import FIELDS
from nvsiem.collector import record_line
from nvsiem_syslog.config import parse_url
from nvsiem_syslog.sink import MessageWriter
from test_cef_format import TRICKY

if os.environ.get("NVSIEM_REQUIRE_SPEEDUPS"):  # CI: a missing accelerator fails, never skips
    from nvsiem_syslog import _speedups  # noqa: F401
else:
    pytest.importorskip("nvsiem_syslog._speedups", reason="built by setup.py where a C compiler is found")

FORMATS = ("cef", "leef")
RECORDS = [parsed(line) for line in sample_lines(0)]


def writers(body: str):
    """(the writer with the C path, one with the Python path only)."""
    url = "syslog+tcp://siem:514?format=" + body
    python_only = MessageWriter(parse_url(url))
    python_only._native = None
    return MessageWriter(parse_url(url)), python_only


def natively(writer: MessageWriter, item: bytes):
    """The message the C path writes for ``item`` (None: it left the record to Python), once learnt."""
    writer(item)
    return writer._native(item)


@pytest.mark.parametrize("body", FORMATS)
def test_every_reference_record_is_written_in_c_as_in_python(body):
    native, python_only = writers(body)
    for record in RECORDS:
        item = record_line(record)
        assert natively(native, item) == python_only(item), record.get("name")


@pytest.mark.parametrize("body", FORMATS)
@pytest.mark.parametrize("value", TRICKY + ["", "ünï\\cödé=", "x" * 5000, "\x7f\x08\x0c"])
def test_values_that_need_escapes_or_are_empty(body, value):
    native, python_only = writers(body)
    record = dict(RECORDS[0], name=value or "n", message=value, client_name=value, server_port=value)
    item = record_line(record)
    assert natively(native, item) == python_only(item)


@pytest.mark.parametrize("body", FORMATS)
@pytest.mark.parametrize("item", [
    b'{"notification": "event", "name": "a"}',                        # whitespace
    b'{"notification":"event","name":"a\\u001bb"}',                   # a \u escape
    b'{"notification":"event","name":"\\ud83d\\ude00"}',              # a surrogate pair
    b'{"notification":"event","name":"\xff"}',                        # not UTF-8
    b'{"notification":"event","name":"\xed\xa0\x80"}',                # an encoded surrogate
    b'{"notification":"event","message":"a","message":"b"}',          # a key twice
    b'{"notification":"event","reported_timestamp":123456789012345678901}',  # beyond 64 bits
    b'{"notification":"event","level":["Info"]}',                     # a header field of another type
    b'["notification","event"]',                                      # not an object
    b'{"notification":"event","name":"a"',                            # cut short
    b'{"notification":"event","count":01}',                           # not JSON
])
def test_what_c_leaves_to_python_is_written_as_python_writes_it(body, item):
    native, python_only = writers(body)
    assert natively(native, item) is None
    assert native(item) == python_only(item)


def test_the_c_path_is_taken_once_a_form_is_learnt():
    native, _ = writers("cef")
    item = record_line(RECORDS[0])
    assert native._native(item) is None  # the first of its kind: learnt, written in Python
    assert native._native(item) is not None
    assert any(form for form in native._native._forms.values())


_SCALARS = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), st.integers(-2**62, 2**62),
                     st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=4), st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3))


@st.composite
def records(draw):
    notification = draw(st.sampled_from(sorted(FIELDS)))
    fields = [f.name for f in FIELDS[notification]]
    chosen = draw(st.lists(st.sampled_from(fields), unique=True, max_size=len(fields)))
    extra = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), unique=True, max_size=3))
    record = {"notification": notification}
    for key in chosen + [k for k in extra if k not in chosen and k != "notification"]:
        record[key] = draw(_VALUES)
    if draw(st.booleans()):
        record["syslog"] = {"hostname": draw(st.sampled_from(["nv-1", "", "a b", None])), "severity": draw(
            st.integers(-1, 9)), "timestamp": "2025-03-14T11:15:20Z"}
    return record


@settings(max_examples=300, deadline=None)
@given(records(), st.sampled_from(FORMATS))
def test_any_record_is_written_in_c_as_in_python(record, body):
    native, python_only = writers(body)
    item = json_dumps(record)
    written = natively(native, item)
    assert (written if written is not None else native(item)) == python_only(item)


def test_an_item_that_is_not_bytes_goes_the_python_way():
    native, python_only = writers("cef")
    item = record_line(RECORDS[0])
    natively(native, item)
    assert native._native(memoryview(item)) is None
    assert native(memoryview(item)) == python_only(item)
