"""The NeuVector REST test server, checked against the REST reference's rules.

Each expectation below is a rule of the reference (section in the test's
docstring); the server is what the REST source's tests talk to, so a rule it
broke would make those tests prove nothing.
"""
import collections
import gzip
import http.client
import json
import socket
import ssl
from typing import Dict, List, NamedTuple, Optional

import pytest
import trustme

from helpers.goformat import go_json_float32, go_json_string
from helpers.nv_rest_server import DEFAULT_APIKEY_SECRET, RestController, go_json
from helpers.rest_elements import CAP_LEN, rest_element
from helpers.sample_stream import parsed, sample_lines

AUTH_FAILED = b'{"code":3,"error":"Authentication failed","message":"Authentication failed"}'
APIKEY = {"X-Auth-Apikey": "siem:" + DEFAULT_APIKEY_SECRET}
READER = ("siem-reader", "reader-pass")
T0 = 1786133600
LIST_KEYS = {"event": "events", "activity": "events", "threat": "threats", "violation": "violations",
             "incident": "incidents", "audit": "audits"}


class Clock:
    """Wall seconds a test moves by hand."""

    def __init__(self):
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Reply(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self):
        data = gzip.decompress(self.body) if self.headers.get("content-encoding") == "gzip" else self.body
        return json.loads(data)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ctl(ca, clock):
    with RestController(ca, clock=clock) as controller:
        yield controller


def tls_context(ctl: RestController) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ctl.ca_file)


def call(ctl: RestController, method: str, path: str, headers: Optional[dict] = None, body=None,
         timeout: float = 10) -> Reply:
    conn = http.client.HTTPSConnection("127.0.0.1", ctl.port, context=tls_context(ctl), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def login(ctl: RestController, user: str = READER[0], password: str = READER[1], **extra) -> Reply:
    return call(ctl, "POST", "/v1/auth", body=json.dumps({"password": {"username": user, "password": password},
                                                            **extra}))


def token(ctl: RestController, user: str = READER[0], password: str = READER[1]) -> dict:
    reply = login(ctl, user, password)
    assert reply.status == 200, reply
    return {"X-Auth-Token": reply.json()["token"]["token"]}


def get(ctl: RestController, path: str, headers: dict = APIKEY) -> dict:
    reply = call(ctl, "GET", path, headers)
    assert reply.status == 200, reply
    return reply.json()


def names(ctl: RestController, notification: str = "event") -> List[str]:
    return [e.get("name") for e in ctl.ring(notification)]


# -- elements -----------------------------------------------------------------------------------------

def base_elements() -> Dict[str, dict]:
    """The first reference sample of each type, in REST form."""
    first = {}
    for line in sample_lines(0):
        notification, element = rest_element(parsed(line))
        first.setdefault(notification, element)
    return first


BASE = base_elements()


def copies(notification: str, timestamps: List[int]) -> List[dict]:
    """Distinct elements of one type, copy i at ``timestamps[i]``; ``marker`` tells them apart."""
    made = []
    for i, when in enumerate(timestamps):
        element = dict(BASE[notification], reported_timestamp=when)
        element["id" if "id" in element else "message"] = "copy-%d" % i
        made.append(element)
    return made


def marker(element: dict) -> str:
    return element.get("id") or element["message"]


def fill(ctl: RestController, notification: str, timestamps: List[int]) -> List[dict]:
    made = copies(notification, timestamps)
    for element in made:
        ctl.add(notification, element)
    return made


def markers(elements: List[dict]) -> List[str]:
    return [marker(e) for e in elements]


# -- transport (§1.1) -------------------------------------------------------------------------------

def test_tls_1_3_only_http_1_1_and_the_neuvector_name(ctl):
    """§1.1: TLS 1.3 minimum, HTTP/2 off, the certificate names ``neuvector``."""
    old = tls_context(ctl)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", ctl.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="neuvector")
    modern = tls_context(ctl)
    modern.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", ctl.port), timeout=10) as raw:
        with modern.wrap_socket(raw, server_hostname="neuvector") as tls:
            assert tls.version() == "TLSv1.3" and tls.selected_alpn_protocol() == "http/1.1"
    assert ctl.url == "neuvector+https://127.0.0.1:%d" % ctl.port


# -- login (§1.2, §1.3, §1.5) -----------------------------------------------------------------------

def test_login_gives_token_data_and_writes_user_login(ctl):
    """§1.2 RESTTokenData; §1.3 a login writes User.Login (AUTH, user, address, 6-character session)."""
    reply = login(ctl)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    data = reply.json()
    assert list(data) == sorted(data)   # the REST marshaller sorts keys
    assert (data["need_to_reset_password"], data["password_days_until_expire"]) == (False, -1)
    user = data["token"]
    assert (user["username"], user["role"], user["timeout"], user["password"]) == ("siem-reader", "reader", 300, "")
    assert {"id": "events", "read": True, "write": False} in user["global_permissions"]
    assert ctl.logins == 1
    event = ctl.ring("event")[-1]
    assert (event["name"], event["category"], event["level"], event["user"], event["user_addr"]) == \
        ("User.Login", "AUTH", "Info", "siem-reader", "127.0.0.1")
    assert len(event["user_session"]) == 6 and event["user_session"].isalnum()
    assert "notification" not in event
    listed = get(ctl, "/v1/log/event", {"X-Auth-Token": user["token"]})["events"]
    assert [e["user_session"] for e in listed] == [event["user_session"]]
    login(ctl, client_ip="10.9.8.7")
    assert ctl.ring("event")[-1]["user_addr"] == "10.9.8.7"   # client_ip names the address


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"Token": {"token": "x"}}', b'{"password": "x"}',
                                  b'{"password": {"username": 5, "password": "p"}}'])
