"""``SyslogSink``: records to a syslog receiver as RFC 5424 messages (CEF, LEEF or JSON).

What syslog can confirm, and so what ``send`` returning means:

* TCP and TLS: syslog has no acknowledgement. ``send`` returns once the
  batch was written (``sendall`` returned) and, on Linux, once the
  receiving host's TCP stack acknowledged every byte (the socket's send
  queue, ``SIOCOUTQ``, is empty): the bytes left this machine and reached
  the receiver's kernel. That is not receipt by the receiver program: what
  sits unread in its socket buffer when it stops or crashes is lost with
  the connection. So a connection that broke (a write failed, or before a
  batch the receiver is seen to have closed or reset it) is followed, on the
  new connection, by the last ``resend`` bytes (1 MiB by default) written on
  the old one, then the batch: those records may arrive twice, none of them
  is lost unless more than ``resend`` bytes were unread.
* UDP: one datagram per record, nothing confirmed; a receiver that is down,
  a full buffer or a lost packet loses records silently. A record larger
  than a datagram can carry (64 KiB) is logged and dropped.
"""
import array
import errno
import logging
import select
import socket
import ssl
import time
from collections import deque
from typing import Deque, List, Optional, Sequence

from nvparser import json_dumps

from nvsiem.sinks.api import Sink, SinkError, decode_record, tls_client_context

from .cef import CefBody
from .config import Settings, parse_url
from .leef import LeefBody
from .native import NativeMessages, native_built
from .rfc5424 import HeaderWriter

try:
    import fcntl
    import termios
    _OUTQ = termios.TIOCOUTQ  # SIOCOUTQ on a TCP socket: bytes not yet acknowledged by the peer
except (ImportError, AttributeError):
    _OUTQ = None

log = logging.getLogger(__name__)


class SyslogSink(Sink):
    # Each batch costs a cursor save and a wait for the receiver's TCP to acknowledge: fewer, larger ones.
    max_batch = 5000

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settings = parse_url(url)
        self._message = MessageWriter(self.settings)
        if self.settings.transport == "udp":
            self._transport = DatagramTransport(self.settings)
        else:
            self._transport = StreamTransport(self.settings, _ssl_context(self.settings))

    def send(self, batch: Sequence[bytes]) -> None:
        if not batch:
            return
        messages = self._message.batch(batch)
        try:
            self._transport.deliver(messages)
        except OSError as exc:  # socket errors, timeouts and TLS errors alike
            raise SinkError("%s: %s" % (self.settings.address, _explain(exc)),
                            permanent=isinstance(exc, ssl.SSLCertVerificationError)) from exc

    def close(self) -> None:
        self._transport.close()


class MessageWriter:
    """Spooled records (JSON bytes) -> syslog messages: framed for TCP and TLS, one datagram each for UDP."""

    def __init__(self, settings: Settings) -> None:
        self._header = HeaderWriter(settings.facility, settings.app_name)
        writers = {"cef": CefBody, "leef": LeefBody}
        body = writers[settings.format](settings.product, settings.product_version) \
            if settings.format in writers else None
        self._body = body.body if body is not None else None
        framing = None if settings.transport == "udp" else settings.framing
        self._frame = {None: list, "octet-counting": _octet_counted, "lf": _lf_terminated}[framing]
        self._native = NativeMessages(self._header, body, settings.format == "leef", framing) \
            if native_built() else None

    def batch(self, items: Sequence[bytes]) -> List[bytes]:
        """The messages of a batch, as the transport sends them (the C path, where it takes them, in one call)."""
        if self._native is None:
            return self._frame([self(item) for item in items])
        messages, missed = self._native.batch(items)
        if missed:
            for i, message in zip(missed, self._frame([self(items[i]) for i in missed])):
                messages[i] = message
        return messages

    def __call__(self, item: bytes) -> bytes:
        """The message of one record, unframed, written the Python way: the reference the C path is held to."""
        record = decode_record(item)
        # Not a JSON object as spooled: written as decode_record made it, which shows the item as its message.
        if record.get("notification") == "unparsed" and record.get("message") == bytes(item).decode("utf-8", "replace"):
            item = json_dumps(record)
        header = self._header.header(record)
        if self._body is None:
            return header.encode("utf-8") + bytes(item)
        # JSON writes the control characters pairs.py marks with as \u0000..., so their absence is one test.
        return (header + self._body(record, b"\\u000" not in item)).encode("utf-8", "replace")


