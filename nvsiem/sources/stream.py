"""``tcp://HOST:PORT`` and ``tls://HOST:PORT?cert=FILE&key=FILE``: syslog streams.

One thread per connection (NeuVector keeps one long connection per lead
controller; relays may open many) reads up to 1 MiB per ``recv`` into its
own ``Parser``, 64 KiB at a time. After ``idle_flush`` seconds without
data the parser releases the line it holds back (it waits for a possible
continuation line). While the spool is full the thread stops reading, so TCP's own flow
control pushes back on the sender instead of anything being dropped.

On SIGTERM the listener closes first; each connection keeps reading what
the sender already sent until the stream has been quiet for 50 ms (1 s at
most), spools it (past the quota if the spool is full: it cannot be read
again, and it is at most a second of input) and closes. The TLS handshake runs in the connection's
thread with a 10 s limit, so a slow client cannot hold up the others.
"""
import socket
import ssl
import time

from .base import Source, log, server_tls_context

_RECV = 1 << 20
_SLICE = 64 << 10


class StreamSource(Source):
    def __init__(self, url: str, collector) -> None:
        self.tls = url.startswith("tls:")
        self.options = ("cert", "key") if self.tls else ()
        super().__init__(url, collector)
        self.context = server_tls_context(self) if self.tls else None

    def start(self) -> None:
        host, port = self.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.spawn(self._accept_loop, "%s-accept-%d" % (self.label.split(":")[0], self.port))

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    log.error("%s: accept failed: %s", self.label, exc)
                    time.sleep(0.1)
                continue
            self._threads = [t for t in self._threads if t.is_alive()]
            self.spawn(self._serve, "conn-%s:%s" % peer[:2], conn, peer)

    def _serve(self, conn: socket.socket, peer) -> None:
        peer = "%s:%s" % peer[:2]
        if self.context is not None:
            try:
                conn.settimeout(10.0)
                conn = self.context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.warning("%s: TLS handshake with %s failed: %s", self.label, peer, exc)
                conn.close()
                return
        log.info("%s: connection from %s", self.label, peer)
        parser, held, ended_with_lf = self.parser(), False, True
        conn.settimeout(self.config.idle_flush)
        stop_by = None
        try:
            while True:
                if stop_by is None and self._stopping.is_set():
                    conn.settimeout(0.05)
                    stop_by = time.monotonic() + 1.0
                if stop_by is not None and time.monotonic() > stop_by:
                    break
                try:
                    data = conn.recv(_RECV)
                except socket.timeout:
                    if stop_by is not None:
                        break
                    if held:
                        self.spool(parser.flush(), overflow=True)
                        held = False
                    continue
                except OSError as exc:  # reset, TLS error
                    log.warning("%s: connection from %s broken: %s", self.label, peer, exc)
                    break
                if not data:
                    break
                self.received(len(data))
                # Parse and spool a slice at a time: ~60 records live at once
                # stay in the CPU cache from parsing to serialising (1 MiB
                # worth made both about 1.5x slower).
                for start in range(0, len(data), _SLICE):
                    self.spool(parser.feed(data[start:start + _SLICE]), overflow=True)
                held, ended_with_lf = True, data.endswith(b"\n")
        finally:
            self.spool(self.finish(parser, ended_with_lf), overflow=True)
            conn.close()
            log.info("%s: connection from %s closed", self.label, peer)

    def stop(self) -> None:
        self._stopping.set()
        self.up = False
        self.listener.close()
        super().stop()
