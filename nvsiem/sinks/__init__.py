"""The sink registry: a ``--to`` URL's scheme names the class that serves it.

The built-in ``file://`` and ``stdout://`` sinks are here; every other sink
is a plugin found through the ``nvsiem.sinks`` entry point group (name: the
URL scheme, value: ``module:Class``), the pack's own Fluentd and Splunk HEC
sinks as any third party's. A plugin's module is imported only when a URL
names its scheme. What a sink implements is in ``nvsiem.sinks.api``.

``open_sink(url)`` builds the sink for a ``--to`` URL. Before the sink sees
the URL, the collector takes out its own options (``types=violation,threat``
and ``name=``, see ``split_collector_options``) and resolves secret indirections: a query
parameter ``token_file=/path`` or ``token_env=NAME`` (any secret-looking
name: token, key, secret, password) becomes ``token=<value>`` read from the
file or the environment, so secrets never sit in command lines or config
files. ``Sink.describe()`` masks them in logs and metrics.
"""
import hashlib
import importlib
import re
from importlib import metadata
from typing import Dict, FrozenSet, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from nvparser.schema import FIELDS

from ..options import rebuild_url, redact_url, resolve_secrets
from .api import Sink

__all__ = ["ENTRY_POINT_GROUP", "SINKS", "open_sink", "sink_class", "sink_id", "sink_name", "split_collector_options"]

ENTRY_POINT_GROUP = "nvsiem.sinks"
_BUILT_IN = {
    "file": "nvsiem.sinks.file:FileSink",
    "stdout": "nvsiem.sinks.stdout:StdoutSink",
}


def _plugins() -> Tuple[Dict[str, str], Dict[str, str]]:
    """(scheme -> ``module:Class``, scheme -> why it is ambiguous) for the installed ``nvsiem.sinks`` entry points."""
    found = metadata.entry_points()
    group = found.select(group=ENTRY_POINT_GROUP) if hasattr(found, "select") else found.get(ENTRY_POINT_GROUP, ())
    plugins: Dict[str, str] = {}
    ambiguous: Dict[str, str] = {}
    for entry in group:  # one distribution seen twice on sys.path is listed twice, with the same value
        if plugins.setdefault(entry.name, entry.value) != entry.value:
            ambiguous[entry.name] = "two installed packages claim the sink scheme %r: %s and %s" % (
                entry.name, plugins[entry.name], entry.value)
    return plugins, ambiguous


_PLUGINS, _AMBIGUOUS = _plugins()
#: Every sink scheme known to this process: the built-ins win over a plugin of the same name.
SINKS: Dict[str, str] = {**_PLUGINS, **_BUILT_IN}


def sink_class(scheme: str) -> type:
    if scheme in _AMBIGUOUS and scheme not in _BUILT_IN:
        raise ValueError(_AMBIGUOUS[scheme] + ": uninstall one")
    try:
        target = SINKS[scheme]
    except KeyError:
        raise ValueError("unknown sink scheme %r (known: %s)" % (scheme, ", ".join(sorted(SINKS)))) from None
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise ValueError("sink scheme %r names %s, which is not an nvsiem.sinks.api.Sink" % (scheme, target))
    return cls


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def split_collector_options(url: str) -> Tuple[str, Optional[FrozenSet[str]]]:
    """(the URL without the collector's own options, the notification types or None for all).

    ``name=`` (read by ``sink_id``) names the sink's cursor; it is taken out too.

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
        elif key != "name":
            query.append((key, value))
    return rebuild_url(url, query=urlencode(query, safe="/,:")), types


def sink_name(url: str) -> Optional[str]:
    """The ``name=`` a ``--to`` URL gives its sink, or None."""
    names = [value for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True) if key == "name"]
    if not names:
        return None
    if len(names) > 1 or not _NAME.match(names[0]):
        raise ValueError("%s: name= must be given once, 1-64 letters, digits, '.', '_' or '-' (e.g. name=splunk-main)"
                         % redact_url(url))
    return names[0]


def sink_id(url: str) -> str:
    """A stable name for a sink's spool cursor: survives restarts and secret rotation.

    With ``name=`` it is that name, so the sink keeps its place when its URL
    changes (a new host, port or option); without, it is derived from the
    URL (secrets left out), and a changed URL is a new sink.
    """
    name = sink_name(url)
    if name is not None:
        return name
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:12]
    scheme = urlsplit(url).scheme.replace("+", "-")
    return "%s-%s" % (scheme, digest)


def open_sink(url: str) -> Sink:
    """The sink for a ``--to`` URL (collector options removed, secrets resolved)."""
    clean, _types = split_collector_options(url)
    scheme = urlsplit(clean).scheme
    if not scheme or clean == scheme + ":":  # a plugin may take scheme:opaque URLs; these say nothing at all
        raise ValueError("%r is not a sink URL: give scheme://, e.g. %s://HOST:PORT or file:///var/log/nv.jsonl"
                         % (url.split("?", 1)[0], scheme or "splunk-hec"))
    cls = sink_class(scheme)
    try:
        return cls(resolve_secrets(clean))
    except (OSError, ValueError):
        raise
    except Exception as exc:  # a plugin's own bug: still one clear line, not a traceback
        raise ValueError("%s: the sink failed to start: %s: %s" % (redact_url(url), type(exc).__name__, exc)) from exc
