"""CEF, LEEF and RFC 5424 as the syslog sink writes them, read back by readers written from the specs.

``helpers/cef_oracle.py`` reads CEF (header fields split at unescaped
pipes, extension pairs at unescaped equals signs) and LEEF 2.0 on its own,
and derives from docs/syslog.md's rules what every field of a record must
read as. The package's table (``nvsiem_syslog.mapping``) is held to
``nvparser.schema``: every field of every notification type has exactly
one place, so none is dropped silently.
"""
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.cef_oracle import (assert_message_matches, expected_cef_extension, parse_cef, parse_extension,
                                parse_leef, parse_rfc5424)
from helpers.sample_stream import parsed, sample_lines
from nvparser import json_dumps
from nvparser.schema import FIELDS
from nvsiem_syslog import cef, leef, mapping
from nvsiem_syslog.config import parse_url
from nvsiem_syslog.sink import MessageWriter, _octet_counted

REPO = Path(__file__).resolve().parents[1]
RECORDS = [parsed(line) for line in sample_lines(0)]
FORMATS = ("cef", "leef", "json")

#: The CEF extension dictionary keys the table may use (ArcSight's "Implementing ArcSight CEF").
CEF_DICTIONARY = {"act", "app", "cat", "cnt", "dhost", "dproc", "dpt", "dst", "duid", "duser", "dvchost",
                  "externalId", "filePath", "msg", "proto", "request", "requestMethod", "rt", "shost", "spt",
                  "src", "suser", "sourceServiceName", "destinationServiceName"}
CEF_SLOTS = {"cs%d" % n for n in range(1, 7)} | {"cn%d" % n for n in range(1, 4)} | {"cfp%d" % n for n in range(1, 5)}
#: LEEF 2.0's predefined attributes the table may use (IBM QRadar's LEEF guide).
LEEF_PREDEFINED = {"cat", "devTime", "src", "dst", "srcPort", "dstPort", "proto", "usrName"}

TRICKY = ["a|b", "k=v and x=y", "C:\\dir\\file", "ends with \\", "\\=", "two\nlines\r\nand\rmore", "tab\there",
          "é ü 中文 🙂", " leading", "trailing ", "=", "\\", "|", "  ", "src=1.2.3.4 dst=5.6.7.8", "%s %d"]


def message(record: dict, body: str = "cef") -> str:
    return MessageWriter(parse_url("syslog+tcp://siem:514?format=" + body))(json_dumps(record)).decode("utf-8")


def test_the_cef_reader_follows_the_spec():
    text = r"CEF:0|Vendor\|Co|Pro\\duct|1.0|sig 7|a \| pipe|10|src=10.0.0.1 msg=x\=y\\z\nnext line cs1=a b  c"
    got = parse_cef(text)
    assert got[:7] == ("0", "Vendor|Co", "Pro\\duct", "1.0", "sig 7", "a | pipe", "10")
    assert got.extension == {"src": "10.0.0.1", "msg": "x=y\\z\nnext line", "cs1": "a b  c"}
    assert parse_extension("") == {}
    for bad in (r"CEF:0|a\x|b|c|d|e|f|", "CEF:0|a|b|c|d|e|f|k=v\\q", "CEF:0|a|b|c|d|e|f|k=1 k=2", "CEF:0|a|b|c"):
        with pytest.raises(AssertionError):
            parse_cef(bad)


def test_the_leef_reader_follows_the_spec():
    got = parse_leef("LEEF:2.0|V|P\\|x|1|ev|x09|src=1.2.3.4\tmsg=a b=c\\td\tempty=")
    assert got[:4] == ("V", "P|x", "1", "ev")
    assert got.attributes == {"src": "1.2.3.4", "msg": "a b=c\td", "empty": ""}


