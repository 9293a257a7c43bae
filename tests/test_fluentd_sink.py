"""The Fluentd sink against a Forward-protocol v1 peer (tests/forward_server.py) on 127.0.0.1.

Expected values come from the protocol spec and the NeuVector reference
(the hand-written expected records in tests/fixtures/samples_expected).
"""
import gzip
import json
import socket
import ssl
import struct
import threading
import time

import msgpack
import pytest
import trustme
from fluent.sender import FluentSender

from helpers.forward_server import EventTime, ForwardServer
from helpers.loopback import free_port
from helpers.nvsamples import EXPECTED_DIR, _typed, expected_records
from nvsiem.sinks import open_sink
from nvsiem.sinks import api as sink_api
from nvsiem.sinks.api import SinkError
from nvsiem_fluentd.config import ConfigError
from nvsiem_fluentd.sink import FluentdSink

REPORTED = 1741944405  # violation-text-1's reported_timestamp (2025-03-14T09:26:45Z)


def as_json(records):
    return [json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() for r in records]


def reference_records():
    return [r for path in sorted(EXPECTED_DIR.glob("*.json")) for r in expected_records(path.stem)]


@pytest.fixture
def server():
    with ForwardServer() as s:
        yield s


def url(srv, options=""):
    return f"fluentd://127.0.0.1:{srv.port}?ack_timeout=5&connect_timeout=2{options}"


# -- wire format -----------------------------------------------------------

def test_event_time_goes_out_as_ext_type_0_from_reported_timestamp(server):
    record = {"notification": "violation", "reported_timestamp": REPORTED, "reported_at": "2025-03-14T09:26:45Z"}
    sink = FluentdSink(url(server))
    sink.send(as_json([record]))
    (chunk, message), = sink._encode(as_json([record]))
    tag, blob, option = msgpack.unpackb(message, raw=False)
    # spec: EventTime = fixext8 (d7), type 0, uint32 BE seconds, uint32 BE nanoseconds
    assert blob.startswith(b"\x92\xd7\x00" + struct.pack(">II", REPORTED, 0))
    assert tag == "neuvector.violation" and isinstance(blob, bytes)  # bin, as the spec recommends
    assert option == {"size": 1, "chunk": chunk}
    assert server.events[0].time == EventTime(REPORTED, 0)


def test_server_reads_all_four_modes_and_acks_each_chunk(server):
    """The peer itself, checked with messages built from the spec and with fluent-logger as an outside client."""
    t = msgpack.ExtType(0, struct.pack(">II", REPORTED, 5))
    entry = msgpack.packb([t, {"a": 1}])
    messages = {
        "Message": ["tag.m", t, {"a": 1}, {"chunk": "c1"}],
        "Forward": ["tag.f", [[t, {"a": 1}], [t, {"a": 2}]], {"chunk": "c2"}],
        "PackedForward": ["tag.p", entry * 3, {"chunk": "c3", "size": 3}],
        "CompressedPackedForward": ["tag.c", gzip.compress(entry * 2), {"chunk": "c4", "compressed": "gzip"}],
    }
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"".join(msgpack.packb(m) for m in messages.values()) + msgpack.packb(None))
        unpacker = msgpack.Unpacker(raw=False)
        acks = []
        while len(acks) < 4:
            unpacker.feed(conn.recv(4096))
            acks.extend(unpacker)
    assert acks == [{"ack": "c1"}, {"ack": "c2"}, {"ack": "c3"}, {"ack": "c4"}]
    sender = FluentSender("app", port=server.port, nanosecond_precision=True)
    assert sender.emit_with_time("x", REPORTED, {"from": "fluent-logger"})
    sender.close()
    assert server.wait_for(lambda s: len(s.events) == 9)
    modes = [(e.mode, e.tag) for e in server.events]
    assert modes == [("Message", "tag.m"), ("Forward", "tag.f"), ("Forward", "tag.f")] + \
        [("PackedForward", "tag.p")] * 3 + [("CompressedPackedForward", "tag.c")] * 2 + [("Message", "app.x")]
    assert {e.time for e in server.events[:-1]} == {EventTime(REPORTED, 5)}
    assert server.events[-1].time == REPORTED and server.events[-1].record == {"from": "fluent-logger"}
    assert server.errors == []


