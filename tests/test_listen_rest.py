"""End to end: what syslog lost, brought back from the controller's REST API, each event once.

``nvsiem listen`` takes NeuVector's syslog over TCP and reads the test
controller (``helpers/nv_rest_server.py``, written from the REST
reference) with a ``neuvector+https://`` source. The controller's rings
hold every event; syslog delivers only some. Every event must reach the
file sink exactly once, whichever way it came.
"""
import json
from pathlib import Path

import pytest
import trustme

from helpers.listen_harness import CollectorProcess, send_tcp
from helpers.loopback import free_port, wait_until
from helpers.nv_rest_server import RestController
from helpers.rest_elements import rest_element
from helpers.sample_stream import parsed, sample_lines

APIKEY = "siem:Xk3v9Qp2Lm8Rt5Yz1Bc7Nd4Hg6Jf0Sa2Ue8Io5Pw3Ty9Ql7Zx1Cv4Bn6Mm2Kk8Ll0"
READER, READER_PASSWORD = "siem-reader", "reader-pass"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value)
    return str(path)


def apikey_controller(ca) -> RestController:
    """A controller that knows APIKEY, a reader's."""
    return RestController(ca, apikeys={"siem": (APIKEY.split(":", 1)[1], "reader")})


def password_controller(ca) -> RestController:
    """A controller where READER logs in with READER_PASSWORD."""
    return RestController(ca, users={READER: (READER_PASSWORD, "reader")})


def password_auth(tmp_path: Path) -> str:
    return "username=%s&password_file=%s" % (READER, secret(tmp_path, "pw", READER_PASSWORD))


def rest_url(controller, tmp_path: Path, interval: float = 1, **options) -> str:
    auth = options.pop("auth", None) or "apikey_file=%s" % secret(tmp_path, "apikey", APIKEY)
    extra = "".join("&%s=%s" % kv for kv in options.items())
    return "%s?%s&ca=%s&tls_name=neuvector&interval=%s%s" % (controller.url, auth, controller.ca_file, interval, extra)


def records_in(path: Path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def identity(record: dict) -> str:
    """A record compared without its syslog header (REST records have none)."""
    return json.dumps({k: v for k, v in record.items() if k != "syslog"}, sort_keys=True)


def events(count: int):
    """``count`` lines of distinct events (a text sample and its JSON twin are one event: one of them)."""
    seen, lines = set(), []
    for line in sample_lines(count + 20):
        if identity(parsed(line)) not in seen and len(lines) < count:
            seen.add(identity(parsed(line)))
            lines.append(line)
    return lines


#: Keys only syslog's per-CVE and per-layer copies of a scan report have: the ring holds the report itself.
SYSLOG_COPY_KEYS = ("image_layer_digest", "package_ver", "fixed_ver")


def in_ring(lines):
    """What a controller's rings hold of ``lines``: every event, scan reports whole, not syslog's copies."""
    return [line for line in lines if not any(key in parsed(line) for key in SYSLOG_COPY_KEYS)]


def load(controller, lines):
    """Put ``lines`` in the controller's rings; what the rings hold of them."""
    held = in_ring(lines)
    for line in held:
        controller.add(*rest_element(parsed(line)))
    return held


def test_syslog_drops_events_and_rest_brings_them_back_each_once(tmp_path, ca):
    lines = events(240)
    pushed = lines[:180]  # syslog loses the last 60
    with apikey_controller(ca) as controller:
        port = free_port()
        out = tmp_path / "out.jsonl"
        nv = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % port, rest_url(controller, tmp_path, interval=2)],
                              ["file://%s" % out])
        try:
            nv.start()
            send_tcp(port, [line + b"\n" for line in pushed])
            wait_until(lambda: len(records_in(out)) >= len(pushed), 60, "syslog's records")
            held = load(controller, lines)  # what the controller held all along, read at its next poll
            want = {identity(parsed(line)) for line in lines}
            wait_until(lambda: {identity(r) for r in records_in(out)} >= want, 60, "every event at the sink")
            lost = {identity(parsed(line)) for line in held} - {identity(parsed(line)) for line in pushed}
            assert nv.metric("nvsiem_rest_backfilled_records_total") == len(lost)
            assert nv.metric("nvsiem_duplicates_dropped_total") >= len(held) - len(lost)
            assert nv.terminate() == 0
        finally:
            nv.stop()
        assert sorted(identity(r) for r in records_in(out)) == sorted(identity(parsed(line)) for line in lines)
        # API-key requests write no login event into the controller's ring
        assert controller.logins == 0 and all(auth == "apikey" for _, _, _, auth in controller.requests)


def started(tmp_path, controller, listen_extra=(), **options):
    out = tmp_path / "out.jsonl"
    nv = CollectorProcess(tmp_path, [rest_url(controller, tmp_path, **options), *listen_extra], ["file://%s" % out])
    return nv.start(), out


def test_a_whole_ring_is_backfilled_at_start_and_read_again_without_copies(tmp_path, ca):
    lines = events(300)
    with apikey_controller(ca) as controller:
        lines = load(controller, lines)
        nv, out = started(tmp_path, controller, interval=1)
        try:
            wait_until(lambda: len(records_in(out)) >= len(lines), 60, "the backfill")
            polls = lambda: sum(1 for m, p, _, _ in controller.requests if p == "/v1/log/audit")  # noqa: E731
            wait_until(lambda: polls() >= 3, 30, "two more polls")
            assert nv.metric("nvsiem_duplicates_dropped_total") > 0  # read again, not spooled again
            assert nv.terminate() == 0
        finally:
            nv.stop()
        assert sorted(identity(r) for r in records_in(out)) == sorted(identity(parsed(line)) for line in lines)
        # after the first, each poll reads only from the newest held, less the margin
        later = [q for m, p, q, _ in controller.requests if p == "/v1/log/event"][1:]
        assert later and all("f_since" in q for q in later)


