"""A NeuVector controller's REST API for tests, written from the REST reference (its §8 is the checklist).

What it serves, on 127.0.0.1 over HTTPS (TLS 1.3 only, HTTP/1.1, a
certificate from the test's CA for ``neuvector`` and ``127.0.0.1``):

* ``POST /v1/auth`` (§1.2): ``{"password": {"username", "password"}}`` gives
  ``RESTTokenData`` and writes ``User.Login``; 400 code 6 for a malformed
  body; 401 code 3 for bad credentials, for the 33rd live session of a user
  (``User.Login.Failed``) and for an account whose role grants nothing (after
  its ``User.Login``); the 5th failure in a row blocks the user for 60 min,
  401 code 47, each attempt during the block restarting it (§1.3).
* ``X-Auth-Token`` (§1.3): a JWT (HS256 here, opaque to a client) with a
  hard life of 6 h; the session idles out after ``idle_timeout`` s without a
  request (``User.Timeout``, dated when the timer ran out), every
  authenticated request resets it; ``PATCH /v1/auth`` keeps it alive,
  ``DELETE /v1/auth`` ends it (``User.Logout``). A token this controller
  has no session for (a peer's, or one from before ``restart()``) opens one
  at its first use and writes another ``User.Login``. Controllers made with
  ``peer=`` are one installation: they accept each other's tokens, a logout
  or idle-out on one kills the token on all, and each tells the others to
  reset their timer for a token at most once per 120 s.
* ``X-Auth-Apikey: name:secret`` (§1.4) on every request, no session, no
  event; ``X-Auth-Token`` wins when both are sent. Every authentication
  failure is the same 401 body, code 3 (§1.5).
* Roles (§7): ``admin`` and ``reader`` read every list; ``events-only``
  reads event and activity only; ``ciops`` reads nothing but its own events;
  ``""`` grants nothing (no login). A list the role may not read is ``200``
  with ``[]`` (§2.4); ``/v1/log/event`` always holds the caller's own events.
* ``GET /v1/log/{event,activity,threat,violation,incident,audit}`` and
  ``/v1/log/security`` (threats, incidents and violations, each sliced and
  filtered on its own), envelopes of §2.1, and ``/v1/log/threat/:id`` with
  the packet (404 code 7 unknown, 403 code 25 without permission, both
  writing ``User.Resource.Access.Denied``). Order and paging as
  ``filterAndSort`` (§2.3): ``s_<key>`` sorts, then ``reported_timestamp``
  descending, **unstable**: ties come in a seeded random order that changes
  with every request; filters after the sort, ``start``/``limit`` last.
  Filter and sort quirks of §2.2, with the field types of the §4 tables.
* Replies as the REST marshaller writes them (§5.2): keys sorted, Go's
  ``encoding/json`` escaping, no ``notification``; threat lists without
  ``packet``; gzip only above 1,200 bytes for an exact ``gzip`` token of
  ``Accept-Encoding``; a body over 2,048 bytes chunked as Go's ``net/http``
  sends it.

Elements are given to ``add()`` in their REST form (``rest_elements.py``
makes it from a parsed syslog record). Fault injection: ``expire_tokens``,
``expire_tokens_after``, ``fail_next``, ``slow``, ``restart``, ``down``/``up``. A test can pass
``clock`` (wall seconds) to move time for idle-outs, hard life and lockout.

Not modelled: namespaces (``role_domains``), password expiry and the forced
password change, API-key expiry, ``/v1/log/violation/workload``, gob
replies, the first-use sync of a new controller's rings from a peer (peers
keep separate rings), ``User.Resource.Access.Denied`` for other paths.
Event ``message`` texts are illustrative.
"""
import base64
import copy
import gzip
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import socket
import socketserver
import ssl
import string
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit

from helpers.goformat import go_json_float32, go_json_string
from helpers.loopback import wait_until

HARD_LIFE = 6 * 3600          # jwtTokenLife
MAX_SESSIONS = 32             # MaxPerDomainLoginUsers, per user per controller
LOCKOUT_FAILURES = 5          # default password profile
LOCKOUT_SECONDS = 3600
TIMER_SYNC = 120              # syncTokenTimerTimeout
GZIP_THRESHOLD = 1200
MAX_FIELDS = 8                # MaxFilelds: f_ and s_ parameters kept each
GO_CHUNKING_AFTER = 2048      # net/http's bufferBeforeChunkingSize
KEEPALIVE_BOUND = 300         # the controller has no timeouts; this only ends connections a test leaked
HANDSHAKE_BOUND = 10
TIE_SEED = 20260807

