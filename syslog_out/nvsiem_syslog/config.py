"""``syslog+tcp://``, ``syslog+tls://`` and ``syslog+udp://`` URLs -> checked settings.

    syslog+tcp://siem.example.com:514?format=cef&framing=octet-counting
    syslog+tls://siem.example.com:6514?ca=/etc/ssl/siem-ca.pem&cert=/c.pem&key=/k.pem
    syslog+udp://siem.example.com:514?format=leef

A URL that cannot work is a ValueError whose one line names the option.
"""
import math
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

from nvsiem.sinks.api import parse_bool, parse_size, redact_url, resolve_secrets

TRANSPORTS = {"syslog+tcp": "tcp", "syslog+tls": "tls", "syslog+udp": "udp"}
#: RFC 5425 assigns 6514 to syslog over TLS; 514 is the customary port of the other two.
DEFAULT_PORTS = {"tcp": 514, "tls": 6514, "udp": 514}
FORMATS = ("cef", "leef", "json")
FRAMINGS = ("octet-counting", "lf")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")

OPTIONS = {
    "format": "cef (default), leef or json",
    "framing": "octet-counting (default) or lf; TCP and TLS only",
    "facility": "syslog facility, a name (local0, the default) or 0-23",
    "app_name": "RFC 5424 APP-NAME (default neuvector)",
    "product": "CEF and LEEF header product (default NeuVector)",
    "product_version": "CEF and LEEF header version (default 5.x)",
    "timeout": "seconds to connect, and to write a batch and see it acknowledged (default 30)",
    "resend": "bytes written before a broken connection that are written again on the next one (default 1M, "
              "0 never); TCP and TLS only",
    "ca": "CA bundle (PEM) to verify the receiver's certificate; TLS only",
    "verify": "verify the receiver's certificate and name (default true); TLS only",
    "cert": "client certificate (PEM) for mutual TLS, with key=",
    "key": "the client certificate's private key (PEM)",
    "server_hostname": "the name the receiver's certificate must hold (default: the URL's host)",
}
_STREAM_ONLY = ("framing", "resend")
_TLS_ONLY = ("ca", "verify", "cert", "key", "server_hostname")


@dataclass(frozen=True)
class Settings:
    transport: str
    host: str
    port: int
    format: str = "cef"
    framing: str = "octet-counting"
    facility: int = 16
    app_name: str = "neuvector"
    product: str = "NeuVector"
    product_version: str = "5.x"
    timeout: float = 30.0
    resend: int = 1 << 20
    ca: Optional[str] = None
    verify: bool = True
    cert: Optional[str] = None
    key: Optional[str] = None
    server_hostname: Optional[str] = None

    @property
    def address(self) -> str:
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)


def parse_url(url: str) -> Settings:
    shown = redact_url(url)
    try:
        return _parse(resolve_secrets(url))
    except ValueError as exc:
        raise ValueError("%s: %s" % (shown, exc)) from None


def _parse(url: str) -> Settings:
    parts = urlsplit(url)
    transport = TRANSPORTS.get(parts.scheme)
    if transport is None:
        raise ValueError("use one of %s" % ", ".join(TRANSPORTS))
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError("unknown option(s) %s (known: %s)" % (", ".join(unknown), ", ".join(OPTIONS)))
    _only_for(options, transport)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("bad port in %r" % parts.netloc) from None
    if not host:
        raise ValueError("give the receiver: %s://HOST:PORT" % parts.scheme)
    if bool(options.get("cert")) != bool(options.get("key")):
        raise ValueError("cert= and key= go together (the client certificate and its private key)")
    return Settings(
        transport=transport, host=host, port=port or DEFAULT_PORTS[transport],
        format=_choice(options, "format", FORMATS, "cef"),
        framing=_choice(options, "framing", FRAMINGS, "octet-counting"),
        facility=_facility(options.get("facility", "local0")),
        app_name=_header_word(options, "app_name", "neuvector", 48),
        product=options.get("product", "NeuVector"),
        product_version=options.get("product_version", "5.x"),
        timeout=_seconds(options, "timeout", 30.0),
        resend=_size(options, "resend", 1 << 20),
        ca=options.get("ca") or None,
        verify=_bool(options, "verify", True),
        cert=options.get("cert") or None,
        key=options.get("key") or None,
        server_hostname=options.get("server_hostname") or None,
    )


def _only_for(options: dict, transport: str) -> None:
    misplaced = [name + "=" for name in _TLS_ONLY if name in options]
    if misplaced and transport != "tls":
        raise ValueError("%s: syslog+tls:// only" % ", ".join(misplaced))
    misplaced = [name + "=" for name in _STREAM_ONLY if name in options]
    if misplaced and transport == "udp":
        raise ValueError("%s: TCP and TLS only (over UDP each record is one datagram, sent once)"
                         % ", ".join(misplaced))


def _choice(options: dict, name: str, choices, default: str) -> str:
    value = options.get(name, default)
    if value not in choices:
        raise ValueError("%s=%s: use %s" % (name, value, " or ".join(choices)))
    return value


def _facility(value: str) -> int:
    if value in FACILITIES:
        return FACILITIES.index(value)
    if value.isdigit() and int(value) < len(FACILITIES):
        return int(value)
    raise ValueError("facility=%s: a name (local0 ... local7, user, daemon ...) or 0-23" % value)


def _header_word(options: dict, name: str, default: str, limit: int) -> str:
    """An RFC 5424 header field: 1 to ``limit`` printable US-ASCII characters, no space."""
    value = options.get(name, default)
    if not 0 < len(value) <= limit or not all(33 <= ord(c) <= 126 for c in value):
        raise ValueError("%s=%r: 1 to %d printable ASCII characters without spaces (RFC 5424)" % (name, value, limit))
    return value


def _seconds(options: dict, name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        raise ValueError("%s=%s: expected seconds, e.g. %s=30" % (name, options[name], name)) from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("%s=%s: must be positive" % (name, options[name]))
    return value


def _size(options: dict, name: str, default: int) -> int:
    if name not in options:
        return default
    try:
        return parse_size(options[name])
    except ValueError as exc:
        raise ValueError("%s=: %s" % (name, exc)) from None


def _bool(options: dict, name: str, default: bool) -> bool:
    if name not in options:
        return default
    try:
        return parse_bool(options[name])
    except ValueError as exc:
        raise ValueError("%s=: %s" % (name, exc)) from None
