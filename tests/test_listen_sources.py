"""Each source of ``nvsiem listen`` with real senders on 127.0.0.1, counted end to end."""
import base64
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest
import trustme

from helpers.listen_harness import delivered, frames, numbered, sample, send_datagrams, start_collector, wait_each_once
from helpers.loopback import free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def collectors():
    made = []
    yield made
    for c in made:
        c.stop()


def body_of(frame: bytes) -> bytes:
    """The MSG part of an RFC 5424 NeuVector frame (what a relay such as logger re-sends)."""
    return frame.split(b" neuvector - ", 1)[1]


def test_tcp_many_concurrent_senders_each_record_once(tmp_path, collectors):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"])
    collectors.append(c)
    port = c.sources[0].port
    senders, per_sender = 16, 200

    def send(k):
        data = b"".join(frames(k * per_sender, (k + 1) * per_sender))
        with socket.create_connection(("127.0.0.1", port)) as s:
            for i in range(0, len(data), 7001):  # odd chunk sizes split frames anywhere
                s.sendall(data[i:i + 7001])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_each_once(str(tmp_path / "out.jsonl"), senders * per_sender, "all records")


def test_a_spool_quota_smaller_than_one_record_still_delivers_everything(tmp_path, collectors):
    # Each ~1.2 KB record outgrows a 512-byte quota: it goes in once the spool is empty.
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], spool_quota="512")
    collectors.append(c)
    with socket.create_connection(("127.0.0.1", c.sources[0].port)) as s:
        s.sendall(b"".join(frames(0, 50)))
    wait_each_once(str(tmp_path / "out.jsonl"), 50, "all records")


def test_stream_cut_mid_frame_is_a_dead_letter_not_a_record(tmp_path, collectors):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"])
    collectors.append(c)
    whole, cut = frames(0, 2)
    with socket.create_connection(("127.0.0.1", c.sources[0].port)) as s:
        s.sendall(whole + cut[:300])  # the sender dies in the middle of the second frame
    dead_letters = tmp_path / "spool" / "dead-letters.jsonl"
    wait_until(lambda: dead_letters.exists() and dead_letters.stat().st_size, what="the dead letter")
    (dead,) = [json.loads(x) for x in open(dead_letters, "rb")]
    assert "no LF" in dead["reason"] and dead["source"] == "tcp://127.0.0.1:0"
    assert base64.b64decode(dead["raw_base64"]) == cut[:300]
    wait_until(lambda: delivered(str(tmp_path / "out.jsonl")) == {0: 1}, what="the whole frame")


def test_logger_rfc5424_over_tcp_and_udp(tmp_path, collectors):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"])
    collectors.append(c)
    tcp, udp = c.sources[0].port, c.sources[1].port
    for i in range(3):
        subprocess.run(["logger", "--rfc5424", "-n", "127.0.0.1", "-P", str(tcp), "-T",
                        body_of(numbered(sample("violation-text-1"), i)).decode()], check=True, timeout=10)
        subprocess.run(["logger", "--rfc5424", "-n", "127.0.0.1", "-P", str(udp), "-d",
                        body_of(numbered(sample("violation-text-1"), 10 + i)).decode()], check=True, timeout=10)
    out = str(tmp_path / "out.jsonl")
    wait_until(lambda: len(delivered(out)) >= 6, what="logger records")
    assert delivered(out) == {0: 1, 1: 1, 2: 1, 10: 1, 11: 1, 12: 1}
    records = [json.loads(line) for line in open(out, "rb")]
    assert {r["notification"] for r in records} == {"violation"}
    assert all(r["server_port"] == 443 and r["syslog"]["hostname"] == socket.gethostname() for r in records)


def test_udp_burst_each_datagram_once(tmp_path, collectors):
    c = start_collector(tmp_path, ["udp://127.0.0.1:0"])
    collectors.append(c)
    send_datagrams(c.sources[0].port, 5000, burst=500, pause=0.002)
    wait_each_once(str(tmp_path / "out.jsonl"), 5000, "all datagrams")


def test_udp_under_a_small_quota_keeps_receiving_once_parsed(tmp_path, collectors):
    # Raw files roll at the spool's own segment size (half a small quota), so a
    # parsed one can go before the receiver's backlog bound is reached.
    c = start_collector(tmp_path, ["udp://127.0.0.1:0"], spool_quota="1M")
    collectors.append(c)
    send_datagrams(c.sources[0].port, 3000, burst=100, pause=0.05)  # about 3 MB: three times the quota
    wait_each_once(str(tmp_path / "out.jsonl"), 3000, "all datagrams")


