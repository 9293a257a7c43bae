"""What every source of ``nvsiem listen`` shares."""
import logging
import ssl
import threading
from typing import Dict
from urllib.parse import parse_qs, urlsplit

from nvparser import DeadLetter, Parser

from ..netaddr import parse_address

log = logging.getLogger("nvsiem.sources")


class Source:
    """One ``--listen`` URL: bound in ``start``, drained and closed in ``stop``.

    Subclasses receive bytes, parse them with a ``Parser`` of their own and
    hand the events to ``collector.accept`` with their ``label``.
    """

    #: Query options the source understands (anything else is a usage error).
    options = ()

    def __init__(self, url: str, collector) -> None:
        self.url = url
        parts = urlsplit(url)
        self.label = "%s://%s%s" % (parts.scheme, parts.netloc, parts.path)  # options (cert paths) left out
        self.collector = collector
        self.config = collector.config
        if parts.scheme == "file":
            self.addr = None
            self.query: Dict[str, str] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        else:
            self.addr = parse_address(url, schemes=(parts.scheme,))
            self.query = self.addr.query
        unknown = set(self.query) - set(self.options)
        if unknown:
            raise ValueError("%s: unknown option(s) %s (known: %s)" % (
                self.label, ", ".join(sorted(unknown)), ", ".join(self.options) or "none"))
        self.up = False
        self._stopping = threading.Event()
        self._threads = []

    def address(self):
        """(host, port) to bind."""
        return self.addr.host, self.addr.port

    def parser(self) -> Parser:
        return Parser(max_frame=self.config.max_frame)

    def received(self, nbytes: int) -> None:
        self.collector.metrics.received_bytes.labels(self.label).inc(nbytes)

    def finish(self, parser: Parser, ended_with_lf: bool) -> list:
        """The events still held by ``parser`` at the end of a stream.

        NeuVector ends every frame with LF, so a stream that stops without
        one was cut mid-frame (the sender died, or we stopped reading): that
        last piece is a dead letter, not a record with fields missing.
        """
        events = parser.close()
        if events and not ended_with_lf:
            cut = events[-1]
            events[-1] = DeadLetter(cut.raw, "stream ended in the middle of this frame (no LF): truncated", cut.offset)
        return events

    def spool(self, events, overflow: bool = False) -> bool:
        """Spool events from a stream, waiting while the spool is full; False if refused (we are stopping).

        Not reading while the spool is full is the back-pressure: the
        sender's writes block (TCP) or the file stays unread (tail). Input
        that can be read again (a file, raw UDP) is refused at stop and
        read on the next start; ``overflow`` input (already taken from a
        socket) is spooled past the quota instead.
        """
        return not events or self.collector.accept(events, self.label, timeout=None, overflow=overflow)

    def spawn(self, target, name: str, *args) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(target, name) + args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _guard(self, target, name, *args) -> None:
        try:
            target(*args)
        except Exception:
            log.exception("%s: %s stopped by an unexpected error", self.label, name)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop receiving, parse and spool what is pending, join the threads."""
        self._stopping.set()
        self.up = False
        for thread in list(self._threads):
            thread.join(10.0)


def server_tls_context(source: Source) -> ssl.SSLContext:
    """A server context from the source's ``cert=`` and ``key=`` files (PEM)."""
    cert, key = source.query.get("cert"), source.query.get("key")
    if not cert:
        raise ValueError("%s needs ?cert=FILE (PEM, chain included) and ?key=FILE" % source.label)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl names neither file in its errors ("[Errno 2] No such file or directory"): say which one.
    for option, path in (("cert", cert), ("key", key)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError("%s: cannot read %s=%s: %s" % (source.label, option, path, exc.strerror)) from None
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError("%s: cannot load cert=%s%s: %s" % (
            source.label, cert, " key=%s" % key if key else "", exc)) from None
    # No TLS 1.3 session tickets: a sender that writes and closes without
    # reading them would make its kernel reset the connection, and the reset
    # discards records we have not read yet. Syslog senders do not resume sessions.
    context.num_tickets = 0
    return context
