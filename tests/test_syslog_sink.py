"""The syslog sink through ``nvsiem listen`` into a real rsyslogd: TCP with both framings, TLS, mutual TLS, UDP.

NeuVector's lines go into the collector (``tcp://``); its ``syslog+…://``
sink sends them to a private rsyslogd on loopback
(``helpers/rsyslog_peer.RsyslogReceiver``), which writes each message it
reads, raw, to a file. Every message is read back with the CEF and LEEF
readers of ``helpers/cef_oracle.py`` and compared with what nvparser makes
of the line sent: every record exactly once, every field in its place,
and rsyslog's own RFC 5424 parser agreeing with the header. A receiver
restarted in the middle of a stream loses nothing (at least once).
"""
import collections
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme

from helpers.cef_oracle import canonical, expected_message, parse_cef, parse_rfc5424, read_message
from helpers.listen_harness import CollectorProcess, frames, send_tcp
from helpers.loopback import free_port, wait_until
from helpers.nvsamples import load_samples
from helpers.rsyslog_peer import TLS_DRIVERS, ReceiverTls, RsyslogReceiver, require_rsyslogd, require_tls_driver
from helpers.sample_stream import parsed, sample_lines
from nvsiem.sinks import open_sink

#: Values that CEF and LEEF must escape or carry as they are.
TRICKY = ["pipe | and = equals", "back\\slash \\= \\| \\", "two\nlines\r\nthree\rfour", "tab\tbetween",
          "é ü 中文 🙂", " leading and trailing ", "key=value,other=x"]


def crafted_lines():
    """NeuVector JSON-mode lines whose values hold what CEF escapes, line breaks and non-ASCII text."""
    lines = []
    for sample in load_samples():
        if sample.mode != "json" or len(sample.lines) != 1 or not sample.lines[0].startswith(b"<"):
            continue
        header, _, body = sample.lines[0].partition(b" - {")
        record = json.loads(b"{" + body)
        for value in TRICKY:
            changed = dict(record, message=value, cluster_name="c|" + value)
            lines.append(header + b" - " + json.dumps(changed, ensure_ascii=False).encode("utf-8"))
    return lines


LINES = sample_lines(300) + crafted_lines()


@pytest.fixture(scope="module", autouse=True)
def rsyslogd_command():
    return require_rsyslogd()


@pytest.fixture(scope="module")
def ca():
    require_tls_driver()
    return trustme.CA()


def receiver(tmp_path: Path, peers, transport="tcp", tls=None) -> RsyslogReceiver:
    peer = RsyslogReceiver(tmp_path / "rsyslog", transport, tls)
    peers.append(peer)
    return peer.start()


def collector(tmp_path: Path, peers, to: str) -> CollectorProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    listen = free_port()
    process = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % listen], [to])
    process.listen_port = listen
    peers.append(process)
    return process.start()


def deliver(tmp_path, peers, to: str, rsyslog: RsyslogReceiver, lines=LINES) -> list:
    """Send ``lines`` through a collector delivering to ``to``; what ``rsyslog`` received, both stopped."""
    process = collector(tmp_path, peers, to)
    send_tcp(process.listen_port, [line + b"\n" for line in lines])
    wait_until(lambda: len(rsyslog.received()) >= len(lines), 60, "%d messages in rsyslog" % len(lines),
               interval=0.2)
    assert process.terminate() == 0
    rsyslog.stop()  # anything sent twice has reached the file by now
    return rsyslog.received()


def assert_each_record_once(received: list, lines, body: str) -> None:
    got = collections.Counter(canonical(read_message(m["raw"], body)) for m in received)
    expected = collections.Counter(canonical(expected_message(parsed(line), body)) for line in lines)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, "%d of %d records missing or different, %d unexpected; first missing: %s" % (
        sum(missing.values()), len(lines), sum(extra.values()), next(iter(missing), None))


def assert_rsyslog_read_the_header(received: list) -> None:
    """rsyslog's RFC 5424 parser finds in each header what the sink put there."""
    for message in received:
        header = parse_rfc5424(message["raw"])
        assert (int(message["pri"]), message["hostname"], message["app_name"], message["msgid"]) == (
            header.pri, header.hostname, header.app_name, header.msgid)
        assert message["timestamp"] == header.timestamp


@pytest.mark.parametrize("framing, body", [("octet-counting", "cef"), ("lf", "cef"), ("octet-counting", "leef"),
                                           ("lf", "json")])
def test_every_record_arrives_once_over_tcp(tmp_path, peers, framing, body):
    rsyslog = receiver(tmp_path, peers)
    received = deliver(tmp_path, peers, "syslog+tcp://127.0.0.1:%d?format=%s&framing=%s" % (
        rsyslog.port, body, framing), rsyslog)
    assert_each_record_once(received, LINES, body)
    assert_rsyslog_read_the_header(received)


def tls_files(ca: trustme.CA, directory: Path, client_certificates: bool = False) -> ReceiverTls:
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = ReceiverTls(directory / "ca.pem", directory / "server.pem", directory / "server.key", client_certificates)
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    return files


def client_files(ca: trustme.CA, directory: Path):
    client = ca.issue_cert("nvsiem-collector")
    cert, key = directory / "client.pem", directory / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.mark.parametrize("driver", sorted(TLS_DRIVERS))
def test_every_record_arrives_once_over_tls(tmp_path, peers, ca, driver):
    require_tls_driver(driver)
    tls = tls_files(ca, tmp_path / "tls")._replace(driver=driver)
    rsyslog = receiver(tmp_path, peers, "tls", tls)
    received = deliver(tmp_path, peers, "syslog+tls://localhost:%d?ca=%s" % (rsyslog.port, tls.ca), rsyslog)
    assert_each_record_once(received, LINES, "cef")


