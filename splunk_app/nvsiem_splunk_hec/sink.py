"""Deliver records to Splunk's HTTP Event Collector, confirmed by indexer acknowledgement.

    splunk-hec://idx1:8088,idx2:8088?token_file=/run/secrets/hec&index=neuvector&ca=/etc/ssl/splunk-ca.pem
    splunk-hec+http://127.0.0.1:8088?token_env=SPLUNK_HEC_TOKEN

Each batch is split into request bodies (gzip, concatenated event
objects), posted at once; up to ``window`` batches are in flight, and the
collector's spool advances past a batch (``confirmed``) once every request
of it and of the batches before it is confirmed, so a lost ack holds back
only its own request while later ones keep going. Each POST's
ackId stands for exactly the events of that request, and only on the
server and channel that issued it; ``/services/collector/ack`` is asked
there. A request whose ackId stays false for ``ack_timeout`` (the indexer
lost it), or whose server restarted meanwhile (and so forgot its acks), is
sent again on its own: confirmed requests never go twice. Busy and
unavailable servers are retried with backoff on the next server; the batch
is handed back (``SinkError``) only when no server took or confirmed a
request for ``retry_for``. Errors no retry can fix (bad token, unknown
index) raise ``SinkError(permanent=True)`` naming the HEC code and text.
"""
import gzip
import logging
import random
import time
import uuid
from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit

import requests
from nvparser import event_time, json_dumps, json_loads

from nvsiem.sinks.api import Sink, SinkError, parse_bool, parse_size, resolve_secrets

# Shaped as the app's modular inputs shape them, so both paths index a record the same way.
from nvsiem_splunk.records import DEADLETTER_SOURCETYPE, deadletter, event_host, sourcetype

log = logging.getLogger(__name__)

# HEC status codes worth retrying (busy, unhealthy, shutting down, channel
# at capacity, internal error); every other non-zero code is a
# configuration or data problem that the same request will hit again.
TRANSIENT_CODES = frozenset({8, 9, 18, 19, 20, 23, 26, 27})
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
# Codes that blame one event of the body (reported with invalid-event-number):
# that event is re-sent as a dead letter instead of blocking the spool.
EVENT_CODES = frozenset({6, 12, 13, 15})

OPTIONS = {
    # token_file=PATH / token_env=VAR become token=<value> (resolve_secrets)
    "token": "the HEC token, given as token_file=PATH or token_env=VAR",
    "index": "index for the events (default: the token's default index)",
    "source": "source for the events",
    "host": "host for the events (default: the controller that sent each record)",
    "ca": "CA bundle (PEM) to verify the HEC certificate",
    "gzip": "compress request bodies (default true)",
    "ack": "wait for indexer acknowledgement (default true)",
    "timeout": "seconds to wait for one HTTP response (default 30)",
    "ack_timeout": "seconds an ackId may stay false before its request alone is sent again (default 20: a "
                   "healthy indexer confirms within seconds; a late ack then costs a duplicate, never a loss, "
                   "and the other requests in flight are not held up meanwhile). Acks are asked with one query "
                   "per server and channel, at intervals doubling from 20 ms to 1 s. A restarted server is "
                   "noticed at once (connection refused, or ackIds counting from 0 again) and its unconfirmed "
                   "requests go again without this wait",
    "retry_for": "seconds send() keeps trying while no server takes or confirms a request before it gives "
                 "the batch back (default 120); waiting for acks does not count",
    "backoff_max": "longest pause between retries of one server, seconds (default 10)",
    "max_body": "largest request body before compression, bytes or 512K/1M (default 1M)",
    "batch": "records per batch (default 5000)",
    "window": "batches in flight before the oldest is confirmed (default 4)",
}


class _Transient(Exception):
    """A failure worth retrying, on another server if there is one.

    ``refused``: nothing listens on the server's port, so splunkd (or its
    HEC) is down, and the acks it had not confirmed die with it.
    """

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


# (server, channel) -> ackId -> (the events of that request, when it was posted)
#: A request body's events and the number of the batch it belongs to.
_Request = Tuple[int, List[bytes]]
#: (server, channel) -> ackId -> (request, when posted)
_Waiting = Dict[Tuple["_Server", str], Dict[int, Tuple[_Request, float]]]