def test_a_malformed_login_body_is_400_code_6(ctl, body):
    """§1.5: body not JSON or no ``password`` object."""
    reply = call(ctl, "POST", "/v1/auth", body=body)
    assert (reply.status, reply.json()["code"], reply.json()["error"]) == (400, 6, "Request in wrong format")


def test_bad_credentials_are_401_code_3_and_write_user_login_failed(ctl):
    """§1.5: wrong password, unknown user, empty password: the same 401 body; §1.3 User.Login.Failed."""
    for user, password in (("siem-reader", "wrong"), ("mallory", "reader-pass"), ("siem-reader", "")):
        reply = login(ctl, user, password)
        assert (reply.status, reply.body) == (401, AUTH_FAILED)
    assert names(ctl) == ["User.Login.Failed"] * 3 and ctl.logins == 0


def test_five_failures_block_the_user_for_an_hour_restarted_by_each_attempt(ctl, clock):
    """§1.3: the 5th failure already answers code 47; each attempt during the block restarts the 60 min."""
    for _ in range(4):
        assert login(ctl, password="wrong").body == AUTH_FAILED
    blocked = login(ctl, password="wrong")
    assert (blocked.status, blocked.json()["code"]) == (401, 47)
    assert login(ctl).json()["code"] == 47          # the right password too, and the block restarts
    clock.advance(3599)
    assert login(ctl).json()["code"] == 47
    assert names(ctl)[-2:] == ["User.Login.Blocked"] * 2
    clock.advance(3600)
    assert login(ctl).status == 200


def test_the_33rd_live_session_of_a_user_is_refused(ctl):
    """§1.3: at most 32 live sessions per user per controller; the 33rd → 401 and User.Login.Failed."""
    for _ in range(32):
        assert login(ctl).status == 200
    assert login(ctl).body == AUTH_FAILED
    assert names(ctl)[-1] == "User.Login.Failed" and ctl.logins == 32


# -- the token (§1.3) -------------------------------------------------------------------------------

def test_every_request_resets_the_idle_timer_and_an_idle_token_times_out(ctl, clock):
    """§1.3: idle timeout = ``timeout`` s without a request; PATCH /v1/auth keeps alive; User.Timeout."""
    auth = token(ctl)
    for method, path in (("GET", "/v1/log/event"), ("PATCH", "/v1/auth"), ("GET", "/v1/log/audit")):
        clock.advance(299)
        reply = call(ctl, method, path, auth)
        assert reply.status == 200, (method, path)
    assert reply.body != b"" and call(ctl, "PATCH", "/v1/auth", auth).body == b""
    last_use = clock.now
    clock.advance(300)
    assert call(ctl, "GET", "/v1/log/event", auth).body == AUTH_FAILED
    timeout = ctl.ring("event")[-1]
    assert (timeout["name"], timeout["level"], timeout["reported_timestamp"]) == \
        ("User.Timeout", "Notice", int(last_use) + 300)


