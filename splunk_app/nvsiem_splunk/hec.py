"""Deliver records to Splunk's HTTP Event Collector, confirmed by indexer acknowledgement.

    splunk-hec://idx1:8088,idx2:8088?token_file=/run/secrets/hec&index=neuvector&ca=/etc/ssl/splunk-ca.pem
    splunk-hec+http://127.0.0.1:8088?token_env=SPLUNK_HEC_TOKEN

``send`` posts the batch (gzip, concatenated event objects) and returns
only when every ackId it got back has been reported true by
``/services/collector/ack`` on the same channel and server. Busy and
unavailable servers are retried with backoff on the next server; an ackId
that never turns true (the indexer lost the data) makes its events go out
again after ``ack_timeout``. Errors no retry can fix (bad token, unknown
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

from nvsiem.config import parse_bool, parse_size
from nvsiem.sinks import resolve_secrets
from nvsiem.sinks.base import Sink, SinkError

from .records import DEADLETTER_SOURCETYPE, deadletter, event_host, sourcetype

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
    "ack_timeout": "seconds to wait for an ackId before sending its events again (default 90, or half of a "
                   "shorter retry_for; below retry_for)",
    "retry_for": "seconds send() keeps retrying before giving the batch back (default 120)",
    "backoff_max": "longest pause between retries of one server, seconds (default 10)",
    "max_body": "largest request body before compression, bytes or 512K/1M (default 1M)",
    "batch": "records per batch, all posted before their acks are awaited (default 5000)",
}


class _Transient(Exception):
    """A failure worth retrying, on another server if there is one."""


class _Server:
    """One HEC endpoint with its own connection pool and cookie jar.

    A load balancer in front of an indexer cluster must keep a channel on
    one indexer (sticky sessions, by cookie), so each server keeps its
    session; ackIds are only meaningful on the server that issued them.
    """

    def __init__(self, base: str, verify, timeout: float):
        self.base = base
        self.session = requests.Session()
        # Passed on each request: requests lets REQUESTS_CA_BUNDLE override
        # Session.verify, which would silently ignore ca=.
        self.verify = verify
        self.timeout = timeout
        self.failures = 0
        self.down_until = 0.0

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
            raise _Transient(f"{self.base}: {type(exc).__name__}: {exc}") from None
        try:
            reply = resp.json()
        except ValueError:
            reply = {}
        return resp.status_code, reply if isinstance(reply, dict) else {}


class HecSink(Sink):
    schemes = ("splunk-hec", "splunk-hec+http")
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
        self._ack_timeout = _number(opts, "ack_timeout", min(90.0, self._retry_for / 2))
        if self._ack_timeout >= self._retry_for:
            # send() gives the batch back at retry_for: an ackId would never get to expire.
            raise ValueError(f"ack_timeout={self._ack_timeout:g} must be shorter than retry_for={self._retry_for:g}")
        self._backoff_max = _number(opts, "backoff_max", 10.0)
        self._max_body = parse_size(opts.get("max_body", "1M"))
        self.max_batch = _number(opts, "batch", self.max_batch, int)
        self._index, self._source, self._host = opts.get("index"), opts.get("source"), opts.get("host")
        # One channel per sink: ackIds count from 0 per channel and server.
        self._channel = str(uuid.uuid4())
        self._warned_no_ack = False

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
        deadline = time.monotonic() + self._retry_for
        todo: Deque[List[bytes]] = deque(_chunks([self.envelope(i) for i in batch], self._max_body))
        # server -> ackId -> (events, posted at)
        pending: Dict[_Server, Dict[int, Tuple[List[bytes], float]]] = {}
        last_error = "no attempt made"
        poll_pause = 0.02
        while todo or pending:
            while todo:
                server = self._pick(deadline, last_error)
                events = todo.popleft()
                try:
                    ack_id = self._post_events(server, events, todo)
                except _Transient as exc:
                    last_error = str(exc)
                    self._failed(server, last_error)
                    todo.appendleft(events)
                    continue
                server.failures = 0
                if ack_id is not None:
                    pending.setdefault(server, {})[ack_id] = (events, time.monotonic())
            if pending:
                if time.monotonic() > deadline:
                    raise SinkError(f"{self.describe()}: {sum(map(len, pending.values()))} "
                                    f"request(s) not acknowledged in {self._retry_for:g}s", permanent=False)
                time.sleep(poll_pause)
                poll_pause = min(poll_pause * 2, 1.0)
                for server in list(pending):
                    todo.extend(self._poll_acks(server, pending[server]))
                    if not pending[server]:
                        del pending[server]

    def _post_events(self, server: _Server, events: List[bytes], todo: Deque[List[bytes]]) -> Optional[int]:
        """POST one body; return its ackId (None when no ack is expected).

        When HEC rejects one event (invalid-event-number) the events before
        it are in; the rest go back on ``todo`` with the bad one replaced by
        a dead letter.
        """
        body = b"".join(events)
        headers = {"Authorization": "Splunk " + self._token,
                   "X-Splunk-Request-Channel": self._channel,
                   "Content-Type": "application/json"}
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
            todo.appendleft(rest)
            return None
        if status == 413 and len(events) > 1:
            # Larger than the indexer's max_content_length: halves, and smaller bodies from now on.
            half = len(events) // 2
            todo.appendleft(events[half:])
            todo.appendleft(events[:half])
            self._max_body = max(1, min(self._max_body, sum(map(len, events)) // 2))
            log.warning("%s: %s refused a %d-byte body (HTTP 413, max_content_length): sending it in halves; "
                        "bodies now up to %d bytes", self.describe(), server.base, len(body), self._max_body)
            return None
        if status == 413:
            raise SinkError(f"{self.describe()}: {server.base} refuses one event of {len(events[0])} bytes "
                            f"(HTTP 413): raise max_content_length in the indexer's limits.conf [http_input]",
                            permanent=True)
        if code in TRANSIENT_CODES or status in TRANSIENT_HTTP:
            raise _Transient(f"{server.base}: HTTP {status} code {code} {text!r}")
        raise SinkError(f"{self.describe()}: {server.base} refused the events: HTTP {status} "
                        f"code {code} {text!r}", permanent=True)

    def _poll_acks(self, server: _Server, waiting: Dict[int, Tuple[List[bytes], float]]) -> List[List[bytes]]:
        """Drop confirmed ackIds from ``waiting``; return the events of expired ones to resend."""
        headers = {"Authorization": "Splunk " + self._token,
                   "X-Splunk-Request-Channel": self._channel,
                   "Content-Type": "application/json"}
        body = json_dumps({"acks": sorted(waiting)})
        try:
            status, reply = server.post("/services/collector/ack", body, headers)
        except _Transient as exc:
            log.warning("%s: ack query failed: %s", self.describe(), exc)
            status, reply = 0, {}
        acks = reply.get("acks") if status == 200 else None
        if isinstance(acks, dict):
            for ack_id in [i for i in waiting if acks.get(str(i)) is True]:
                del waiting[ack_id]
        elif status and status not in TRANSIENT_HTTP and reply.get("code") not in TRANSIENT_CODES:
            raise SinkError(f"{self.describe()}: {server.base} refused the ack query: HTTP {status} "
                            f"code {reply.get('code')} {reply.get('text', '')!r}", permanent=True)
        now = time.monotonic()
        expired = [i for i, (_, posted) in waiting.items() if now - posted > self._ack_timeout]
        if expired:
            log.warning("%s: %s: ackIds %s not confirmed in %gs, sending their events again",
                        self.describe(), server.base, expired, self._ack_timeout)
        return [waiting.pop(i)[0] for i in expired]

    def _pick(self, deadline: float, last_error: str) -> _Server:
        """The next server in turn that is not backing off; wait if all are."""
        while True:
            now = time.monotonic()
            for _ in range(len(self._servers)):
                server = self._servers[self._next]
                self._next = (self._next + 1) % len(self._servers)
                if server.down_until <= now:
                    return server
            wake = min(s.down_until for s in self._servers)
            if wake > deadline:
                raise SinkError(f"{self.describe()}: gave up after {self._retry_for:g}s: {last_error}",
                                permanent=False)
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
