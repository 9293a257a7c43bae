"""``fluentd://`` URLs -> validated sink settings.

    fluentd://host:24224[,host2:24224]?tag_prefix=neuvector&shared_key_file=/path
        &shared_key_env=VAR&compress=gzip&ack_timeout=30&batch=1000
    fluentd+tls://host:24224?ca=/ca.pem&verify=true&cert=/c.pem&key=/k.pem&server_hostname=name
    fluentd+unix:///run/fluentd/forward.sock

The shared key comes from a file or an environment variable (``shared_key_file=``,
``shared_key_env=``, resolved by the collector's ``resolve_secrets``), so it
never sits in a command line; ``describe()`` masks it.
"""
import socket
from dataclasses import dataclass, field
from typing import Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from nvsiem.sinks.api import parse_bool, parse_size, resolve_secrets

DEFAULT_PORT = 24224
_SCHEMES = ("fluentd", "fluentd+tls", "fluentd+unix")


class ConfigError(ValueError):
    """The URL cannot work as written; the message says which part and why."""


@dataclass(frozen=True)
class Server:
    """One Fluentd endpoint: ``host`` is a hostname/IP, or ``unix:///path`` for a unix socket."""

    host: str
    port: int = 0

    def __str__(self) -> str:
        return self.host if self.host.startswith("unix://") else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ForwardSettings:
    servers: Tuple[Server, ...]
    tag_prefix: str = "neuvector"
    shared_key: Optional[bytes] = field(default=None, repr=False)
    self_hostname: str = field(default_factory=socket.gethostname)
    compress: bool = False
    ack_timeout: float = 30.0
    connect_timeout: float = 5.0
    batch: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    #: Seconds a failed server is passed over while another one works.
    retry_after: float = 10.0
    tls: bool = False
    ca: Optional[str] = None
    verify: bool = True
    cert: Optional[str] = None
    key: Optional[str] = None
    server_hostname: Optional[str] = None


def parse_url(url: str) -> ForwardSettings:
    try:
        # shared_key_file= / shared_key_env= -> shared_key=, the collector's way for every sink.
        parts = urlsplit(resolve_secrets(url))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"unsupported scheme {parts.scheme!r}: use one of {', '.join(_SCHEMES)}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    tls = parts.scheme == "fluentd+tls"
    if parts.scheme == "fluentd+unix":
        if not parts.path:
            raise ConfigError("fluentd+unix:// needs a socket path, e.g. fluentd+unix:///run/fluentd.sock")
        servers = (Server("unix://" + parts.path),)
    else:
        servers = tuple(_parse_server(item) for item in parts.netloc.split(","))

    tls_only = [k for k in ("ca", "verify", "cert", "key", "server_hostname") if k in query]
    if tls_only and not tls:
        raise ConfigError(f"{', '.join(tls_only)} only apply to fluentd+tls:// URLs")
    if bool(query.get("cert")) != bool(query.get("key")):
        raise ConfigError("cert= and key= go together (client certificate and its private key)")

    settings = ForwardSettings(
        servers=servers,
        tag_prefix=query.pop("tag_prefix", "neuvector").strip("."),
        shared_key=_shared_key(query),
        self_hostname=query.pop("self_hostname", None) or socket.gethostname(),
        compress=_compress(query.pop("compress", "")),
        ack_timeout=_option(query, "ack_timeout", 30.0, float),
        connect_timeout=_option(query, "connect_timeout", 5.0, float),
        batch=_option(query, "batch", 1000, int),
        max_bytes=_option(query, "max_bytes", 8 * 1024 * 1024, parse_size),
        retry_after=_option(query, "retry_after", 10.0, float),
        tls=tls,
        ca=query.pop("ca", None) or None,
        verify=_option(query, "verify", True, parse_bool),
        cert=query.pop("cert", None) or None,
        key=query.pop("key", None) or None,
        server_hostname=query.pop("server_hostname", None) or None,
    )
    if query:
        raise ConfigError(f"unknown fluentd URL option(s): {', '.join(sorted(query))}")
    return settings


def _parse_server(item: str) -> Server:
    item = item.strip()
    if not item:
        raise ConfigError("empty server in the fluentd URL (host:port[,host2:port])")
    if item.startswith("["):  # [v6::addr]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"no host in {item!r}")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ConfigError(f"bad port in {item!r}") from None
    if not 0 < number < 65536:
        raise ConfigError(f"port out of range in {item!r}")
    return Server(host, number)


def _shared_key(query: dict) -> Optional[bytes]:
    if "shared_key" not in query:
        return None
    # Byte for byte, as Fluentd takes its shared_key: a newline at the end of
    # the key's file or secret counts on both sides.
    key = query.pop("shared_key")
    if not key.strip():
        raise ConfigError("the shared key is empty")
    return key.encode("utf-8")


def _compress(value: str) -> bool:
    if value in ("", "none", "text"):
        return False
    if value == "gzip":
        return True
    raise ConfigError(f"compress={value!r}: the Forward protocol only knows gzip")


def _option(query: dict, name: str, default, kind):
    """``query[name]`` converted by ``kind`` (numbers must be > 0), else ``default``."""
    if name not in query:
        return default
    raw = query.pop(name)
    try:
        value = kind(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r}: {e}") from None
    if kind is not parse_bool and value <= 0:
        raise ConfigError(f"{name} must be > 0")
    return value