def test_udp_receiver_that_dies_is_noticed_and_started_again(tmp_path, collectors):
    c = start_collector(tmp_path, ["udp://127.0.0.1:0"])
    collectors.append(c)
    udp = c.sources[0]
    first = udp.child.pid
    os.kill(first, 9)
    wait_until(lambda: udp.child.pid != first and udp.up, what="a new receiver")
    send_datagrams(udp.port, 100, burst=100, pause=0)
    wait_each_once(str(tmp_path / "out.jsonl"), 100, "datagrams through the new receiver")


def test_udp_receiver_on_a_full_disk_drops_and_counts_and_leaves_no_torn_record(tmp_path, caplog):
    from nvsiem.sources.udp_receiver import Receiver, raw_files

    class FullDisk:
        def __init__(self, real):
            self.real = real

        def write(self, data):  # a few bytes fit, then the disk is full
            if self.real.tell() < 6:
                return self.real.write(bytes(data[:3]))
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.real, name)

    receiver = Receiver(None, str(tmp_path), 5514, 1 << 20, 1 << 30)
    real = receiver.file
    receiver.buf, receiver.buffered = bytearray(b"\x02\x00\x00\x00ab" * 3), 3
    receiver.file = FullDisk(real)
    receiver.flush()
    assert receiver.dropped == 3 and not receiver.buf and "cannot write raw files" in caplog.text
    receiver.file = real  # room again
    receiver.buf, receiver.buffered = bytearray(b"\x02\x00\x00\x00cd"), 1
    receiver.flush()
    (_, path), = raw_files(str(tmp_path), 5514)
    assert open(path, "rb").read() == b"\x02\x00\x00\x00cd"  # the torn part of the failed write was cut


def test_udp_receive_buffer_cap_is_reported(tmp_path, collectors, caplog):
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    wanted = rmem_max * 3 // 2  # more than the kernel grants, less than what it reports (2x)
    collectors.append(start_collector(tmp_path, ["udp://127.0.0.1:0"], udp_rcvbuf=str(wanted)))
    assert "SO_RCVBUF is %d bytes, not the %d asked" % (rmem_max, wanted) in caplog.text


def test_two_udp_listeners_on_one_port_are_refused(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="two UDP listeners on one port"):
        start_collector(tmp_path, ["udp://127.0.0.1:%d" % port, "udp://127.0.0.2:%d" % port])


def test_udp_drops_are_counted_while_the_spool_is_full(tmp_path, collectors, capfd):
    # No sink confirms anything: the spool fills, then the raw backlog, then the receiver drops.
    down = "fluentd://127.0.0.1:%d?connect_timeout=0.2" % free_port()
    c = start_collector(tmp_path, ["udp://127.0.0.1:0"], [down], spool_quota="200K", log_format="text")
    collectors.append(c)
    send_datagrams(c.sources[0].port, 3000, burst=100, pause=0.1)  # over 3 s: the receiver checks every 0.5 s

    def dropped():
        return sum(s.get() for s in (m._value for m in c.metrics.dropped._metrics.values()))
    wait_until(lambda: dropped() > 0, 10, "the receiver's drops to be counted")
    # The receiver process logs as the collector was told to (--log-format text).
    err = capfd.readouterr().err
    assert re.search(r"ERROR nvsiem\.udp: udp port \d+: parser far behind, dropping datagrams", err), err
    assert '"logger": "nvsiem.udp"' not in err


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1, as files."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    with open(d / "cert.pem", "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    return d


def test_tls_python_client_and_openssl_s_client(tmp_path, collectors, pki):
    c = start_collector(tmp_path, ["tls://127.0.0.1:0?cert=%s&key=%s" % (pki / "cert.pem", pki / "key.pem")])
    collectors.append(c)
    port = c.sources[0].port
    # A client that never completes a handshake must not hold up the others.
    idle = socket.create_connection(("127.0.0.1", port))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"".join(frames(0, 500)))
    subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", str(pki / "ca.pem"),
                    "-verify_return_error", "-quiet", "-no_ign_eof"],
                   input=b"".join(frames(500, 503)), check=True, timeout=20, capture_output=True)
    wait_each_once(str(tmp_path / "out.jsonl"), 503, "TLS records")
    idle.close()


