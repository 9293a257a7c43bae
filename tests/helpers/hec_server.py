"""A Splunk HTTP Event Collector for tests, written from the documented protocol.

What it implements (splunk-notes §4):
* ``POST /services/collector[/event[/1.0]]``: token auth (``Authorization:
  Splunk <token>``), optional gzip body, a batch of concatenated JSON
  objects, each needing a non-blank ``event`` and an allowed ``index``; the
  first bad one is reported with ``invalid-event-number`` and the ones
  before it are accepted.
* Indexer acknowledgement for tokens with ``ack``: a channel
  (``X-Splunk-Request-Channel`` or ``?channel=``, a GUID) is required; each
  accepted request gets the next ackId of its channel, counting from 0.
  Events of an acknowledged request are indexed when ``/services/collector/ack``
  is asked about it, which then answers true exactly once.
* ``GET /services/collector/health``.

Faults a test can turn on: ``busy`` (the next N event posts get 503 code 9),
``drop_acks`` (the next N acknowledged requests are lost before indexing:
their ackId never turns true), ``lose_acks`` (a share of acknowledged
requests, chosen by a seeded generator, is indexed but its ackId never turns
true: the indexer kept the data and lost the ack, so a client that sends it
again makes duplicates; ``lose_requests`` names such requests by their
number, counting acknowledged requests from 0), ``hold_acks`` (indexing is slow: every ack
query answers false for now), ``ack_delay`` (seconds from a request to
its ackId turning true: a real indexer's latency), ``reject`` (a predicate marking events the
server refuses with code 6), ``restart()`` (channels and pending acks
are forgotten, as when splunkd restarts: ackIds count from 0 again; the
unconfirmed events are lost, or with ``flush=True`` indexed first, as a
graceful shutdown drains its queues) and ``forget_after`` (every channel is
forgotten right after acknowledged request number N, with no connection
refused: an indexer restarted between two requests behind a load balancer,
or one that does not keep the client on the same indexer).

What a test can count: ``indexed`` (every event in the index, duplicates
included), ``accepted`` (the events of every request that got an ackId, in
order), ``unconfirmed`` (the events of each request whose ack the server
will never confirm: lost acks and acks forgotten by a restart).
"""
import gzip
import json
import random
import re
import socket
import ssl
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Set
from urllib.parse import parse_qs, urlsplit

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
EVENT_PATHS = ("/services/collector", "/services/collector/event", "/services/collector/event/1.0")
_LOST_ACK = "lost ack"  # a pending ackId whose events are indexed but which never turns true


class HecError(Exception):
    def __init__(self, status: int, code: int, text: str, **extra):
        super().__init__(text)
        self.status, self.code, self.text, self.extra = status, code, text, extra


