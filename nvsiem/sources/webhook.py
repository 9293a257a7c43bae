"""``webhook://HOST:PORT`` (HTTP) and ``webhooks://HOST:PORT?cert=&key=`` (HTTPS).

NeuVector POSTs one event per request (JSON or key-value body, §7 of the
wire-format notes) with a 5 s client timeout, and counts only a 200 as
delivered; it retries a 500 up to three times and gives up on anything
else, a timeout included. So:

* 200 once the record is in the spool, or once an undecodable body is in
  the dead-letter file (retrying would not make it decodable);
* 500 when the spool cannot take it (quota reached for ``spool_wait``,
  1 s; write error), so NeuVector retries;
* 413 for a body over ``webhook_max_body``, 411 without a Content-Length,
  400 for a negative one, 405 for anything but POST.

``webhook://…?cert=&key=`` is the same as ``webhooks://``. Any path is
accepted, so the URL configured in NeuVector can carry a name
(``http://collector:8080/neuvector``), unless ``path_secret_file=FILE``
is given: then only a request whose last path segment is the secret in
FILE (``https://collector:8443/neuvector/<secret>``, the one credential
NeuVector's webhook can carry) is taken; any other gets 401. The
comparison takes constant time and the path is never logged.

Who gets in: a peer outside ``allow=`` is answered 403 before its request
is read (``webhooks://``: closed before the handshake); ``client_ca=``
requires a client certificate signed by that CA. Each connection has a
thread while it is open, at most ``max_connections`` (default 256) of
them: beyond that new connections are closed. A connection that sends no
request for 30 s is closed.
"""
import hmac
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nvparser import parse_webhook

from .base import Source, log, server_tls_context

_FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\nsender not in allow=\r\n"


class WebhookSource(Source):
    options = ("cert", "key", "client_ca", "path_secret_file", "max_connections")
    #: Seconds a request waits for room in a full spool before the 500.
    #: NeuVector's client times out after 5 s and does not retry a request
    #: that timed out (only an HTTP error status), so the 500 must reach it
    #: well within those 5 s, the time to read the body and write the
    #: spool included; a late answer loses the event.
    spool_wait = 1.0

    def __init__(self, url: str, collector) -> None:
        super().__init__(url, collector)
        https = url.startswith("webhooks:") or "cert" in self.query
        self.context = server_tls_context(self) if https else None
        self.max_connections = self.number_option("max_connections", 256, minimum=1, whole=True)
        self.secret = _read_secret(self)
        self.connections = 0
        self._connections_lock = threading.Lock()

    def start(self) -> None:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: NeuVector's Go client reuses connections
            timeout = 30  # seconds for a TLS handshake or a request to arrive

            def do_POST(self):
                if source.secret is not None and not self._has_secret():
                    source.gate.refuse(self.client_address[0], "bad_secret", "webhook request without the path secret")
                    self.close_connection = True
                    return self._reply(401, b"unauthorized\n")
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self.close_connection = True  # a body we did not read must not be taken for a request
                    return self._reply(411, b"Content-Length required\n")
                if length < 0:  # rfile.read(-1) would read until the client closes
                    self.close_connection = True
                    return self._reply(400, b"negative Content-Length\n")
                if length > source.config.webhook_max_body:
                    self.close_connection = True
                    return self._reply(413, b"body too large\n")
                body = self.rfile.read(length)
                source.received(len(body))
                event = parse_webhook(body, self.headers.get("Content-Type"))
                if source.collector.accept([event], source.label, timeout=source.spool_wait):
                    self._reply(200, b"ok\n")
                else:
                    self._reply(500, b"spool unavailable, retry\n")

            def _has_secret(self) -> bool:
                last = self.path.split("?", 1)[0].rstrip("/").rpartition("/")[2]
                return hmac.compare_digest(last.encode("utf-8", "surrogateescape"), source.secret)

            def not_post(self):
                self.close_connection = True  # its body, unread, must not be taken for a request
                self._reply(405, b"" if self.command == "HEAD" else b"POST NeuVector webhooks here\n")

            do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = not_post

            def _reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                if status == 405:
                    self.send_header("Allow", "POST")
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_request(self, code="-", size="-"):
                # Not the request line: with path_secret_file its path is the secret.
                log.debug("%s: %s %s %s", source.label, self.address_string(), self.command, code)

            def log_message(self, fmt, *args):
                message = fmt % args  # http.server quotes a bad request line in its errors
                if source.secret is not None:
                    message = message.replace(source.secret.decode("utf-8", "replace"), "<path secret>")
                log.debug("%s: %s %s", source.label, self.address_string(), message)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in self.address()[0] else socket.AF_INET

            def verify_request(server, request, client_address):
                if source.gate.admits(client_address[0]):
                    return True
                if source.context is None:  # plain HTTP: say why without reading the request
                    try:
                        request.settimeout(1.0)
                        request.sendall(_FORBIDDEN)
                    except OSError:
                        pass
                return False

            def process_request(server, request, client_address):
                with source._connections_lock:
                    full = source.connections >= source.max_connections
                    if not full:
                        source.connections += 1
                if full:
                    source.gate.refuse(client_address[0], "connection_limit",
                                       "%d connections open (max_connections)" % source.max_connections)
                    server.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(server, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    with source._connections_lock:
                        source.connections -= 1

            def get_request(server):
                conn, addr = server.socket.accept()
                if source.context is not None:
                    # Handshake in the request thread (do_handshake_on_connect=False): a slow client blocks no one.
                    conn = source.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                return conn, addr

            def handle_error(server, request, client_address):
                # socketserver prints a traceback to stderr; a client that left
                # before its reply (a timed-out sender, a scanner) is not news.
                exc = sys.exc_info()[1]
                if isinstance(exc, (ConnectionError, socket.timeout)):
                    log.debug("%s: %s went away: %s", source.label, client_address[0], exc)
                elif isinstance(exc, ssl.SSLError):  # as for tls:// sources: the reason, counted, no traceback
                    source.gate.refuse(client_address[0], "tls_failed", "TLS failed: %s" % exc)
                else:
                    log.error("%s: request from %s failed", source.label, client_address[0], exc_info=True)

        self.server = Server(self.address(), Handler)
        self.port = self.server.server_address[1]
        self.up = True
        self._serving = threading.Thread(target=self.server.serve_forever, args=(0.2,), name="webhook-%d" % self.port,
                                         daemon=True)
        self._serving.start()

    def stop(self) -> None:
        self.up = False
        self.server.shutdown()  # no new requests; the ones in progress finish their spool append
        self.server.server_close()
        self._serving.join(5.0)


def _read_secret(source: Source):
    """The path secret (bytes) from ``path_secret_file=``, or None when the source takes any path."""
    path = source.query.get("path_secret_file")
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise ValueError("%s: cannot read path_secret_file=%s: %s" % (source.label, path, exc.strerror)) from None
    if not secret or b"/" in secret or b"?" in secret:
        raise ValueError("%s: path_secret_file=%s must hold one path segment (no /, no ?), e.g. the output of "
                         "openssl rand -hex 32" % (source.label, path))
    return secret
