"""Text mode and JSON mode of the same record parse to that same record.

Random records are rendered with ``goformat`` (an oracle written from the
wire-format reference, independent of the parser) in both of NeuVector's
syslog modes, fed to ``nvparser``, and must come back exactly as generated.
The generators only make records the text format can carry unambiguously;
each restriction is stated where it is made.

Also here: the parser's schema checked field by field against the
reference's tables, and the oracle checked against the reference samples.
"""
import re

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from helpers import goformat
import nvparser
from helpers import nvsamples
from nvparser import schema

# -- the reference's field tables (§5.2-§5.7, audit extras §1.6-§1.7) ---------
# Written from the reference, not from the parser: one entry per field,
# ``key[:type][?]``; type defaults to str, ``?`` marks omitempty.

_LOG_COMMON = """name? level reported_timestamp:int reported_at cluster_name
    response_rule_id:int? host_id host_name enforcer_id enforcer_name"""
_REFERENCE = {
    "violation": """id client_id client_name client_domain? client_image? client_service?
        server_id server_name server_domain? server_image? server_service? server_port:int
        ip_proto:int applications:list servers:list sessions:int policy_action policy_id:int
        client_ip server_ip fqdn xff:bool nbe:bool""",
    "threat": """id threat_id:int client_workload_id client_workload_name
        client_workload_domain? client_workload_image? client_workload_service?
        server_workload_id server_workload_name server_workload_domain?
        server_workload_image? server_workload_service? severity action count:int
        ether_type:int client_port:int server_port:int server_conn_port:int icmp_code:int
        icmp_type:int ip_proto:int client_ip server_ip application sensor group target
        monitor:bool cap_len:int? packet? message""",
    "incident": """id workload_id? workload_name? workload_domain? workload_image?
        workload_service? remote_workload_id? remote_workload_name? remote_workload_domain?
        remote_workload_image? remote_workload_service? proc_name? proc_path? proc_cmd?
        proc_real_uid:int? proc_effective_uid:int? proc_real_user? proc_effective_user?
        file_path? file_name:list? client_ip? server_ip? client_port:int? server_port:int?
        server_conn_port:int? ether_type:int? ip_proto:int? conn_ingress:bool?
        proc_parent_name? proc_parent_path? action group? rule_id aggregation_from:int?
        count:int? message""",
    "event": """controller_id controller_name workload_id workload_name workload_domain
        workload_image workload_service category user user_roles:map user_addr user_session
        rest_method? rest_request? rest_body? enforcer_limit:int? license_expire? message""",
    "audit": """workload_id? workload_name? workload_domain? workload_image? workload_service?
        image? image_id? registry? registry_name? repository? tag? base_os?
        critical_vul_cnt:int high_vul_cnt:int medium_vul_cnt:int critical_vuls:list?
        high_vuls:list? medium_vuls:list? cvedb_version? message user? error?
        aggregation_from:int? count:int? items:list? group? platform? platform_version?
        region? project_name? packages:list? package_ver? fixed_ver? score:float?
        score_v3:float? vectors? vectors_v3? link? description? pub_date? last_mod_date?
        image_layer_digest? cmds? pvc_name? pvc_storageclass_name?""",
}
_REFERENCE["activity"] = _REFERENCE["event"]  # same Go struct (api.Event)


def _reference_fields(notification):
    rows = []
    for entry in (_LOG_COMMON + " " + _REFERENCE[notification]).split():
        omitempty = entry.endswith("?")
        name, _, type_ = entry.rstrip("?").partition(":")
        rows.append((name, type_ or "str", omitempty))
    return rows


def test_schema_matches_reference():
    assert set(schema.NOTIFICATIONS) == set(_REFERENCE)
    assert len(schema.NOTIFICATIONS) == 6
    for notification in _REFERENCE:
        got = [(f.name, f.type, f.omitempty) for f in schema.FIELDS[notification]]
        assert got == _reference_fields(notification), notification


