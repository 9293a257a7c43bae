"""The REST form of an event nvparser read from syslog (REST reference §5.2, §5.3).

The controller's syslog body and its REST list element are the same Go
struct marshalled two ways: REST has no ``notification`` (and no syslog
header), sorts the keys, writes some empty-but-present lists as ``[]``
where syslog leaves the key out, and keeps a threat's ``cap_len``, which
syslog zeroes. ``rest_element`` turns a parsed record into that element,
for ``RestController.add``.
"""
from typing import Tuple

CAP_LEN = 64   # any captured length: syslog never carries one

#: audits whose ``items`` the controller makes a non-nil list (auditSuppressSetIdRpts, §3.1)
_ITEMS_AUDITS = {"Registry.Scan.Report", "Compliance.Image.Violation", "Compliance.ContainerFile.Violation",
                 "AwsLambda.Scan"}
_VUL_LISTS = ("critical_vuls", "high_vuls", "medium_vuls")   # always non-nil in scan reports


def _rest_lists(notification: str, name: str) -> Tuple[str, ...]:
    """The keys REST writes as ``[]`` when syslog left them out."""
    if notification == "incident":
        return ("file_name",)
    if notification != "audit":
        return ()
    return (_VUL_LISTS if name.endswith(".Scan.Report") else ()) + (("items",) if name in _ITEMS_AUDITS else ())


def rest_element(record: dict) -> Tuple[str, dict]:
    """(notification, element) as ``GET /v1/log/<notification>`` holds it for this parsed record."""
    notification = record["notification"]
    element = {k: v for k, v in record.items() if k not in ("notification", "syslog")}
    for key in _rest_lists(notification, element.get("name", "")):
        element.setdefault(key, [])
    if notification == "threat":
        element["cap_len"] = CAP_LEN
    return notification, dict(sorted(element.items()))
