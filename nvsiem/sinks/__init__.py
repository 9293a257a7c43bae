"""Sinks by URL scheme, imported only when used.

``open_sink(url)`` builds the sink for a ``--to`` URL. Before the sink sees
the URL, the collector takes out its own options (``types=violation,threat``,
see ``split_collector_options``) and resolves secret indirections: a query
parameter ``token_file=/path`` or ``token_env=NAME`` (any secret-looking
name: token, key, secret, password) becomes ``token=<value>`` read from the
file or the environment, so secrets never sit in command lines or config
files. ``Sink.describe()`` masks them in logs and metrics.
"""
import hashlib
import importlib
import os
from typing import Dict, FrozenSet, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nvparser.schema import FIELDS

from .base import SECRET_WORDS, Sink, SinkError, redact_url

__all__ = ["SINKS", "Sink", "SinkError", "open_sink", "sink_class", "sink_id", "split_collector_options"]

SINKS: Dict[str, str] = {
    "file": "nvsiem.sinks.file:FileSink",
    "stdout": "nvsiem.sinks.stdout:StdoutSink",
    "fluentd": "nvsiem_fluentd.sink:FluentdSink",
    "fluentd+tls": "nvsiem_fluentd.sink:FluentdSink",
    "fluentd+unix": "nvsiem_fluentd.sink:FluentdSink",
    "splunk-hec": "nvsiem_splunk.hec:HecSink",
    "splunk-hec+http": "nvsiem_splunk.hec:HecSink",
}

def sink_class(scheme: str) -> type:
    try:
        target = SINKS[scheme]
    except KeyError:
        raise ValueError("unknown sink scheme %r (known: %s)" % (scheme, ", ".join(sorted(SINKS)))) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def split_collector_options(url: str) -> Tuple[str, Optional[FrozenSet[str]]]:
    """(the URL without the collector's own options, the notification types or None for all).

    A name in ``types`` that is not one of NeuVector's notification types
    (``FIELDS``: violation, threat, incident, event, activity, audit) is a
    ValueError: a misspelt type would otherwise send that sink nothing.
    """
    parts = urlsplit(url)
    query, types = [], None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "types":
            types = frozenset(t.strip() for t in value.split(",") if t.strip())
            unknown = types - set(FIELDS)
            if unknown:
                raise ValueError("%s: unknown notification type(s) %s in ?types= (known: %s)" % (
                    redact_url(url), ", ".join(sorted(unknown)), ", ".join(FIELDS)))
        else:
            query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/,:"))), types


def resolve_secrets(url: str) -> str:
    """Replace ``<secret>_file=PATH`` / ``<secret>_env=NAME`` by ``<secret>=value``."""
    parts = urlsplit(url)
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        base, _, via = key.rpartition("_")
        if via in ("file", "env") and any(w in base.lower() for w in SECRET_WORDS):
            if via == "file":
                try:
                    # Verbatim: each sink knows whether whitespace counts
                    # (a Fluentd shared key) or not (a HEC token).
                    with open(value, encoding="utf-8", newline="") as f:
                        value = f.read()
                except OSError as exc:
                    raise ValueError("cannot read %s for %s: %s" % (value, base, exc.strerror)) from None
            else:
                if value not in os.environ:
                    raise ValueError("environment variable %s (for %s) is not set" % (value, base))
                value = os.environ[value]
            key = base
        query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/,:")))


def sink_id(url: str) -> str:
    """A stable name for a sink's spool cursor: survives restarts and secret rotation."""
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:12]
    scheme = urlsplit(url).scheme.replace("+", "-")
    return "%s-%s" % (scheme, digest)


def open_sink(url: str) -> Sink:
    """The sink for a ``--to`` URL (collector options removed, secrets resolved)."""
    clean, _types = split_collector_options(url)
    cls = sink_class(urlsplit(clean).scheme)
    return cls(resolve_secrets(clean))
