"""What every source of ``nvsiem listen`` shares."""
import logging
import ssl
import threading
from typing import Dict
from urllib.parse import parse_qs, urlsplit

from nvparser import DeadLetter, Parser

from ..netaddr import parse_address
from .access import Gate

log = logging.getLogger("nvsiem.sources")


class Source:
    """One ``--listen`` URL: bound in ``start``, drained and closed in ``stop``.

    Subclasses receive bytes, parse them with a ``Parser`` of their own and
    hand the events to ``collector.accept`` with their ``label``.
    """

    #: Query options the source understands (anything else is a usage error);
    #: every network source also takes ``allow=`` (see ``access.AllowList``).
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
        known = self.options + (() if self.addr is None else ("allow",))
        unknown = set(self.query) - set(known)
        if unknown:
            raise ValueError("%s: unknown option(s) %s (known: %s)" % (
                self.label, ", ".join(sorted(unknown)), ", ".join(known) or "none"))
        self.gate = Gate(self.label, self.query.get("allow"), collector.metrics.refused)
        self.up = False
        self._stopping = threading.Event()
        self._threads = []

    def address(self):
        """(host, port) to bind."""
        return self.addr.host, self.addr.port

    def number_option(self, name: str, default: float, minimum: float = 0, whole: bool = False) -> float:
        """``?name=`` as a number of at least ``minimum``; ``default`` when absent."""
        text = self.query.get(name)
        if text is None:
            return default
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            value = None
        if value is None or not (minimum <= value < float("inf")):
            raise ValueError("%s: %s=%s: expected a %s of at least %s" % (
                self.label, name, text, "whole number" if whole else "number", minimum))
        return value

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
    """A server context from the source's ``cert=`` and ``key=`` files (PEM), and ``client_ca=`` if given."""
    query = source.query
    cert, key, client_ca = query.get("cert"), query.get("key"), query.get("client_ca")
    if not cert:
        raise ValueError("%s needs ?cert=FILE (PEM, chain included) and ?key=FILE" % source.label)
    if "client_cn" in query and not client_ca:
        raise ValueError("%s: client_cn= needs client_ca=FILE, the CA that signs the client certificates" % source.label)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl names neither file in its errors ("[Errno 2] No such file or directory"): say which one.
    for option, path in (("cert", cert), ("key", key), ("client_ca", client_ca)):
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
    if client_ca:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError("%s: client_ca=%s holds no CA certificate (PEM): %s" % (source.label, client_ca, exc)) from None
        # NeuVector presents no client certificate: only relays (rsyslog, syslog-ng, Fluentd) can use this.
        context.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: a sender that writes and closes without
    # reading them would make its kernel reset the connection, and the reset
    # discards records we have not read yet. Syslog senders do not resume sessions.
    context.num_tickets = 0
    return context


def client_names(source: Source):
    """The ``client_cn=`` allow-list (a set of names), or None when any certificate the CA signed will do."""
    names = source.query.get("client_cn")
    return None if names is None else {n.strip() for n in names.split(",") if n.strip()}


def unlisted_client(names, tls_socket: ssl.SSLSocket):
    """Why the client certificate on ``tls_socket`` is not on the ``names`` list; None when it is."""
    if names is None:
        return None
    cert = tls_socket.getpeercert() or {}
    presented = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    presented += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    if names.intersection(presented):
        return None
    return "client certificate names %s, none of them in client_cn=" % (", ".join(presented) or "nothing")