def test_a_token_dies_after_six_hours_whatever_its_use(ca, clock):
    """§1.3: hard life 6 h; PATCH /v1/auth does not extend it."""
    with RestController(ca, clock=clock, idle_timeout=3600) as ctl:
        auth = token(ctl)
        for _ in range(7):
            clock.advance(3000)
            assert call(ctl, "PATCH", "/v1/auth", auth).status == 200
        clock.advance(21600 - 7 * 3000)
        assert call(ctl, "GET", "/v1/log/event", auth).body == AUTH_FAILED


def test_logout_ends_the_token_and_writes_user_logout(ctl):
    """§1.3: DELETE /v1/auth → 200 empty; the token is dead; User.Logout with the login's session."""
    auth = token(ctl)
    reply = call(ctl, "DELETE", "/v1/auth", auth)
    assert (reply.status, reply.body) == (200, b"")
    assert call(ctl, "GET", "/v1/log/event", auth).body == AUTH_FAILED
    login_event, logout_event = ctl.ring("event")
    assert logout_event["name"] == "User.Logout" and logout_event["user_session"] == login_event["user_session"]


def test_expire_tokens_kills_every_token_as_an_idle_out_does(ctl):
    auth = token(ctl)
    ctl.expire_tokens()
    assert call(ctl, "GET", "/v1/log/event", auth).body == AUTH_FAILED
    assert names(ctl) == ["User.Login", "User.Timeout"]
    assert call(ctl, "GET", "/v1/log/event", token(ctl)).status == 200


def test_peers_accept_each_others_tokens_with_a_first_use_login_and_share_expiry(ca, clock):
    """§1.3 several controllers: first use elsewhere writes User.Login there; timers reset at most every
    120 s across peers; a logout on one is refused by all; another installation's token is refused."""
    with RestController(ca, clock=clock) as a, RestController(ca, clock=clock, peer=a) as b, \
            RestController(ca, clock=clock) as stranger:
        auth = token(a)
        assert call(b, "GET", "/v1/log/event", auth).status == 200
        assert names(b) == ["User.Login"] and b.logins == 0
        assert call(stranger, "GET", "/v1/log/event", auth).body == AUTH_FAILED
        for _ in range(2):               # only a uses the token; b's timer is reset from a
            clock.advance(200)
            assert call(a, "GET", "/v1/log/event", auth).status == 200
        clock.advance(50)
        assert call(b, "GET", "/v1/log/event", auth).status == 200
        assert call(a, "DELETE", "/v1/auth", auth).status == 200
        assert call(b, "GET", "/v1/log/event", auth).body == AUTH_FAILED


# -- API keys, and which header wins (§1.4) ---------------------------------------------------------

def test_an_api_key_works_on_every_request_without_a_session_or_event(ctl):
    """§1.4: no login, no User.Login, any number of requests."""
    for _ in range(3):
        assert get(ctl, "/v1/log/event") == {"events": []}
    assert ctl.logins == 0 and ctl.ring("event") == []
    assert [r[3] for r in ctl.requests] == ["apikey"] * 3


def test_x_auth_token_wins_when_both_headers_are_sent(ctl):
    """§1.4: the API key is used only without an X-Auth-Token."""
    assert call(ctl, "GET", "/v1/log/event", {**APIKEY, "X-Auth-Token": "not-a-jwt"}).body == AUTH_FAILED
    auth = token(ctl)
    assert call(ctl, "GET", "/v1/log/event", {**auth, "X-Auth-Apikey": "siem:wrong"}).status == 200
    assert ctl.requests[-1][3] == "token"


