"""The one table of where each NeuVector field goes in CEF and in LEEF.

One row per field of ``nvparser.schema.FIELDS``, per notification type
(``activity`` shares ``event``'s fields): the CEF key, then the LEEF
attribute. In either column:

* a key: that standard key (CEF's extension dictionary, LEEF's predefined
  attributes);
* ``cs1`` ... ``cs6``, ``cn1`` ... ``cn3``, ``cfp1`` ... ``cfp4``: CEF's
  custom slots; the value goes with ``<slot>Label=<field name>``;
* ``^Name``, ``^Signature``, ``^EventID``: a header field of the format;
* ``-``: the custom key. In CEF ``NeuVector`` followed by the field name in
  CamelCase (``host_id`` -> ``NeuVectorHostId``): CEF asks custom keys to be
  one alphanumeric word, vendor and product first (both are NeuVector). In
  LEEF the field name itself.

A value that does not have the type its key needs (``server_port=http``
kept as text by the parser, where ``dpt`` needs a number) goes to the
custom key instead. Keys a record has beyond its schema (a newer
NeuVector's fields, ``webhook``, ``cri``) go to their custom keys too;
``syslog``, the received header, is replaced by the header this sink
writes. ``tests/test_cef_format.py`` holds this table to the schema
and ``docs/syslog.md`` prints it (``python -m nvsiem_syslog.mapping``).
"""
import re
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

from nvparser.schema import FIELDS

VENDOR = "NeuVector"


class Target(NamedTuple):
    cef: str
    leef: str


def _table(spec: str) -> Dict[str, Target]:
    rows = {}
    for line in spec.strip().splitlines():
        field, cef, leef = line.split()
        rows[field] = Target(cef, leef)
    return rows


# field                    CEF                       LEEF
_COMMON = _table("""
notification               cat                       cat
name                       ^Name                     -
level                      -                         -
reported_timestamp         rt                        devTime
reported_at                -                         -
cluster_name               cs6                       -
response_rule_id           -                         -
host_id                    -                         -
host_name                  dvchost                   -
enforcer_id                -                         -
enforcer_name              -                         -
""")

_VIOLATION = _table("""
id                         externalId                -
client_id                  -                         -
client_name                shost                     -
client_domain              cs1                       -
client_image               -                         -
client_service             sourceServiceName         -
server_id                  -                         -
server_name                dhost                     -
server_domain              cs2                       -
server_image               -                         -
server_service             destinationServiceName    -
server_port                dpt                       dstPort
ip_proto                   proto                     proto
applications               cs3                       -
servers                    cs5                       -
sessions                   cnt                       -
policy_action              act                       -
policy_id                  cn1                       -
client_ip                  src                       src
server_ip                  dst                       dst
fqdn                       cs4                       -
xff                        -                         -
nbe                        -                         -
""")

_THREAT = _table("""
id                         externalId                -
threat_id                  ^Signature                ^EventID
client_workload_id         -                         -
client_workload_name       shost                     -
client_workload_domain     cs1                       -
client_workload_image      -                         -
client_workload_service    sourceServiceName         -
server_workload_id         -                         -
server_workload_name       dhost                     -
server_workload_domain     cs2                       -
server_workload_image      -                         -
server_workload_service    destinationServiceName    -
severity                   cs3                       -
action                     act                       -
count                      cnt                       -
ether_type                 -                         -
client_port                spt                       srcPort
server_port                dpt                       dstPort
server_conn_port           -                         -
icmp_code                  -                         -
icmp_type                  -                         -
ip_proto                   proto                     proto
client_ip                  src                       src
server_ip                  dst                       dst
application                app                       -
sensor                     -                         -
group                      cs4                       -
target                     cs5                       -
monitor                    -                         -
cap_len                    -                         -
packet                     -                         -
message                    msg                       -
""")

_INCIDENT = _table("""
id                         externalId                -
workload_id                -                         -
workload_name              dhost                     -
workload_domain            cs2                       -
workload_image             -                         -
workload_service           destinationServiceName    -
remote_workload_id         -                         -
remote_workload_name       shost                     -
remote_workload_domain     cs1                       -
remote_workload_image      -                         -
remote_workload_service    sourceServiceName         -
proc_name                  dproc                     -
proc_path                  cs3                       -
proc_cmd                   cs4                       -
proc_real_uid              -                         -
proc_effective_uid         duid                      -
proc_real_user             -                         -
proc_effective_user        duser                     usrName
file_path                  filePath                  -
file_name                  -                         -
client_ip                  src                       src
server_ip                  dst                       dst
client_port                spt                       srcPort
server_port                dpt                       dstPort
server_conn_port           -                         -
ether_type                 -                         -
ip_proto                   proto                     proto
conn_ingress               -                         -
proc_parent_name           -                         -
proc_parent_path           -                         -
action                     act                       -
group                      cs5                       -
rule_id                    -                         -
aggregation_from           -                         -
count                      cnt                       -
message                    msg                       -
""")