# -- records, tags, times --------------------------------------------------

EDGE_CASES = [
    {"notification": "audit", "reported_timestamp": REPORTED, "count": 2**40, "ok": True, "no": False,
     "score": 9.8, "empty_list": [], "list": ["", "a b", "CVE-2024-1,CVE-2024-2"], "user_roles": {"": "admin"},
     "nil_map": None, "message": "Container started, image nginx:1.25\nline two\ttab",
     "unicode": "héllo wörld ✓ 日本", "nested": {"k": [1, {"x": None}]}, "key=with": "a=b,c=d"},
]


@pytest.mark.parametrize("compress", ["", "&compress=gzip"])
def test_typed_records_arrive_complete_with_tag_and_event_time(server, compress):
    records = reference_records() + EDGE_CASES
    sink = FluentdSink(url(server, compress))
    sink.send(as_json(records))
    assert len(server.events) == len(records)
    mode = "CompressedPackedForward" if compress else "PackedForward"
    got = sorted(server.events, key=lambda e: json.dumps(e.record, sort_keys=True))
    want = sorted(records, key=lambda r: json.dumps(r, sort_keys=True))
    for event, record in zip(got, want):
        assert _typed(event.record) == _typed(record)  # values and their JSON types
        assert event.tag == "neuvector." + record["notification"]
        assert event.mode == mode
        if "reported_timestamp" in record:
            assert event.time == EventTime(record["reported_timestamp"], 0)


def test_tag_prefix_and_time_fallbacks(server):
    before = time.time()
    records = [
        {"notification": "threat", "reported_at": "2025-03-14T11:15:20Z"},
        {"notification": "Weird Type!", "reported_timestamp": REPORTED},
        {"no_notification": 1, "syslog": {"timestamp": "2025-03-14T09:26:47.250Z"}},
        {"notification": "event"},
    ]
    FluentdSink(url(server, "&tag_prefix=nv.prod")).send(as_json(records))
    by_key = {json.dumps(e.record, sort_keys=True): e for e in server.events}
    events = [by_key[json.dumps(r, sort_keys=True)] for r in records]
    assert [e.tag for e in events] == ["nv.prod.threat", "nv.prod.unknown", "nv.prod.unknown", "nv.prod.event"]
    assert events[0].time == EventTime(1741950920, 0)  # reported_at when there is no reported_timestamp
    assert events[2].time == EventTime(1741944407, 250_000_000)  # then the syslog header's time
    assert before - 1 <= events[3].time.seconds <= time.time() + 1  # only then arrival time


@pytest.mark.parametrize("stamp", [
    {"reported_timestamp": 1714564800000},      # milliseconds: beyond EventTime's 32-bit seconds
    {"reported_at": "0001-01-01T00:00:00Z"},  # Go's zero time
    {"reported_at": "1969-07-20T20:17:40Z"},  # before 1970
])
def test_a_time_eventtime_cannot_hold_gets_arrival_time_and_the_batch_still_goes(server, stamp):
    records = [{"notification": "event", "n": 1, "reported_timestamp": REPORTED},
               dict(stamp, notification="event", n=2),
               {"notification": ["not", "a", "word"], "n": 3, "reported_timestamp": REPORTED}]
    before = time.time()
    FluentdSink(url(server)).send(as_json(records))
    events = sorted(server.events, key=lambda e: e.record["n"])
    assert [e.record for e in events] == records  # the record keeps its own value
    assert events[0].time == EventTime(REPORTED, 0)
    assert before - 1 <= events[1].time.seconds <= time.time() + 1
    assert events[2].tag == "neuvector.unknown"