def test_every_authentication_failure_has_the_same_401_body(ctl, ca, clock):
    """§1.5: expiry and bad credentials look the same: 401 code 3, one body."""
    with RestController(ca, clock=clock) as other:
        foreign = token(other)["X-Auth-Token"]
    good = token(ctl)["X-Auth-Token"]
    header, payload, signature = good.split(".")
    logged_out = token(ctl)
    call(ctl, "DELETE", "/v1/auth", logged_out)
    idle = token(ctl)
    attempts = [
        {}, {"X-Auth-Token": "not-a-jwt"}, {"X-Auth-Token": header + "." + payload + "." + signature[::-1]},
        {"X-Auth-Token": foreign}, logged_out, {"X-Auth-Apikey": "siem:wrong"},
        {"X-Auth-Apikey": "nobody:" + DEFAULT_APIKEY_SECRET}, {"X-Auth-Apikey": "siem"},
        {"X-Auth-Apikey": "siem:" + DEFAULT_APIKEY_SECRET + ":x"},
    ]
    replies = [call(ctl, "GET", "/v1/log/event", headers) for headers in attempts]
    conn = http.client.HTTPSConnection("127.0.0.1", ctl.port, context=tls_context(ctl), timeout=10)
    conn.putrequest("GET", "/v1/log/event")
    conn.putheader("X-Auth-Token", good)
    conn.putheader("X-Auth-Token", good)   # exactly one such header is allowed
    conn.endheaders()
    response = conn.getresponse()
    replies.append(Reply(response.status, {}, response.read()))
    conn.close()
    clock.advance(300)
    replies.append(call(ctl, "GET", "/v1/log/event", idle))
    assert [(r.status, r.body) for r in replies] == [(401, AUTH_FAILED)] * (len(attempts) + 2)


# -- permissions (§2.4, §7) -------------------------------------------------------------------------

def test_a_role_without_a_permission_gets_200_and_empty_lists(ca):
    """§2.4: no 403 for a list; the event list holds the caller's own events; no permission → no login."""
    users = {"narrow": ("p1", "events-only"), "ci": ("p2", "ciops"), "none": ("p3", "")}
    with RestController(ca, users=users, apikeys={"k": ("s", ""), "ev": ("s", "events-only")}) as ctl:
        for notification in LIST_KEYS:
            fill(ctl, notification, [T0])
        narrow = token(ctl, "narrow", "p1")
        for notification, key in LIST_KEYS.items():
            listed = get(ctl, "/v1/log/" + notification, narrow)[key]
            assert len(listed) == (2 if notification == "event" else 1 if notification == "activity" else 0)
        assert get(ctl, "/v1/log/security", narrow) == {"threats": [], "incidents": [], "violations": []}
        assert get(ctl, "/v1/log/threat", {"X-Auth-Apikey": "ev:s"}) == {"threats": []}
        denied = call(ctl, "GET", "/v1/log/threat/" + BASE["threat"]["id"], narrow)
        assert (denied.status, denied.json()["code"]) == (403, 25)
        ci = token(ctl, "ci", "p2")
        own = get(ctl, "/v1/log/event", ci)["events"]
        assert [(e["name"], e["user"]) for e in own] == [("User.Login", "ci")]
        assert get(ctl, "/v1/log/activity", ci) == {"events": []}
        assert login(ctl, "none", "p3").body == AUTH_FAILED
        refused = ctl.ring("event")[-1]   # checked after the session was opened (§1.5)
        assert (refused["name"], refused["user"]) == ("User.Login", "none") and ctl.logins == 2
        assert call(ctl, "GET", "/v1/log/event", {"X-Auth-Apikey": "k:s"}).body == AUTH_FAILED


# -- order, paging, filters (§2.2, §2.3) ------------------------------------------------------------

def test_newest_first_with_ties_in_a_different_order_each_time_but_complete(ctl):
    """§2.3: sorted by reported_timestamp descending, unstable among equal seconds."""
    made = fill(ctl, "event", [T0 + i % 6 for i in range(60)])   # ten elements in each second
    orders = set()
    for _ in range(8):
        listed = get(ctl, "/v1/log/event")["events"]
        stamps = [e["reported_timestamp"] for e in listed]
        assert stamps == sorted(stamps, reverse=True)
        assert sorted(markers(listed)) == sorted(markers(made))
        orders.add(tuple(markers(listed)))
    assert len(orders) > 1
    ascending = [e["reported_timestamp"] for e in get(ctl, "/v1/log/event?s_reported_timestamp=asc")["events"]]
    assert ascending == sorted(ascending)


