"""The app's modular inputs, run as splunkd runs them (tests/splunkd_harness.py).

Each runs under Splunk 9.x's Python 3.9 and Splunk 10's 3.13 (pyenv), with
splunklib and nvparser imported from the app's ``lib/``. Expected records
come from the reference samples' hand-written fixtures, never from the
code under test.
"""
import json
import socket
import ssl
import sys

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.listen_harness import frames, seq_of
from helpers.loopback import free_port
from helpers.nc_capture import nc_listener, needs_nc, syslog_frames
from helpers.nvsamples import assert_same_records, expected_records, load_samples
from helpers.splunkd_harness import PYTHONS, RunningInput, build_app, scheme, validate

pytestmark = pytest.mark.slow

SYSLOG = [s for s in load_samples() if s.mode in ("text", "json")]
HOST = "neuvector-controller-pod-6d8f7c9b5-x2kqp"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("apps"))


@pytest.fixture(params=sorted(PYTHONS), ids=lambda v: "py" + v)
def python(request):
    path = PYTHONS[request.param]
    if not path:
        pytest.skip("Python %s is not installed (pyenv install %s)" % (request.param, request.param))
    return path


def records_of(events):
    return [json.loads(e["data"]) for e in events]


def check_metadata(events, stanza):
    for event in events:
        data = json.loads(event["data"])
        assert event["stanza"] == stanza and event["unbroken"] == "1" and event["done"] is True
        assert event["sourcetype"] == "neuvector:" + data["notification"]
        # _time is the event time (reported_timestamp), not the syslog header's send time
        assert event["time"] == "%d.000" % data["reported_timestamp"]


def test_schemes_introspect_like_splunkd_expects(python, app):
    tcp = scheme(python, app, "neuvector")
    assert tcp.findtext("streaming_mode") == "xml"
    assert tcp.findtext("use_external_validation") == "true"
    assert tcp.findtext("use_single_instance") == "false"
    port = tcp.find("endpoint/args/arg[@name='port']")
    assert port.findtext("data_type") == "number" and port.findtext("required_on_create") == "true"
    names = {a.get("name") for a in tcp.iter("arg")}
    assert {"port", "bind", "tls_cert", "tls_key", "tls_client_ca", "framing"} <= names


def test_validation_messages_reach_the_user(python, app, tmp_path):
    assert validate(python, app, "neuvector", {"port": "10514"}, tmp_path) == (0, None)
    assert validate(python, app, "neuvector", {"port": "70000"}, tmp_path) == (
        1, "port must be between 1 and 65535, not 70000")
    assert validate(python, app, "neuvector", {"port": "10514", "tls_cert": "/x.pem"}, tmp_path) == (
        1, "tls_cert and tls_key go together: give both for TLS, neither for plain TCP")
    assert validate(python, app, "neuvector", {"port": "10514", "tls_cert": "/nonexistent.pem", "tls_key": "/k.pem"},
                    tmp_path) == (1, "cannot read tls_cert=/nonexistent.pem: No such file or directory")
    for bind in ("999.1.1.1", "example.invalid"):
        status, message = validate(python, app, "neuvector", {"port": "10514", "bind": bind}, tmp_path)
        assert status == 1 and message.startswith("bind=%s is not an address of this host" % bind)
    status, message = validate(python, app, "neuvector", {"port": "10514", "allow": "10.0.0.0/8,nv.example"},
                               tmp_path)
    assert status == 1 and "'nv.example' is not an address or a network" in message


def test_tls_files_the_wrong_way_round_or_not_a_pair_are_said_in_words(python, app, tmp_path, tls_files):
    _, d = tls_files
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    assert validate(python, app, "neuvector", {"port": "10514", "tls_cert": key, "tls_key": cert}, tmp_path) == (
        1, "tls_cert=%s and tls_key=%s: certificate and key swapped" % (key, cert))
    status, message = validate(python, app, "neuvector", {"port": "10514", "tls_cert": cert,
                                                          "tls_key": str(tmp_path / "other-key.pem")}, tmp_path)
    assert status == 1 and "certificate and key swapped or not a pair" in message
    assert validate(python, app, "neuvector", {"port": "10514", "tls_cert": cert, "tls_key": key}, tmp_path) == (
        0, None)