ERRORS = {  # restErrMessage
    1: "URL not found", 2: "Method not allowed", 3: "Authentication failed",
    6: "Request in wrong format", 7: "Object not found", 25: "Object access denied",
    47: "Temporarily blocked because of too many login failures",
}

#: role -> {permission id: (read, write)} (§7; ``ciops`` writes ci_scan and reads nothing)
ROLES: Dict[str, Dict[str, Tuple[bool, bool]]] = {
    "admin": {"authorization": (True, True), "config": (True, True), "events": (True, False),
              "security_events": (True, False), "audit_events": (True, False)},
    "reader": {"authorization": (True, False), "config": (True, False), "events": (True, False),
               "security_events": (True, False), "audit_events": (True, False)},
    "events-only": {"events": (True, False)},
    "ciops": {"ci_scan": (False, True)},
    "": {},
}

#: notification -> (envelope key, permission the list needs) (§2.1, §7)
LISTS = {
    "event": ("events", "events"), "activity": ("events", "events"),
    "threat": ("threats", "security_events"), "violation": ("violations", "security_events"),
    "incident": ("incidents", "security_events"), "audit": ("audits", "audit_events"),
}
SECURITY = ("threat", "incident", "violation")


# -- §4: the fields a filter or sort can use (Go kinds string, int*, float*, bool) ---------------
# Unsigned, list and map fields are left out on purpose: a filter or sort on them, like one on an
# unknown key, is dropped (§2.2).

def _kinds(strings: str = "", ints: str = "", floats: str = "", bools: str = "") -> Dict[str, str]:
    table = {}
    for kind, names in (("str", strings), ("int", ints), ("float", floats), ("bool", bools)):
        table.update(dict.fromkeys(names.split(), kind))
    return table


_COMMON = _kinds("name level reported_at cluster_name host_id host_name enforcer_id enforcer_name",
                 "reported_timestamp response_rule_id")
_EVENT = {**_COMMON, **_kinds(
    "controller_id controller_name workload_id workload_name workload_domain workload_image "
    "workload_service category user user_addr user_session rest_method rest_request rest_body message",
    "enforcer_limit")}
FIELD_KINDS: Dict[str, Dict[str, str]] = {
    "event": _EVENT,
    "activity": _EVENT,
    "threat": {**_COMMON, **_kinds(
        "id client_workload_id client_workload_name client_workload_domain client_workload_image "
        "client_workload_service server_workload_id server_workload_name server_workload_domain "
        "server_workload_image server_workload_service severity action client_ip server_ip "
        "application sensor group target packet message", bools="monitor")},
    "violation": {**_COMMON, **_kinds(
        "id client_id client_name client_domain client_image client_service server_id server_name "
        "server_domain server_image server_service policy_action client_ip server_ip fqdn",
        bools="xff nbe")},
    "incident": {**_COMMON, **_kinds(
        "id workload_id workload_name workload_domain workload_image workload_service "
        "remote_workload_id remote_workload_name remote_workload_domain remote_workload_image "
        "remote_workload_service proc_name proc_path proc_cmd proc_real_user proc_effective_user "
        "file_path client_ip server_ip proc_parent_name proc_parent_path action group rule_id message",
        "proc_real_uid proc_effective_uid aggregation_from count", bools="conn_ingress")},
    "audit": {**_COMMON, **_kinds(
        "workload_id workload_name workload_domain workload_image workload_service image image_id "
        "registry registry_name repository tag base_os cvedb_version message user error group platform "
        "platform_version region project_name package_ver fixed_ver vectors vectors_v3 link "
        "description pub_date last_mod_date image_layer_digest cmds pvc_name pvc_storageclass_name",
        "critical_vul_cnt high_vul_cnt medium_vul_cnt aggregation_from", "score score_v3")},
}
_ZERO = {"str": "", "int": 0, "float": 0.0, "bool": False}


# -- §2.2 query parameters ---------------------------------------------------------------------

_OPS = {"eq", "neq", "in", "notin", "gt", "gte", "lt", "lte", "prefix"}


@dataclass
class Query:
    start: int = 0
    limit: int = 0                                   # 0: no limit
    filters: List[Tuple[str, str, str]] = field(default_factory=list)   # (key, op, value)
    sorts: List[Tuple[str, bool]] = field(default_factory=list)         # (key, ascending)


def go_atoi(text: str) -> Optional[int]:
    """strconv.Atoi: decimal digits with an optional sign, nothing else."""
    body = text[1:] if text[:1] in "+-" else text
    return int(text) if body.isascii() and body.isdigit() else None


