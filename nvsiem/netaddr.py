"""``udp://HOST:PORT`` / ``tcp://HOST:PORT`` addresses, as every command takes them.

IPv6 hosts go in brackets (``udp://[::1]:514``); a query string carries
per-address options (``tcp://0.0.0.0:514?types=violation,threat``).
"""
from typing import Dict, NamedTuple, Optional, Sequence
from urllib.parse import parse_qsl, urlsplit


class Address(NamedTuple):
    scheme: str
    host: str
    port: int
    query: Dict[str, str]

    def __str__(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


def parse_address(url: str, schemes: Sequence[str] = ("udp", "tcp"),
                  default_port: Optional[int] = None) -> Address:
    """Split and check an address; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not url.startswith(parts.scheme + "://"):
        raise ValueError("%r: expected %s://HOST:PORT" % (url, "|".join(schemes)))
    try:
        port = parts.port
    except ValueError:
        raise ValueError("%r: the port must be a number from 0 to 65535" % url) from None
    if port is None:
        port = default_port
    if not parts.hostname or port is None:
        raise ValueError("%r: give a host and a port, e.g. %s://127.0.0.1:514" % (url, parts.scheme))
    if parts.path not in ("", "/") or parts.fragment or parts.username is not None:
        raise ValueError("%r: only %s://HOST:PORT and a ?query are allowed" % (url, parts.scheme))
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError("%r: the query must be NAME=VALUE&..." % url) from None
    query = {}
    for key, value in pairs:
        if key in query:
            raise ValueError("%r: %s given twice" % (url, key))
        query[key] = value
    return Address(parts.scheme, parts.hostname, port, query)