def test_start_and_limit_slice_the_sorted_list(ctl):
    """§2.2: limit 0, negative, absent or not a number = no limit; negative start = |start|."""
    made = fill(ctl, "audit", [T0 + i for i in range(30)])
    newest_first = markers(made[::-1])

    def page(query):
        return markers(get(ctl, "/v1/log/audit?" + query)["audits"])

    assert page("limit=10") == newest_first[:10]
    assert page("start=10&limit=10") == page("start=-10&limit=10") == newest_first[10:20]
    assert page("start=25&limit=10") == newest_first[25:]
    for no_limit in ("limit=0", "limit=-5", "limit=x", "start=x", "limit=0&limit=3"):
        assert page(no_limit) == newest_first, no_limit
    assert page("start=30") == page("start=99&limit=2") == []
    assert page("start=5&limit=3&start=0") == newest_first[5:8]   # only the first value counts


def test_f_since_and_the_filter_quirks(ctl):
    """§2.2: f_since = reported_timestamp gte; ops; unsigned and unknown keys ignored; 8 filters at most."""
    threats = fill(ctl, "threat", [T0 + i for i in range(20)])

    def ids(query):
        return markers(get(ctl, "/v1/log/threat?" + query)["threats"])

    everything = markers(threats[::-1])
    assert ids("f_since=%d" % (T0 + 15)) == everything[:5]
    assert ids("f_since=%d&limit=2&start=1" % (T0 + 15)) == everything[1:3]
    assert ids("f_id=copy-3") == ["copy-3"]
    assert ids("f_id=neq,copy-3") == [m for m in everything if m != "copy-3"]
    assert ids("f_id=in,y-1|py-2") == [m for m in everything if "y-1" in m or "py-2" in m]
    assert ids("f_id=notin,-1") == [m for m in everything if "-1" not in m]
    assert ids("f_id=prefix,copy-1") == [m for m in everything if m.startswith("copy-1")]
    assert ids("f_id=gte,copy-5") == [m for m in everything if m >= "copy-5"]   # byte-wise
    assert ids("f_id=eq,copy-3,copy-4") == ["copy-3"]          # only the second comma part
    assert ids("f_id=nosuchop,copy-3") == ["copy-3"]           # an unknown op is eq
    assert ids("f_reported_timestamp=lt,%d" % (T0 + 2)) == everything[-2:]
    assert ids("f_reported_timestamp=in,%d" % T0) == []        # in on an integer matches nothing
    for ignored in ("f_threat_id=1", "f_count=gt,5", "f_cap_len=%d" % CAP_LEN, "f_nosuchkey=x",
                    "f_reported_timestamp=gt,soon", "f_id=eq,", "f_id=", "f_monitor=maybe"):
        assert ids(ignored) == everything, ignored
    monitor = str(BASE["threat"]["monitor"]).lower()
    assert ids("f_monitor=" + monitor) == everything and ids("f_monitor=neq," + monitor) == []
    eight_ignored = "&".join("f_nosuch%d=x" % i for i in range(8))
    assert ids(eight_ignored + "&f_id=copy-3") == everything   # a 9th filter is not kept


def test_security_lists_threats_incidents_and_violations_each_sliced_on_its_own(ctl):
    """§2.1: /v1/log/security applies start/limit and the filters to each of its three lists."""
    made = {n: fill(ctl, n, [T0 + i for i in range(5)]) for n in ("threat", "incident", "violation")}
    fill(ctl, "event", [T0])
    reply = get(ctl, "/v1/log/security?start=1&limit=2")
    assert set(reply) == {"threats", "incidents", "violations"}
    for notification, elements in made.items():
        assert markers(reply[LIST_KEYS[notification]]) == markers(elements[::-1])[1:3]
    action = BASE["violation"]["policy_action"]
    filtered = get(ctl, "/v1/log/security?f_policy_action=neq," + action)
    assert filtered["violations"] == [] and len(filtered["threats"]) == len(filtered["incidents"]) == 5