def _go_float(text: str) -> Optional[float]:
    if not text or text != text.strip() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
             "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_PARSE = {"str": lambda v: v, "int": go_atoi, "float": _go_float, "bool": _GO_BOOLS.get}


def parse_query(pairs: Sequence[Tuple[str, str]]) -> Query:
    """restParseQuery: first value of each name; ``start`` < 0 taken as |start|; at most 8 f_ and 8 s_."""
    query, seen = Query(), set()
    for key, value in pairs:
        if key in seen:
            continue
        seen.add(key)
        if key == "start":
            n = go_atoi(value)
            query.start = abs(n) if n is not None else query.start
        elif key == "limit":
            n = go_atoi(value)
            query.limit = n if n is not None and n >= 0 else query.limit
        elif key.startswith("f_") and len(key) > 2 and len(query.filters) < MAX_FIELDS:
            parts = value.split(",")
            if len(parts) == 1 and parts[0]:
                query.filters.append((key[2:], "eq", parts[0]))
            elif len(parts) > 1 and parts[1]:       # only the second part is the value
                query.filters.append((key[2:], parts[0] if parts[0] in _OPS else "eq", parts[1]))
        elif key.startswith("s_") and len(query.sorts) < MAX_FIELDS and value in ("asc", "desc"):
            query.sorts.append((key[2:], value == "asc"))
    return query


def _value(element: dict, key: str, kind: str):
    value = element.get(key)
    return _ZERO[kind] if value is None else value


def _compile_filters(filters, kinds: Dict[str, str]) -> List[Tuple[str, str, str, object]]:
    """restNewFilter: ``since`` becomes reported_timestamp gte; unknown keys and bad values dropped."""
    compiled = []
    for key, op, text in filters:
        if key == "since":
            key, op = "reported_timestamp", "gte"
        kind = kinds.get(key)
        value = _PARSE[kind](text) if kind else None
        if value is not None:
            compiled.append((key, kind, op, value))
    return compiled


def _ordered(op: str, have, want) -> bool:
    return {"eq": have == want, "neq": have != want, "gt": have > want, "gte": have >= want,
            "lt": have < want, "lte": have <= want}.get(op, False)


def _matches(element: dict, key: str, kind: str, op: str, want) -> bool:
    have = _value(element, key, kind)
    if kind == "str":
        if op in ("in", "notin"):   # substring of any |-separated part
            hit = any(part in have for part in want.split("|"))
            return hit if op == "in" else not hit
        if op == "prefix":
            return have.startswith(want)
    elif kind == "bool":            # Go compares bools as false < true
        have, want = int(bool(have)), int(want)
    return _ordered(op, have, want)  # int/float/bool with in, notin or prefix: nothing matches


def select(items: list, query: Query, kinds: Dict[str, str], rng: random.Random,
           element: Callable[[object], dict] = lambda item: item) -> list:
    """filterAndSort over ``items`` (newest arrival first); ``element`` gives an item's fields."""
    if len(items) <= query.start:
        return []
    items = list(items)
    rng.shuffle(items)   # sort.Sort is not stable: equal keys come in any order
    sorts = [(k, asc) for k, asc in query.sorts if k in kinds] + [("reported_timestamp", False)]
    for key, asc in reversed(sorts):
        items.sort(key=lambda i: _value(element(i), key, kinds[key]), reverse=not asc)
    filters = _compile_filters(query.filters, kinds)
    if filters:
        items = [i for i in items if all(_matches(element(i), *f) for f in filters)]
    return items[query.start:query.start + query.limit if query.limit else None]


# -- the REST marshaller's JSON (§5.2) --------------------------------------------------------

_HTML_SAFE = str.maketrans({c: "\\u%04x" % ord(c) for c in "<>&\u2028\u2029"})


def _has_float(value) -> bool:
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return isinstance(value, float)
    return any(_has_float(v) for v in value)


def go_json(value) -> str:
    """encoding/json of a map-converted value: map keys sorted, HTML-safe escaping, float32 numbers.

    json.dumps writes the same but for floats and the escapes of \\b and \\f, so it does the work
    (at C speed) for values without them.
    """
    if not _has_float(value):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        if "\\b" not in text and "\\f" not in text:
            return text.translate(_HTML_SAFE)
    return _go_json_exactly(value)


