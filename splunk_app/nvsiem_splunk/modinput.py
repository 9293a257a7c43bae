"""What the app's modular inputs share: parser events -> splunkd's XML stream.

Runs inside Splunk from the app's ``lib/`` (splunklib, nvparser and this
package vendored there), under Splunk's Python 3.9 or 3.13, standard
library besides those.
"""
import asyncio
import re
import signal
import sys
import time
from typing import Callable, Dict, Optional

from nvparser import MAX_FRAME, DeadLetter, Record, event_time, json_dumps
from splunklib.modularinput import Argument, Event, EventWriter, Scheme, Script

from .records import DEADLETTER_SOURCETYPE, deadletter, event_host, sourcetype

# Characters XML 1.0 cannot carry, even as &#..; references. splunklib
# writes C0 controls as they are, which makes splunkd's parser drop the
# stream, so they must not reach it.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
DEADLETTER_LOG_EVERY = 60.0


def xml_safe_json(text: str) -> str:
    """JSON text that XML can carry, meaning unchanged.

    Such characters can only sit inside JSON strings (encoders escape C0
    controls already), where ``\\uXXXX`` stands for the same character: no
    data is lost.
    """
    if text.isascii() and text.isprintable():  # the common case, found in C without the regex
        return text
    return _NOT_XML.sub(lambda m: "\\u%04x" % ord(m.group()), text)


def xml_safe_text(text: str) -> str:
    """Plain text (a host, a path) with characters XML cannot carry replaced by U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    return _NOT_XML.sub("\ufffd", text)


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(text: str) -> str:
    return (_escape_text(text).replace('"', "&quot;")
            .replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#09;"))


def xml_event(event: Event) -> str:
    """``event`` in the XML that splunklib's ``Event.write_to`` writes, made without ElementTree."""
    if event.data is None:
        raise ValueError("Events must have at least the data field set to be written to XML.")
    parts = ['<event stanza="%s" unbroken="%d">' % (_escape_attribute(event.stanza), int(event.unbroken))
             if event.stanza is not None else '<event unbroken="%d">' % int(event.unbroken)]
    for tag, value in (("time", None if event.time is None else str(event.time)), ("source", event.source),
                       ("sourcetype", event.sourceType), ("index", event.index), ("host", event.host),
                       ("data", event.data)):
        if value:
            parts.append("<%s>%s</%s>" % (tag, _escape_text(value), tag))
        elif value is not None:
            parts.append("<%s />" % tag)
    if event.done:
        parts.append("<done />")
    parts.append("</event>")
    # ASCII, other characters as references, as splunklib writes it: whatever
    # encoding Splunk's Python gives stdout (ASCII under a C locale), it can carry it.
    return "".join(parts).encode("ascii", "xmlcharrefreplace").decode("ascii")


class StreamWriter(EventWriter):
    """splunklib's EventWriter, about 4x cheaper per event.

    splunklib builds an ElementTree for each event, serialises it and
    flushes stdout: 40 µs an event, most of a modular input's CPU. This
    writes the same XML with string escapes (``xml_event``; the tests hold
    it to splunklib's own) and flushes once per batch (``flush``).
    """

    def write_event(self, event: Event) -> None:
        if not self.header_written:
            self._out.write("<stream>")
            self.header_written = True
        self._out.write(xml_event(event))

    def flush(self) -> None:
        self._out.flush()


class Emitter:
    """Writes the parser's events for one stanza as Splunk events.

    A Record becomes its JSON with the sourcetype of its notification type
    and ``_time`` from ``reported_timestamp``; a DeadLetter becomes a
    ``neuvector:deadletter`` event holding the raw bytes and the reason;
    a Skipped (blank line, controller log line) is only counted.
    """

    def __init__(self, writer: StreamWriter, stanza: str):
        self.writer = writer
        self.stanza = stanza
        self.counts: Dict[str, int] = {"records": 0, "dead_letters": 0, "skipped": 0}
        self._dead_since_log = 0
        self._last_log = time.monotonic()

    def summary(self) -> str:
        """What the stanza wrote, for its last log line: "1 record, 0 dead letters, 2 skipped frames"."""
        return ", ".join(counted(self.counts[key], noun) for key, noun in (
            ("records", "record"), ("dead_letters", "dead letter"), ("skipped", "skipped frame")))

    def write(self, events, source: Optional[str] = None, host: Optional[str] = None) -> None:
        """Write ``events`` and flush them to splunkd: a checkpoint saved after this call never runs ahead."""
        for event in events:
            self._write(event, source, host)
        self.writer.flush()

    def _write(self, event, source: Optional[str], host: Optional[str]) -> None:
        if isinstance(event, Record):
            data, st = event.data, sourcetype(event.data)
            when, host = event_time(data), event_host(data) or host
            self.counts["records"] += 1
        elif isinstance(event, DeadLetter):
            data, st, when = deadletter(event.raw, event.reason, event.offset), DEADLETTER_SOURCETYPE, None
            self.counts["dead_letters"] += 1
            self._dead_since_log += 1
            if self._dead_since_log == 1:
                self.writer.log(EventWriter.WARN, "%s: dead letter from %s at offset %d: %s (indexed as %s)"
                                % (self.stanza, source or host or "?", event.offset, event.reason, st))
        else:
            self.counts["skipped"] += 1
            return
        text = json_dumps(data).decode("utf-8", "surrogatepass")
        self.writer.write_event(Event(
            data=xml_safe_json(text), stanza=self.stanza, sourcetype=st,
            time=None if when is None else "%.3f" % when,
            source=None if source is None else xml_safe_text(source),
            host=None if host is None else xml_safe_text(host)))
        self._maybe_log_dead_letters()

    def _maybe_log_dead_letters(self) -> None:
        """One WARN line a minute while dead letters keep coming, not one per frame."""
        now = time.monotonic()
        if now - self._last_log >= DEADLETTER_LOG_EVERY:
            if self._dead_since_log > 1:
                self.writer.log(EventWriter.WARN, "%s: %d more dead letters in the last %ds (indexed as %s)"
                                % (self.stanza, self._dead_since_log - 1, now - self._last_log,
                                   DEADLETTER_SOURCETYPE))
            self._dead_since_log = 0
            self._last_log = now