# -- element form, envelopes, the threat detail (§2.1, §5.2, §5.3) ----------------------------------

def test_each_list_has_its_envelope_and_elements_as_the_rest_marshaller_writes_them(ctl):
    """§2.1 envelope keys; §5.2 keys sorted, Go's HTML-safe escaping; §5.3 no packet in threat lists."""
    for notification, element in BASE.items():
        ctl.add(notification, dict(element, packet="AAECAw==") if notification == "threat" else element)
    for notification, key in LIST_KEYS.items():
        reply = call(ctl, "GET", "/v1/log/" + notification, APIKEY)
        pairs = json.loads(reply.body, object_pairs_hook=lambda p: p)
        assert [k for k, _ in pairs] == [key]
        element = dict(pairs[0][1][0])
        assert list(element) == sorted(element) and "notification" not in element
    threat = get(ctl, "/v1/log/threat")["threats"][0]
    assert threat["cap_len"] == CAP_LEN and "packet" not in threat
    detail = get(ctl, "/v1/log/threat/" + BASE["threat"]["id"])
    assert detail["threat"]["packet"] == "AAECAw=="
    missing = call(ctl, "GET", "/v1/log/threat/no-such-id", APIKEY)
    assert (missing.status, missing.json()["code"]) == (404, 7) and names(ctl)[-1] == "User.Resource.Access.Denied"
    ctl.add("event", dict(BASE["event"], message="<b>&"))
    assert b'"message":"\\u003cb\\u003e\\u0026"' in call(ctl, "GET", "/v1/log/event", APIKEY).body
    assert call(ctl, "GET", "/v1/log/nothing").status == 404 and call(ctl, "POST", "/v1/log/event").status == 405


def test_gzip_only_above_1200_bytes_and_for_an_exact_gzip_token(ctl):
    """§1.1: tokens of Accept-Encoding are not trimmed; ``deflate, gzip`` does not match."""
    small = call(ctl, "GET", "/v1/log/event", {**APIKEY, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json() == {"events": []}
    fill(ctl, "event", [T0 + i for i in range(5)])
    plain = call(ctl, "GET", "/v1/log/event", APIKEY)
    assert len(plain.body) > 2048 and plain.headers.get("transfer-encoding") == "chunked"   # net/http chunks it
    for accept, zipped in (("gzip", True), ("gzip, deflate", True), ("deflate, gzip", False),
                           ("deflate,gzip", True), ("GZIP", False), ("x-gzip", False)):
        reply = call(ctl, "GET", "/v1/log/event", {**APIKEY, "Accept-Encoding": accept})
        assert (reply.headers.get("content-encoding") == "gzip") == zipped, accept
        assert reply.json() == plain.json()


# -- the rings (§3.1) -----------------------------------------------------------------------------

def test_a_ring_keeps_the_newest_arrivals_up_to_its_size(ca):
    """§3.1: arrival order, one eviction per arrival past the size, whatever the timestamps."""
    with RestController(ca, ring_size=5) as ctl:
        made = fill(ctl, "violation", [T0 - i for i in range(8)])   # arrivals out of timestamp order
        assert markers(ctl.ring("violation")) == markers(made[3:])
        assert sorted(markers(get(ctl, "/v1/log/violation")["violations"])) == sorted(markers(made[3:]))
        fill(ctl, "event", [T0] * 5)
        token(ctl)   # its User.Login pushes the oldest event out
        assert len(ctl.ring("event")) == 5 and names(ctl)[-1] == "User.Login"
    with pytest.raises(ValueError):
        ctl.add("event", {"notification": "event"})


# -- fault injection -------------------------------------------------------------------------------

def test_fail_next_answers_matching_requests_with_the_status_then_recovers(ctl):
    ctl.fail_next(503, count=2)
    auth = token(ctl)   # /v1/auth does not match the default /v1/log/
    for _ in range(2):
        reply = call(ctl, "GET", "/v1/log/event", auth)
        assert reply.status == 503 and reply.body
    assert call(ctl, "GET", "/v1/log/event", auth).status == 200
    ctl.fail_next(502, paths="/v1/auth")
    assert login(ctl).status == 502 and ctl.logins == 1
    assert [r[1] for r in ctl.requests].count("/v1/log/event") == 3


def test_down_refuses_connections_and_closes_open_ones_up_serves_again(ctl):
    auth = token(ctl)
    conn = http.client.HTTPSConnection("127.0.0.1", ctl.port, context=tls_context(ctl), timeout=10)
    conn.request("GET", "/v1/log/event", headers=auth)
    assert conn.getresponse().read()
    port = ctl.port
    ctl.down()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError)):
        conn.request("GET", "/v1/log/event", headers=auth)
        conn.getresponse().read()
    conn.close()
    ctl.up()
    assert ctl.port == port and call(ctl, "GET", "/v1/log/event", auth).status == 200   # sessions kept