_EVENT = _table("""
controller_id              -                         -
controller_name            -                         -
workload_id                -                         -
workload_name              dhost                     -
workload_domain            cs2                       -
workload_image             -                         -
workload_service           destinationServiceName    -
category                   cs3                       -
user                       suser                     usrName
user_roles                 cs5                       -
user_addr                  src                       src
user_session               -                         -
rest_method                requestMethod             -
rest_request               request                   -
rest_body                  cs4                       -
enforcer_limit             -                         -
license_expire             -                         -
message                    msg                       -
""")

_AUDIT = _table("""
workload_id                -                         -
workload_name              dhost                     -
workload_domain            cs2                       -
workload_image             -                         -
workload_service           destinationServiceName    -
image                      cs3                       -
image_id                   -                         -
registry                   -                         -
registry_name              -                         -
repository                 -                         -
tag                        -                         -
base_os                    -                         -
critical_vul_cnt           cn1                       -
high_vul_cnt               cn2                       -
medium_vul_cnt             cn3                       -
critical_vuls              -                         -
high_vuls                  -                         -
medium_vuls                -                         -
cvedb_version              -                         -
message                    msg                       -
user                       suser                     usrName
error                      -                         -
aggregation_from           -                         -
count                      cnt                       -
items                      cs4                       -
group                      cs5                       -
platform                   -                         -
platform_version           -                         -
region                     -                         -
project_name               -                         -
packages                   -                         -
package_ver                -                         -
fixed_ver                  -                         -
score                      cfp1                      -
score_v3                   cfp2                      -
vectors                    -                         -
vectors_v3                 -                         -
link                       -                         -
description                -                         -
pub_date                   -                         -
last_mod_date              -                         -
image_layer_digest         -                         -
cmds                       -                         -
pvc_name                   -                         -
pvc_storageclass_name      -                         -
""")

#: notification -> field -> where it goes.
TABLE: Dict[str, Dict[str, Target]] = {
    "violation": {**_COMMON, **_VIOLATION},
    "threat": {**_COMMON, **_THREAT},
    "incident": {**_COMMON, **_INCIDENT},
    "event": {**_COMMON, **_EVENT},
    "activity": {**_COMMON, **_EVENT},
    "audit": {**_COMMON, **_AUDIT},
}

#: Fields that are not in the table: the received syslog header (this sink writes its own).
REPLACED = frozenset({"syslog"})

#: CEF keys whose value must be a whole number (``rt`` and ``proto`` are converted from one).
CEF_INTEGER_KEYS = frozenset({"rt", "spt", "dpt", "cnt", "cn1", "cn2", "cn3", "proto"})
CEF_FLOAT_KEYS = frozenset({"cfp1", "cfp2", "cfp3", "cfp4"})
LEEF_INTEGER_KEYS = frozenset({"devTime", "srcPort", "dstPort", "proto"})
_SLOT = re.compile(r"(cs[1-6]|cn[1-3]|cfp[1-4])\Z")

#: CEF ``proto`` is the transport protocol's name; NeuVector gives the IP protocol number.
PROTOCOL_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

#: NeuVector's levels -> CEF severity (0-10, 10 the most severe), and RFC 5424 severity (0 the most severe).
CEF_SEVERITY = {"emergency": 10, "alert": 9, "critical": 8, "error": 7, "warning": 5, "notice": 3, "info": 1,
                "debug": 0}
SYSLOG_SEVERITY = {"emergency": 0, "alert": 1, "critical": 2, "error": 3, "warning": 4, "notice": 5, "info": 6,
                   "debug": 7}

#: The name a record without one (NeuVector omits ``name`` from violations) goes by.
DEFAULT_NAMES = {"violation": "Network.Violation"}


def target(notification: str, field: str) -> Optional[Target]:
    """Where ``field`` of a ``notification`` record goes; None for the received header."""
    if field in REPLACED:
        return None
    row = TABLE.get(notification, _COMMON).get(field)
    return row if row is not None else Target("-", "-")


