"""``neuvector+https://HOST:10443?apikey_file=FILE``: what syslog lost, read back from the controller.

Every NeuVector controller keeps its newest 4,096 events, activities,
threats, violations, incidents and audits in memory and serves them on its
REST API (HTTPS, TLS 1.3, port 10443). This source reads those rings at
start-up and then every ``interval`` seconds, turns each element into the
record the syslog path gives for that event (the same JSON body, parsed by
nvparser, without the syslog header), and hands them to the collector
marked as a replay: the de-duplication step (``nvsiem.dedup``) drops every
event a push source already spooled, so only what syslog lost is added.

Authentication, as the controller allows it:

* ``apikey_file=FILE`` (``name:secret``): no session and no login event,
  but the controller checks the key with a 600,000-round PBKDF2 under a
  lock on every request, so this source makes four requests a poll (the
  event, activity and audit lists and ``/v1/log/security``) and the default
  interval is a few minutes;
* ``username=U&password_file=FILE``: one session (``POST /v1/auth``), kept
  alive between polls with ``PATCH /v1/auth`` and logged in again only when
  the controller answers 401. Each login writes a ``User.Login`` event
  into the controller's ring; those of this account are not counted as
  events syslog lost.

Each list is read whole the first time, then from the newest
``reported_timestamp`` held minus ``margin`` seconds (elements enter a ring
with older timestamps than some already there). Paging by ``start`` is
never used: a live ring shifts the offsets. A read that comes back with a
full ring whose oldest element is newer than what was held means events
were lost upstream before anyone could read them: said once, with the time
range, and counted.
"""
import gc
import gzip
import hashlib
import http.client
import json
import operator
import os
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlencode

from nvparser import DeadLetter, Record, json_dumps, json_lists, json_loads, json_record, schema

from ..options import resolve_secrets
from ..statefile import load_state, save_state
from .base import Source, log

#: Elements per ring on the controller (``logCacheSize``).
RING = 4096
#: Elements turned into records and spooled at a time.
_PIECE = 1000
#: path -> (reply key -> notification type)
LISTS = (
    ("/v1/log/event", {"events": "event"}),
    ("/v1/log/activity", {"events": "activity"}),
    ("/v1/log/security", {"threats": "threat", "violations": "violation", "incidents": "incident"}),
    ("/v1/log/audit", {"audits": "audit"}),
)
#: Threat lists blank the packet but keep its length; syslog carries neither.
_REST_ONLY = {"threat": ("cap_len", "packet")}
_OWN_SESSION_EVENTS = frozenset(("User.Login", "User.Logout", "User.Timeout"))
_OMITTED_WHEN_EMPTY = {kind: frozenset(f.name for f in fields if f.omitempty and f.type == "list")
                       for kind, fields in schema.FIELDS.items()}
_ORDER = {kind: {f.name: i for i, f in enumerate(fields)} for kind, fields in schema.FIELDS.items()}


class AuthError(Exception):
    """The controller refused the credentials (401): retrying as is will not help."""


def record_of(notification: str, element: dict) -> Record:
    """The record syslog's JSON mode gives for a REST list element.

    REST marshals the same struct with its keys sorted and some empty lists
    as ``[]`` that syslog leaves out: put back in struct order, without
    them and without the threat packet, and parsed by nvparser like any
    JSON-mode body, so the types and notes are the syslog path's.
    """
    plan = _PLANS.get((notification, *element)) or _plan(notification, tuple(element))
    keys, values = plan.keys, plan.values
    if plan.maybe_empty:
        lists = plan.maybe_empty(element)
        if [] in lists:  # lists syslog would have left out: the plan for the keys that are left
            empty = tuple(k for k, v in zip(plan.maybe_empty.keys, lists) if v == [])
            keys, values = plan.without.get(empty) or _without(plan, empty)
    return json_record(dict(zip(keys, (notification,) + values(element))))


def _not_an_object(notification: str, element) -> DeadLetter:
    """A list element that is no JSON object: kept, as its JSON, with the reason."""
    return DeadLetter(json_dumps(element), "a %s list element that is not a JSON object" % notification)


def _without(plan: "_Plan", empty: tuple) -> tuple:
    keys = tuple(k for k in plan.keys if k not in empty)
    plan.without[empty] = found = (keys, _Getter(keys[1:]))
    return found


class _Getter:
    """``operator.itemgetter`` that always returns a tuple, and says which keys it gets."""

    def __init__(self, keys: tuple) -> None:
        self.keys = keys
        self._get = operator.itemgetter(*keys) if len(keys) > 1 else None

    def __call__(self, element: dict) -> tuple:
        if self._get is not None:
            return self._get(element)
        return tuple(element[k] for k in self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)