def test_mutual_tls_delivers_with_the_client_certificate_and_nothing_without(tmp_path, peers, ca):
    tls = tls_files(ca, tmp_path / "tls", client_certificates=True)
    rsyslog = receiver(tmp_path, peers, "tls", tls)
    lines = LINES[:50]

    refused = collector(tmp_path / "without", peers, "syslog+tls://localhost:%d?ca=%s" % (rsyslog.port, tls.ca))
    send_tcp(refused.listen_port, [line + b"\n" for line in lines])
    # The receiver turns away each attempt; the sink must count none of them delivered.
    wait_until(lambda: refused.metric("nvsiem_sink_errors_total") >= 3, 60, "three refused attempts")
    assert refused.metric("nvsiem_delivered_records_total") == 0
    refused.stop()  # its records stay spooled for a sink that can never deliver them
    assert rsyslog.received() == []

    cert, key = client_files(ca, tmp_path / "tls")
    received = deliver(tmp_path / "with", peers, "syslog+tls://localhost:%d?ca=%s&cert=%s&key=%s" % (
        rsyslog.port, tls.ca, cert, key), rsyslog, lines)
    assert_each_record_once(received, lines, "cef")


def test_a_receiver_certificate_from_another_ca_is_reported_and_nothing_sent(tmp_path, peers, ca):
    tls = tls_files(ca, tmp_path / "tls")
    rsyslog = receiver(tmp_path, peers, "tls", tls)
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    process = collector(tmp_path, peers, "syslog+tls://localhost:%d?ca=%s" % (rsyslog.port, other))
    send_tcp(process.listen_port, [line + b"\n" for line in LINES[:10]])
    wait_until(lambda: b"certificate verification failed" in process.log.read_bytes(), 60, "the TLS error logged")
    assert process.metric("nvsiem_delivered_records_total") == 0
    assert rsyslog.received() == []


def test_udp_sends_one_datagram_per_record(tmp_path, peers):
    """Loopback, a few hundred records, a 4 MiB receive buffer: nothing is dropped here; UDP itself promises nothing."""
    rsyslog = receiver(tmp_path, peers, "udp")
    lines = LINES[:120]
    received = deliver(tmp_path, peers, "syslog+udp://127.0.0.1:%d?format=leef" % rsyslog.port, rsyslog, lines)
    assert_each_record_once(received, lines, "leef")
    assert_rsyslog_read_the_header(received)


def seq_of_message(raw: str) -> int:
    return int(parse_cef(parse_rfc5424(raw).msg).extension["externalId"][4:])


def sequence_numbers(rsyslog: RsyslogReceiver) -> set:
    """The records in rsyslog's file so far, by their numbered id (a quick look while the stream runs)."""
    return set(re.findall(rb"externalId=seq-(\d{8})", rsyslog.out.read_bytes())) if rsyslog.out.exists() else set()


def test_a_receiver_restarted_mid_stream_loses_nothing(tmp_path, peers):
    rsyslog = receiver(tmp_path, peers)
    process = collector(tmp_path, peers, "syslog+tcp://127.0.0.1:%d" % rsyslog.port)
    half, count = 10000, 20000
    sender = threading.Thread(target=send_tcp, args=(process.listen_port, frames(0, half)))
    sender.start()
    try:
        wait_until(lambda: len(sequence_numbers(rsyslog)) >= 500, 60, "the stream to start arriving", interval=0.02)
        rsyslog.stop()  # SIGTERM while the sink is writing
    finally:
        sender.join(60)
    send_tcp(process.listen_port, frames(half, count))  # and more while the receiver is down
    wait_until(lambda: process.metric("nvsiem_sink_errors_total") >= 1, 60, "the sink to notice")
    rsyslog.start()
    wait_until(lambda: len(sequence_numbers(rsyslog)) >= count, 120, "every record after the restart",
               interval=0.2)
    assert process.terminate() == 0
    rsyslog.stop()
    seen = collections.Counter(seq_of_message(m["raw"]) for m in rsyslog.received())
    assert set(seen) == set(range(count))
    assert b"writing again the last" in process.log.read_bytes()
    # What was written again: at most the 1 MiB resend window of each broken connection.
    assert sum(seen.values()) - count < count


@pytest.mark.parametrize("url, names", [
    ("syslog+tcp://siem:514?format=xml", "format=xml"),
    ("syslog+udp://siem:514?framing=lf", "framing="),
    ("syslog+tcp://siem:514?ca=/etc/ca.pem", "ca="),
    ("syslog+tls://siem:6514?cert=/c.pem", "cert= and key="),
    ("syslog+tcp://siem:514?colour=red", "colour"),
    ("syslog+tcp://:514", "HOST:PORT"),
    ("syslog+tcp://siem:99999", "port"),
    ("syslog+tcp://siem?timeout=-1", "timeout="),
    ("syslog+tcp://siem?facility=local9", "facility=local9"),
    ("syslog+tcp://siem?app_name=two%20words", "app_name="),
    ("syslog+tls://siem?ca=/nonexistent/ca.pem", "ca="),
])
def test_a_url_that_cannot_work_is_one_line_naming_the_option(url, names):
    with pytest.raises(ValueError) as error:
        open_sink(url)
    text = str(error.value)
    assert names in text and "\n" not in text, text


def test_listen_refuses_a_bad_syslog_url_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nvsiem", "listen", "--listen", "tcp://127.0.0.1:%d" % free_port(),
                           "--to", "syslog+tcp://siem:514?format=xml", "--spool", str(tmp_path / "spool")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "format=xml" in line]
    assert len(errors) == 1 and re.search(r"use cef or leef or json", errors[0]), done.stderr
