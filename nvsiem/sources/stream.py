"""``tcp://HOST:PORT`` and ``tls://HOST:PORT?cert=FILE&key=FILE``: syslog streams.

One thread serves the listener and every connection through a selector, so
an idle connection costs a socket and a parser, not a thread; memory is
bounded by ``max_connections`` (default 256) times ``max_frame``. Each
connection has its own ``Parser``; a read takes up to 1 MiB and is parsed
64 KiB at a time. After ``idle_flush`` seconds without data the parser
releases the line it holds back (it waits for a possible continuation
line). While the spool is full the thread stops reading, so TCP's own flow
control pushes back on the senders instead of anything being dropped.

Who gets in: peers outside ``allow=`` are closed before anything is read.
At ``max_connections`` the oldest connection that has not delivered a frame
yet makes room for the new one (closing it cannot lose a record: it sent
none); when every connection has delivered, the new one is closed. A TLS
handshake has 10 s. ``first_frame_timeout=SECONDS`` (off by default) closes
a connection that has sent no complete frame that long after opening. It is
off because NeuVector may dial its syslog server when the configuration
changes and write its first event hours later; closed in between, that
write succeeds locally, is reset, and the event is lost. A sender that has
delivered records is never closed for being quiet. ``tls://`` can require
client certificates (``client_ca=``, ``client_cn=``), for relays that
present them; NeuVector presents none.

On SIGTERM the listener closes first; each connection keeps being read
until the streams have been quiet for 50 ms (1 s at most); what was read
is spooled (past the quota if the spool is full: it cannot be read again,
and it is at most a second of input), then the connections close.
"""
import selectors
import socket
import ssl
import time
from typing import Dict

from nvparser import Skipped

from .base import Source, client_names, log, server_tls_context, unlisted_client

_RECV = 1 << 20
_SLICE = 64 << 10
_HANDSHAKE_SECONDS = 10.0
_TIMERS_EVERY = 0.05


class _Connection:
    __slots__ = ("sock", "peer", "host", "parser", "opened", "last_data", "held", "ended_with_lf",
                 "delivered", "handshaking")

    def __init__(self, sock, peer, parser, handshaking: bool) -> None:
        self.sock = sock
        self.host = peer[0]
        self.peer = "[%s]:%s" % peer[:2] if ":" in peer[0] else "%s:%s" % peer[:2]
        self.parser = parser
        self.opened = self.last_data = time.monotonic()
        self.held = False  # the parser may hold a line back, to flush after idle_flush
        self.ended_with_lf = True
        self.delivered = False  # a complete frame came: never closed for being quiet
        self.handshaking = handshaking