# -- the oracle renders the reference samples byte for byte --------------------
# Current-version syslog and pod-log samples only: the docs-* lines come from a
# pre-5.0 sender (empty omitempty keys still sent), webhooks are not syslog.

ORACLE_SAMPLES = [s for s in nvsamples.load_samples()
                  if s.mode in ("text", "json", "podlog") and not s.id.startswith("docs-")]


@pytest.mark.parametrize("sample", ORACLE_SAMPLES, ids=[s.id for s in ORACLE_SAMPLES])
def test_goformat_renders_reference_sample(sample):
    json_mode = b'{"notification": ' in sample.lines[0]
    rendered = [_frame(r, r.get("syslog"), json_mode) for r in nvsamples.expected_records(sample.id)]
    assert b"".join(f + b"\n" for f in rendered) == sample.stream


def _frame(record, syslog, json_mode):
    """One frame (no LF) for a record; ``syslog`` is the parsed header object or None."""
    notification = record["notification"]
    render = goformat.to_json if json_mode else goformat.to_text
    msg = render(notification, record, schema.FIELDS[notification])
    if syslog is None:
        return msg.encode()
    header = goformat.Header(syslog["timestamp"], syslog["hostname"], syslog["procid"])
    prefix = goformat.receiver_printed(header) if syslog["pri"] is None else goformat.rfc5424(header, record["level"])
    return (prefix + msg).encode()


# -- strategies -------------------------------------------------------------------

# Fields the reference names as carrying free text with ',' and '=' (§0.3, §3.3.1-2).
FREE_TEXT = {"message", "proc_cmd", "rest_body", "rest_request", "workload_image",
             "group", "items", "description", "cmds"}
# Fields that can hold a raw LF in text mode (§3.3.3 and the brief's scope).
MULTILINE = {"proc_cmd", "cmds", "message"}

NAMES = {  # §6 catalogues: `name` is an enumeration, not free text
    "violation": [None],
    "threat": ["SQL.Injection", "SSL.Heartbleed", "DLP.sensor.creditcard.rule.visa",
               "WAF.sensor.log4shell.rule.log4shell", "#2099"],
    "incident": ["Process.Profile.Violation", "Host.Privilege.Escalation",
                 "Container.FileAccess.Violation", "Container.Tunnel.Detected"],
    "event": ["User.Login", "RESTful.Write", "Controller.Lead.Elected", "License.Update"],
    "activity": ["Container.Start", "Container.Stop", "Container.Secured", "Container.Remove"],
    "audit": ["Registry.Scan.Report", "Container.Scan.Report", "Compliance.Container.Violation",
              "Compliance.HostCustomCheck.Violation", "Admission.Control.Denied", "AwsLambda.Scan"],
}
LEVELS = list(goformat.SEVERITY)
COMPLIANCE_LEVELS = ["PASS", "INFO", "WARN", "MANUAL", "HIGH", "NOTE", "ERROR"]

_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789 .-_:/@+#%!?*()'\"|;~^$&<>\\"
          ",=[]{}" "éü☃中😀\u2028\u2029\u0085\x7f\t\x0b\x0c\x1c\x1e\x00\x01\r")
_WORD_KEY = re.compile(r",\w+=")
_LOOKS_LIKE_FRAME_START = re.compile(
    r"<\d{1,3}>|[{0-9]|notification=|level=|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d")