def _go_json_exactly(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_json_float32(value)
    if isinstance(value, str):
        return go_json_string(value)
    if isinstance(value, dict):
        return "{" + ",".join(go_json_string(k) + ":" + _go_json_exactly(value[k]) for k in sorted(value)) + "}"
    return "[" + ",".join(_go_json_exactly(v) for v in value) + "]"


class _Stored(NamedTuple):
    """A ring element and its JSON, made once: in a list (threats without the packet) and alone."""

    element: dict
    json: str
    listed: str


def _stored(notification: str, element: dict) -> _Stored:
    alone = go_json(element)
    if notification == "threat" and "packet" in element:   # lists blank it (omitempty: the key goes)
        return _Stored(element, alone, go_json({k: v for k, v in element.items() if k != "packet"}))
    return _Stored(element, alone, alone)


def _rfc3339(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- tokens and sessions ------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Installation:
    """What the controllers of one installation share: the JWT key and the expired-token list."""

    def __init__(self):
        self.id = uuid.uuid4().hex
        self.key = os.urandom(32)
        self.lock = threading.Lock()
        self.issued: set = set()
        self.expired: set = set()
        self.members: List["RestController"] = []

    def issue(self, user: str, role: str, now: float) -> Tuple[str, dict]:
        claims = {"sub": self.id, "jti": uuid.uuid4().hex, "iat": int(now), "exp": int(now) + HARD_LIFE,
                  "user": user, "role": role}
        signed = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
        with self.lock:
            self.issued.add(claims["jti"])
        return signed + "." + _b64(hmac.new(self.key, signed.encode(), hashlib.sha256).digest()), claims

    def verify(self, token: str, now: float) -> Optional[dict]:
        """The claims of a live token of this installation, else None."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self.key, (header + "." + payload).encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(signature)):
                return None
            claims = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        live = claims.get("sub") == self.id and now < claims.get("exp", 0) and not self.dead(claims.get("jti"))
        return claims if live else None

    def dead(self, jti) -> bool:
        with self.lock:
            return jti in self.expired

    def expire(self, jtis) -> None:
        with self.lock:
            self.expired.update(jtis)


@dataclass
class _Session:
    jti: str
    user: str
    role: str
    id: str            # user_session of its events: 6 random characters
    addr: str
    exp: int
    last_used: float
    last_sync: float


@dataclass
class _Caller:
    name: str
    role: str
    session_id: str
    addr: str
    jti: Optional[str] = None      # None for an API key


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: List[Tuple[str, str]] = field(default_factory=list)


def _error(status: int, code: int, message: str = "") -> _Reply:
    """restRespErrorMessage: struct order, which happens to be sorted; no Cache-Control."""
    text = ERRORS[code]
    body = json.dumps({"code": code, "error": text, "message": message or text}, separators=(",", ":"))
    return _Reply(status, body.encode(), [("Content-Type", "application/json")])


_AUTH_FAILED = _error(401, 3)
_AUTH_LEVELS = {"User.Login": "Info", "User.Logout": "Info", "User.Timeout": "Notice",
                "User.Login.Blocked": "Notice", "User.Login.Failed": "Warning",
                "User.Resource.Access.Denied": "Warning"}
_AUTH_MESSAGES = {"User.Login": "User %s login", "User.Logout": "User %s logout",
                  "User.Timeout": "User %s session timeout", "User.Login.Blocked": "User %s login blocked",
                  "User.Login.Failed": "User %s login failed",
                  "User.Resource.Access.Denied": "User %s resource access denied"}

DEFAULT_USERS = {"siem-reader": ("reader-pass", "reader")}
#: 64 characters of the secret alphabet of §1.4 (no ``W``, never ``:``)
DEFAULT_APIKEY_SECRET = "Qm7!xR2@kT9$vB4%nC6^hJ8&pL3*sD5+fG1#zA0aYbEcUdIeOgPiSjVkXlZmNoHq"
DEFAULT_APIKEYS = {"siem": (DEFAULT_APIKEY_SECRET, "reader")}


class RestController:
    """A NeuVector controller's REST API on 127.0.0.1 (HTTPS, TLS 1.3 only, HTTP/1.1), in a thread."""

    def __init__(self, ca, users: dict = DEFAULT_USERS, apikeys: dict = DEFAULT_APIKEYS,
                 idle_timeout: int = 300, ring_size: int = 4096, hostnames=("neuvector", "127.0.0.1"),
                 clock: Callable[[], float] = time.time, peer: Optional["RestController"] = None):
        for _, role in (*users.values(), *apikeys.values()):
            if role not in ROLES:
                raise ValueError("unknown role %r; known: %s" % (role, sorted(ROLES)))
        self.users, self.apikeys = dict(users), dict(apikeys)
        self.idle_timeout, self.ring_size, self.clock = idle_timeout, ring_size, clock
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_3
        self._tls.set_alpn_protocols(["http/1.1"])   # HTTP/2 is switched off
        ca.issue_cert(*hostnames).configure_cert(self._tls)
        self._ca = ca
        self._installation = peer._installation if peer is not None else _Installation()
        self._lock = threading.Lock()
        self._rings: Dict[str, List[_Stored]] = {n: [] for n in LISTS}
        self._sessions: Dict[str, _Session] = {}
        self._failures: Dict[str, Tuple[int, float]] = {}   # user -> (failures in a row, blocked until)
        self._logins_of: Dict[str, int] = {}
        self._faults: List[list] = []                       # [status, remaining, path prefix]
        self._expire_after: Optional[str] = None            # every token dies after this path's next answer
        self._delay = 0.0
        self._stopping = threading.Event()
        self._listener: Optional[_Listener] = None
        self._connections: set = set()
        self._identity = {"cluster_name": "cluster.local", "controller_id": secrets.token_hex(32),
                          "controller_name": "neuvector-controller-pod-" + secrets.token_hex(3),
                          "host_id": "node-1:" + secrets.token_hex(8), "host_name": "node-1"}
        self.requests: List[Tuple[str, str, Dict[str, str], str]] = []
        self.logins = 0
        self.port = 0
        self.ca_file = ""
        self._ca_dir = ""

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "neuvector+https://127.0.0.1:%d" % self.port

    def __enter__(self) -> "RestController":
        self._ca_dir = tempfile.mkdtemp(prefix="nv-rest-ca-")
        self.ca_file = os.path.join(self._ca_dir, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        with self._installation.lock:
            self._installation.members.append(self)
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()   # ends slow() pauses at once
        self.down()
        wait_until(lambda: not self._connections, timeout=10, what="connection threads to end")
        with self._installation.lock:
            self._installation.members.remove(self)
        shutil.rmtree(self._ca_dir, ignore_errors=True)

    def up(self) -> None:
        """Accept connections (again, on the same port)."""
        with self._lock:
            if self._listener is None:
                self._listener = _Listener(self)
                self.port = self._listener.server_address[1]
                threading.Thread(target=self._listener.serve_forever, kwargs={"poll_interval": 0.05},
                                 name="nv-rest-accept", daemon=True).start()

    def down(self) -> None:
        """Close the listener and every connection: connections are refused until ``up()``."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            handlers = list(self._connections)
        for handler in handlers:
            handler.abort()

    def _track(self, handler, listener) -> None:
        with self._lock:
            if listener is not self._listener:    # accepted just before down()
                raise ConnectionAbortedError("listener closed")
            self._connections.add(handler)

    def _untrack(self, handler) -> None:
        with self._lock:
            self._connections.discard(handler)

    # -- rings -------------------------------------------------------------------------------------
    def add(self, notification: str, element: dict) -> None:
        """Append to that ring in arrival order; past ``ring_size`` the oldest arrival is dropped."""
        if notification not in LISTS:
            raise ValueError("no %r ring; rings: %s" % (notification, ", ".join(LISTS)))
        if "notification" in element:
            raise ValueError("a REST element has no 'notification' key (rest_elements.rest_element)")
        with self._lock:
            self._append(notification, copy.deepcopy(element))

    def _append(self, notification: str, element: dict) -> None:
        ring = self._rings[notification]
        ring.append(_stored(notification, element))
        del ring[:-self.ring_size]

    def ring(self, notification: str) -> List[dict]:
        """The ring as it is now, in arrival order (idle-outs due by now written first)."""
        with self._lock:
            self._sweep(self.clock())
            return [copy.deepcopy(stored.element) for stored in self._rings[notification]]

    # -- fault injection ---------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Every token issued so far is dead now, as after an idle-out here or on a peer."""
        now = self.clock()
        with self._lock:
            for session in self._sessions.values():
                self._auth_event("User.Timeout", session.user, session.addr, session.id, session.role, now)
            self._sessions.clear()
        with self._installation.lock:
            issued = set(self._installation.issued)
        self._installation.expire(issued)

    def fail_next(self, status: int, count: int = 1, paths: str = "/v1/log/") -> None:
        """The next ``count`` requests whose path starts with ``paths`` get ``status`` (a proxy's page)."""
        with self._lock:
            self._faults.append([status, count, paths])

    def expire_tokens_after(self, path: str) -> None:
        """``expire_tokens`` once the next request for ``path`` is answered: a token that dies in the
        middle of a client's run of requests (an idle-out on a peer, an admin's logout of the user)."""
        with self._lock:
            self._expire_after = path

    def slow(self, seconds: float) -> None:
        """Hold every request this long before answering it (as behind the controller's auth lock)."""
        self._delay = seconds

    def restart(self) -> None:
        """A controller restart: rings empty, sessions and connections gone (tokens stay valid)."""
        with self._lock:
            for ring in self._rings.values():
                ring.clear()
            self._sessions.clear()
        self._drop_connections()

    # -- events this controller writes ----------------------------------------------------------
    def _auth_event(self, name: str, user: str, addr: str, session_id: str, role: Optional[str],
                    when: float) -> None:
        """An AUTH event (api.Event) in the event ring; called with the lock held."""
        seconds = int(when)
        event = {"name": name, "level": _AUTH_LEVELS[name], "reported_timestamp": seconds,
                 "reported_at": _rfc3339(seconds), "enforcer_id": "", "enforcer_name": "",
                 "workload_id": "", "workload_name": "", "workload_domain": "", "workload_image": "",
                 "workload_service": "", "category": "AUTH", "user": user,
                 "user_roles": None if role is None else {"": role}, "user_addr": addr,
                 "user_session": session_id, "message": _AUTH_MESSAGES[name] % user, **self._identity}
        self._append("event", event)

    # -- sessions ------------------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        """Run the idle timers: each session past ``idle_timeout`` writes User.Timeout and dies everywhere."""
        for jti, session in list(self._sessions.items()):
            if now >= session.exp:
                del self._sessions[jti]
            elif now - session.last_used >= self.idle_timeout:
                del self._sessions[jti]
                self._auth_event("User.Timeout", session.user, session.addr, session.id, session.role,
                                 session.last_used + self.idle_timeout)
                self._installation.expire([jti])

    def _open_session(self, claims: dict, addr: str, now: float) -> Optional[_Session]:
        """_registerLoginSession: at most 32 per user here; writes User.Login. Lock held."""
        user, role = claims["user"], claims["role"]
        if sum(s.user == user for s in self._sessions.values()) >= MAX_SESSIONS:
            self._auth_event("User.Login.Failed", user, addr, "", None, now)
            return None
        session_id = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(6))
        session = _Session(claims["jti"], user, role, session_id, addr, claims["exp"], now, now)
        self._sessions[session.jti] = session
        self._auth_event("User.Login", user, addr, session_id, role, now)
        return session

    def _reset_timer(self, jti: str, now: float) -> None:
        with self._lock:
            if jti in self._sessions:
                self._sessions[jti].last_used = now

    def _token_caller(self, token: str, addr: str) -> Optional[_Caller]:
        now = self.clock()
        claims = self._installation.verify(token, now)
        if claims is None:
            return None
        with self._lock:
            self._sweep(now)
            if self._installation.dead(claims["jti"]):   # idled out just now
                return None
            session = self._sessions.get(claims["jti"]) or self._open_session(claims, addr, now)
            if session is None:
                return None
            session.last_used = now
            sync = now - session.last_sync >= TIMER_SYNC
            if sync:
                session.last_sync = now
        if sync:
            for peer in list(self._installation.members):
                if peer is not self:
                    peer._reset_timer(session.jti, now)
        return _Caller(session.user, session.role, session.id, addr, session.jti)

    def _apikey_caller(self, value: str, addr: str) -> Optional[_Caller]:
        parts = value.split(":")
        entry = self.apikeys.get(parts[0]) if len(parts) == 2 else None
        if entry is None or not hmac.compare_digest(entry[0].encode(), parts[1].encode()) or not ROLES[entry[1]]:
            return None
        return _Caller(parts[0], entry[1], "apikey_" + parts[0].encode().hex(), addr)

    def _authenticate(self, headers, addr: str) -> Optional[_Caller]:
        tokens = headers.get_all("X-Auth-Token") or []
        if tokens:
            return self._token_caller(tokens[0], addr) if len(tokens) == 1 else None
        key = headers.get("X-Auth-Apikey")
        return self._apikey_caller(key, addr) if key is not None else None

    # -- /v1/auth ------------------------------------------------------------------------------------
    def _login(self, body: bytes, addr: str) -> _Reply:
        try:
            request = json.loads(body)
            password = request["password"]
            user, secret = password.get("username", ""), password.get("password", "")
            client_ip = request.get("client_ip", "") or addr
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, 6)
        if not all(isinstance(v, str) for v in (user, secret, client_ip)):
            return _error(400, 6)
        now = self.clock()
        with self._lock:
            refused = self._check_password(user, secret, client_ip, now)
            if refused is not None:
                return refused
            token, claims = self._installation.issue(user, self.users[user][1], now)
            session = self._open_session(claims, client_ip, now)
            if session is None:
                return _AUTH_FAILED
            if not ROLES[session.role]:   # checked after the session was opened
                del self._sessions[session.jti]
                return _AUTH_FAILED
            self.logins += 1
            self._logins_of[user] = self._logins_of.get(user, 0) + 1
            return self._success(go_json(self._token_data(token, session, now)), [])

    def _check_password(self, user: str, secret: str, addr: str, now: float) -> Optional[_Reply]:
        """None when the password is right; else the refusal, with its event and the lockout count."""
        failures, blocked_until = self._failures.get(user, (0, 0.0))
        if now < blocked_until:
            self._failures[user] = (failures, now + LOCKOUT_SECONDS)   # each attempt restarts the block
            self._auth_event("User.Login.Blocked", user, addr, "", None, now)
            return _error(401, 47)
        known = self.users.get(user)
        if known is not None and secret and hmac.compare_digest(known[0].encode(), secret.encode()):
            self._failures.pop(user, None)
            return None
        self._auth_event("User.Login.Failed", user, addr, "", None, now)
        if known is None:
            return _AUTH_FAILED
        failures += 1
        if failures >= LOCKOUT_FAILURES:
            self._failures[user] = (0, now + LOCKOUT_SECONDS)
            return _error(401, 47)
        self._failures[user] = (failures, 0.0)
        return _AUTH_FAILED

    def _token_data(self, token: str, session: _Session, now: float) -> dict:
        """api.RESTTokenData (§1.2)."""
        permissions = [{"id": p, "read": r, "write": w} for p, (r, w) in sorted(ROLES[session.role].items())]
        return {
            "token": {
                "token": token, "global_permissions": permissions, "domain_permissions": {},
                "fullname": session.user, "server": "", "username": session.user, "password": "",
                "email": "", "role": session.role, "timeout": self.idle_timeout, "locale": "en",
                "default_password": False, "modify_password": False,
                "last_login_timestamp": int(now), "last_login_at": _rfc3339(int(now)),
                "login_count": self._logins_of.get(session.user, 0),
                "blocked_for_failed_login": False, "blocked_for_password_expired": False,
                "password_resettable": False},
            "password_days_until_expire": -1, "password_hours_until_expire": 0,
            "need_to_reset_password": False}

    def _logout(self, caller: _Caller) -> _Reply:
        if caller.jti is not None:
            with self._lock:
                session = self._sessions.pop(caller.jti, None)
                if session is not None:
                    self._auth_event("User.Logout", session.user, session.addr, session.id, session.role,
                                     self.clock())
            self._installation.expire([caller.jti])
        return _Reply(200, b"", [("Content-Type", "application/json"), ("Cache-Control", "no-cache")])

    # -- /v1/log ---------------------------------------------------------------------------------------
    def _may_read(self, caller: _Caller, notification: str) -> bool:
        return ROLES[caller.role].get(LISTS[notification][1], (False, False))[0]

    def _listed(self, notification: str, ring: List[_Stored], query: Query, caller: _Caller,
                rng: random.Random) -> str:
        """The JSON list of what the caller sees of one ring."""
        newest_first = ring[::-1]
        if not self._may_read(caller, notification):   # every user sees their own events
            newest_first = [s for s in newest_first
                            if notification == "event" and s.element.get("user") == caller.name]
        chosen = select(newest_first, query, FIELD_KINDS[notification], rng, lambda s: s.element)
        return "[" + ",".join(s.listed for s in chosen) + "]"

    def _list(self, notifications: Sequence[str], pairs, caller: _Caller, request_number: int,
              accept_encoding: List[str]) -> _Reply:
        query = parse_query(pairs)
        rng = random.Random(TIE_SEED * 1000003 + request_number)
        with self._lock:
            rings = {n: list(self._rings[n]) for n in notifications}
        lists = sorted((LISTS[n][0], self._listed(n, rings[n], query, caller, rng)) for n in notifications)
        return self._success("{" + ",".join(go_json_string(key) + ":" + text for key, text in lists) + "}",
                             accept_encoding)

    def _threat(self, threat_id: str, caller: _Caller, accept_encoding: List[str]) -> _Reply:
        with self._lock:
            if not self._may_read(caller, "threat"):
                self._auth_event("User.Resource.Access.Denied", caller.name, caller.addr, caller.session_id,
                                 caller.role, self.clock())
                return _error(403, 25)
            found = next((s for s in reversed(self._rings["threat"]) if s.element.get("id") == threat_id), None)
            if found is None:
                self._auth_event("User.Resource.Access.Denied", caller.name, caller.addr, caller.session_id,
                                 caller.role, self.clock())
                return _error(404, 7, "Object not found")
        return self._success('{"threat":' + found.json + "}", accept_encoding)

    @staticmethod
    def _success(text: str, accept_encoding: List[str]) -> _Reply:
        """restRespSuccess: gzip above 1,200 bytes when one comma-separated token is exactly ``gzip``."""
        data = text.encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-cache")]
        if len(data) > GZIP_THRESHOLD and any(t == "gzip" for v in accept_encoding for t in v.split(",")):
            data = gzip.compress(data, compresslevel=6)   # Go's default level
            headers.append(("Content-Encoding", "gzip"))
        return _Reply(200, data, headers)

    # -- one request ---------------------------------------------------------------------------------
    def _take_fault(self, path: str) -> Optional[_Reply]:
        for fault in self._faults:
            status, remaining, prefix = fault
            if remaining > 0 and path.startswith(prefix):
                fault[1] -= 1
                text = "<html><body><h1>%d</h1>injected by the test</body></html>\n" % status
                return _Reply(status, text.encode(), [("Content-Type", "text/html")])
        return None

    def _route(self, method: str, path: str):
        """(needs authentication, handler name, argument) or an error reply; httprouter answers 404/405 first."""
        if path == "/v1/auth":
            routes = {"POST": (False, "login"), "PATCH": (True, "refresh"), "DELETE": (True, "logout")}
        elif path.startswith("/v1/log/") and (path[8:] in LISTS or path[8:] == "security"):
            routes = {"GET": (True, "list")}
        elif path.startswith("/v1/log/threat/") and path.count("/") == 4 and path[15:]:
            routes = {"GET": (True, "threat")}
        else:
            return _error(404, 1)
        return routes.get(method) or _error(405, 2)

    def handle(self, method: str, target: str, headers, body: bytes, addr: str) -> _Reply:
        parts = urlsplit(target)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        first: Dict[str, str] = {}
        for key, value in pairs:
            first.setdefault(key, value)
        auth = "token" if "X-Auth-Token" in headers else "apikey" if "X-Auth-Apikey" in headers else "none"
        with self._lock:
            self.requests.append((method, parts.path, first, auth))
            number = len(self.requests)
            fault = self._take_fault(parts.path)
        if self._delay:
            self._stopping.wait(self._delay)
        if fault is not None:
            return fault
        route = self._route(method, parts.path)
        if isinstance(route, _Reply):
            return route
        needs_auth, name = route
        if not needs_auth:
            return self._login(body, addr)
        caller = self._authenticate(headers, addr)
        if caller is None:
            return _AUTH_FAILED
        accept = headers.get_all("Accept-Encoding") or []
        if name == "refresh":
            return _Reply(200, b"", [("Content-Type", "application/json"), ("Cache-Control", "no-cache")])
        if name == "logout":
            return self._logout(caller)
        if name == "threat":
            return self._threat(parts.path[len("/v1/log/threat/"):], caller, accept)
        kind = parts.path[len("/v1/log/"):]
        reply = self._list(SECURITY if kind == "security" else (kind,), pairs, caller, number, accept)
        with self._lock:
            expire, self._expire_after = self._expire_after == parts.path, (
                None if self._expire_after == parts.path else self._expire_after)
        if expire:
            self.expire_tokens()
        return reply


# -- HTTP/1.1 over TLS, one thread per connection --------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEPALIVE_BOUND
    controller: RestController

    def setup(self):
        raw = self.request
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # no Nagle stall per reply
        raw.settimeout(HANDSHAKE_BOUND)
        self.request = self.server.tls.wrap_socket(raw, server_side=True)
        try:
            self.controller._track(self, self.server)
        except ConnectionAbortedError:
            self.request.close()
            raise
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            self.controller._untrack(self)
            self.request.close()

    def abort(self) -> None:
        """Shut the connection down from another thread (a dup of the descriptor, not the TLS object)."""
        try:
            fd = self.request.fileno()
            if fd >= 0:
                with socket.socket(fileno=os.dup(fd)) as s:
                    s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, *args):
        pass

    def send_response(self, code, message=None):
        self.send_response_only(code, message)   # Go sends no Server header
        self.send_header("Date", self.date_time_string())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):   # trailers
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve(self):
        body = self._body()
        reply = self.controller.handle(self.command, self.path, self.headers, body, self.client_address[0])
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        data = reply.body
        if len(data) > GO_CHUNKING_AFTER:   # a handler's one big Write: net/http chunks it
            self.send_header("Transfer-Encoding", "chunked")
            data = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, controller: RestController):
        self.tls = controller._tls
        handler = type("Handler", (_Handler,), {"controller": controller})
        super().__init__(("127.0.0.1", controller.port), handler)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):   # refused handshakes and dropped peers are normal
            super().handle_error(request, client_address)
