"""Settings of ``nvsiem listen`` from flags, environment and a config file.

Each setting is looked up in that order: a command-line flag, then its
environment variable (``NVSIEM_<NAME>``, for Kubernetes), then the config
file (``--config FILE`` / ``NVSIEM_CONFIG``: JSON, or TOML on Python 3.11+
when the name ends in ``.toml``; keys are the setting names below), then the
default. List settings (``listen``, ``to``) take several values from an
environment variable separated by spaces or commas outside query strings
(``NVSIEM_TO="file:///a.jsonl splunk-hec://h:8088?token_file=/t"``).
"""
import argparse
import json
import math
import os
import re
from dataclasses import dataclass, fields
from typing import List, Optional, Tuple

from .logs import FORMATS, LEVELS
from .options import parse_bool, parse_size

def split_list(text: str) -> List[str]:
    """Split an environment value into URLs on spaces, or on commas followed by a scheme.

    A comma inside a URL's query (``types=violation,threat``) is kept.
    """
    return [u for u in re.split(r"\s+|,(?=\s*[a-z][a-z0-9+.-]*://)", text.strip()) if u]


@dataclass
class Setting:
    name: str
    default: object
    help: str
    kind: str = "str"  # str, list, size, float, int, bool
    #: Numbers: whether 0 is allowed (negative values never are; 0 seconds or bytes mostly makes no sense).
    zero: bool = False
    #: Words: the values allowed (case-insensitive, kept in lower case).
    choices: Tuple[str, ...] = ()


SETTINGS = (
    Setting("listen", ["tcp://0.0.0.0:10514", "udp://0.0.0.0:10514"],
            "source URL, repeatable: udp://, tcp://, tls://…?cert=&key=, webhook://, webhooks://…?cert=&key=, file:///…log", "list"),
    Setting("to", ["file://nvsiem-records.jsonl"],
            "sink URL, repeatable: file://PATH, stdout://, fluentd://, splunk-hec://…; ?types=violation,threat filters", "list"),
    Setting("spool", "nvsiem-spool", "spool directory (the state to keep on a volume)"),
    Setting("spool_quota", "1G", "most bytes the spool may hold; when reached, TCP and file input wait, UDP waits in "
            "raw files (up to the same size again, then drops, counted) and webhooks get 500", "size"),
    Setting("spool_segment", "16M", "spool segment file size", "size"),
    Setting("fsync_interval", 1.0, "seconds between spool fsyncs (0: fsync every batch)", "float", zero=True),
    Setting("metrics", "tcp://0.0.0.0:9090", "address for /metrics and /healthz (\"off\" disables)"),
    Setting("idle_flush", 0.5, "seconds of silence after which a stream's last held line is parsed", "float"),
    Setting("drain_timeout", 10.0, "seconds SIGTERM waits for sinks to deliver the backlog (the rest stays spooled)", "float",
            zero=True),
    Setting("retry_max", 30.0, "longest wait between retries of a failing sink, seconds", "float"),
    Setting("udp_rcvbuf", "8M", "SO_RCVBUF asked for UDP sockets (the kernel caps it at net.core.rmem_max)", "size"),
    Setting("max_frame", "64K", "longest frame accepted; longer ones are dead-lettered", "size"),
    Setting("webhook_max_body", "16M", "largest webhook request body", "size"),
    Setting("log_format", "json", "json or text", choices=FORMATS),
    Setting("log_level", "info", "debug, info, warning or error", choices=LEVELS),
)

_CONVERT = {
    "str": str,
    "list": lambda v: split_list(v) if isinstance(v, str) else list(v),
    "size": parse_size,
    "float": float,
    "int": int,
    "bool": parse_bool,
}


@dataclass
class Config:
    listen: List[str]
    to: List[str]
    spool: str
    spool_quota: int
    spool_segment: int
    fsync_interval: float
    metrics: str
    idle_flush: float
    drain_timeout: float
    retry_max: float
    udp_rcvbuf: int
    max_frame: int
    webhook_max_body: int
    log_format: str
    log_level: str


assert [f.name for f in fields(Config)] == [s.name for s in SETTINGS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (JSON, or TOML on Python 3.11+); env NVSIEM_CONFIG")
    for s in SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        env = "NVSIEM_" + s.name.upper()
        if s.kind == "list":
            parser.add_argument(flag, action="append", metavar="URL",
                                help="%s (env %s; default %s)" % (s.help, env, " ".join(s.default)))
        else:
            metavar = {"size": "SIZE", "float": "SECONDS"}.get(s.kind) or {
                "spool": "DIR", "metrics": "ADDRESS"}.get(s.name, s.name.upper().split("_")[-1])
            parser.add_argument(flag, metavar=metavar,
                                help="%s (env %s; default %s)" % (s.help, env, s.default))


def load_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise OSError("--config %s: %s" % (path, exc.strerror or exc)) from None
    try:
        if path.endswith(".toml"):
            import tomllib  # Python 3.11+
            values = tomllib.loads(data.decode())
        else:
            values = json.loads(data)
    except ValueError as exc:  # json's and tomllib's errors, and bad UTF-8
        raise ValueError("--config %s is not valid %s: %s" % (path, "TOML" if path.endswith(".toml") else "JSON",
                                                              exc)) from None
    if not isinstance(values, dict):
        raise ValueError("--config %s: settings must be an object of name: value" % path)
    unknown = set(values) - {s.name for s in SETTINGS}
    if unknown:
        raise ValueError("%s: unknown setting(s) %s" % (path, ", ".join(sorted(unknown))))
    return values


def resolve(args: Optional[argparse.Namespace] = None, environ=None) -> Config:
    """The effective configuration: flags, then environment, then file, then defaults."""
    environ = os.environ if environ is None else environ
    path = getattr(args, "config", None) or environ.get("NVSIEM_CONFIG")
    from_file = load_file(path) if path else {}
    values = {}
    for s in SETTINGS:
        value = getattr(args, s.name, None)
        if value is None:
            value = environ.get("NVSIEM_" + s.name.upper())
        if value is None:
            value = from_file.get(s.name, s.default)
        try:
            values[s.name] = check(s, _CONVERT[s.kind](value))
        except (TypeError, ValueError) as exc:
            raise ValueError("setting %s: %s" % (s.name, exc)) from None
    return Config(**values)


def check(s: Setting, value):
    """``value`` if it is one ``s`` allows (see ``Setting.zero`` and ``Setting.choices``), else ValueError."""
    if s.choices:
        word = str(value).strip().lower()
        if word not in s.choices:
            raise ValueError("%r is not one of %s" % (value, ", ".join(s.choices)))
        return word
    if s.kind in ("float", "int", "size"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("%r is not a number" % value)
        if value < 0 or (value == 0 and not s.zero):
            raise ValueError("must be %s, not %s" % ("0 or more" if s.zero else "more than 0",
                                                     "%g" % value if isinstance(value, float) else value))
    return value