def cef_custom_key(field: str) -> str:
    """``NeuVector`` + the field name in CamelCase: ``host_id`` -> ``NeuVectorHostId``."""
    words = re.findall(r"[A-Za-z0-9]+", field)
    return VENDOR + "".join(word[:1].upper() + word[1:] for word in words)


#: LEEF 2.0's predefined attributes (IBM's LEEF guide): a field of the same name must not pass for one.
LEEF_PREDEFINED = frozenset("""
cat devTime devTimeFormat proto sev src dst srcPort dstPort srcPreNAT dstPreNAT srcPostNAT dstPostNAT
srcPreNATPort dstPreNATPort srcPostNATPort dstPostNATPort srcMAC dstMAC usrName accountName groupID
identSrc identHostName identNetBios identGrpName identMAC identSecondlp vSrc vSrcName srcBytes dstBytes
srcPackets dstPackets totalPackets role realm policy resource url domain isLoginEvent isLogoutEvent
""".split())


def leef_custom_key(field: str) -> str:
    """The field name without what LEEF keys should not hold (anything but letters, digits, ``_``);
    ``NeuVector`` + CamelCase where that is a predefined attribute's name (a newer NeuVector's ``sev``)."""
    key = re.sub(r"[^A-Za-z0-9_]", "", field)
    return cef_custom_key(field) if key in LEEF_PREDEFINED or not key else key


def is_slot(cef_key: str) -> bool:
    return bool(_SLOT.match(cef_key))


def header_key(record: dict) -> tuple:
    """The fields the CEF and LEEF headers are made of."""
    return record.get("notification"), record.get("name"), record.get("threat_id"), record.get("level")


def signature_of(record: dict) -> str:
    """The CEF Signature ID and LEEF EventID: a threat's ``threat_id``, else the record's name."""
    threat_id = record.get("threat_id")
    if record.get("notification") == "threat" and threat_id is not None and threat_id != "":
        return str(threat_id)
    return name_of(record)


def name_of(record: dict) -> str:
    name = record.get("name")
    if isinstance(name, str) and name:
        return name
    notification = record.get("notification")
    return DEFAULT_NAMES.get(notification) or str(notification or "record")


class _ProtocolNames(dict):
    def __missing__(self, number: int) -> str:
        return str(number)


#: ``protocol_name(6)`` is ``TCP``, ``protocol_name(47)`` is ``47``: a bound C method for the usual numbers.
protocol_name = _ProtocolNames(PROTOCOL_NAMES).__getitem__


def level_of(record: dict) -> str:
    level = record.get("level")
    return level.lower() if isinstance(level, str) else ""


def rows(notification: str) -> Iterator[Tuple[str, str, str]]:
    """(field, CEF, LEEF) as the docs print them, for every schema field of ``notification``."""
    schema = FIELDS[notification]
    for field in ("notification",) + tuple(f.name for f in schema):
        where = target(notification, field)
        cef, leef = _cef_cell(field, where.cef), _leef_cell(field, where.leef)
        if field == "level":
            cef, leef = cef + "; the header Severity", leef + "; `sev`"
        elif field == "name" and notification != "threat":
            cef, leef = "header Name and Signature ID", leef + "; header EventID"
        yield field, cef, leef


def _cef_cell(field: str, key: str) -> str:
    if key == "-":
        return "`%s`" % cef_custom_key(field)
    if key.startswith("^"):
        return "header %s" % ("Signature ID" if key == "^Signature" else key[1:])
    if key == "rt":
        return "`rt` (ms)"
    if key == "proto":
        return "`proto` (TCP, UDP, ICMP ...)"
    if is_slot(key):
        return "`%s` (`%sLabel=%s`)" % (key, key, field)
    return "`%s`" % key


def _leef_cell(field: str, key: str) -> str:
    if key == "-":
        return "`%s`" % leef_custom_key(field)
    if key.startswith("^"):
        return "header %s" % key[1:]
    return "`%s`" % key


def markdown() -> str:
    """The mapping as the Markdown tables of docs/syslog.md: one per notification type."""
    out = []
    for notification in ("violation", "threat", "incident", "event", "audit"):
        title = "event and activity" if notification == "event" else notification
        out += ["#### %s" % title, "", "| NeuVector field | CEF | LEEF |", "|---|---|---|"]
        out += ["| `%s` | %s | %s |" % row for row in rows(notification)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