class StreamSource(Source):
    def __init__(self, url: str, collector) -> None:
        self.tls = url.startswith("tls:")
        self.options = ("max_connections", "first_frame_timeout") + (
            ("cert", "key", "client_ca", "client_cn") if self.tls else ())
        super().__init__(url, collector)
        self.max_connections = self.number_option("max_connections", 256, minimum=1, whole=True)
        self.first_frame_timeout = self.number_option("first_frame_timeout", 0.0)
        self.context = server_tls_context(self) if self.tls else None
        self.client_names = client_names(self) if self.tls else None
        self._connections: Dict[int, _Connection] = {}
        self._next_timers = 0.0
        self._accept_failed_logged = -60.0

    @property
    def connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        host, port = self.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self.up = True
        self.spawn(self._serve, "%s-%d" % (self.label.split(":")[0], self.port))

    # -- the loop ----------------------------------------------------------

    def _serve(self) -> None:
        wait = min(0.2, max(0.01, self.config.idle_flush / 2))
        try:
            while not self._stopping.is_set():
                self._dispatch(self._selector.select(wait))
                self._timers(time.monotonic())
            self._selector.unregister(self.listener)
            self.listener.close()
            self._drain()
        finally:
            for conn in list(self._connections.values()):
                self._close(conn)
            self._selector.close()

    def _dispatch(self, ready) -> None:
        for key, _ in ready:
            if key.data is None:
                self._accept()
                continue
            try:
                self._read(key.data)
            except Exception:  # one connection's trouble must not stop the others
                log.exception("%s: connection from %s failed", self.label, key.data.peer)
                self._close(key.data)

    def _drain(self) -> None:
        """At stop: read what the senders already sent until 50 ms of quiet (1 s at most)."""
        stop_by = time.monotonic() + 1.0
        while self._connections and time.monotonic() < stop_by:
            ready = self._selector.select(0.05)
            if not ready:
                break
            self._dispatch(ready)

    # -- connections -------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: log once a minute, let the others go on
                now = time.monotonic()
                if now - self._accept_failed_logged >= 60.0:
                    self._accept_failed_logged = now
                    log.error("%s: accept failed: %s", self.label, exc)
                time.sleep(0.05)
                return
            if not self.gate.admits(peer[0]):
                sock.close()
                continue
            if len(self._connections) >= self.max_connections and not self._make_room():
                self.gate.refuse(peer[0], "connection_limit", "%d connections open (max_connections), all of them "
                                 "delivering" % len(self._connections))
                sock.close()
                continue
            sock.setblocking(False)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = _Connection(sock, peer, self.parser(), handshaking=self.context is not None)
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            if not conn.handshaking:
                log.info("%s: connection from %s", self.label, conn.peer)

    def _make_room(self) -> bool:
        """Close the oldest connection that has delivered nothing; False if there is none."""
        silent = [c for c in self._connections.values() if not c.delivered]
        if not silent:
            return False
        oldest = min(silent, key=lambda c: c.opened)
        self.gate.refuse(oldest.host, "connection_limit", "closed %s, silent for %.0f s, to make room for a new "
                         "connection (max_connections=%d)" % (oldest.peer, time.monotonic() - oldest.opened,
                                                              self.max_connections))
        self._close(oldest)
        return True

    def _read(self, conn: _Connection) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        chunks, total, ended = [], 0, False
        while total < _RECV:
            try:
                data = conn.sock.recv(_RECV - total)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:  # reset, TLS error
                log.warning("%s: connection from %s broken: %s", self.label, conn.peer, exc)
                ended = True
                break
            if not data:
                ended = True
                break
            chunks.append(data)
            total += len(data)
            if self.context is None:
                break  # plain TCP: one recv per turn keeps connections fair; TLS returns one record per recv
        if chunks:
            self._feed(conn, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if ended:
            self._close(conn)

    def _handshake(self, conn: _Connection) -> bool:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return False
        except ssl.SSLWantWriteError:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return False
        except (OSError, ssl.SSLError) as exc:
            self.gate.refuse(conn.host, "tls_failed", "TLS handshake failed: %s" % exc)
            self._close(conn)
            return False
        conn.handshaking = False
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        why = unlisted_client(self.client_names, conn.sock)
        if why:
            self.gate.refuse(conn.host, "client_not_allowed", why)
            self._close(conn)
            return False
        log.info("%s: connection from %s", self.label, conn.peer)
        return True

    def _feed(self, conn: _Connection, data: bytes) -> None:
        self.received(len(data))
        # Parse and spool a slice at a time: ~60 records live at once
        # stay in the CPU cache from parsing to serialising (1 MiB
        # worth made both about 1.5x slower).
        feed = conn.parser.feed
        for start in range(0, len(data), _SLICE):
            self._spool(conn, feed(data[start:start + _SLICE]))
        conn.held, conn.ended_with_lf, conn.last_data = True, data.endswith(b"\n"), time.monotonic()

    def _spool(self, conn: _Connection, events: list) -> None:
        if events:
            if not conn.delivered:  # blank lines are not a frame: a sender of "\n"s stays silent
                conn.delivered = any(type(e) is not Skipped for e in events)
            self.spool(events, overflow=True)

    def _timers(self, now: float) -> None:
        if now < self._next_timers:
            return
        self._next_timers = now + _TIMERS_EVERY
        idle_flush = self.config.idle_flush
        for conn in list(self._connections.values()):
            age = now - conn.opened
            if conn.handshaking:
                if age > _HANDSHAKE_SECONDS:
                    self.gate.refuse(conn.host, "tls_failed", "no TLS handshake within %.0f s" % _HANDSHAKE_SECONDS)
                    self._close(conn)
            elif conn.held and now - conn.last_data >= idle_flush:
                self._spool(conn, conn.parser.flush())
                conn.held = False
            if self.first_frame_timeout and not conn.delivered and age > self.first_frame_timeout \
                    and conn.sock.fileno() in self._connections:
                self.gate.refuse(conn.host, "no_frame_in_time", "no complete frame within first_frame_timeout=%g s"
                                 % self.first_frame_timeout)
                self._close(conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if self._connections.pop(fd, None) is None:
            return
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            if not conn.handshaking:
                self.spool(self.finish(conn.parser, conn.ended_with_lf), overflow=True)
                log.info("%s: connection from %s closed", self.label, conn.peer)
        finally:
            conn.sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self.up = False
        super().stop()