def counted(n: int, noun: str) -> str:
    """"1 record", "5,000 records"."""
    return "%s %s%s" % (format(n, ","), noun, "" if n == 1 else "s")


def run_until_stopped(main: Callable[[asyncio.Event], "asyncio.Future"], writer: EventWriter) -> None:
    """Run ``main(stop)`` on an event loop; ``stop`` is set when splunkd sends SIGTERM (or SIGINT)."""

    async def runner():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:   # Windows: splunkd ends the process outright
                pass
        loop.set_exception_handler(
            lambda _loop, ctx: writer.log(EventWriter.WARN, "%s%s" % (
                ctx.get("message"), ": %r" % ctx["exception"] if ctx.get("exception") else "")))
        await main(stop)

    asyncio.run(runner())


def int_param(params: dict, name: str, default: Optional[int], low: int, high: int) -> int:
    """An integer stanza parameter, with the message Splunk shows when it is wrong."""
    raw = params.get(name)
    if raw in (None, ""):
        if default is None:
            raise ValueError("%s is required" % name)
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError("%s must be a whole number, not %r" % (name, raw)) from None
    if not low <= value <= high:
        raise ValueError("%s must be between %d and %d, not %d" % (name, low, high, value))
    return value


def framing_param(params: dict) -> str:
    framing = params.get("framing") or "auto"
    if framing not in ("auto", "lf", "octet-counting"):
        raise ValueError("framing must be auto, lf or octet-counting, not %r" % framing)
    return framing


FRAMING_ARGUMENTS = (
    Argument("framing", title="Framing",
             description="auto (LF-terminated lines, RFC 6587 octet counting detected), lf or octet-counting",
             required_on_create=False),
    Argument("max_frame", title="Largest frame (bytes)",
             description="Longer frames are indexed as neuvector:deadletter in pieces (default %d)" % MAX_FRAME,
             data_type=Argument.data_type_number, required_on_create=False),
)


class NeuVectorScript(Script):
    """A modular input of the app: one process per stanza, parameters checked in one place.

    Subclasses give ``title``, ``description``, ``arguments``, ``settings``
    (parameters -> configuration, raising ValueError with the message Splunk
    shows) and ``serve``. ``--validate-arguments`` and streaming both go
    through ``settings``, so what Splunk accepts is what the input runs with.
    """

    title = ""
    description = ""
    arguments: tuple = ()

    def run(self, args):
        return self.run_script(args, StreamWriter(), sys.stdin)

    def get_scheme(self):
        scheme = Scheme(self.title)
        scheme.description = self.description
        scheme.use_external_validation = True
        scheme.use_single_instance = False
        for arg in self.arguments + FRAMING_ARGUMENTS:
            scheme.add_argument(arg)
        return scheme

    def settings(self, params: dict) -> dict:
        return {"framing": framing_param(params),
                "max_frame": int_param(params, "max_frame", MAX_FRAME, 1024, 16 << 20)}

    def validate_input(self, definition):
        self.settings(definition.parameters)

    def stream_events(self, inputs, ew: EventWriter):
        for stanza, params in inputs.inputs.items():   # one stanza per process (not single-instance)
            config = self.settings(params)
            emitter = Emitter(ew, stanza)
            run_until_stopped(lambda stop: self.serve(stanza, config, emitter, inputs.metadata, stop), ew)

    async def serve(self, stanza: str, config: dict, emitter: Emitter, metadata: dict,
                    stop: asyncio.Event) -> None:
        """Run the input until ``stop`` is set."""
        raise NotImplementedError