def test_a_password_session_is_kept_and_renewed_only_on_401(tmp_path, ca):
    lines = events(60)
    with password_controller(ca) as controller:
        lines = load(controller, lines)
        nv, out = started(tmp_path, controller, interval=1, auth=password_auth(tmp_path))
        try:
            wait_until(lambda: len(records_in(out)) >= len(lines) + 1, 60, "the backfill and our own login")
            audits = lambda: sum(1 for m, p, _, _ in controller.requests if p == "/v1/log/audit")  # noqa: E731
            wait_until(lambda: audits() >= 3, 30, "three polls")
            assert controller.logins == 1  # one session for every poll
            controller.expire_tokens()
            wait_until(lambda: controller.logins == 2, 30, "a new login after the 401")
            wait_until(lambda: audits() >= 6, 30, "polls on the new session")
            # Our own User.Login events are delivered, but they are not what syslog lost.
            backfilled = nv.metric("nvsiem_rest_backfilled_records_total")
            assert nv.terminate() == 0
        finally:
            nv.stop()
        own = [r for r in records_in(out) if r.get("user") == READER]
        assert sorted(r["name"] for r in own) == ["User.Login", "User.Login", "User.Timeout"]
        assert backfilled == len(lines)
        assert sorted(identity(r) for r in records_in(out) if r not in own) == sorted(
            identity(parsed(line)) for line in lines)


def test_a_token_that_dies_in_the_middle_of_a_poll_is_renewed_and_nothing_is_lost(tmp_path, ca):
    lines = events(60)
    with password_controller(ca) as controller:
        lines = load(controller, lines)
        controller.expire_tokens_after("/v1/log/activity")  # the second of the poll's four lists
        nv, out = started(tmp_path, controller, interval=60, auth=password_auth(tmp_path))
        try:
            lists = lambda: [p for m, p, _, a in controller.requests if p.startswith("/v1/log/")]  # noqa: E731
            wait_until(lambda: len(lists()) >= 5, 60, "the first poll's lists and the one refused")
            wait_until(lambda: len(records_in(out)) >= len(lines) + 1, 60, "the backfill")
            assert nv.terminate() == 0
        finally:
            nv.stop()
        assert controller.logins == 2  # the first, and one after the 401 in the middle of the poll
        # The list refused with 401 is asked for again on the new session, then the poll goes on.
        assert lists() == ["/v1/log/event", "/v1/log/activity", "/v1/log/security", "/v1/log/security",
                           "/v1/log/audit"]
        statuses = [a for m, p, _, a in controller.requests if p == "/v1/log/security"]
        assert statuses == ["token", "token"]
        own = [r for r in records_in(out) if r.get("user") == READER]
        assert [r["name"] for r in own] == ["User.Login"]  # the second login is newer than the reads
        assert sorted(identity(r) for r in records_in(out) if r not in own) == sorted(
            identity(parsed(line)) for line in lines)


def test_an_unwell_controller_is_retried_with_backoff_and_said_once(tmp_path, ca):
    lines = events(40)
    with apikey_controller(ca) as controller:
        lines = load(controller, lines)
        controller.fail_next(503, count=3)
        nv, out = started(tmp_path, controller, interval=5)
        try:
            wait_until(lambda: len(records_in(out)) >= len(lines), 60, "the backfill after the 503s")
            assert nv.metric("nvsiem_rest_requests_total", outcome="503") == 3
            assert nv.terminate() == 0
        finally:
            nv.stop()
        log = nv.log.read_text()
        assert log.count("cannot read the controller's events") == 1 and "answers again" in log
        assert sorted(identity(r) for r in records_in(out)) == sorted(identity(parsed(line)) for line in lines)


def test_a_kill_in_the_middle_of_a_backfill_loses_nothing(tmp_path, ca):
    lines = events(2000)
    with apikey_controller(ca) as controller:
        lines = load(controller, lines)
        nv, out = started(tmp_path, controller, interval=60)
        try:
            wait_until(lambda: len(records_in(out)) > 0, 60, "the backfill to begin")
            nv.kill9()
            nv.start()
            want = {identity(parsed(line)) for line in lines}
            wait_until(lambda: {identity(r) for r in records_in(out)} >= want, 90, "every event after the restart")
            assert nv.terminate() == 0
        finally:
            nv.stop()
        got = [identity(r) for r in records_in(out)]
        assert set(got) == {identity(parsed(line)) for line in lines}  # at least once; the spool held each once


def test_a_ring_that_rotated_past_what_was_held_is_said_loudly(tmp_path, ca):
    lines = events(100)
    with apikey_controller(ca) as controller:
        held = load(controller, lines)
        nv, out = started(tmp_path, controller, interval=2, margin=0)
        try:
            wait_until(lambda: len(records_in(out)) >= len(held), 60, "the first backfill")
            violation = next(r for r in records_in(out) if r["notification"] == "violation")
            newest = max(r["reported_timestamp"] for r in records_in(out) if r["notification"] == "violation")
            _, element = rest_element(violation)
            for n in range(4096 + 50):  # a burst of newer violations between two polls: the ring rotates past
                controller.add("violation", dict(element, id="burst-%05d" % n, reported_timestamp=newest + 10 + n))
            wait_until(lambda: nv.metric("nvsiem_rest_ring_overruns_total", notification="violation") >= 1, 60,
                       "the overrun to be counted")
            assert nv.terminate() == 0
        finally:
            nv.stop()
        log = nv.log.read_text()
        assert log.count("events lost upstream") == 1 and "violation ring (4,096) rotated past" in log