def start_tcp(python, app, tmp_path, **params):
    port = free_port()
    run = RunningInput(python, app, "neuvector", "nv", {"port": str(port), "bind": "127.0.0.1", **params},
                       tmp_path)
    run.wait_log(r"^INFO neuvector://nv: listening on 127\.0\.0\.1:%d" % port)
    return run, port


def test_tcp_syslog_becomes_one_event_per_record(python, app, tmp_path):
    run, port = start_tcp(python, app, tmp_path)
    expected = [r for s in SYSLOG for r in expected_records(s.id)]
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"".join(s.stream for s in SYSLOG))
        events = run.take(len(expected))
    assert_same_records(records_of(events), expected)
    check_metadata(events, "neuvector://nv")
    # host: the controller that sent it (syslog HOSTNAME), else the peer
    for event, record in zip(events, expected):
        assert event["host"] == record.get("syslog", {}).get("hostname") or event["host"] == "127.0.0.1"
    assert events[0]["host"] == HOST
    assert run.stop() == []
    assert run.proc.returncode == 0 and run.stream_closed


def test_control_characters_keep_the_stream_valid_and_lose_nothing(python, app, tmp_path):
    run, port = start_tcp(python, app, tmp_path)
    sample = next(s for s in SYSLOG if s.id == "violation-text-1")
    line = sample.lines[0].replace(b"client_name=checkout-7c5ddbdf54-q8zrn",
                                   b"client_name=check\x01out\x1b[0m\x7f")
    junk = b"garbage \x00\x02 not neuvector \xff"
    with socket.create_connection(("127.0.0.1", port)) as conn:
        # junk first: a line without a header after a record would continue it
        conn.sendall(junk + b"\n" + line + b"\n")
    dead, record_event = run.take(2)
    record = json.loads(record_event["data"])
    want = expected_records("violation-text-1")[0]
    want["client_name"] = "check\x01out\x1b[0m\x7f"
    assert_same_records([record], [want])
    assert "\\u0001" in record_event["data"]      # the JSON keeps the escape, XML stays valid
    assert dead["sourcetype"] == "neuvector:deadletter" and "time" not in dead
    body = json.loads(dead["data"])
    assert body["raw"] == junk.decode("utf-8", "replace") and body["reason"]
    assert body["raw_base64"] == "Z2FyYmFnZSAAAiBub3QgbmV1dmVjdG9yIP8="
    run.stop()
    assert any(line.startswith("WARN neuvector://nv: dead letter") for line in run.stderr_lines)


def test_frame_buffered_at_shutdown_is_still_indexed(python, app, tmp_path):
    run, port = start_tcp(python, app, tmp_path, idle_flush="3600")
    sample = next(s for s in SYSLOG if s.id == "threat-text-2")
    conn = socket.create_connection(("127.0.0.1", port))
    run.wait_log(r"^INFO neuvector://nv: connection from 127\.0\.0\.1")
    conn.sendall(sample.lines[0])                # no LF: held by the parser until the end
    rest = run.stop()
    conn.close()
    assert_same_records(records_of(rest), expected_records("threat-text-2"))
    assert run.proc.returncode == 0 and run.stream_closed
    assert "INFO neuvector://nv: stopped: 1 record, 0 dead letters, 0 skipped frames" in run.stderr_lines