def test_restart_empties_the_rings_and_sessions_but_a_token_stays_valid(ctl):
    """§3.3 rings are not persisted; §1.3 a controller without the session opens one: another User.Login."""
    fill(ctl, "threat", [T0])
    auth = token(ctl)
    ctl.restart()
    assert all(ctl.ring(n) == [] for n in LIST_KEYS)
    assert get(ctl, "/v1/log/threat", auth) == {"threats": []}
    assert names(ctl) == ["User.Login"] and ctl.logins == 1


def test_slow_holds_every_reply(ctl):
    ctl.slow(30)
    with pytest.raises(socket.timeout):
        call(ctl, "GET", "/v1/log/event", APIKEY, timeout=0.5)
    ctl.slow(0)
    assert call(ctl, "GET", "/v1/log/event", APIKEY).status == 200


def test_requests_are_logged_with_their_query_and_authentication(ctl):
    call(ctl, "GET", "/v1/log/event?limit=5&f_since=7&limit=9", APIKEY)
    call(ctl, "GET", "/v1/log/audit")
    assert ctl.requests == [("GET", "/v1/log/event", {"limit": "5", "f_since": "7"}, "apikey"),
                            ("GET", "/v1/log/audit", {}, "none")]


@pytest.mark.parametrize("text", ["a<b>&c", "\u2028\u2029", "\b\f\x01\x1f\x7f", 'q"\\b', "j\u00fcrgen \U0001f600",
                                  "\n\r\t", "back\\slash\\f"])
def test_replies_escape_strings_as_go_encoding_json_does(text):
    """§5.2: both marshallers end in encoding/json (HTML-safe escaping, raw UTF-8)."""
    assert go_json({"k": [text], "m": {"z": text, "a": 1}}) == \
        '{"k":[%s],"m":{"a":1,"z":%s}}' % (go_json_string(text), go_json_string(text))


def test_float32_fields_are_written_as_go_writes_them():
    assert go_json({"score": 10.0, "score_v3": 9.8, "n": 3}) == \
        '{"n":3,"score":%s,"score_v3":%s}' % (go_json_float32(10.0), go_json_float32(9.8))
    assert go_json({"score": 10.0}) == '{"score":10}'


# -- rest_element (§5.2, §5.3) ------------------------------------------------------------------------

def test_rest_element_is_the_syslog_record_marshalled_the_rest_way():
    records = [parsed(line) for line in sample_lines(0)]
    by_name = collections.defaultdict(list)
    for record in records:
        notification, element = rest_element(record)
        assert notification == record["notification"] and list(element) == sorted(element)
        assert "notification" not in element and "syslog" not in element
        by_name[element.get("name") or notification].append(element)
    assert by_name["Host.Scan.Report"][0]["critical_vuls"] == []     # absent in syslog, [] in REST
    registry = by_name["Registry.Scan.Report"][-1]
    assert registry["items"] == [] and registry["critical_vuls"] == ["CVE-2023-38545"]
    assert "items" not in by_name["Admission.Control.Denied"][0]
    assert "critical_vuls" not in by_name["Compliance.Container.Violation"][0]
    assert by_name["Process.Profile.Violation"][0]["file_name"] == []
    assert all(t["cap_len"] == CAP_LEN for t in by_name["SQL.Injection"])
    assert "cap_len" not in by_name["violation"][0]