def _text_ok(value, field, later_keys):
    """Whether text mode carries ``value`` of ``field`` unambiguously.

    - No ``,K=`` where K is a key after this field in the schema, present or
      omitted: §3.4 cuts a value at the nearest such key, and with K omitted
      the text reads just as well as K's own value (genuinely ambiguous).
    - Outside the reference's free-text fields, no ``,word=`` at all: it
      reads as a key a newer NeuVector added (§3.4 step 4).
    - CR only where it cannot be taken for a CRLF line end (not before LF,
      not at the end of a value, which may end the record).
    - Raw LF only in proc_cmd, cmds, message; each line after one holds more
      than blanks and does not start like a frame (``<PRI>`` but not any
      other ``<``, a digit:
      timestamp or octet count, ``{``, ``notification=``, ``level=``, an
      RFC 3164 date), since a LF-framed receiver must rejoin it (§3.4 step 7).
    """
    if any(f",{k}=" in value for k in later_keys):
        return False
    if field not in FREE_TEXT and _WORD_KEY.search(value):
        return False
    if "\r\n" in value or value.endswith("\r"):
        return False
    lines = value.split("\n")
    if len(lines) > 1 and field not in MULTILINE:
        return False
    return all(line.strip() and not _LOOKS_LIKE_FRAME_START.match(line) for line in lines[1:])


def _strings(field, earlier_keys, later_keys, min_size=0):
    """Free strings: every character class the wire carries raw, plus
    fragments that trip naive parsers (``,``, ``=``, ``, ``, brackets, braces,
    ``,<earlier key>=``, ``,<unknown word>=``, LF).

    ``earlier_keys`` are the keys before the previous field present, and a
    value holds one of them at most. Otherwise the text has two readings:
    when ``proc_cmd`` holds ``,K1=…,K2=`` with K1 < K2 between the string
    field P present before it and ``proc_cmd`` in struct order, it also reads
    as P's value running on over ``,proc_cmd=`` and K1, K2 real: two keys
    against one, and §3.4 takes the reading with more keys.
    """
    fragments = [",", "=", ", ", "[", "]", "{", "}", "map[", ", application=x"]
    earlier = [f",{k}=" for k in earlier_keys]
    if field in FREE_TEXT:
        fragments += earlier[-6:] + [",os=linux", ",a=b,c=d"]
    if field in MULTILINE:
        fragments += ["\n", "\nsh -c x", "\n curl -s http://x/?a=1", "\n<?xml", "\n<<EOF"]
    piece = st.one_of(st.text(_CHARS, max_size=6), st.sampled_from(fragments))
    return (st.lists(piece, max_size=5).map("".join)
            .filter(lambda v: len(v) >= min_size and _text_ok(v, field, later_keys)
                    and sum(v.count(k) for k in earlier) <= 1))


def _list_elements(field, later_keys):
    """List elements: no spaces (the separator), no LF, never empty."""
    element = st.text(_CHARS.replace(" ", ""), min_size=1, max_size=8)
    return element.filter(lambda v: _text_ok(v, field, later_keys))


def _items(later_keys):
    """Compliance items ``<test-id> <LEVEL> - <msg>`` (§3.3.4); the message
    is lower-case words, so it never holds another ``<id> <LEVEL> - ``."""
    test_id = st.from_regex(r"([a-z]{1,6}/)?[A-Z]\.[0-9]{1,2}(\.[0-9]{1,2}){0,2}", fullmatch=True)
    word = st.text("abcdefghijklmnopqrstuvwxyz,.'()=:é", min_size=1, max_size=8)
    msg = st.lists(word, min_size=1, max_size=5).map(" ".join)
    item = st.builds(lambda i, lvl, m: f"{i} {lvl} - {m}", test_id, st.sampled_from(COMPLIANCE_LEVELS), msg)
    return st.lists(item.filter(lambda v: _text_ok(v, "items", later_keys)), min_size=1, max_size=4)


def _user_roles():
    """nil (``map[]``) or domain -> role; the global domain is the empty key.
    Domains and roles hold no space or ':' (the map separators)."""
    domain = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=6)
    role = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
    return st.one_of(st.none(), st.dictionaries(domain, role, min_size=1, max_size=3))