@pytest.mark.parametrize("notification", sorted(FIELDS))
def test_every_schema_field_has_exactly_one_place(notification):
    table = mapping.TABLE[notification]
    assert set(table) == {"notification"} | {f.name for f in FIELDS[notification]}
    cef_keys = [row.cef for row in table.values() if row.cef != "-"]
    leef_keys = [row.leef for row in table.values() if row.leef != "-"]
    assert len(cef_keys) == len(set(cef_keys)) and len(leef_keys) == len(set(leef_keys))
    for key in cef_keys:
        assert key in CEF_DICTIONARY | CEF_SLOTS or key in ("^Name", "^Signature"), key
    for key in leef_keys:
        assert key in LEEF_PREDEFINED or key == "^EventID", key
    custom = [mapping.cef_custom_key(field) for field, row in table.items() if row.cef == "-"]
    assert all(re.match(r"NeuVector[A-Za-z0-9]+\Z", key) for key in custom) and len(custom) == len(set(custom))


def test_the_docs_print_the_table():
    assert mapping.markdown() in (REPO / "docs" / "syslog.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("body", FORMATS)
def test_every_sample_record_reads_back_field_for_field(body):
    for record in RECORDS:
        assert_message_matches(message(record, body), record, body)


def test_a_threat_is_signed_by_its_threat_id_and_a_violation_by_its_type():
    threat = next(r for r in RECORDS if r["notification"] == "threat")
    got = parse_cef(parse_rfc5424(message(threat)).msg)
    assert (got.signature, got.name, got.severity) == (str(threat["threat_id"]), threat["name"], "8")
    assert (got.extension["src"], got.extension["dpt"], got.extension["proto"]) == (
        threat["client_ip"], str(threat["server_port"]), "TCP")
    violation = next(r for r in RECORDS if r["notification"] == "violation")
    got = parse_cef(parse_rfc5424(message(violation)).msg)
    assert (got.signature, got.name) == ("Network.Violation", "Network.Violation")
    assert got.extension["cs1Label"] == "client_domain" and got.extension["cs1"] == violation["client_domain"]


@pytest.mark.parametrize("body", ("cef", "leef"))
@pytest.mark.parametrize("value", TRICKY)
def test_values_holding_separators_escapes_line_breaks_and_non_ascii_read_back(body, value):
    for record in RECORDS:
        record = dict(record, message=value, cluster_name=value + "|x", name="N|" + value)
        text = message(record, body)
        assert "\n" not in text and "\r" not in text
        assert_message_matches(text, record, body)


@pytest.mark.parametrize("body", ("cef", "leef"))
def test_control_characters_take_the_slow_path_and_read_back(body):
    for record in RECORDS[:6]:
        record = dict(record, message="nul\x00 one\x01 two\x02 =\x00=", host_id="\x01")
        assert_message_matches(message(record, body), record, body)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.text(), st.integers(), st.booleans(), st.none(),
                                 st.lists(st.text(max_size=3), max_size=2)), min_size=6, max_size=6))
def test_the_fast_and_the_slow_path_write_the_same(values):
    record = dict(RECORDS[1])
    for field, value in zip(("message", "server_port", "cluster_name", "monitor", "group", "name"), values):
        record[field] = value
    plain = not any("\x00" in str(v) or "\x01" in str(v) or "\x02" in str(v) for v in values)
    for body in (cef.CefBody("NeuVector", "5.x"), leef.LeefBody("NeuVector", "5.x")):
        assert body.body(record, plain) == body.body(record, False)


def test_a_value_without_the_type_its_key_needs_goes_to_the_custom_key():
    record = dict(RECORDS[0], server_port="http", ip_proto=47, sessions=None, policy_id=True)
    extension = parse_cef(parse_rfc5424(message(record)).msg).extension
    assert "dpt" not in extension and extension["NeuVectorServerPort"] == "http"
    assert extension["proto"] == "47" and "cnt" not in extension and "NeuVectorSessions" not in extension
    assert extension["NeuVectorPolicyId"] == "true" and "cn1" not in extension


def test_without_reported_timestamp_the_event_time_comes_from_reported_at():
    record = {k: v for k, v in RECORDS[3].items() if k != "reported_timestamp"}
    record["reported_at"] = "2025-03-14T08:00:12.250Z"
    text = message(record)
    assert parse_rfc5424(text).timestamp == "2025-03-14T08:00:12.250000Z"
    assert parse_cef(parse_rfc5424(text).msg).extension["rt"] == "1741939212250"
    assert_message_matches(text, record)
    assert_message_matches(message(record, "leef"), record, "leef")


