"""nvsiem_syslog._speedups: CEF, LEEF and JSON written in C from the spooled bytes, byte for byte as in Python.

The Python path (``MessageWriter(item)``: decode the record, ``rfc5424``,
``pairs.PairEncoder``) is the reference the oracle tests of
test_cef_format.py hold to the CEF and LEEF specs; here the C path must
give the same message for every record, framed as the Python framing does,
and leave to Python what it does not handle exactly.
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

FORMATS = ("cef", "leef", "json")
RECORDS = [parsed(line) for line in sample_lines(0)]


def writers(body: str, transport: str = "udp", framing: str = "octet-counting"):
    """(the writer with the C path, one with the Python path only); UDP: messages unframed."""
    url = "syslog+%s://siem:514?format=%s" % (transport, body) + ("&framing=" + framing if transport != "udp" else "")
    python_only = MessageWriter(parse_url(url))
    python_only._native = None
    return MessageWriter(parse_url(url)), python_only


def natively(writer: MessageWriter, item: bytes):
    """The message the C path writes for ``item`` (None: it left the record to Python)."""
    messages, missed = writer._native.batch([item])
    return None if missed else messages[0]


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
    assert native.batch([item]) == [python_only(item)]


def test_what_a_record_needs_is_learnt_from_it_and_kept():
    native, python_only = writers("cef")
    item = record_line(RECORDS[0])
    assert not native._native._forms and not native._native._heads
    assert natively(native, item) == python_only(item)
    assert [form for form in native._native._forms.values()] and len(native._native._heads) == 1
    learnt = dict(native._native._forms)
    assert natively(native, item) == python_only(item) and native._native._forms == learnt


@pytest.mark.parametrize("body", FORMATS)
@pytest.mark.parametrize("framing", ["octet-counting", "lf"])
def test_a_batch_is_framed_in_c_as_in_python(body, framing):
    """Every reference record, in one batch: each C message beside its neighbours, framed for TCP."""
    native, python_only = writers(body, "tcp", framing)
    items = [record_line(record) for record in RECORDS] * 2
    assert native.batch(items) == python_only.batch(items)
    assert native._native.batch(items)[1] == []  # the second time round, C wrote every one


@pytest.mark.parametrize("body", FORMATS)
def test_records_c_leaves_to_python_keep_their_place_in_the_batch(body):
    native, python_only = writers(body, "tcp")
    declined = b'{"notification":"event","name":"a\\u001bb","reported_timestamp":5}'
    items = [record_line(RECORDS[0]), declined, record_line(RECORDS[1]), memoryview(record_line(RECORDS[2])),
             json_dumps(dict(RECORDS[0], reported_timestamp="soon"))]
    assert native.batch(items) == python_only.batch(items)
    assert native._native.batch(items)[1] == [1, 3, 4]


@pytest.mark.parametrize("body", FORMATS)
@pytest.mark.parametrize("moment", [1, 59, 86399, 86400, 951782400, 951868799, 1741944405, 4102444800,
                                    253402300799, 253402300800, 0, -1])
def test_the_timestamp_c_writes_is_the_one_python_writes(body, moment):
    """Day, month and leap-year edges, the last second RFC 5424 can say, and the times C leaves to Python."""
    native, python_only = writers(body)
    item = json_dumps(dict(RECORDS[0], reported_timestamp=moment))
    written = natively(native, item)
    assert (written if written is not None else native.batch([item])[0]) == python_only(item)
    assert (written is None) == (not 0 < moment <= 253402300799)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 253402300799), st.sampled_from(FORMATS))
def test_any_second_is_stamped_in_c_as_in_python(moment, body):
    """The RFC 5424 timestamp, and LEEF's devTime."""
    native, python_only = writers(body)
    item = json_dumps(dict(RECORDS[0], reported_timestamp=moment))
    assert natively(native, item) == python_only(item)


def test_json_sends_a_record_as_spooled_even_one_that_says_it_is_unparsed():
    """Only what decode_record made of a non-object is written anew; a record's own JSON goes as it is."""
    native, python_only = writers("json")
    item = b'{"notification":"unparsed","score":1.50,"reported_timestamp":1741944405}'
    assert natively(native, item) == python_only(item)
    assert python_only(item).endswith(b" - unparsed - " + item)


@pytest.mark.parametrize("body", FORMATS)
def test_the_header_follows_each_records_received_hostname_and_severity(body):
    """Runs of records that differ only in the received header: C must not keep the header of the one before."""
    native, python_only = writers(body)
    received = [{"hostname": "nv-1", "severity": 2}, {"hostname": "nv-2", "severity": 2},
                {"hostname": "nv-2", "severity": 5}, {"hostname": ["nv-3"]}, {"severity": 1}, {},
                {"hostname": "a b", "hostname": "nv-4"}, {"hostname": "", "severity": "2"}]
    base = {k: v for k, v in RECORDS[0].items() if k not in ("level", "syslog")}
    items = [json_dumps(dict(base, syslog=header)) for header in received for _ in range(2)]
    items.append(json_dumps(base))
    assert native.batch(items) == python_only.batch(items)
    assert native._native.batch(items)[1] == []


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
@given(st.lists(records(), min_size=1, max_size=4), st.sampled_from(FORMATS))
def test_any_records_are_written_in_c_as_in_python(batch, body):
    native, python_only = writers(body, "tcp")
    items = [json_dumps(record) for record in batch]
    assert native.batch(items) == python_only.batch(items)