def _value(field, earlier_keys, later_keys):
    """A value of ``field``; for omitempty fields never the zero value (the
    field is absent instead, see ``records``)."""
    nonzero = field.omitempty
    if field.name == "level":
        return st.sampled_from(LEVELS)
    if field.type == "int":  # Go ints here are counts, ports, ids, Unix times
        return st.integers(1 if nonzero else 0, 2**40)
    if field.type == "bool":
        return st.just(True) if nonzero else st.booleans()
    if field.type == "float":  # CVSS scores: float32 prints them as 7.5, 10
        return st.integers(1, 100).map(lambda k: k / 10)
    if field.type == "map":
        return _user_roles()
    if field.type == "list":
        if field.name == "items":
            return _items(later_keys)
        elements = st.lists(_list_elements(field.name, later_keys), min_size=1, max_size=4)
        # [""] is the one list Go prints as [] (§3.3.5): only where it occurs
        # (violation applications / servers, not omitempty).
        return elements if nonzero else st.one_of(st.just([""]), elements)
    return _strings(field.name, earlier_keys, later_keys, min_size=1 if nonzero else 0)


@st.composite
def records(draw, notification):
    """A record as NeuVector's current version would send it: every
    non-omitempty field present, omitempty fields present or absent."""
    fields = schema.FIELDS[notification]
    names = [f.name for f in fields]
    record = {}
    for i, field in enumerate(fields):
        if field.name == "name":
            name = draw(st.sampled_from(NAMES[notification]))
            if name is not None:
                record["name"] = name
            continue
        if field.omitempty and draw(st.booleans()):
            continue
        before_previous = names[:names.index(list(record)[-1])] if record else []
        record[field.name] = draw(_value(field, before_previous, names[i + 1:]))
    return record


HEADERS = st.one_of(
    st.none(),  # pod log: the bare MSG
    st.builds(
        lambda ts, host, pid, wire: (goformat.Header(ts, host, pid), wire),
        st.from_regex(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|[+-][01][0-9]:[03]0)",
                      fullmatch=True),
        st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
        st.integers(1, 4194304).map(str),
        st.booleans(),  # True: RFC 5424 on the wire; False: receiver-printed
    ),
)

# Deterministic for CI. No shrinking: shrinking a 45-field record takes
# minutes; a failure names the differing fields and notes the frame instead.
EXAMPLES = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _parse_one(frame, datagram):
    parser = nvparser.Parser()
    events = parser.feed_datagram(frame + b"\n") if datagram else parser.feed(frame + b"\n")
    events += parser.close()
    dead = [e for e in events if isinstance(e, nvparser.DeadLetter)]
    assert not dead, dead
    return [e.data for e in events if isinstance(e, nvparser.Record)]


@pytest.mark.parametrize("notification", list(_REFERENCE))
def test_text_and_json_give_back_the_record(notification):
    @EXAMPLES
    @given(record=records(notification), header=HEADERS, datagram=st.booleans())
    def check(record, header, datagram):
        expected = {"notification": notification, **record}
        if header is not None:
            expected["syslog"] = goformat.syslog_object(header[0], record["level"] if header[1] else None)
        for json_mode in (False, True):
            frame = _frame(expected, expected.get("syslog"), json_mode)
            note(f"frame: {frame!r}")
            nvsamples.assert_same_records(_parse_one(frame, datagram), [expected])

    check()


# A value may hold ``,K=`` for a key K that sits between the previous key and
# the value's own key in struct order, when K is omitted: §3.4 cuts at the
# nearest key that appears, so the ``,K=`` stays inside the value.
OMITTED_KEY_IN_VALUE = [
    ("event-text-1", "message", "User admin login,rest_request=/v1/auth"),
    ("threat-text-3", "message", "DLP: id 20003,packet=0"),
    ("audit-text-6", "message", "Creation of Pod resource (web) is allowed,cvedb_version=3.712"),
]


@pytest.mark.parametrize("sample_id, key, value", OMITTED_KEY_IN_VALUE, ids=[c[0] for c in OMITTED_KEY_IN_VALUE])
def test_value_holding_the_key_of_an_omitted_field(sample_id, key, value):
    (record,) = nvsamples.expected_records(sample_id)
    record[key] = value
    frame = _frame(record, record["syslog"], json_mode=False)
    nvsamples.assert_same_records(_parse_one(frame, datagram=True), [record])