class HecServer:
    def __init__(self, tokens: Optional[Dict[str, dict]] = None, indexes=("main", "neuvector"),
                 ssl_context: Optional[ssl.SSLContext] = None, port: int = 0, seed: int = 13):
        #: token -> {"ack": bool, "disabled": bool}
        self.tokens = tokens if tokens is not None else {"good-token": {"ack": True}}
        self.indexes = set(indexes)
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self.indexed: List[dict] = []   # every event that made it into an index
        self.log: List[dict] = []       # one entry per request: path, status, code, gzip, events
        self.busy = 0
        self.drop_acks = 0
        self.hold_acks = False
        self.ack_delay = 0.0
        self.lose_acks = 0.0            # share of acknowledged requests whose ack is lost (tenths)
        self._lose_random = random.Random(seed)
        self._lose_block: List[bool] = []
        self.lose_requests: Set[int] = set()
        self.forget_after: Optional[int] = None
        self.accepted: List[List[dict]] = []
        self.unconfirmed: List[List[dict]] = []
        self.max_content_length: Optional[int] = None  # limits.conf [http_input] max_content_length
        self.reject: Callable[[dict], bool] = lambda event: False
        self._channels: Dict[str, dict] = {}
        self._port = port
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._connections = set()

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "HecServer":
        server = self

        class Handler(_Handler):
            hec = server

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        if self.ssl_context is not None:
            self._httpd.socket = self.ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            with self.lock:   # keep-alive connections die with the process, too
                for conn in self._connections:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._connections.clear()
            self._thread.join(5)
            self._httpd = None

    def restart(self, down_for: float = 0.0, flush: bool = False) -> None:
        """Stop, forget every channel and pending ack, start again on the same port after ``down_for`` s.

        ``flush``: the events of unconfirmed requests are indexed before their
        acks are forgotten (else they are lost with them).
        """
        self.stop()
        with self.lock:
            self._forget_channels(flush)
        time.sleep(down_for)
        self.start()

    def _forget_channels(self, flush: bool) -> None:
        for state in self._channels.values():
            for events in state["pending"].values():
                if isinstance(events, list):
                    self.unconfirmed.append(events)
                    if flush:
                        self.indexed.extend(events)
        self._channels.clear()

    @property
    def pending_acks(self) -> int:
        """Acknowledged requests whose ackId has not turned true yet (lost acks included)."""
        with self.lock:
            return sum(len(state["pending"]) for state in self._channels.values())

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self._port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- protocol --------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> dict:
        if path == "/services/collector/health" and method == "GET":
            return {"text": "HEC is healthy", "code": 17}
        if method != "POST" or (path not in EVENT_PATHS and path != "/services/collector/ack"):
            raise HecError(404, 404, "The requested URL was not found on this server.")
        if self.max_content_length is not None and len(body) > self.max_content_length:
            raise HecError(413, None, "Content-Length of %d too large (maximum is %d)"
                           % (len(body), self.max_content_length))
        token = self._auth(headers.get("Authorization"))
        channel = headers.get("X-Splunk-Request-Channel") or query.get("channel", [None])[0]
        if channel is not None and not GUID.match(channel):
            raise HecError(400, 11, "Invalid data channel")
        if headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                raise HecError(400, 6, "Invalid data format") from None
        if path == "/services/collector/ack":
            return self._ack_query(token, channel, body)
        return self._events(token, channel, body)

    def _auth(self, header: Optional[str]) -> dict:
        if not header:
            raise HecError(401, 2, "Token is required")
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            raise HecError(401, 3, "Invalid authorization")
        conf = self.tokens.get(token)
        if conf is None:
            raise HecError(403, 4, "Invalid token")
        if conf.get("disabled"):
            raise HecError(403, 1, "Token disabled")
        return conf

    def _events(self, token: dict, channel: Optional[str], body: bytes) -> dict:
        if token.get("ack") and channel is None:
            raise HecError(400, 10, "Data channel is missing")
        with self.lock:
            if self.busy > 0:
                self.busy -= 1
                raise HecError(503, 9, "Server is busy")
        if not body.strip():
            raise HecError(400, 5, "No data")
        events, failure = _decode_batch(body, self.indexes, self.reject)
        with self.lock:
            if failure is not None:
                self.indexed.extend(events)   # the events before the bad one are in
                raise failure
            if not token.get("ack"):
                self.indexed.extend(events)
                return {"text": "Success", "code": 0}
            state = self._channels.setdefault(channel, {"next": 0, "pending": {}, "posted": {}})
            ack_id = state["next"]
            state["next"] += 1
            self.accepted.append(events)
            if self.drop_acks > 0:
                self.drop_acks -= 1
                events = None                 # lost before it was indexed
            elif self._ack_lost():
                self.indexed.extend(events)   # indexed, but its ack never turns true
                self.unconfirmed.append(events)
                events = _LOST_ACK
            state["pending"][ack_id] = events
            state["posted"][ack_id] = time.monotonic()
            if self.forget_after == len(self.accepted) - 1:
                self.forget_after = None
                self._forget_channels(flush=False)
            return {"text": "Success", "code": 0, "ackId": ack_id}

    def _ack_lost(self) -> bool:
        """Whether this request's ack is lost: exactly ``lose_acks`` of every ten, in a seeded order."""
        if len(self.accepted) - 1 in self.lose_requests:
            return True
        if not self._lose_block:
            lost = round(self.lose_acks * 10)
            self._lose_block = [True] * lost + [False] * (10 - lost)
            self._lose_random.shuffle(self._lose_block)
        return self._lose_block.pop()

    def _ack_query(self, token: dict, channel: Optional[str], body: bytes) -> dict:
        if not token.get("ack"):
            raise HecError(400, 14, "ACK is disabled")
        if channel is None:
            raise HecError(400, 10, "Data channel is missing")
        try:
            ids = json.loads(body)["acks"]
            ids = [int(i) for i in ids]
        except (ValueError, KeyError, TypeError):
            raise HecError(400, 6, "Invalid data format") from None
        answer = {}
        with self.lock:
            state = self._channels.get(channel, {"pending": {}, "posted": {}})
            pending, now = state["pending"], time.monotonic()
            for ack_id in ids:
                indexing = self.hold_acks or now - state["posted"].get(ack_id, now) < self.ack_delay
                events = None if indexing else pending.get(ack_id)
                if events is _LOST_ACK:
                    events = None
                if events is not None:          # indexed now; reported true once
                    self.indexed.extend(events)
                    del pending[ack_id]
                answer[str(ack_id)] = events is not None
        return {"acks": answer}


def _decode_batch(body: bytes, indexes, reject):
    """Events of a body of concatenated JSON objects, and the error for the first bad one."""
    decoder = json.JSONDecoder()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [], HecError(400, 6, "Invalid data format", **{"invalid-event-number": 0})
    events, pos = [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return events, None
        n = len(events)
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return events, HecError(400, 6, "Invalid data format", **{"invalid-event-number": n})
        if not isinstance(obj, dict) or reject(obj):
            return events, HecError(400, 6, "Invalid data format", **{"invalid-event-number": n})
        if "event" not in obj:
            return events, HecError(400, 12, "Event field is required", **{"invalid-event-number": n})
        if obj["event"] is None or (isinstance(obj["event"], str) and not obj["event"].strip()):
            return events, HecError(400, 13, "Event field cannot be blank", **{"invalid-event-number": n})
        if "index" in obj and obj["index"] not in indexes:
            return events, HecError(400, 7, "Incorrect index", **{"invalid-event-number": n})
        events.append(obj)


class _Handler(BaseHTTPRequestHandler):
    hec: HecServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait for
    # the client's delayed ACK, 40 ms per request, which no real HEC costs.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.hec.lock:
            self.hec._connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.hec.lock:
                self.hec._connections.discard(self.connection)

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = {"path": parts.path, "gzip": self.headers.get("Content-Encoding") == "gzip",
                 "bytes": len(body)}
        try:
            reply, status = self.hec.handle(method, parts.path, parse_qs(parts.query),
                                            self.headers, body), 200
        except HecError as err:
            reply, status = {"text": err.text, "code": err.code, **err.extra}, err.status
        entry.update(status=status, reply=reply)
        with self.hec.lock:
            self.hec.log.append(entry)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self._serve("POST")

    def do_GET(self):
        self._serve("GET")