def request(port, body, content_type="application/json", context=None, method="POST"):
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10) if context
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    conn.request(method, "/neuvector", body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def post(port, body, content_type="application/json", context=None, method="POST"):
    return request(port, body, content_type, context, method).status


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_webhook_json_and_key_value(tmp_path, collectors, pki, https):
    tls = "?cert=%s&key=%s" % (pki / "cert.pem", pki / "key.pem") if https else ""
    c = start_collector(tmp_path, ["webhook://127.0.0.1:0" + tls])
    collectors.append(c)
    port = c.sources[0].port
    context = ssl.create_default_context(cafile=str(pki / "ca.pem")) if https else None
    assert post(port, numbered(sample("webhook-json-2"), 1), context=context) == 200
    assert post(port, numbered(sample("webhook-keyvalue-1"), 2), "text/plain; charset=us-ascii", context) == 200
    # Undecodable: kept as a dead letter, and 200 because retrying cannot help.
    assert post(port, b"\x00\xffnot a webhook", "application/json", context) == 200
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        response = request(port, b"", context=context, method=method)
        assert (response.status, response.getheader("Allow")) == (405, "POST"), method
    if not https:
        # The body of a refused request is never read as a request of its own.
        inner = b"POST /x HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(numbered(sample("webhook-json-2"), 3)), numbered(sample("webhook-json-2"), 3))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PUT /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner))
            replies = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                replies += data
        assert replies.count(b"HTTP/1.1 ") == 1 and replies.startswith(b"HTTP/1.1 405")
    out = str(tmp_path / "out.jsonl")
    wait_until(lambda: len(delivered(out)) >= 2, what="webhook records")
    assert delivered(out) == {1: 1, 2: 1}
    records = {json.loads(x)["id"]: json.loads(x) for x in open(out, "rb")}
    assert records["seq-00000001"]["cluster_name"] == "cluster.local"
    (dead,) = [json.loads(x) for x in open(tmp_path / "spool" / "dead-letters.jsonl", "rb")]
    assert dead["raw_base64"] == "AP9ub3QgYSB3ZWJob29r" and dead["reason"]


def cri(line: bytes) -> bytes:
    return b"2025-03-14T08:00:12.123456789Z stdout F " + line + b"\n"


def test_tail_follows_rotation_and_resumes_after_restart(tmp_path, collectors):
    log = tmp_path / "containers" / "neuvector-controller.log"
    log.parent.mkdir()
    template = body_of(sample("violation-text-1"))  # the pod log has the body only
    controller_line = cri(b"2025-03-14T08:00:12.123|INFO|CTL|main.main: starting")

    def write(path, start, stop):
        with open(path, "ab") as f:
            for i in range(start, stop):
                f.write(cri(numbered(template, i)))
                f.write(controller_line)

    write(log, 0, 10)
    c = start_collector(tmp_path, ["file://" + str(log)])
    out = str(tmp_path / "out.jsonl")
    wait_until(lambda: len(delivered(out)) >= 10, what="first lines")
    os.rename(log, str(log) + ".1")  # kubelet-style rotation: rename, then a new file
    write(str(log) + ".1", 10, 15)  # late lines into the renamed file are read too
    write(log, 15, 20)
    wait_until(lambda: len(delivered(out)) >= 20, what="lines after rotation")
    c.stop()
    write(log, 20, 25)  # written while the collector is down
    os.rename(log, str(log) + ".2")
    write(log, 25, 30)
    c = start_collector(tmp_path, ["file://" + str(log)])
    collectors.append(c)
    wait_until(lambda: len(delivered(out)) >= 30, what="lines after restart")
    time.sleep(0.3)
    assert delivered(out) == {i: 1 for i in range(30)}
    assert c.metrics.skipped.labels(c.sources[0].label)._value.get() == 10  # this run's controller lines


def test_unknown_keys_are_kept_counted_and_logged(tmp_path, collectors, caplog):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"])
    collectors.append(c)
    newer = sample("violation-text-1") + b",zone=eu-west-1"  # a key from a newer NeuVector
    with socket.create_connection(("127.0.0.1", c.sources[0].port)) as conn:
        conn.sendall(newer + b"\n")
    out = tmp_path / "out.jsonl"
    wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 1, what="the record")
    (record,) = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert record["zone"] == "eu-west-1" and record["nbe"] is False
    assert c.metrics.record_notes.labels(c.sources[0].label)._value.get() == 1
    assert "unknown key 'zone'" in caplog.text