def test_sub_second_times_are_exact_to_the_microsecond(server):
    records = [{"notification": "event", "reported_at": "2025-03-14T09:26:45.000001Z"},
               {"notification": "event", "reported_at": "2025-03-14T09:26:45.123456Z"}]
    FluentdSink(url(server)).send(as_json(records))
    assert sorted(e.time for e in server.events) == [EventTime(1741944405, 1000), EventTime(1741944405, 123456000)]


def test_batches_split_by_count_bytes_and_tag(server):
    sink = FluentdSink(url(server, "&batch=10"))
    violations = [{"notification": "violation", "reported_timestamp": REPORTED, "n": i} for i in range(25)]
    threats = [{"notification": "threat", "reported_timestamp": REPORTED, "n": i} for i in range(3)]
    sink.send(as_json(violations + threats))
    sizes = {}
    for e in server.events:
        sizes.setdefault((e.tag, e.chunk), 0)
        sizes[(e.tag, e.chunk)] += 1
    assert sorted(sizes.values()) == [3, 5, 10, 10] and server.acks_sent == 4
    assert sink.max_batch == 10
    # bytes: each entry packs to more than 50 bytes, so max_bytes=200 allows at most 3 per message
    del server.events[:]
    FluentdSink(url(server, "&max_bytes=200")).send(as_json(violations[:9]))
    per_chunk = [sum(1 for e in server.events if e.chunk == c) for c in {e.chunk for e in server.events}]
    assert sum(per_chunk) == 9 and max(per_chunk) <= 3


def test_undecodable_spool_item_is_forwarded_visibly_not_dropped(server, monkeypatch):
    monkeypatch.setattr(sink_api, "json_loads", json.loads)  # orjson would turn 2**70 into a float
    items = [b'{"notification":"event","reported_timestamp":1}', b"not json\xff", b"[1]", b'{"n":%d}' % 2**70]
    FluentdSink(url(server)).send(items)
    tags = sorted(e.tag for e in server.events)
    assert tags == ["neuvector.event"] + ["neuvector.unparsed"] * 3
    errors = {e.record["message"]: e.record["error"] for e in server.events if e.tag == "neuvector.unparsed"}
    assert set(errors) == {"not json\ufffd", "[1]", '{"n":%d}' % 2**70}
    assert "not valid JSON" in errors["not json\ufffd"] and errors["[1]"] == "not a JSON object"
    assert "msgpack" in errors['{"n":%d}' % 2**70]


# -- acks and failures -----------------------------------------------------

@pytest.mark.parametrize("behaviour", ["drop", "stall"])
def test_batch_is_not_confirmed_without_an_ack(server, behaviour):
    server.behaviour = behaviour
    sink = FluentdSink(url(server, "&ack_timeout=0.3"))
    with pytest.raises(SinkError) as err:
        sink.send(as_json([{"notification": "event", "n": 1}]))
    assert not err.value.permanent and "timed out" in str(err.value)
    server.behaviour = "ok"
    sink.send(as_json([{"notification": "event", "n": 2}]))  # same sink recovers on a fresh connection
    delivered = [e.record["n"] for e in server.events]
    # a stalled server may still read batch 1 later: the collector resends it, a duplicate not a loss
    assert delivered == [2] if behaviour == "drop" else sorted(delivered) in ([2], [1, 2])


