"""A record as ArcSight CEF 0: ``CEF:0|NeuVector|product|version|signature|name|severity|extension``.

Escaping, as the CEF specification has it: in the seven header fields a
backslash and a pipe take a backslash before them (a line break has no
escape there and becomes a space); in extension values a backslash and an
equals sign take a backslash, a line feed is written ``\\n`` and a carriage
return ``\\r``. Keys come from ``mapping``; custom slots carry their label
(``cs1Label=client_domain cs1=shop``).
"""
from typing import Optional, Tuple

from nvparser import event_time

from . import mapping
from .memo import Memo
from .pairs import PairBody, PairEncoder, to_milliseconds

EXTENSION_ESCAPES = (("\\", "\\\\"), ("=", "\\="), ("\n", "\\n"), ("\r", "\\r"))
HEADER_ESCAPES = (("\\", "\\\\"), ("|", "\\|"), ("\r\n", " "), ("\n", " "), ("\r", " "))


def escape_header(text: str) -> str:
    for char, replacement in HEADER_ESCAPES:
        if char in text:
            text = text.replace(char, replacement)
    return text




def key_for(notification: str, field: str, value_type: type) -> Optional[Tuple[str, str, object]]:
    """(CEF key, label, converter) for a field whose value has ``value_type``; None: not in the extension."""
    where = mapping.target(notification, field)
    if where is None or where.cef.startswith("^"):
        return None
    key = where.cef
    wrong_type = ((key in mapping.CEF_INTEGER_KEYS and value_type is not int)
                  or (key in mapping.CEF_FLOAT_KEYS and value_type not in (int, float)))
    if key == "-" or wrong_type:
        return mapping.cef_custom_key(field), "", None
    convert = to_milliseconds if key == "rt" else mapping.protocol_name if key == "proto" else None
    return key, field if mapping.is_slot(key) else "", convert


class CefBody(PairBody):
    def __init__(self, product: str, version: str) -> None:
        self._prefix = "CEF:0|%s|%s|%s|" % (escape_header(mapping.VENDOR), escape_header(product),
                                            escape_header(version))
        super().__init__(PairEncoder(key_for, " ", EXTENSION_ESCAPES))
        self._headers = Memo(self._header)

    def around(self, record: dict) -> Tuple[str, str]:
        """(what comes before the extension, what joins it on when there is one)."""
        header = self._headers.get_for(mapping.header_key(record))
        if type(record.get("reported_timestamp")) is not int:
            # rt is the event's time; without NeuVector's own, the one nvparser.event_time finds.
            moment = event_time(record)
            if moment is not None:
                return header + "rt=%d" % (moment * 1000), " "
        return header, ""

    def _header(self, notification, name, threat_id, level) -> str:
        """The seven header fields, for the values of ``mapping.header_key``."""
        record = {"notification": notification, "name": name, "threat_id": threat_id, "level": level}
        severity = mapping.CEF_SEVERITY.get(mapping.level_of(record), "Unknown")
        return "%s%s|%s|%s|" % (self._prefix, escape_header(mapping.signature_of(record)),
                                escape_header(mapping.name_of(record)), severity)