def test_port_in_use_is_an_error_in_splunkd_log(python, app, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = RunningInput(python, app, "neuvector", "nv", {"port": str(port), "bind": "127.0.0.1"}, tmp_path)
        run.proc.wait(30)
        run.stop()
    assert run.proc.returncode == 1
    assert any(l.startswith("ERROR neuvector://nv: cannot listen on 127.0.0.1:%d" % port)
               for l in run.stderr_lines)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    d = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with open(d / "cert.pem", "ab") as f:
            f.write(extra.bytes())
    return ca, d


def test_tls_syslog_with_idle_flush(python, app, tmp_path, tls_files):
    ca, d = tls_files
    run, port = start_tcp(python, app, tmp_path, tls_cert=str(d / "cert.pem"), tls_key=str(d / "key.pem"))
    run.wait_log(r"listening on .* \(TLS\)")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    tls_samples = [s for s in SYSLOG if s.transport.startswith("TCP+TLS")]
    expected = [r for s in tls_samples for r in expected_records(s.id)]
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"".join(s.stream for s in tls_samples))
        # the connection stays open: the last frame comes out on the idle flush
        events = run.take(len(expected))
    assert_same_records(records_of(events), expected)
    check_metadata(events, "neuvector://nv")
    run.stop()
    assert run.proc.returncode == 0