@pytest.mark.parametrize("keeps", [True, False], ids=["killed-before-ack", "killed-before-buffering"])
def test_server_killed_and_restarted_mid_stream_loses_nothing(server, keeps):
    """The collector's loop: resend the same batch until send() returns; count records end to end."""
    batches = [[{"notification": "violation" if i % 3 else "threat", "reported_timestamp": REPORTED, "seq": b * 50 + i}
                for i in range(50)] for b in range(40)]
    server.kill_at_message, server.kill_keeps_message = 23, keeps  # batch 11 carries messages 22 and 23
    failed_batches = set()

    restarted = threading.Event()

    def restart_when_dead():
        if server.wait_for(lambda s: s.kill_at_message is None, timeout=20):
            time.sleep(0.2)  # down for a while: sends fail with connection refused
            server.start()
            restarted.set()

    restarter = threading.Thread(target=restart_when_dead)
    restarter.start()
    sink = FluentdSink(url(server, "&ack_timeout=2&retry_after=0.05"))
    for number, batch in enumerate(batches):
        for _attempt in range(200):
            try:
                sink.send(as_json(batch))
                break
            except SinkError as e:
                assert not e.permanent
                failed_batches.add(number)
                time.sleep(0.02)
        else:
            pytest.fail(f"batch {number} never confirmed")
    restarter.join()
    assert restarted.is_set(), "the server never died at message 23"
    seqs = [e.record["seq"] for e in server.events]
    assert set(seqs) == set(range(40 * 50))  # nothing lost
    duplicated = {s for s in seqs if seqs.count(s) > 1}
    assert 11 in failed_batches, "the kill did not hit the stream"
    assert {s // 50 for s in duplicated} <= failed_batches  # duplicates only from unacknowledged batches
    if keeps:
        assert duplicated  # the buffered-but-unacked message came again
        # ... under the chunk id it had the first time, as out_forward re-sends a buffer chunk
        chunks = {}
        for e in server.events:
            chunks.setdefault(e.record["seq"], set()).add(e.chunk)
        assert all(len(chunks[s]) == 1 for s in duplicated)


def test_idle_connection_closed_by_server_is_reopened_transparently(server):
    sink = FluentdSink(url(server))
    sink.send(as_json([{"notification": "event", "n": 1}]))
    server.kill()
    server.start()  # same port; the sink's connection is dead
    sink.send(as_json([{"notification": "event", "n": 2}]))
    assert [e.record["n"] for e in server.events] == [1, 2]


def test_failover_to_the_second_server_when_the_first_is_down(server):
    down = free_port()
    sink = FluentdSink(f"fluentd://127.0.0.1:{down},127.0.0.1:{server.port}?ack_timeout=5")
    sink.send(as_json([{"notification": "event", "n": 1}]))
    assert [e.record["n"] for e in server.events] == [1]
    server.kill()
    with pytest.raises(SinkError) as err:
        sink.send(as_json([{"notification": "event", "n": 2}]))
    assert not err.value.permanent
    assert f"127.0.0.1:{down}: connection refused" in str(err.value)
    assert f"127.0.0.1:{server.port}: connection refused" in str(err.value)
    with ForwardServer(down) as first:  # the preferred server is back: used again once its retry delay passed
        sink2 = FluentdSink(f"fluentd://127.0.0.1:{down},127.0.0.1:{server.port}")
        sink2.send(as_json([{"notification": "event", "n": 3}]))
        assert [e.record["n"] for e in first.events] == [3]


def test_unix_socket(tmp_path):
    path = str(tmp_path / "forward.sock")
    with ForwardServer(unix_path=path) as srv:
        FluentdSink(f"fluentd+unix://{path}").send(as_json([{"notification": "incident", "n": 1}]))
        assert [(e.tag, e.record["n"]) for e in srv.events] == [("neuvector.incident", 1)]


# -- shared key ------------------------------------------------------------

def test_shared_key_handshake_from_a_file(tmp_path):
    key = tmp_path / "shared_key"
    key.write_text("s3cret-key")
    with ForwardServer(shared_key=b"s3cret-key") as srv:
        sink = FluentdSink(url(srv, f"&shared_key_file={key}"))
        sink.send(as_json([{"notification": "event", "n": 1}]))
        assert [e.record["n"] for e in srv.events] == [1] and srv.errors == []
        assert "s3cret" not in sink.describe()


def test_wrong_shared_key_is_a_permanent_error_with_the_servers_reason(monkeypatch):
    monkeypatch.setenv("NV_FLUENT_KEY", "wrong")
    with ForwardServer(shared_key=b"right") as srv:
        # through the collector's registry, as nvsiem listen builds it
        sink = open_sink(url(srv, "&shared_key_env=NV_FLUENT_KEY"))
        with pytest.raises(SinkError) as err:
            sink.send(as_json([{"notification": "event"}]))
        assert err.value.permanent
        assert "handshake rejected by the server: shared_key mismatch" in str(err.value)
        assert srv.events == [] and any("mismatch" in e for e in srv.errors)
        assert "wrong" not in sink.describe()


def test_server_with_user_auth_is_refused_with_the_servers_reason_and_what_to_do():
    with ForwardServer(shared_key=b"k", users={"nv": b"pw"}) as srv:
        with pytest.raises(SinkError) as err:
            FluentdSink(url(srv, "&shared_key=k")).send(as_json([{"notification": "event"}]))
    assert err.value.permanent and "username/password mismatch" in str(err.value)
    assert "user_auth" in str(err.value)


def test_a_newline_in_the_key_file_counts_as_in_fluentd(tmp_path):
    key = tmp_path / "shared_key"
    key.write_text("s3cret-key\n")  # e.g. from a Kubernetes secret made with --from-file
    with ForwardServer(shared_key=b"s3cret-key\n") as srv:
        FluentdSink(url(srv, f"&shared_key_file={key}")).send(as_json([{"notification": "event", "n": 1}]))
        assert [e.record["n"] for e in srv.events] == [1]
    with ForwardServer(shared_key=b"s3cret-key") as srv:  # the server's key typed without it
        with pytest.raises(SinkError) as err:
            FluentdSink(url(srv, f"&shared_key_file={key}")).send(as_json([{"notification": "event"}]))
    assert "shared_key mismatch" in str(err.value) and "newline" in str(err.value)


def test_server_that_denies_keepalive_gets_one_message_per_connection():
    records = [{"notification": kind, "n": i, "reported_timestamp": REPORTED}
               for i, kind in enumerate(["event", "threat", "violation", "event"])]
    with ForwardServer(shared_key=b"k", deny_keepalive=True) as srv:
        sink = FluentdSink(url(srv, "&shared_key=k"))
        sink.send(as_json(records))  # three tags: three messages, each acked then closed
        sink.send(as_json(records[:1]))
        assert sorted(e.record["n"] for e in srv.events) == [0, 0, 1, 2, 3] and srv.acks_sent == 4


def _odd_ack_peer(then_real_ack: bool):
    """A peer that answers each message with a malformed ack first, then (or not) the right one."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = []

    def peer():
        with listener:
            conn, _ = listener.accept()
            with conn:
                unpacker = msgpack.Unpacker(raw=False)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    unpacker.feed(data)
                    for message in unpacker:
                        received.append(message)
                        conn.sendall(msgpack.packb({"ack": ["odd"]}))
                        if not then_real_ack:
                            return
                        conn.sendall(msgpack.packb({"ack": message[2]["chunk"]}))

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    return listener.getsockname()[1], received, thread


def test_an_ack_that_is_not_a_string_is_ignored_not_a_crash():
    port, received, thread = _odd_ack_peer(then_real_ack=True)
    sink = FluentdSink(f"fluentd://127.0.0.1:{port}?ack_timeout=5")
    sink.send(as_json([{"notification": "event", "n": 7}]))  # confirmed by the real ack that follows
    sink.close()
    thread.join(5)
    assert len(received) == 1  # sent once: the odd ack neither confirmed nor failed the batch
    (_, entries, option) = received[0][:3]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(entries)  # PackedForward: the entries are one msgpack stream of [time, record]
    assert isinstance(option["chunk"], str) and [record["n"] for _, record in unpacker] == [7]


def test_only_a_malformed_ack_leaves_the_batch_unconfirmed():
    port, received, thread = _odd_ack_peer(then_real_ack=False)
    with pytest.raises(SinkError) as err:
        FluentdSink(f"fluentd://127.0.0.1:{port}?ack_timeout=2").send(as_json([{"notification": "event"}]))
    thread.join(5)
    assert len(received) == 1 and "not acknowledged" in str(err.value)


def test_server_with_security_but_no_key_here_is_a_clear_permanent_error():
    with ForwardServer(shared_key=b"right") as srv:
        with pytest.raises(SinkError) as err:
            FluentdSink(url(srv)).send(as_json([{"notification": "event"}]))
    assert err.value.permanent and "shared_key_file" in str(err.value)


# -- TLS -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_server(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "fluentd.example").configure_cert(context)
    with ForwardServer(ssl_context=context, shared_key=b"k") as srv:
        yield srv


def test_tls_with_shared_key(tls_server, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    key = tmp_path / "key"
    key.write_text("k")
    sink = FluentdSink(f"fluentd+tls://127.0.0.1:{tls_server.port}?ca={ca_file}&shared_key_file={key}")
    sink.send(as_json([{"notification": "threat", "reported_timestamp": REPORTED}]))
    assert [(e.tag, e.time) for e in tls_server.events] == [("neuvector.threat", EventTime(REPORTED, 0))]
    sink = FluentdSink(f"fluentd+tls://127.0.0.1:{tls_server.port}?ca={ca_file}&shared_key_file={key}"
                       "&server_hostname=fluentd.example")
    sink.send(as_json([{"notification": "threat"}]))
    assert len(tls_server.events) == 2


@pytest.mark.parametrize("options, reason", [
    ("", "unable to get local issuer certificate"),  # system CAs do not know ours
    ("&ca={ca}&server_hostname=other.example", "other.example"),  # the name is not in the certificate
])
def test_tls_verification_failure_is_a_clear_permanent_error(tls_server, ca, tmp_path, options, reason):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = FluentdSink(f"fluentd+tls://127.0.0.1:{tls_server.port}?shared_key=k" + options.format(ca=ca_file))
    with pytest.raises(SinkError) as err:
        sink.send(as_json([{"notification": "event"}]))
    assert err.value.permanent
    assert "TLS certificate verification failed" in str(err.value) and reason in str(err.value)
    assert "set ca=" in str(err.value)
    assert tls_server.events == []


def test_tls_without_verification_when_asked(tls_server):
    sink = FluentdSink(f"fluentd+tls://127.0.0.1:{tls_server.port}?verify=false&shared_key=k")
    sink.send(as_json([{"notification": "event"}]))
    assert len(tls_server.events) == 1


# -- URLs ------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    ("fluentd://h:24224?ca=/x", "only apply to fluentd+tls"),
    ("fluentd://h:24224?compress=zstd", "only knows gzip"),
    ("fluentd://h:24224?batch=0", "batch must be > 0"),
    ("fluentd://h:24224?bogus=1", "unknown fluentd URL option(s): bogus"),
    ("fluentd://h:notaport", "bad port"),
    ("fluentd://h:1,,h2:2", "empty server"),
    ("fluentd://h?shared_key_env=NV_SURELY_UNSET_VAR", "NV_SURELY_UNSET_VAR"),
    ("fluentd+tls://h?cert=/c.pem", "cert= and key= go together"),
    ("fluentd+tls://h?ca=/nonexistent/ca.pem", "fluentd+tls: cannot load ca=: "),
])
def test_bad_urls_are_refused_with_the_reason(bad, words):
    with pytest.raises(ConfigError) as err:
        FluentdSink(bad)
    assert words in str(err.value)


def test_url_servers_and_defaults():
    s = FluentdSink("fluentd://a,b:24225,[::1]:24226").settings
    assert [(x.host, x.port) for x in s.servers] == [("a", 24224), ("b", 24225), ("::1", 24226)]
    assert (s.tag_prefix, s.batch, s.ack_timeout, s.compress, s.shared_key) == ("neuvector", 1000, 30.0, False, None)