class StreamTransport:
    """One TCP or TLS connection, opened on first use and again after it broke."""

    def __init__(self, settings: Settings, context: Optional[ssl.SSLContext]) -> None:
        self._settings = settings
        self._context = context
        self._sock: Optional[socket.socket] = None
        # The last framed messages written, at most ``resend`` bytes: written again after a break.
        self._recent: Deque[bytes] = deque()
        self._recent_bytes = 0

    def deliver(self, framed: List[bytes]) -> None:
        if self._sock is not None and _peer_closed(self._sock, self._settings.timeout):
            log.warning("%s closed or reset the connection", self._settings.address)
            self.close()
        if self._sock is None:
            self._connect()
            if self._recent:
                log.warning("%s: writing again the last %d messages (%d bytes) sent on the previous connection, "
                            "which may not all have been read", self._settings.address, len(self._recent),
                            self._recent_bytes)
                self._write(b"".join(self._recent))
        self._write(b"".join(framed))
        self._remember(framed)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> None:
        settings = self._settings
        sock = socket.create_connection((settings.host, settings.port), timeout=settings.timeout)
        try:
            # A batch ends in a small segment; without this it waits for the previous one's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=settings.server_hostname or settings.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
            self._await_acknowledged()
            # A receiver that refused us (a TLS 1.3 server rejects a client certificate after our side of
            # the handshake is done) or closed meanwhile has said so by now: the batch is not confirmed.
            if _peer_closed(self._sock, self._settings.timeout):
                raise ConnectionResetError("the receiver closed the connection while the batch was written")
        except BaseException:
            self.close()
            raise

    def _await_acknowledged(self) -> None:
        """Until the peer's TCP has acknowledged every byte written (Linux), within ``timeout``."""
        if _OUTQ is None:
            return
        unacknowledged = array.array("i", [0])
        deadline = time.monotonic() + self._settings.timeout
        pause = 0.0002
        while True:
            fcntl.ioctl(self._sock.fileno(), _OUTQ, unacknowledged, True)
            if unacknowledged[0] == 0:
                return
            # A reset connection keeps its unacknowledged bytes queued: waiting would only run out the clock.
            if _peer_closed(self._sock, self._settings.timeout):
                raise ConnectionResetError("the receiver closed the connection before it acknowledged %d bytes"
                                           % unacknowledged[0])
            if time.monotonic() > deadline:
                raise socket.timeout("%d bytes written were not acknowledged within %gs" % (
                    unacknowledged[0], self._settings.timeout))
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _remember(self, framed: List[bytes]) -> None:
        limit = self._settings.resend
        self._recent.extend(framed)
        self._recent_bytes += sum(map(len, framed))
        while self._recent and self._recent_bytes > limit:
            self._recent_bytes -= len(self._recent.popleft())


class DatagramTransport:
    """One datagram per message, sent and forgotten."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sock: Optional[socket.socket] = None
        self._address = None

    def deliver(self, messages: Sequence[bytes]) -> None:
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self._settings.host, self._settings.port, type=socket.SOCK_DGRAM)[0]
            self._sock, self._address = socket.socket(family, kind, proto), address
        # Not connected: Linux then reports no ICMP errors, so no send fails for an earlier datagram.
        sendto, address = self._sock.sendto, self._address
        for message in messages:
            try:
                sendto(message, address)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    self.close()
                    raise
                log.warning("%s: a message of %d bytes is larger than a UDP datagram can carry: dropped "
                            "(syslog+tcp:// or syslog+tls:// carry any size)", self._settings.address, len(message))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _octet_counted(messages: Sequence[bytes]) -> List[bytes]:
    """RFC 6587 octet counting: ``LEN SP MSG``."""
    return list(map(b"%d %s".__mod__, zip(map(len, messages), messages)))


def _lf_terminated(messages: Sequence[bytes]) -> List[bytes]:
    """RFC 6587 non-transparent framing; no format here puts a line feed inside a message."""
    return list(map(b"%s\n".__mod__, messages))


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the receiver closed or reset the connection: a syslog receiver never writes, so anything to
    read is the end of the stream, an error, or TLS housekeeping (session tickets), which is read and dropped."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0) and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        return False
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _ssl_context(settings: Settings) -> Optional[ssl.SSLContext]:
    if settings.transport != "tls":
        return None
    try:
        return tls_client_context(settings.ca, settings.cert, settings.key, settings.verify)
    except ValueError as exc:
        raise ValueError("syslog+tls://%s: %s" % (settings.address, exc)) from None


def _explain(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return ("TLS certificate verification failed (%s): set ca= to the CA that signed the receiver's "
                "certificate, or server_hostname= to a name it holds" % error.verify_message)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.timeout):
        return "timed out (%s)" % error if str(error) else "timed out"
    return str(error) or type(error).__name__
