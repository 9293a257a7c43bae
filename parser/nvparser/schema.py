"""NeuVector's notification records: fields in wire order, with types.

Transcribed from the controller's ``api.LogCommon``, ``api.Violation``,
``api.Threat``, ``api.Incident``, ``api.Event`` and ``api.Audit`` structs
(NeuVector 5.x; see the field tables of the wire-format reference). The order
is the struct order, which is the order of keys in both text and JSON mode.

Types are the JSON types NeuVector's JSON mode gives the Go fields:
``str``, ``int``, ``bool``, ``float`` (Go float32), ``list`` ([]string) and
``map`` (map[string]string). ``omitempty`` fields are absent when zero.
"""
import re
from typing import Dict, FrozenSet, NamedTuple, Tuple


class Field(NamedTuple):
    name: str
    type: str
    omitempty: bool = False


def _fields(spec: str) -> Tuple[Field, ...]:
    """Read a compact spec: one ``name type [omitempty]`` per line."""
    out = []
    for line in spec.strip().splitlines():
        parts = line.split()
        out.append(Field(parts[0], parts[1], len(parts) > 2))
    return tuple(out)


_COMMON = _fields("""
name str omitempty
level str
reported_timestamp int
reported_at str
cluster_name str
response_rule_id int omitempty
host_id str
host_name str
enforcer_id str
enforcer_name str
""")

_VIOLATION = _fields("""
id str
client_id str
client_name str
client_domain str omitempty
client_image str omitempty
client_service str omitempty
server_id str
server_name str
server_domain str omitempty
server_image str omitempty
server_service str omitempty
server_port int
ip_proto int
applications list
servers list
sessions int
policy_action str
policy_id int
client_ip str
server_ip str
fqdn str
xff bool
nbe bool
""")

_THREAT = _fields("""
id str
threat_id int
client_workload_id str
client_workload_name str
client_workload_domain str omitempty
client_workload_image str omitempty
client_workload_service str omitempty
server_workload_id str
server_workload_name str
server_workload_domain str omitempty
server_workload_image str omitempty
server_workload_service str omitempty
severity str
action str
count int
ether_type int
client_port int
server_port int
server_conn_port int
icmp_code int
icmp_type int
ip_proto int
client_ip str
server_ip str
application str
sensor str
group str
target str
monitor bool
cap_len int omitempty
packet str omitempty
message str
""")

_INCIDENT = _fields("""
id str
workload_id str omitempty
workload_name str omitempty
workload_domain str omitempty
workload_image str omitempty
workload_service str omitempty
remote_workload_id str omitempty
remote_workload_name str omitempty
remote_workload_domain str omitempty
remote_workload_image str omitempty
remote_workload_service str omitempty
proc_name str omitempty
proc_path str omitempty
proc_cmd str omitempty
proc_real_uid int omitempty
proc_effective_uid int omitempty
proc_real_user str omitempty
proc_effective_user str omitempty
file_path str omitempty
file_name list omitempty
client_ip str omitempty
server_ip str omitempty
client_port int omitempty
server_port int omitempty
server_conn_port int omitempty
ether_type int omitempty
ip_proto int omitempty
conn_ingress bool omitempty
proc_parent_name str omitempty
proc_parent_path str omitempty
action str
group str omitempty
rule_id str
aggregation_from int omitempty
count int omitempty
message str
""")

_EVENT = _fields("""
controller_id str
controller_name str
workload_id str
workload_name str
workload_domain str
workload_image str
workload_service str
category str
user str
user_roles map
user_addr str
user_session str
rest_method str omitempty
rest_request str omitempty
rest_body str omitempty
enforcer_limit int omitempty
license_expire str omitempty
message str
""")

