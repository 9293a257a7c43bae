"""Who may send to ``nvsiem listen``, and how many: allow-lists, webhook secrets, client certificates, limits.

127.0.0.2 plays the outsider: it is loopback too, so a client bound to it
reaches the collector on 127.0.0.1 from an address outside ``allow=127.0.0.1``.
"""
import http.client
import socket
import ssl

import pytest
import trustme

from helpers.listen_harness import CollectorProcess, delivered, frames, numbered, sample, wait_each_once
from helpers.loopback import free_port, wait_until

OUTSIDER = "127.0.0.2"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the collector closed ``sock`` (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def threads_of(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def collector(tmp_path, listen, name="out", *extra):
    return CollectorProcess(tmp_path, listen, ["file://%s" % (tmp_path / ("%s.jsonl" % name))], *extra).start()


# -- a denied peer on each source type -------------------------------------------


def test_tcp_and_tls_refuse_a_peer_outside_allow_and_deliver_the_allowed_one(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    tcp_port, tls_port = free_port(), free_port()
    nv = collector(tmp_path, ["tcp://127.0.0.1:%d?allow=127.0.0.1" % tcp_port,
                              "tls://127.0.0.1:%d?allow=127.0.0.1/32&cert=%s" % (tls_port, tmp_path / "server.pem")])
    try:
        for _ in range(3):
            outsider = connect(tcp_port, OUTSIDER)
            outsider.sendall(b"".join(frames(900, 910)))
            assert closed_by_peer(outsider)
            outsider.close()
        outsider = connect(tls_port, OUTSIDER)
        assert closed_by_peer(outsider)  # closed before the handshake: nothing was read
        outsider.close()
        with connect(tcp_port) as good:
            good.sendall(b"".join(frames(0, 100)))
        client = ssl.create_default_context()
        ca.configure_trust(client)
        with client.wrap_socket(connect(tls_port), server_hostname="127.0.0.1") as good:
            good.sendall(b"".join(frames(100, 200)))
        wait_each_once(str(tmp_path / "out.jsonl"), 200)
        assert not set(delivered(str(tmp_path / "out.jsonl"))) & set(range(900, 910))
        tcp_label, tls_label = "tcp://127.0.0.1:%d" % tcp_port, "tls://127.0.0.1:%d" % tls_port
        assert nv.metric("nvsiem_refused_total", source=tcp_label, reason="not_allowed") == 3
        assert nv.metric("nvsiem_refused_total", source=tls_label, reason="not_allowed") == 1
        log = nv.log.read_text()
        # Logged once a minute per peer, not per connection.
        assert log.count("%s: refused %s" % (tcp_label, OUTSIDER)) == 1
    finally:
        nv.stop()


def test_udp_drops_datagrams_from_a_sender_outside_allow(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    nv = collector(tmp_path, ["udp://127.0.0.1:%d?allow=127.0.0.0/30,::1" % port])
    try:
        outsider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        outsider.bind(("127.0.0.9", 0))  # outside 127.0.0.0/30
        for frame in frames(900, 950):
            outsider.sendto(frame, ("127.0.0.1", port))
        good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for frame in frames(0, 50):
            good.sendto(frame, ("127.0.0.1", port))
        wait_each_once(str(tmp_path / "out.jsonl"), 50)
        label = "udp://127.0.0.1:%d" % port
        wait_until(lambda: nv.metric("nvsiem_refused_total", source=label, reason="not_allowed") == 50, 10,
                   "50 refused datagrams counted")
        assert not set(delivered(str(tmp_path / "out.jsonl"))) & set(range(900, 950))
        assert nv.log.read_text().count("refused 127.0.0.9") == 1
    finally:
        nv.stop()


def webhook_body(n: int) -> bytes:
    return numbered(sample("webhook-json-2"), n)


def post(port, path, body, source="127.0.0.1", context=None):
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, source_address=(source, 0), context=context)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_webhook_answers_403_to_a_peer_outside_allow(tmp_path):
    port = free_port()
    nv = collector(tmp_path, ["webhook://127.0.0.1:%d?allow=127.0.0.1" % port])
    try:
        assert post(port, "/neuvector", webhook_body(900), source=OUTSIDER)[0] == 403
        assert post(port, "/neuvector", webhook_body(0))[0] == 200
        wait_each_once(str(tmp_path / "out.jsonl"), 1)
        assert nv.metric("nvsiem_refused_total", reason="not_allowed") == 1
        assert 900 not in delivered(str(tmp_path / "out.jsonl"))
    finally:
        nv.stop()


# -- webhook secrets -------------------------------------------------------------


def test_webhook_path_secret_gets_401_without_it_and_never_shows_it(tmp_path):
    secret = "b1946ac92492d2347c6235b4d2611184"
    (tmp_path / "secret").write_text(secret + "\n")
    port = free_port()
    nv = collector(tmp_path, ["webhook://127.0.0.1:%d?path_secret_file=%s" % (port, tmp_path / "secret")],
                   "out", "--log-level", "debug")
    try:
        assert post(port, "/neuvector", webhook_body(900))[0] == 401
        assert post(port, "/neuvector/" + secret[:-1] + "0", webhook_body(901))[0] == 401
        assert post(port, "/" + secret + "/x", webhook_body(902))[0] == 401  # the last segment, not any
        assert post(port, "/neuvector/" + secret, webhook_body(0))[0] == 200
        wait_each_once(str(tmp_path / "out.jsonl"), 1)
        assert not set(delivered(str(tmp_path / "out.jsonl"))) & {900, 901, 902}
        assert nv.metric("nvsiem_refused_total", reason="bad_secret") == 3
        _, metrics = nv.get("/metrics")
        with open("/proc/%d/cmdline" % nv.proc.pid, "rb") as f:
            cmdline = f.read().decode()
        log = nv.log.read_text()
        assert "POST" in log  # debug logging of requests is on
        for where in (metrics, cmdline, log):
            assert secret not in where
    finally:
        nv.stop()


def test_webhooks_client_ca_requires_a_client_certificate(tmp_path):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    nv = collector(tmp_path, ["webhooks://127.0.0.1:%d?cert=%s&client_ca=%s" % (port, tmp_path / "server.pem",
                                                                                tmp_path / "ca.pem")])
    try:
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            post(port, "/neuvector", webhook_body(900), context=anonymous)
        known = ssl.create_default_context()
        ca.configure_trust(known)
        ca.issue_cert("relay.example").configure_cert(known)
        assert post(port, "/neuvector", webhook_body(0), context=known)[0] == 200
        wait_each_once(str(tmp_path / "out.jsonl"), 1)
        wait_until(lambda: nv.metric("nvsiem_refused_total", reason="tls_failed") == 1, 10, "the refusal counted")
    finally:
        nv.stop()


# -- client certificates on tls:// -----------------------------------------------


def test_tls_client_ca_and_client_cn_admit_only_the_listed_relay(tmp_path):
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    label = "tls://127.0.0.1:%d" % port
    nv = collector(tmp_path, [label + "?cert=%s&client_ca=%s&client_cn=relay-a.example,relay-b.example" % (
        tmp_path / "server.pem", tmp_path / "ca.pem")])

    def send(client_cert_from, name, first):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        if client_cert_from is not None:
            client_cert_from.issue_cert(name).configure_cert(context)
        try:
            with context.wrap_socket(connect(port), server_hostname="127.0.0.1") as tls:
                tls.sendall(b"".join(frames(first, first + 10)))
                return closed_by_peer(tls)
        except (ssl.SSLError, ConnectionError):
            return True

    try:
        assert send(None, None, 900)  # no certificate
        assert send(other_ca, "relay-a.example", 910)  # signed by another CA
        assert send(ca, "intruder.example", 920)  # signed, but not on client_cn=
        send(ca, "relay-b.example", 0)
        wait_each_once(str(tmp_path / "out.jsonl"), 10)
        assert not [s for s in delivered(str(tmp_path / "out.jsonl")) if s >= 900]
        wait_until(lambda: nv.metric("nvsiem_refused_total", source=label, reason="tls_failed") == 2, 10,
                   "two failed handshakes counted")
        assert nv.metric("nvsiem_refused_total", source=label, reason="client_not_allowed") == 1
    finally:
        nv.stop()


def test_client_cn_without_client_ca_is_a_usage_error(tmp_path):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    nv = CollectorProcess(tmp_path, ["tls://127.0.0.1:%d?cert=%s&client_cn=a" % (free_port(), tmp_path / "server.pem")],
                          ["file://%s" % (tmp_path / "out.jsonl")])
    with pytest.raises(AssertionError) as error:
        nv.start()
    assert "client_cn= needs client_ca=" in str(error.value)


# -- limits ----------------------------------------------------------------------


def test_idle_connections_beyond_max_connections_cost_no_thread_and_a_sender_still_delivers(tmp_path):
    port, limit = free_port(), 40
    label = "tcp://127.0.0.1:%d" % port
    nv = collector(tmp_path, [label + "?max_connections=%d" % limit])
    idle = []
    try:
        baseline = threads_of(nv.proc.pid)
        idle = [connect(port) for _ in range(limit + 50)]
        wait_until(lambda: nv.metric("nvsiem_refused_total", source=label, reason="connection_limit") == 50, 20,
                   "50 silent connections closed to make room")
        assert nv.metric("nvsiem_source_connections", source=label) == limit
        assert threads_of(nv.proc.pid) <= baseline + 1  # one selector thread serves them all
        # The oldest silent ones made room, and were closed, not left hanging.
        assert all(closed_by_peer(sock, 5) for sock in idle[:50])
        with connect(port) as good:
            good.sendall(b"".join(frames(0, 100)))
        wait_each_once(str(tmp_path / "out.jsonl"), 100)
    finally:
        for sock in idle:
            sock.close()
        nv.stop()


def test_when_every_connection_has_delivered_a_new_one_is_refused_and_the_senders_keep_their_place(tmp_path):
    port = free_port()
    label = "tcp://127.0.0.1:%d" % port
    nv = collector(tmp_path, [label + "?max_connections=3"])
    senders = [connect(port) for _ in range(3)]
    try:
        for i, sock in enumerate(senders):
            sock.sendall(b"".join(frames(i * 10, i * 10 + 10)))
        wait_each_once(str(tmp_path / "out.jsonl"), 30)
        extra = connect(port)
        assert closed_by_peer(extra)
        extra.close()
        assert nv.metric("nvsiem_refused_total", source=label, reason="connection_limit") == 1
        for i, sock in enumerate(senders):  # still open: a delivering sender is never closed
            sock.sendall(b"".join(frames(100 + i * 10, 110 + i * 10)))
        wait_until(lambda: len(delivered(str(tmp_path / "out.jsonl"))) == 60, 20, "60 records")
        assert set(delivered(str(tmp_path / "out.jsonl")).values()) == {1}
    finally:
        for sock in senders:
            sock.close()
        nv.stop()


def test_first_frame_timeout_closes_a_silent_connection_but_never_a_quiet_sender(tmp_path):
    port = free_port()
    label = "tcp://127.0.0.1:%d" % port
    nv = collector(tmp_path, [label + "?first_frame_timeout=1"])
    try:
        silent, sender, half = connect(port), connect(port), connect(port)
        sender.sendall(frames(0, 1)[0])
        half.sendall(frames(1, 2)[0][:100])  # part of a frame is no frame
        assert closed_by_peer(silent, 10) and closed_by_peer(half, 10)
        assert nv.metric("nvsiem_refused_total", source=label, reason="no_frame_in_time") == 2
        assert not closed_by_peer(sender, 2.5)  # quiet for well past the timeout, still open
        sender.sendall(frames(2, 3)[0])
        wait_until(lambda: set(delivered(str(tmp_path / "out.jsonl"))) >= {0, 2}, 10, "records 0 and 2")
        sender.close()
        # The cut frame became a dead letter, not a lost line.
        dead = tmp_path / "spool" / "dead-letters.jsonl"
        wait_until(lambda: dead.exists() and b"no LF" in dead.read_bytes(), 10, "the cut frame dead-lettered")
    finally:
        nv.stop()


def test_webhook_max_connections_bounds_its_threads(tmp_path):
    port, limit = free_port(), 10
    label = "webhook://127.0.0.1:%d" % port
    nv = collector(tmp_path, [label + "?max_connections=%d" % limit])
    idle = []
    try:
        # One request first, so every thread the collector starts lazily is already counted.
        assert post(port, "/neuvector", webhook_body(0))[0] == 200
        wait_each_once(str(tmp_path / "out.jsonl"), 1)
        baseline = threads_of(nv.proc.pid)
        idle = [connect(port) for _ in range(limit + 20)]
        wait_until(lambda: nv.metric("nvsiem_refused_total", source=label, reason="connection_limit") == 20, 20,
                   "20 connections over the limit refused")
        # A scrape of /metrics (just above) runs in a thread of its own for a moment.
        wait_until(lambda: threads_of(nv.proc.pid) <= baseline + limit, 5, "threads bounded by max_connections")
        for sock in idle:
            sock.close()
        idle = []
        wait_until(lambda: post(port, "/neuvector", webhook_body(1))[0] == 200, 20, "a request taken again")
        wait_each_once(str(tmp_path / "out.jsonl"), 2)
    finally:
        for sock in idle:
            sock.close()
        nv.stop()


def test_max_connections_must_be_a_whole_number(tmp_path):
    nv = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d?max_connections=0.5" % free_port()],
                          ["file://%s" % (tmp_path / "out.jsonl")])
    with pytest.raises(AssertionError) as error:
        nv.start()
    assert "max_connections=0.5: expected a whole number of at least 1" in str(error.value)