class _Server:
    """One HEC endpoint with its own connection pool, cookie jar and channel.

    A load balancer in front of an indexer cluster must keep a channel on
    one indexer (sticky sessions, by cookie), so each server keeps its
    session; ackIds are only meaningful on the server and channel that
    issued them.
    """

    def __init__(self, base: str, verify, timeout: float):
        self.base = base
        self.session = requests.Session()
        self.new_channel()
        # Passed on each request: requests lets REQUESTS_CA_BUNDLE override
        # Session.verify, which would silently ignore ca=.
        self.verify = verify
        self.timeout = timeout
        self.failures = 0
        self.down_until = 0.0

    def new_channel(self) -> None:
        """Post on a fresh channel from now on.

        Used when the server forgot the current one (a restart): its ackIds
        would count from 0 again, so an ackId still awaited from before
        could name a new request and confirm events that were never
        indexed. On a fresh channel every (channel, ackId) names one request.
        """
        self.channel = str(uuid.uuid4())
        self.last_ack_id = -1   # ackIds rise from 0 on each channel

    def post(self, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, dict]:
        try:
            resp = self.session.post(self.base + path, data=body, headers=headers, verify=self.verify,
                                     timeout=(min(self.timeout, 10.0), self.timeout))
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "hostname" in str(exc).lower():
                raise SinkError(f"TLS verification of {self.base} failed ({exc}); "
                                "give the CA that signed the HEC certificate with ca=/path/ca.pem",
                                permanent=True) from None
            raise _Transient(f"{self.base}: TLS error: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise _Transient(f"{self.base}: {type(exc).__name__}: {exc}", refused=_refused(exc)) from None
        try:
            reply = resp.json()
        except ValueError:
            reply = {}
        return resp.status_code, reply if isinstance(reply, dict) else {}


class HecSink(Sink):
    # An indexer acknowledges a request seconds after it, and the collector waits
    # for a whole batch: throughput is about batch / ack latency. (Records are
    # ~1.6 KB: 5,000 are ~8 MiB.)
    max_batch = 5000
    max_batch_bytes = 32 << 20

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(resolve_secrets(url))
        opts = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ValueError(f"{self.describe()}: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(OPTIONS)}")
        scheme = "http" if parts.scheme == "splunk-hec+http" else "https"
        hosts = [h.strip() for h in parts.netloc.rsplit("@", 1)[-1].split(",") if h.strip()]
        if not hosts:
            raise ValueError(f"{self.describe()}: no HEC host given (splunk-hec://host:8088)")
        self._token = opts.get("token", "").strip()
        if not self._token:
            raise ValueError(f"{self.describe()}: give the HEC token with token_file=PATH or token_env=VAR")
        verify = opts.get("ca") or True
        timeout = _number(opts, "timeout", 30.0)
        self._servers = [_Server(f"{scheme}://{h if ':' in h else h + ':8088'}", verify, timeout)
                         for h in hosts]
        self._next = 0
        self._gzip = parse_bool(opts.get("gzip", True))
        self._ack = parse_bool(opts.get("ack", True))
        self._retry_for = _number(opts, "retry_for", 120.0)
        self._ack_timeout = _number(opts, "ack_timeout", 20.0)
        self._backoff_max = _number(opts, "backoff_max", 10.0)
        self._max_body = parse_size(opts.get("max_body", "1M"))
        self.max_batch = _number(opts, "batch", self.max_batch, int)
        self.window = _number(opts, "window", 4, int)
        self._todo: Deque[_Request] = deque()  # to post (again), oldest batch first
        self._waiting: _Waiting = {}
        self._open: Dict[int, int] = {}  # batch number -> its requests not yet confirmed, in submit order
        self._batches = 0
        self._index, self._source, self._host = opts.get("index"), opts.get("source"), opts.get("host")
        self._warned_no_ack = False
        self._deadline = 0.0
        self._last_error = "no attempt made"

    # -- envelopes -------------------------------------------------------
    def envelope(self, item: bytes) -> bytes:
        """One HEC event object for one spooled record (the record is spliced in as is)."""
        try:
            data = json_loads(item)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:   # orjson's JSONDecodeError is a ValueError too
            return self._deadletter_envelope(item, f"spool item is not a JSON record: {exc}")
        return self._head(sourcetype(data), event_time(data), event_host(data)) + item + b"}"

    def _deadletter_envelope(self, raw: bytes, reason: str) -> bytes:
        return self._head(DEADLETTER_SOURCETYPE, None, None) + json_dumps(deadletter(raw, reason)) + b"}"

    def _head(self, st: str, when: Optional[float], host: Optional[str]) -> bytes:
        meta = {"time": when, "host": self._host or host, "source": self._source,
                "sourcetype": st, "index": self._index}
        return json_dumps({k: v for k, v in meta.items() if v is not None})[:-1] + b',"event":'

    # -- sending ---------------------------------------------------------
    def send(self, batch: Sequence[bytes]) -> None:
        """Deliver ``batch`` alone and return once it is confirmed."""
        self.submit(batch)
        while self._open:
            self.confirmed(1.0)

    def submit(self, batch: Sequence[bytes]) -> None:
        number, self._batches = self._batches, self._batches + 1
        bodies = _chunks([self.envelope(i) for i in batch], self._max_body)
        self._open[number] = len(bodies)
        self._todo.extend((number, events) for events in bodies)
        self._progressed()
        self._guarded(self._post_all)

    def confirmed(self, wait: float) -> int:
        deadline = time.monotonic() + wait
        poll_pause = 0.02
        while True:
            done = self._leading_done()
            if done or time.monotonic() >= deadline:
                return done
            self._guarded(self._post_all)
            if self._waiting:
                time.sleep(min(poll_pause, max(0.0, deadline - time.monotonic())))
                poll_pause = min(poll_pause * 2, 1.0)
                self._guarded(self._poll_all)

    def _leading_done(self) -> int:
        """Pop and count the oldest batches whose every request is confirmed."""
        done = 0
        for number in list(self._open):
            if self._open[number]:
                break
            del self._open[number]
            done += 1
        return done

    def _guarded(self, step) -> None:
        """Run ``step``; when it gives up, forget every batch not confirmed (the collector hands them over again)."""
        try:
            step()
        except SinkError:
            self._todo.clear()
            self._waiting.clear()
            self._open.clear()
            raise

    def _post_all(self) -> None:
        while self._todo:
            self._post_next()

    def _poll_all(self) -> None:
        for server in {server for server, _ in self._waiting}:
            self._todo.extend(self._poll_server(server))

    def _request_done(self, request: _Request) -> None:
        if request[0] in self._open:
            self._open[request[0]] -= 1

    def _progressed(self) -> None:
        """A server took or confirmed a request: the batch gets another ``retry_for``."""
        self._deadline = time.monotonic() + self._retry_for

    def _post_next(self) -> None:
        """Post the first request to do and note its ackId; on failure it stays first."""
        server = self._pick()
        request = self._todo.popleft()
        channel = server.channel
        try:
            ack_id = self._post_events(server, request)
        except _Transient as exc:
            self._todo.appendleft(request)
            self._last_error = str(exc)
            self._failed(server, self._last_error)
            if exc.refused:
                self._todo.extend(self._forget(server, "refused the connection"))
            return
        server.failures = 0
        self._progressed()
        if ack_id is None:
            self._request_done(request)
            return
        if ack_id <= server.last_ack_id:
            # The channel counts from 0 again: the server restarted or dropped it. This
            # request is the only one awaited there since then, so its ackId is sound.
            self._todo.extend(self._forget(server, f"answered ackId {ack_id} after {server.last_ack_id}"))
        else:
            server.last_ack_id = ack_id
        self._waiting.setdefault((server, channel), {})[ack_id] = (request, time.monotonic())

    def _forget(self, server: _Server, evidence: str) -> List[_Request]:
        """The requests awaited on ``server``, which forgot their acks; it gets a new channel."""
        waiting = self._waiting
        lost = [request for key in [k for k in waiting if k[0] is server] for request, _ in waiting.pop(key).values()]
        server.new_channel()
        if lost:
            log.warning("%s: %s %s: it restarted and forgot the acks it had not confirmed; sending %s again",
                        self.describe(), server.base, evidence, _requests(lost))
        return lost

    def _poll_server(self, server: _Server) -> List[_Request]:
        """Ask ``server`` about each of its channels; return the requests to send again."""
        again: List[_Request] = []
        waiting = self._waiting
        for key in [k for k in waiting if k[0] is server]:
            try:
                again += self._poll_acks(server, key[1], waiting[key])
            except _Transient as exc:
                if exc.refused:
                    return again + self._forget(server, "refused the connection")
                log.warning("%s: ack query failed: %s", self.describe(), exc)
                again += self._expired(server, waiting[key], time.monotonic())
            if key in waiting and not waiting[key]:
                del waiting[key]
        return again

    def _post_events(self, server: _Server, request: _Request) -> Optional[int]:
        """POST one body; return its ackId (None when no ack is expected).

        When HEC rejects one event (invalid-event-number) the events before
        it are in; the rest go back to be posted with the bad one replaced by
        a dead letter.
        """
        number, events = request
        todo = self._todo
        body = b"".join(events)
        headers = self._headers(server.channel)
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        status, reply = server.post("/services/collector/event", body, headers)
        code, text = reply.get("code"), reply.get("text", "")
        if status == 200 and code in (0, None, 24, 25):
            ack_id = reply.get("ackId")
            if self._ack and ack_id is None and not self._warned_no_ack:
                self._warned_no_ack = True
                log.warning("%s: HEC returned no ackId: indexer acknowledgement is off for this "
                            "token, so a 200 only means received, not indexed", self.describe())
            return ack_id if self._ack else None
        bad = reply.get("invalid-event-number")
        if isinstance(bad, int) and 0 <= bad < len(events) and code in EVENT_CODES:
            rest = events[bad:]
            head, event = _split_envelope(rest[0])
            if b'"sourcetype":"' + DEADLETTER_SOURCETYPE.encode() + b'"' in head:
                raise SinkError(f"{self.describe()}: HEC rejected a dead-letter event: "
                                f"code {code} {text!r}", permanent=True)
            rest[0] = self._deadletter_envelope(event, f"HEC rejected the event: code {code} {text!r}")
            todo.appendleft((number, rest))
            self._open[number] += 1  # the rest is a request of its own
            return None
        if status == 413 and len(events) > 1:
            # Larger than the indexer's max_content_length: halves, and smaller bodies from now on.
            half = len(events) // 2
            todo.appendleft((number, events[half:]))
            todo.appendleft((number, events[:half]))
            self._open[number] += 2
            self._max_body = max(1, min(self._max_body, sum(map(len, events)) // 2))
            log.warning("%s: %s refused a %d-byte body of %s (HTTP 413, max_content_length): sending it in "
                        "halves; bodies now up to %d bytes", self.describe(), server.base, len(body),
                        _plural(len(events), "record"), self._max_body)
            return None
        if status == 413:
            raise SinkError(f"{self.describe()}: {server.base} refuses one event of {len(events[0])} bytes "
                            f"(HTTP 413): raise max_content_length in the indexer's limits.conf [http_input]",
                            permanent=True)
        if code in TRANSIENT_CODES or status in TRANSIENT_HTTP:
            raise _Transient(f"{server.base}: HTTP {status} code {code} {text!r}")
        raise SinkError(f"{self.describe()}: {server.base} refused the events: HTTP {status} "
                        f"code {code} {text!r}", permanent=True)

    def _poll_acks(self, server: _Server, channel: str,
                   waiting: Dict[int, Tuple[_Request, float]]) -> List[_Request]:
        """Drop confirmed ackIds of ``channel`` from ``waiting``; return the events of expired ones to resend."""
        asked = time.monotonic()
        status, reply = server.post("/services/collector/ack", json_dumps({"acks": sorted(waiting)}),
                                    self._headers(channel))
        acks = reply.get("acks") if status == 200 else None
        if isinstance(acks, dict):
            confirmed = [i for i in waiting if acks.get(str(i)) is True]
            for ack_id in confirmed:
                self._request_done(waiting.pop(ack_id)[0])
            if confirmed:
                self._progressed()
        elif status not in TRANSIENT_HTTP and reply.get("code") not in TRANSIENT_CODES:
            raise SinkError(f"{self.describe()}: {server.base} refused the ack query: HTTP {status} "
                            f"code {reply.get('code')} {reply.get('text', '')!r}", permanent=True)
        return self._expired(server, waiting, asked)

    def _expired(self, server: _Server, waiting: Dict[int, Tuple[_Request, float]],
                 asked: float) -> List[_Request]:
        """Remove and return the requests still unconfirmed ``ack_timeout`` after their post."""
        expired = [i for i, (_, posted) in waiting.items() if asked - posted > self._ack_timeout]
        again = [waiting.pop(i)[0] for i in expired]
        if again:
            log.warning("%s: %s: %s not confirmed within %gs (ackIds %s); sending them again",
                        self.describe(), server.base, _requests(again), self._ack_timeout, _span(expired))
        return again

    def _headers(self, channel: str) -> Dict[str, str]:
        return {"Authorization": "Splunk " + self._token, "X-Splunk-Request-Channel": channel,
                "Content-Type": "application/json"}

    def _pick(self) -> _Server:
        """The next server in turn that is not backing off; wait if all are, up to the deadline."""
        while True:
            now = time.monotonic()
            for _ in range(len(self._servers)):
                server = self._servers[self._next]
                self._next = (self._next + 1) % len(self._servers)
                if server.down_until <= now:
                    return server
            wake = min(s.down_until for s in self._servers)
            if wake > self._deadline:
                raise SinkError(f"{self.describe()}: gave up after {self._retry_for:g}s in which no server took "
                                f"or confirmed a request: {self._last_error}", permanent=False)
            time.sleep(max(0.0, wake - now))

    def _failed(self, server: _Server, error: str) -> None:
        server.failures += 1
        pause = min(self._backoff_max, 0.1 * 2 ** (server.failures - 1)) * random.uniform(0.5, 1.0)
        server.down_until = time.monotonic() + pause
        log.warning("%s: %s; retrying in %.2fs", self.describe(), error, pause)

    def close(self) -> None:
        for server in self._servers:
            server.session.close()


def _number(opts: Dict[str, str], name: str, default: float, kind=float) -> float:
    """``opts[name]`` as a positive, finite ``kind`` (float or int), else ``default``."""
    if name not in opts:
        return default
    try:
        value = kind(opts[name])
    except ValueError:
        raise ValueError(f"{name}={opts[name]!r}: expected {'a whole number' if kind is int else 'a number'}") \
            from None
    if not 0 < value < float("inf"):  # NaN fails too
        raise ValueError(f"{name}={opts[name]!r}: must be positive and finite")
    return value


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` (from requests) comes from a refused TCP connection."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConnectionRefusedError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
    return False


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _requests(requests: List[_Request]) -> str:
    """``2 requests (1187 records)``: what a resend costs, counted in records."""
    return f"{_plural(len(requests), 'request')} ({_plural(sum(len(events) for _, events in requests), 'record')})"


def _span(ids: List[int]) -> str:
    """A list of ackIds for a log line, shortened when long."""
    ids = sorted(ids)
    return ", ".join(map(str, ids)) if len(ids) <= 5 else f"{ids[0]}..{ids[-1]} ({len(ids)})"


def _chunks(events: List[bytes], max_body: int) -> List[List[bytes]]:
    """Split events into request bodies of at most ``max_body`` bytes (one event may exceed it)."""
    chunks: List[List[bytes]] = []
    size = max_body
    for event in events:
        if size + len(event) > max_body:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += len(event)
    return chunks


def _split_envelope(envelope: bytes) -> Tuple[bytes, bytes]:
    """(metadata, event value) of an envelope built by ``HecSink.envelope``.

    The metadata is JSON we wrote, where a quote inside a value is escaped,
    so the first ``,"event":`` is the one we put there.
    """
    cut = envelope.index(b',"event":')
    return envelope[:cut], envelope[cut + 9:-1]
