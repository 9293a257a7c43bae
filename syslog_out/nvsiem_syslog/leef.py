"""A record as QRadar LEEF 2.0: ``LEEF:2.0|NeuVector|product|version|EventID|x09|attributes``.

Attributes are ``key=value`` separated by tabs (the ``x09`` delimiter field
of the 2.0 header). LEEF has no escape for a tab or a line break inside a
value, so this sink writes them as ``\\t``, ``\\n``, ``\\r`` and a backslash
as ``\\\\``: a value reads back exactly by undoing those four. Header fields
are escaped as CEF's are (``\\|``, ``\\\\``). ``sev`` is the CEF severity
(1-10: Debug counts as 1), ``devTime`` the event time with its
``devTimeFormat`` (left out for a time before 1970 or past 9999, which
the format cannot say).
"""
from typing import Optional, Tuple

from nvparser import event_time

from . import mapping
from .cef import escape_header
from .memo import Memo
from .pairs import PairBody, PairEncoder, dev_time, dev_time_can_say

ATTRIBUTE_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
#: Java SimpleDateFormat, as QRadar reads devTime (``pairs.dev_time``): 2025-03-14T11:15:20.000+0000.
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"


def key_for(notification: str, field: str, value_type: type) -> Optional[Tuple[str, str, object]]:
    """(LEEF key, "", converter) for a field whose value has ``value_type``; None: not an attribute."""
    where = mapping.target(notification, field)
    if where is None or where.leef.startswith("^"):
        return None
    key = where.leef
    if key == "-" or (key in mapping.LEEF_INTEGER_KEYS and value_type is not int):
        return mapping.leef_custom_key(field), "", None
    return key, "", dev_time if key == "devTime" else mapping.protocol_name if key == "proto" else None


class LeefBody(PairBody):
    def __init__(self, product: str, version: str) -> None:
        self._prefix = "LEEF:2.0|%s|%s|%s|" % (escape_header(mapping.VENDOR), escape_header(product),
                                               escape_header(version))
        super().__init__(PairEncoder(key_for, "\t", ATTRIBUTE_ESCAPES))
        self._headers = Memo(self._header)

    def around(self, record: dict) -> Tuple[str, str]:
        """(what comes before the record's attributes, what joins them on when there are any)."""
        header, severity = self._headers.get_for(mapping.header_key(record))
        attributes = [severity] if severity else []
        reported = record.get("reported_timestamp")
        if type(reported) is int:  # then devTime is among the attributes, where it can be said
            if dev_time_can_say(reported):
                attributes.append("devTimeFormat=" + DEV_TIME_FORMAT)
        else:
            moment = event_time(record)
            stamp = dev_time(moment) if moment is not None else ""
            if stamp:
                attributes += ["devTime=" + stamp, "devTimeFormat=" + DEV_TIME_FORMAT]
        return header + "\t".join(attributes), "\t" if attributes else ""

    def _header(self, notification, name, threat_id, level) -> Tuple[str, str]:
        """(the header, ``sev=N`` or ""), for the values of ``mapping.header_key``."""
        record = {"notification": notification, "name": name, "threat_id": threat_id, "level": level}
        severity = mapping.CEF_SEVERITY.get(mapping.level_of(record))
        return ("%s%s|x09|" % (self._prefix, escape_header(mapping.signature_of(record))),
                "" if severity is None else "sev=%d" % max(1, severity))
