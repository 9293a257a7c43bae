"""Network and file sources for ``nvsiem listen``, one per ``--listen`` URL."""
from urllib.parse import urlsplit

from .base import Source

_SOURCES = {
    "udp": "udp:UdpSource",
    "tcp": "stream:StreamSource",
    "tls": "stream:StreamSource",
    "webhook": "webhook:WebhookSource",
    "webhooks": "webhook:WebhookSource",
    "file": "tail:TailSource",
    "neuvector+https": "rest:RestSource",
}


def open_source(url: str, collector) -> Source:
    """The source for a ``--listen`` URL (not started yet)."""
    import importlib

    scheme = urlsplit(url).scheme
    if "://" not in url:
        raise ValueError("%s: a source is a URL with a scheme, e.g. tcp://%s or udp://%s (known: %s)"
                         % (url, url, url, ", ".join(_SOURCES)))
    if scheme not in _SOURCES:
        raise ValueError("unknown source %r in %s (known: %s)" % (scheme, url, ", ".join(_SOURCES)))
    module, _, name = _SOURCES[scheme].partition(":")
    return getattr(importlib.import_module("." + module, __name__), name)(url, collector)