_AUDIT = _fields("""
workload_id str omitempty
workload_name str omitempty
workload_domain str omitempty
workload_image str omitempty
workload_service str omitempty
image str omitempty
image_id str omitempty
registry str omitempty
registry_name str omitempty
repository str omitempty
tag str omitempty
base_os str omitempty
critical_vul_cnt int
high_vul_cnt int
medium_vul_cnt int
critical_vuls list omitempty
high_vuls list omitempty
medium_vuls list omitempty
cvedb_version str omitempty
message str
user str omitempty
error str omitempty
aggregation_from int omitempty
count int omitempty
items list omitempty
group str omitempty
platform str omitempty
platform_version str omitempty
region str omitempty
project_name str omitempty
packages list omitempty
package_ver str omitempty
fixed_ver str omitempty
score float omitempty
score_v3 float omitempty
vectors str omitempty
vectors_v3 str omitempty
link str omitempty
description str omitempty
pub_date str omitempty
last_mod_date str omitempty
image_layer_digest str omitempty
cmds str omitempty
pvc_name str omitempty
pvc_storageclass_name str omitempty
""")

#: The six values of ``notification``, in the order NeuVector's docs list them.
NOTIFICATIONS = ("violation", "threat", "incident", "event", "activity", "audit")

#: notification -> its fields in wire order (LogCommon first).
FIELDS: Dict[str, Tuple[Field, ...]] = {
    "violation": _COMMON + _VIOLATION,
    "threat": _COMMON + _THREAT,
    "incident": _COMMON + _INCIDENT,
    "event": _COMMON + _EVENT,
    "activity": _COMMON + _EVENT,
    "audit": _COMMON + _AUDIT,
}

#: Fields whose text-mode value may itself contain ``,word=``: an unknown
#: key inside one of them is taken as part of the value, not as a new key.
FREE_TEXT: FrozenSet[str] = frozenset({
    "message", "proc_cmd", "rest_body", "rest_request", "cmds", "description",
    "items", "group", "workload_image", "cluster_name", "user", "error",
    "vectors", "vectors_v3", "link", "fixed_ver", "package_ver", "file_path",
})


def typed_keys(notification: str, type_: str) -> Tuple[str, ...]:
    """The names of a notification's fields of one type, in wire order."""
    return tuple(f.name for f in FIELDS[notification] if f.type == type_)


def notification_of(keys) -> str:
    """Tell a record's notification type from its keys (webhooks omit it).

    Each type has a field no other type has; ``event`` and ``activity``
    share a struct and are told apart by ``name`` by the caller.
    """
    keys = set(keys)
    if "policy_action" in keys:
        return "violation"
    if "threat_id" in keys:
        return "threat"
    if "category" in keys or "controller_id" in keys:
        return "event"
    if "high_vul_cnt" in keys or "critical_vul_cnt" in keys:
        return "audit"
    if "rule_id" in keys or "proc_name" in keys or "file_path" in keys:
        return "incident"
    return ""


#: Event names NeuVector reports as ``notification=activity`` (webhooks say ``event``).
ACTIVITY_NAMES = frozenset({"Container.Start", "Container.Stop", "Container.Secured", "Container.Remove"})


#: A record's first line, whichever header form it has (bytes pattern). A
#: line that does not match continues the record before it.
RECORD_START = re.compile(
    rb'<\d{1,3}>'                          # syslog PRI (RFC 5424 / 3164)
    rb'|\d{4}-\d\d-\d\dT\d\d:\d\d'         # receiver-printed header, CRI, controller log
    rb'|notification='                     # bare text body (pod log)
    rb'|\{"'                               # bare JSON body
    rb'|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d '  # RFC 3164 without PRI
)

#: The levels of a compliance check's result: a text-mode ``items`` element
#: reads ``<check> <LEVEL> - <message>``, and Go joins the elements with spaces.
ITEM_LEVELS = ("PASS", "INFO", "WARN", "MANUAL", "HIGH", "NOTE", "ERROR")
#: The space before each item but the first, as a regex (Splunk's search-time split;
#: the parser's ``split_items`` finds the same spaces faster).
ITEM_START = re.compile(r" (?=(?:[^ /]+/)?[^ /]+ (?:%s) - )" % "|".join(ITEM_LEVELS))