def test_tls_sender_that_writes_and_closes_without_reading_loses_nothing(python, app, tmp_path, tls_files):
    # NeuVector's syslog writer writes and closes, never reading. A TLS 1.3 server
    # that sends session tickets leaves them unread at the sender, whose close
    # then resets the connection and the records still unread are gone.
    ca, d = tls_files
    run, port = start_tcp(python, app, tmp_path, tls_cert=str(d / "cert.pem"), tls_key=str(d / "key.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    raw = socket.create_connection(("127.0.0.1", port))
    conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert conn.version() == "TLSv1.3"
    conn.sendall(b"".join(frames(0, 5000)))
    conn.close()
    events = run.take(5000, timeout=120)
    assert sorted(seq_of(r) for r in records_of(events)) == list(range(5000))
    assert run.stop() == []


# -- neuvector_capture:// -------------------------------------------------

def canonical(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def start_capture(python, app, watch, checkpoints):
    run = RunningInput(python, app, "neuvector_capture", "drop",
                       {"path": str(watch), "poll_interval": "1"}, checkpoints)
    run.wait_log(r"^INFO neuvector_capture://drop: watching ")
    return run


@needs_nc
def test_capture_directory_follows_a_live_nc_dump_and_never_indexes_twice(python, app, tmp_path):
    watch, checkpoints = tmp_path / "drop", tmp_path / "checkpoints"
    watch.mkdir()
    checkpoints.mkdir()
    pod_samples = [s for s in load_samples() if s.mode == "podlog"]
    (watch / "controller-pod.log").write_bytes(b"".join(s.stream for s in pod_samples))
    (watch / ".partial.hex").write_bytes(b"not read: hidden name")
    frames = syslog_frames(load_samples())
    dumped = [s for s in SYSLOG if s.transport.startswith(("UDP", "TCP"))]
    expected = [r for s in pod_samples + dumped for r in expected_records(s.id)]

    run = start_capture(python, app, watch, checkpoints)
    nc = nc_listener(watch / "syslog-dump.hex")       # real nc -o, writing while the input reads
    for frame in frames:
        nc.send(frame)
    nc.stop()
    events = run.take(len(expected))
    assert canonical(records_of(events)) == canonical(expected)
    check_metadata(events, "neuvector_capture://drop")
    assert {e["source"] for e in events} == {str(watch / "controller-pod.log"), str(watch / "syslog-dump.hex")}
    assert run.stop() == []

    # Restart on the same checkpoints: only the new file's record comes out.
    run = start_capture(python, app, watch, checkpoints)
    late = next(s for s in SYSLOG if s.id == "threat-text-2")
    (watch / "zz-late.log").write_bytes(late.stream)
    got = run.take(1) + run.stop()
    assert_same_records(records_of(got), expected_records("threat-text-2"))


def test_partially_written_file_finishes_on_a_later_run(python, app, tmp_path):
    watch, checkpoints = tmp_path / "drop", tmp_path / "checkpoints"
    watch.mkdir()
    checkpoints.mkdir()
    parts = [s for s in SYSLOG if s.id in ("violation-text-2", "threat-text-2", "event-text-2", "audit-text-1")]
    stream = b"".join(s.stream for s in parts)
    cut = len(parts[0].stream) + len(parts[1].stream) + 40   # 40 bytes into the third record
    target = watch / "syslog.log"
    target.write_bytes(stream[:cut])

    run = start_capture(python, app, watch, checkpoints)
    first = run.take(2)                       # the two complete records, not the cut one
    assert_same_records(records_of(first), expected_records(parts[0].id) + expected_records(parts[1].id))
    assert run.stop() == []

    with open(target, "ab") as f:
        f.write(stream[cut:])
    run = start_capture(python, app, watch, checkpoints)
    rest = run.take(2) + run.stop()
    assert_same_records(records_of(rest), expected_records(parts[2].id) + expected_records(parts[3].id))


@pytest.mark.parametrize("restart", [False, True], ids=["live", "across-a-restart"])
def test_hex_dump_caught_in_the_middle_of_a_dump_line_waits_for_the_rest(python, app, tmp_path, restart):
    import time

    from nvparser._hexdump import format_hexdump

    watch, checkpoints = tmp_path / "drop", tmp_path / "checkpoints"
    watch.mkdir()
    checkpoints.mkdir()
    parts = [s for s in SYSLOG if s.id in ("violation-text-2", "threat-text-2", "event-text-2")]
    stream = b"".join(s.stream for s in parts)
    dump = "".join(format_hexdump("<", i, stream[i:i + 1000]) for i in range(0, len(stream), 1000)).encode()
    cut = dump.index(b"\n", len(dump) // 2) - 20  # 20 characters short of a dump line's end
    target = watch / "syslog-dump.hex"
    target.write_bytes(dump[:cut])
    expected = [r for s in parts for r in expected_records(s.id)]

    run = start_capture(python, app, watch, checkpoints)
    time.sleep(2.5)  # more than a poll: the input saw the file stop growing mid-line
    if restart:
        got = run.stop()
        run = start_capture(python, app, watch, checkpoints)
    else:
        got = []
    with open(target, "ab") as f:
        f.write(dump[cut:])
    got += run.take(len(expected) - len(got)) + run.stop()
    assert [e["sourcetype"] for e in got if "deadletter" in e["sourcetype"]] == []
    assert canonical(records_of(got)) == canonical(expected)


# -- the XML stream, written without ElementTree -----------------------------------

@pytest.fixture(scope="module")
def app_lib(app):
    """The app's ``lib/`` on sys.path: splunklib as the app ships it (the test venv has none)."""
    lib = str(app / "lib")
    sys.path.insert(0, lib)
    yield
    sys.path.remove(lib)


_XML_TEXT = st.text(st.sampled_from('ab &<>"\'\t\n\r\u00e9\u2603\U0001f600]]>=;#'), max_size=12)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=_XML_TEXT, stanza=st.one_of(st.none(), _XML_TEXT.map(lambda t: "neuvector://" + t)),
       fields=st.lists(st.one_of(st.none(), _XML_TEXT), min_size=4, max_size=4),
       time=st.one_of(st.none(), st.just("1741939212.000")), done=st.booleans(), unbroken=st.booleans())
def test_xml_event_is_what_splunklib_writes(app_lib, data, stanza, fields, time, done, unbroken):
    import io
    import xml.etree.ElementTree as ET

    from nvsiem_splunk.modinput import xml_event
    from splunklib.modularinput import Event

    source, sourcetype, index, host = fields
    event = Event(data=data, stanza=stanza, time=time, host=host, index=index, source=source,
                  sourcetype=sourcetype, done=done, unbroken=unbroken)
    theirs = io.StringIO()
    event.write_to(theirs)  # splunklib's own ElementTree serialisation: the oracle
    ours = xml_event(event)
    if not any(c in (stanza or "") for c in "\t\n\r"):  # how ElementTree writes these in attributes varies by version
        assert ours == theirs.getvalue()
    mine, its = ET.fromstring(ours), ET.fromstring(theirs.getvalue())
    assert mine.attrib == its.attrib
    assert [(e.tag, e.text) for e in mine] == [(e.tag, e.text) for e in its]


def test_emitter_flushes_every_batch_before_returning(app_lib):
    # The capture input saves its checkpoint after a batch: the batch must be with splunkd by then.
    import io

    from nvparser import parse_frame
    from nvsiem_splunk.modinput import Emitter, StreamWriter

    class Pipe(io.StringIO):
        flushed = ""

        def flush(self):
            self.flushed = self.getvalue()

    pipe = Pipe()
    emitter = Emitter(StreamWriter(pipe, io.StringIO()), "neuvector://x")
    emitter.write([parse_frame(line) for line in SYSLOG[0].lines])
    assert pipe.flushed == pipe.getvalue() and pipe.getvalue().count("<event ") == len(SYSLOG[0].lines)


@pytest.mark.parametrize("text, json_safe, text_safe", [
    ('{"a":"b"}', '{"a":"b"}', '{"a":"b"}'),
    ("a\x01b\x7f", "a\\u0001b\x7f", "a\ufffdb\x7f"),  # ASCII, yet a C0 control XML cannot carry
    ("\ud800\ufffe\u00e9", "\\ud800\\ufffe\u00e9", "\ufffd\ufffd\u00e9"),
])
def test_characters_xml_cannot_carry_are_replaced(app_lib, text, json_safe, text_safe):
    from nvsiem_splunk.modinput import xml_safe_json, xml_safe_text

    assert xml_safe_json(text) == json_safe and xml_safe_text(text) == text_safe


def test_a_sender_outside_allow_is_refused_and_the_allowed_one_delivered(python, app, tmp_path, tls_files):
    ca, d = tls_files
    run, port = start_tcp(python, app, tmp_path, allow="127.0.0.1", tls_cert=str(d / "cert.pem"),
                          tls_key=str(d / "key.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for _ in range(3):
        outsider = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # closed before the handshake
            ctx.wrap_socket(outsider, server_hostname="127.0.0.1").sendall(b"".join(frames(100, 110)))
        outsider.close()
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"".join(frames(0, 10)))
        events = run.take(10)
    assert sorted(seq_of(r) for r in records_of(events)) == list(range(10))
    assert run.stop() == []
    refusals = [l for l in run.stderr_lines if l.startswith("WARN neuvector://nv: refused 127.0.0.2")]
    assert len(refusals) == 1 and "not in allow=127.0.0.1" in refusals[0]  # logged once, not per connection
    assert run.stderr_lines[-1].endswith("; 3 connections refused (not allowed)")


def closed_unread(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connections_beyond_max_connections_are_refused_and_a_sender_still_delivers(python, app, tmp_path):
    run, port = start_tcp(python, app, tmp_path, max_connections="5")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        run.wait_log(r"^INFO neuvector://nv: connection from 127\.0\.0\.1", count=5)
        extra = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        assert all(closed_unread(sock) for sock in extra)
        idle.pop().close()
        run.wait_log(r"connection from 127\.0\.0\.1:\d+ closed")
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"".join(frames(0, 20)))
            events = run.take(20)
        assert sorted(seq_of(r) for r in records_of(events)) == list(range(20))
    finally:
        for sock in idle:
            sock.close()
    run.stop()
    refusals = [l for l in run.stderr_lines if l.startswith("WARN neuvector://nv: refused 127.0.0.1")]
    assert len(refusals) == 1 and "already 5 connections (max_connections)" in refusals[0]
    assert run.stderr_lines[-1].endswith("; 10 connections refused (connection limit)")