@pytest.mark.parametrize("body", FORMATS)
@pytest.mark.parametrize("moment", [253402300800, 1741944405000000, 2 ** 62])
def test_an_event_time_past_what_rfc_5424_can_say_leaves_the_timestamp_nil(body, moment):
    """A reported_timestamp in microseconds (or worse) is past year 9999: the header says "-", the record is sent."""
    record = dict(RECORDS[0], reported_timestamp=moment)
    text = message(record, body)
    assert parse_rfc5424(text).timestamp == "-"
    assert_message_matches(text, record, body)


def test_keys_beyond_the_schema_go_to_custom_keys():
    record = dict(RECORDS[0], webhook={"cluster": "c1", "level": "WARNING"}, new_field="x=1")
    extension = parse_cef(parse_rfc5424(message(record)).msg).extension
    assert extension["NeuVectorWebhook"] == '{"cluster":"c1","level":"WARNING"}'
    assert extension["NeuVectorNewField"] == "x=1"
    attributes = parse_leef(parse_rfc5424(message(dict(record, sev="high"), "leef")).msg).attributes
    assert attributes["NeuVectorSev"] == "high" and attributes["sev"] == "5"
    other = {"notification": "inventory", "level": "Info", "reported_timestamp": 1, "widgets": [1, 2]}
    assert_message_matches(message(other), other)
    assert_message_matches(message(other, "leef"), other, "leef")


@pytest.mark.parametrize("level, cef_severity, syslog_severity", [
    ("Emergency", "10", 0), ("Alert", "9", 1), ("Critical", "8", 2), ("Error", "7", 3), ("Warning", "5", 4),
    ("Notice", "3", 5), ("Info", "1", 6), ("Debug", "0", 7), ("Verbose", "Unknown", 6)])
def test_severity_follows_the_level(level, cef_severity, syslog_severity):
    record = dict(RECORDS[0], level=level)
    record["syslog"] = {k: v for k, v in record["syslog"].items() if k != "severity"}
    text = message(record)
    assert parse_rfc5424(text).pri == 16 * 8 + syslog_severity
    assert parse_cef(parse_rfc5424(text).msg).severity == cef_severity


def test_the_cef_extension_is_the_spec_form_of_each_field():
    """One record spelt out: what docs/syslog.md promises for an event."""
    event = next(r for r in RECORDS if r.get("name") == "User.Login")
    extension = expected_cef_extension(event)
    assert extension["suser"] == "admin" and extension["src"] == event["user_addr"]
    assert extension["cs5Label"] == "user_roles" and extension["cs5"] == '{"":"admin"}'
    assert extension["rt"] == "%d000" % event["reported_timestamp"] and extension["cat"] == "event"
    assert "NeuVectorEnforcerId" not in extension  # empty in this record: left out


def test_octet_counting_counts_bytes_not_characters():
    framed, = _octet_counted(["é🙂".encode("utf-8")])
    assert framed == b"6 " + "é🙂".encode("utf-8")


def test_the_header_carries_the_event_time_and_the_controller():
    for record in RECORDS:
        header = parse_rfc5424(message(record))
        assert header.hostname == record["syslog"]["hostname"]
        assert (header.app_name, header.procid, header.msgid) == ("neuvector", "-", record["notification"])


@pytest.mark.parametrize("item, error", [(b"not json \xff", "not valid JSON: "), (b"[1, 2]", "not a JSON object")])
def test_a_spooled_item_that_is_no_record_is_sent_as_an_unparsed_one(item, error):
    for body in FORMATS:
        text = MessageWriter(parse_url("syslog+tcp://siem:514?format=" + body))(item).decode("utf-8")
        assert parse_rfc5424(text).msgid == "unparsed"
        shown = item.decode("utf-8", "replace")
        if body == "json":
            sent = json.loads(text[text.index("{"):])
            assert sent["message"] == shown and sent["error"].startswith(error)
        else:
            assert shown.replace("\\", "\\\\") in text and error.rstrip(": ") in text