class _Plan(NamedTuple):
    """How the REST elements with one key set become records."""

    keys: tuple          # the record's keys, ``notification`` first, in struct order
    values: _Getter      # their values from an element (but ``notification``)
    maybe_empty: _Getter  # the lists syslog leaves out when empty
    without: dict        # the empty ones -> (keys, values) without them


#: (notification, REST keys...) -> its plan
_PLANS: Dict[tuple, _Plan] = {}


def _plan(notification: str, rest_keys: tuple) -> _Plan:
    """How the elements with these keys become records: one sort per key set (replies repeat them)."""
    order = _ORDER.get(notification, {})
    drop = _REST_ONLY.get(notification, ())
    keys = tuple(sorted((k for k in rest_keys if k not in drop and k != "notification"),
                        key=lambda k: order.get(k, len(order))))  # a newer NeuVector's keys last, as they came
    empty_lists = _OMITTED_WHEN_EMPTY.get(notification, ())
    plan = _Plan(("notification",) + keys, _Getter(keys), _Getter(tuple(k for k in keys if k in empty_lists)), {})
    if len(_PLANS) > 4096:  # bounded: odd replies must not grow it
        _PLANS.clear()
    _PLANS[(notification, *rest_keys)] = plan
    return plan


class RestSource(Source):
    options = ("apikey", "username", "password", "ca", "tls_name", "interval", "margin", "timeout")

    def __init__(self, url: str, collector) -> None:
        super().__init__(resolve_secrets(url), collector)
        q = self.query
        if "allow" in q:
            raise ValueError("%s: allow= is for sources that are sent to; this one reads from the controller"
                             % self.label)
        self.apikey = q.get("apikey")
        self.username, self.password = q.get("username"), q.get("password")
        if bool(self.apikey) == bool(self.username):
            raise ValueError("%s: give apikey_file=FILE (name:secret), or username=U and password_file=FILE"
                             % self.label)
        if self.username and not self.password:
            raise ValueError("%s: username= needs password_file=FILE (or password_env=VAR)" % self.label)
        if self.apikey and self.apikey.count(":") != 1:
            raise ValueError("%s: the API key must be name:secret, as NeuVector shows it when it is made"
                             % self.label)
        self.interval = self.number_option("interval", 300.0, minimum=1)
        self.margin = self.number_option("margin", 60.0, minimum=0)
        self.timeout = self.number_option("timeout", 60.0, minimum=1)
        self.tls = _client_tls(q.get("ca"), self.label)
        self.tls_name = q.get("tls_name") or self.addr.host
        key = hashlib.sha256(("%s:%d" % self.address()).encode()).hexdigest()[:12]
        self.state_path = os.path.join(collector.spool.directory, "rest-%s.json" % key)
        self.newest: Dict[str, int] = load_state(self.state_path, {})
        self._connection: Optional[http.client.HTTPSConnection] = None
        self._token: Optional[str] = None
        self._idle_timeout = 300.0
        self._last_request = 0.0
        self._failing_since: Optional[float] = None
        collector.enable_dedup()

    # -- the loop ----------------------------------------------------------

    def start(self) -> None:
        self.up = True
        self.spawn(self._run, "rest-" + self.addr.host)

    def stop(self) -> None:
        super().stop()
        if self._connection is not None:
            self._connection.close()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                self.poll()
                backoff, wait = 1.0, self.interval
                if self._failing_since is not None:
                    log.info("%s: the controller answers again (after %.0f s)", self.label,
                             time.monotonic() - self._failing_since)
                    self._failing_since = None
            except (OSError, http.client.HTTPException, _ServerError, AuthError, ValueError) as exc:
                self._close_connection()
                wait, backoff = backoff, min(backoff * 2, self.interval)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("%s: cannot read the controller's events: %s (tried again with backoff, "
                                "up to every %.0f s)", self.label, exc, self.interval)
            self._wait(wait)

    def _wait(self, seconds: float) -> None:
        """Sleep until the next poll, keeping a login session from idling out meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._token is not None:
                keep_alive = self._last_request + self._idle_timeout / 2 - time.monotonic()
                if keep_alive <= 0:
                    try:
                        self._request("PATCH", "/v1/auth")
                    except (OSError, http.client.HTTPException, _ServerError, AuthError, ValueError):
                        self._token = None  # the next poll logs in again
                    continue
                left = min(left, keep_alive)
            self._stopping.wait(left)

    def poll(self) -> Counter:
        """Read every list once; the records taken (not already spooled), by notification type."""
        taken: Counter = Counter()
        queries = []
        for path, keys in LISTS:
            since = [self.newest.get(kind) for kind in keys.values()]
            query = {}
            if all(t is not None for t in since):
                query["f_since"] = str(int(min(since) - self.margin))
            queries.append((path, keys, query))
        # One request at a time, as before; the controller makes the next reply while this one is
        # decoded and spooled here (decoding it in the fetching thread would hold the next request back).
        with ThreadPoolExecutor(1, thread_name_prefix="rest-fetch") as fetcher:
            replies = [fetcher.submit(self._fetch, "GET", path, query) for path, _, query in queries]
            try:
                return self._take(queries, replies, taken)
            finally:
                for reply in replies:
                    reply.cancel()

    def _take(self, queries, replies, taken: Counter) -> Counter:
        for (path, keys, query), pending in zip(queries, replies):
            payload = pending.result()
            with _cyclic_gc_paused():
                reply = _lists(payload)
            if not self._take_reply(keys, query, reply, taken):
                return taken
            save_state(self.state_path, self.newest)
        if sum(taken.values()):
            log.info("%s: %d records the push sources had not delivered (%s)", self.label, sum(taken.values()),
                     ", ".join("%s %d" % kv for kv in sorted(taken.items())))
        return taken

    def _take_reply(self, keys: dict, query: dict, reply: dict, taken: Counter) -> bool:
        for key, kind in keys.items():
            elements = reply.get(key) or []
            stamps: List[int] = []
            if not self._spool(kind, elements, taken, stamps):
                return False  # stopping, or the spool refused them: read again next time
            self._check_ring(kind, len(elements), stamps, query.get("f_since"))
            if stamps:
                self.newest[kind] = max(stamps + [self.newest.get(kind, 0)])
            elif kind not in self.newest:
                self.newest[kind] = 0  # read once: from now on only what is newer
        return True

    def _spool(self, kind: str, elements: list, taken: Counter, stamps: List[int]) -> bool:
        """Hand one list's records to the collector, a piece at a time: what one piece makes stays in
        the CPU's caches, where a whole ring's would not (an eighth faster), and elements still JSON
        bytes (``_lists``) are decoded a piece at a time. Adds their ``reported_timestamp`` to
        ``stamps``. False: refused."""
        seen_in_reply: dict = {}  # the list is one REST reply to the de-duplication, however many pieces
        spool = self.collector.spool
        for start in range(0, len(elements), _PIECE):
            # Spooling waits only for room (or a failing disk): then the collections go on meanwhile.
            roomy = spool.error is None and not spool.full and spool.used_bytes < spool.quota_bytes * 0.9
            with _cyclic_gc_paused() if roomy else nullcontext():
                piece = elements[start:start + _PIECE]
                if type(piece[0]) is bytes:
                    piece = list(map(json_loads, piece))
                stamps += [e["reported_timestamp"] for e in piece
                           if type(e) is dict and isinstance(e.get("reported_timestamp"), int)]
                records = [record_of(kind, element) if type(element) is dict else _not_an_object(kind, element)
                           for element in piece]
                own = sum(1 for r in records if type(r) is Record and self._own_session_event(r.data)) \
                    if self.username else 0
                before = taken[kind]
                if not self.collector.accept(records, self.label, timeout=None, replayed=True, taken=taken,
                                             seen_in_reply=seen_in_reply):
                    return False
            backfilled = taken[kind] - before - own
            if backfilled > 0:
                self.collector.metrics.rest_backfilled.labels(self.label, kind).inc(backfilled)
        return True

    def _own_session_event(self, data: dict) -> bool:
        return bool(self.username) and data.get("user") == self.username and data.get("name") in _OWN_SESSION_EVENTS

    def _check_ring(self, kind: str, count: int, stamps: List[int], since: Optional[str]) -> None:
        """A full ring (``count`` elements, with these times) that starts after what was held: the events
        between were lost on the controller."""
        if since is None or count < RING:
            return
        oldest = min(stamps, default=None)
        if oldest is not None and oldest > int(since):
            self.collector.metrics.rest_ring_overruns.labels(self.label, kind).inc()
            log.error("%s: events lost upstream: the controller's %s ring (4,096) rotated past the newest %s held: "
                      "what happened between %s and %s is gone (poll more often, or fix what loses syslog)",
                      self.label, kind, kind, _when(int(since)), _when(oldest))

    # -- HTTP ------------------------------------------------------------------

    def _request(self, method: str, path: str, query: Optional[dict] = None, body: Optional[dict] = None) -> dict:
        return _decoded(self._fetch(method, path, query, body))

    def _fetch(self, method: str, path: str, query: Optional[dict] = None, body: Optional[dict] = None,
               retried: bool = False) -> bytes:
        """The body of a 2xx answer (a 401 of an idled-out session is logged in again once)."""
        if self.username and self._token is None and path != "/v1/auth":
            self._login()
        headers = {"Accept-Encoding": "gzip", "Connection": "keep-alive"}
        if self._token is not None:
            headers["X-Auth-Token"] = self._token
        elif self.apikey:
            headers["X-Auth-Apikey"] = self.apikey
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        target = path + ("?" + urlencode(query) if query else "")
        status, payload = self._exchange(method, target, data, headers)
        outcome = str(status) if status >= 300 else "ok"
        self.collector.metrics.rest_requests.labels(self.label, outcome).inc()
        if status == 401 and path != "/v1/auth":
            if self.username and not retried:
                self._token = None  # idled out, expired or a peer's timer: one new session
                return self._fetch(method, path, query, body, retried=True)
            raise AuthError("the controller refused the %s (401)" % ("API key" if self.apikey else "session"))
        if status >= 500:
            raise _ServerError("%s %s answered %d" % (method, path, status))
        if status >= 300:
            raise ValueError("%s %s answered %d: %s" % (method, path, status, payload[:200]))
        return payload

    def _login(self) -> None:
        status, payload = self._exchange("POST", "/v1/auth", json.dumps(
            {"password": {"username": self.username, "password": self.password}}).encode(),
            {"Content-Type": "application/json", "Connection": "keep-alive"})
        self.collector.metrics.rest_requests.labels(self.label, "login" if status == 200 else str(status)).inc()
        token = json.loads(payload).get("token") if status == 200 else None
        if not token or not token.get("token"):
            raise AuthError("the controller refused the login of %s (%d%s)" % (
                self.username, status, ", a password change is due" if status == 200 else ""))
        self._token = token["token"]
        self._idle_timeout = float(token.get("timeout") or 300)
        log.info("%s: logged in as %s (a session kept alive between polls)", self.label, self.username)

    def _exchange(self, method: str, target: str, data: Optional[bytes], headers: dict) -> Tuple[int, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the controller closed: once more on a new one
            connection = self._connection or self._connect()
            try:
                connection.request(method, target, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._close_connection()
                if attempt == 2:
                    raise
                continue
            self._last_request = time.monotonic()
            if response.getheader("Content-Encoding") == "gzip":
                payload = gzip.decompress(payload)
            if response.will_close:
                self._close_connection()
            return response.status, payload
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPSConnection:
        self._connection = _Connection(self.addr.host, self.addr.port, self.tls, self.tls_name, self.timeout)
        return self._connection

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_gc_pauses = 0
_gc_pauses_lock = threading.Lock()


@contextmanager
def _cyclic_gc_paused():
    """No cyclic garbage collection while a reply is decoded, or spooled while the spool has room.

    A reply is a tree of up to a million containers without a cycle: every
    full collection meanwhile would walk it all again (a tenth of a
    backfill's time). Never over a wait (for the controller, for room in
    the spool). Reference counting frees the reply as usual; collections
    resume after, in every thread (a count, as sources pause it at once).
    """
    global _gc_pauses
    with _gc_pauses_lock:
        _gc_pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_pauses_lock:
            _gc_pauses -= 1
            if not _gc_pauses:
                gc.enable()


def _decoded(payload: bytes) -> dict:
    return json_loads(payload) if payload.strip() else {}


def _lists(payload: bytes) -> dict:
    """A list reply: where nvparser can, each list's elements still as JSON bytes, to be decoded a piece at
    a time as they are spooled (decoded whole, a reply of scan reports takes several times its size in
    objects, and longer); else decoded whole."""
    lists = json_lists(payload)
    return lists if lists is not None else _decoded(payload)


class _ServerError(Exception):
    """5xx: the controller, or a proxy in front of it, is unwell; retried with backoff."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS with the certificate checked against ``tls_name``.

    http.client checks the name it connects to; NeuVector's default
    certificate names only ``neuvector``, whatever address reaches it.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext, tls_name: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_name = tls_name

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self._tls_name)


def _client_tls(ca: Optional[str], label: str) -> ssl.SSLContext:
    """TLS 1.3 (all the controller speaks), verified: against ``ca=`` alone, else the system's CAs."""
    try:
        context = ssl.create_default_context(cafile=ca)  # with ca=, that CA alone
    except (OSError, ssl.SSLError) as exc:
        raise ValueError("%s: cannot load ca=%s: %s" % (label, ca, getattr(exc, "strerror", None) or exc)) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
