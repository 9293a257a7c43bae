"""At-least-once delivery of ``nvsiem listen``: failing sinks, a full spool, kill -9, SIGTERM.

The contract these tests hold the collector to (see nvsiem/collector.py):
every record spooled is delivered to every sink it is meant for; a sink sees
a record twice only (a) after a crash of the collector, at most the batch it
had in flight (``max_batch`` records per sink per crash), or (b) when the
destination stored part of a batch and then failed, at most that part, per
such failure.
"""
import http.client
import json
import logging
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers.listen_harness import (CollectorProcess, ControlledSink, delivered, frames,
                            numbered, sample, send_tcp, seq_of, start_collector)
from helpers.loopback import free_port, wait_until
from nvsiem.sinks.file import FileSink
from nvsiem.sources.webhook import WebhookSource

pytestmark = pytest.mark.slow


def parsed(c) -> float:
    return sum(s.get() for s in (m._value for m in c.metrics.parsed._metrics.values()))


def first_occurrences(records):
    seen, order = set(), []
    for r in records:
        if seq_of(r) not in seen:
            seen.add(seq_of(r))
            order.append(seq_of(r))
    return order


def test_sink_fails_stalls_and_recovers_mid_stream(tmp_path, controlled):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], ["test://siem?token=s3cr3t"])
    controlled.append(c)
    (sink,), (worker,) = ControlledSink.instances, c.workers
    conn = socket.create_connection(("127.0.0.1", c.sources[0].port))
    conn.sendall(b"".join(frames(0, 1000)))
    wait_until(lambda: len(sink.records) >= 1000, what="first records")

    sink.set_mode("fail")  # the SIEM goes down: the backlog grows on disk, reception goes on
    conn.sendall(b"".join(frames(1000, 2000)))
    wait_until(lambda: parsed(c) >= 2000, what="records spooled while the sink is down")
    wait_until(lambda: worker.last_error, what="the failure to be noticed")
    assert worker.reader.backlog_bytes >= 1000 * 1000
    ok, report = c.health()
    assert ok and report["sinks"] == {"test://siem?token=***": {
        "up": False, "error": "SinkError: test destination is down", "backlog_bytes": worker.reader.backlog_bytes}}
    assert "s3cr3t" not in json.dumps(report)

    sink.set_mode("partial")  # stores half a batch, then fails: the retry duplicates that half
    wait_until(lambda: sink.partial_failures >= 2, what="partial failures")
    sink.set_mode("stall")  # the SIEM hangs
    conn.sendall(b"".join(frames(2000, 3000)))
    wait_until(lambda: parsed(c) >= 3000, what="records spooled while the sink hangs")
    sink.set_mode("ok")
    conn.close()
    wait_until(lambda: len(sink.seqs) >= 3000, what="recovery")
    wait_until(lambda: worker.reader.backlog_bytes == 0, what="backlog drained")
    counts = sink.seqs
    assert set(counts) == set(range(3000))
    duplicates = sum(counts.values()) - 3000
    assert duplicates <= sink.partial_failures * (ControlledSink.max_batch // 2)
    assert first_occurrences(sink.records) == list(range(3000))  # drained in order
    assert worker.last_error is None


def test_fan_out_with_type_filter(tmp_path):
    everything, threats = tmp_path / "all.jsonl", tmp_path / "threats.jsonl"
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"],
                        ["file://%s" % everything, "file://%s?types=threat" % threats])
    try:
        mixed = frames(0, 50) + frames(50, 60, sample("threat-text-2")) + frames(60, 100)
        with socket.create_connection(("127.0.0.1", c.sources[0].port)) as s:
            s.sendall(b"".join(mixed))
        wait_until(lambda: len(delivered(str(everything))) >= 100 and len(delivered(str(threats))) >= 10)
    finally:
        c.stop()
    assert delivered(str(everything)) == {i: 1 for i in range(100)}
    assert delivered(str(threats)) == {i: 1 for i in range(50, 60)}
    assert {json.loads(x)["notification"] for x in open(threats, "rb")} == {"threat"}


def test_full_spool_pushes_back_on_tcp_keeps_udp_raw_and_answers_webhooks_500(tmp_path, controlled, caplog, monkeypatch):
    monkeypatch.setattr(WebhookSource, "spool_wait", 0.2)
    quota = 256 << 10
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", "webhook://127.0.0.1:0"], ["test://siem"],
                        spool_quota=quota, spool_segment=64 << 10)
    controlled.append(c)
    (sink,) = ControlledSink.instances
    tcp, udp, webhook = (s.port for s in c.sources)
    sink.set_mode("fail")
    total = 12000  # 12.5 MB: more than the quota plus what the kernel buffers on both ends
    sender = threading.Thread(target=lambda: socket.create_connection(("127.0.0.1", tcp)).sendall(
        b"".join(frames(0, total))))
    sender.daemon = True
    with caplog.at_level(logging.WARNING):
        sender.start()
        wait_until(lambda: c.spool.full, what="the quota to be reached")
        assert any("spool quota reached" in r.getMessage() for r in caplog.records)
        assert c.spool.used_bytes <= quota
        ok, report = c.health()  # readiness fails: a Service sends new connections to another replica
        assert not ok and report["spool"]["full"]
        assert sender.is_alive()  # TCP is pushed back on, not dropped

        # Smaller inputs may still fit in what is left; webhooks fill it until NeuVector is told to retry.
        statuses = []
        for n in range(20000, 20020):
            conn = http.client.HTTPConnection("127.0.0.1", webhook, timeout=10)
            conn.request("POST", "/", body=numbered(sample("webhook-json-2"), n),
                         headers={"Content-Type": "application/json"})
            statuses.append(conn.getresponse().status)
            conn.close()
            if statuses[-1] != 200:
                break
        assert statuses[-1] == 500  # NeuVector retries a 500 (and only a 500)
        # UDP cannot push back: the datagrams wait as raw files in the spool directory.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for frame in frames(30000, 30010):
                u.sendto(frame, ("127.0.0.1", udp))
        raw = tmp_path / "spool" / ("udp-%d-000000000001.raw" % udp)
        wait_until(lambda: raw.exists() and raw.stat().st_size >= 10 * 1000, what="UDP datagrams on disk")
    sink.set_mode("ok")
    sender.join(30)
    accepted_webhooks = {20000 + i: 1 for i, status in enumerate(statuses) if status == 200}
    datagrams = {30000 + i: 1 for i in range(10)}
    wait_until(lambda: len(sink.seqs) >= total + len(accepted_webhooks) + 10, what="the backlog to drain")
    assert sink.seqs == {**{i: 1 for i in range(total)}, **accepted_webhooks, **datagrams}
    assert not c.spool.full


def spooled(spool: Path) -> set:
    """Sequence numbers in the spool's segment files (what the collector accepted and still keeps)."""
    seen = set()
    for path in spool.glob("segment-*.jsonl"):
        seen.update(seq_of(json.loads(line)) for line in open(path, "rb") if line.strip())
    return seen


def stream(port: int, start: int, stop: int, stop_event: threading.Event = None) -> int:
    """Send records start..stop-1 in small paced chunks; return how many the socket took before it broke."""
    sent = start
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for first in range(start, stop, 100):
                s.sendall(b"".join(frames(first, min(stop, first + 100))))
                sent = min(stop, first + 100)
                time.sleep(0.004)
    except OSError:
        pass
    return sent


def test_kill_9_mid_stream_then_restart_loses_nothing_accepted(tmp_path):
    port = free_port()
    out = tmp_path / "out.jsonl"
    # Configured through the environment, as in Kubernetes.
    env = {"NVSIEM_LISTEN": "tcp://127.0.0.1:%d" % port, "NVSIEM_TO": "file://%s" % out}
    proc = CollectorProcess(tmp_path, [], [], env=env).start()
    total = 25000
    try:
        result = {}
        sender = threading.Thread(target=lambda: result.setdefault("sent", stream(port, 0, total)))
        sender.start()
        wait_until(lambda: out.exists() and out.stat().st_size > 5_000_000, what="the stream to be under way")
        proc.kill9()
        sender.join(30)
        accepted = set(delivered(str(out))) | spooled(tmp_path / "spool")
        # One connection, in order: what was accepted is a prefix of what was sent, without gaps.
        k = len(accepted)
        assert 0 < k < total and accepted == set(range(k))
        proc.start()
        assert stream(port, k, total) == total  # the sender goes on where acceptance stopped
        wait_until(lambda: len(delivered(str(out))) >= total, 60, "all records after the restart")
        counts = delivered(str(out))
        assert set(counts) == set(range(total))
        duplicates = sum(counts.values()) - total
        assert duplicates <= FileSink.max_batch  # at most the batch in flight at the kill
        assert proc.terminate() == 0
    finally:
        proc.stop()


def test_sigterm_under_load_drains_cleanly(tmp_path):
    port = free_port()
    out = tmp_path / "out.jsonl"
    proc = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % port], ["file://%s" % out]).start()
    try:
        sender = threading.Thread(target=stream, args=(port, 0, 1_000_000))
        sender.start()
        wait_until(lambda: out.exists() and out.stat().st_size > 5_000_000, what="the stream to be under way")
        source = "tcp://127.0.0.1:%d" % port
        assert proc.metric("nvsiem_source_up", source=source) == 1
        assert proc.metric("nvsiem_parsed_records_total", source=source, notification="violation") > 0
        assert proc.metric("nvsiem_delivered_records_total", sink="file://%s" % out) > 0
        assert proc.terminate() == 0
        sender.join(30)
        counts = delivered(str(out))
        k = len(counts)
        assert k > 0 and set(counts) == set(range(k))  # a prefix, no gaps...
        assert set(counts.values()) == {1}  # ...and no duplicates: nothing was in flight at the stop
        assert spooled(tmp_path / "spool") <= set(counts)  # everything accepted was delivered before exit
        assert "stopped" in proc.log.read_text()
    finally:
        proc.stop()


def test_kill_9_with_udp_backlog_then_restart_delivers_every_datagram(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "out.jsonl"
    proc = CollectorProcess(tmp_path, ["udp://127.0.0.1:%d" % port], ["file://%s" % out]).start()
    total = 10000
    try:
        # Freeze the collector's parser: only its receiver process takes the datagrams now.
        proc.proc.send_signal(signal.SIGSTOP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for n, frame in enumerate(frames(0, total)):
                u.sendto(frame, ("127.0.0.1", port))
                if n % 200 == 199:
                    time.sleep(0.01)  # about 20,000/s: within what the kernel buffer absorbs
        proc.kill9()  # nothing of this was parsed: it is all in raw files or the socket buffer
        assert len(delivered(str(out))) < total
        proc.start()
        wait_until(lambda: len(delivered(str(out))) >= total, 60, "every datagram after the restart")
        counts = delivered(str(out))
        assert set(counts) == set(range(total))
        # At most one raw read (1 MiB: about 1,000 datagrams) and one sink batch are repeated.
        assert sum(counts.values()) - total <= 1000 + FileSink.max_batch
        assert proc.terminate() == 0
    finally:
        proc.stop()


def test_sigterm_with_the_spool_full_loses_no_input_tcp_udp_or_file(tmp_path):
    """At stop, a full spool refuses what waits for room: nothing of it may be lost.

    A file and raw UDP can be read again: their positions stay, the next start
    parses them. What TCP took from its socket cannot: it goes past the quota.
    """
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    log_file = tmp_path / "controller.log"
    listen = ["tcp://127.0.0.1:%d" % tcp, "udp://127.0.0.1:%d" % udp, "file://%s" % log_file]
    down = "fluentd://127.0.0.1:%d?connect_timeout=0.2" % free_port()
    proc = CollectorProcess(tmp_path, listen, [down], "--spool-quota", "400K").start()
    try:
        log_file.write_bytes(b"".join(frames(1000, 1500)))  # 500 KB: more than the spool takes
        with socket.create_connection(("127.0.0.1", tcp)) as s, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            s.sendall(b"".join(frames(0, 500)))
            for n, frame in enumerate(frames(2000, 2500)):
                u.sendto(frame, ("127.0.0.1", udp))
                if n % 20 == 19:
                    time.sleep(0.002)
            wait_until(lambda: proc.metric("nvsiem_spool_full") == 1, what="the spool to fill up")
            time.sleep(0.5)  # every source now waits for room
            assert proc.terminate() == 0
    finally:
        proc.stop()
    out = tmp_path / "out.jsonl"
    proc = CollectorProcess(tmp_path, listen[1:], ["file://%s" % out], "--spool-quota", "100M").start()
    try:
        everything = set(range(500)) | set(range(1000, 1500)) | set(range(2000, 2500))
        wait_until(lambda: set(delivered(str(out))) >= everything, 30, "every record after the restart")
        assert set(delivered(str(out))) == everything
        assert proc.terminate() == 0
    finally:
        proc.stop()


def test_a_full_disk_holds_stream_input_back_and_the_sink_thread_survives_it(tmp_path, controlled, monkeypatch):
    """ENOSPC: TCP input waits for the disk (nothing dropped), the cursor save is retried."""
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], ["test://siem"])
    controlled.append(c)
    (sink,), (worker,) = ControlledSink.instances, c.workers
    disk_full = threading.Event()
    disk_full.set()
    real_append, real_commit = c.spool.append, worker.reader.commit

    def append(*args, **kwargs):
        if disk_full.is_set():
            raise OSError(28, "No space left on device")
        return real_append(*args, **kwargs)

    def commit(position=None):
        if disk_full.is_set():
            raise OSError(28, "No space left on device")
        return real_commit(position)

    monkeypatch.setattr(c.spool, "append", append)
    monkeypatch.setattr(worker.reader, "commit", commit)
    with socket.create_connection(("127.0.0.1", c.sources[0].port)) as conn:
        conn.sendall(b"".join(frames(0, 300)))
        time.sleep(1.5)  # the connection thread retries the write each second
        assert parsed(c) == 0 and not sink.records
        disk_full.clear()  # room again
        wait_until(lambda: len(sink.seqs) >= 300, what="the held-back records")
    assert set(sink.seqs) == set(range(300))
    assert c.metrics.dropped._metrics == {}  # nothing refused
    assert worker.is_alive()


def test_a_cursor_that_cannot_be_saved_is_retried_not_the_end_of_the_sink(tmp_path, controlled, monkeypatch):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], ["test://siem"])
    controlled.append(c)
    (sink,), (worker,) = ControlledSink.instances, c.workers
    failures = []
    real_commit = worker.reader.commit

    def commit(position=None):
        if len(failures) < 2:
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real_commit(position)

    monkeypatch.setattr(worker.reader, "commit", commit)
    with socket.create_connection(("127.0.0.1", c.sources[0].port)) as conn:
        conn.sendall(b"".join(frames(0, 50)))
        wait_until(lambda: failures, what="a failed cursor save")
        wait_until(lambda: worker.last_error and "saving the cursor" in worker.last_error, what="the error reported")
        assert c.health()[1]["sinks"]["test://siem"]["up"] is False
        conn.sendall(b"".join(frames(50, 100)))
        wait_until(lambda: len(sink.seqs) >= 100, what="delivery to go on")
    assert worker.is_alive() and set(sink.seqs) == set(range(100))
    wait_until(lambda: worker.last_error is None, what="recovery")


def test_records_spooled_before_a_refusal_are_counted_as_parsed(tmp_path, controlled, monkeypatch):
    from nvparser import Parser
    c = start_collector(tmp_path, [], ["test://siem"], spool_quota="64K")  # pieces of 2 KiB: ~2 records
    controlled.append(c)
    pieces = []
    real_append = c.spool.append
    monkeypatch.setattr(c.spool, "append", lambda lines, *a: (pieces.append(len(lines)), len(pieces) == 1
                                                              and real_append(lines, *a))[1])
    events = Parser().feed(b"".join(frames(0, 10)))  # 9 records: the parser holds the last line back
    assert not c.accept(events, "test", timeout=0)
    assert parsed(c) == pieces[0] and 0 < pieces[0] < 9
    dropped = sum(s.get() for s in (m._value for m in c.metrics.dropped._metrics.values()))
    assert parsed(c) + dropped == 9  # the held-back 10th frame is still in the parser


def test_dead_letters_rotate_with_the_segment_size_a_small_quota_gives(tmp_path):
    c = start_collector(tmp_path, [], ["file://%s" % (tmp_path / "out.jsonl")], spool_quota="64K")
    try:
        assert c.spool.segment_bytes == 32 << 10  # lowered from 16M: two segments fit the quota
        assert c._dead.max_bytes == 4 * c.spool.segment_bytes
    finally:
        c.stop()


def _run_once(tmp_path, port, to, first, count):
    nv = CollectorProcess(tmp_path, ["tcp://127.0.0.1:%d" % port], [to]).start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(frames(first, first + count)))
        wait_until(lambda: nv.metric("nvsiem_delivered_records_total") >= count, 30, "%d records delivered" % count)
        assert nv.terminate() == 0
    finally:
        nv.stop()
    return nv.log.read_text()


def test_a_named_sink_keeps_its_place_when_its_url_changes(tmp_path):
    port = free_port()
    _run_once(tmp_path, port, "file://%s?name=siem-main" % (tmp_path / "a.jsonl"), 0, 300)
    # The same sink, moved: another path and an option more; only the new records go to it.
    log = _run_once(tmp_path, port, "file://%s?name=siem-main&fsync=true" % (tmp_path / "b.jsonl"), 300, 50)
    assert delivered(str(tmp_path / "a.jsonl")) == {n: 1 for n in range(300)}
    assert delivered(str(tmp_path / "b.jsonl")) == {n: 1 for n in range(300, 350)}
    assert "no longer configured" not in log


def test_an_unnamed_sink_whose_url_changed_starts_over_and_says_so(tmp_path):
    port = free_port()
    _run_once(tmp_path, port, "file://%s" % (tmp_path / "a.jsonl"), 0, 300)
    log = _run_once(tmp_path, port, "file://%s" % (tmp_path / "b.jsonl"), 300, 50)
    # Nothing lost: the spool still held the first run's records, and the new sink got them again.
    assert set(delivered(str(tmp_path / "b.jsonl"))) == set(range(350))
    assert "is no longer configured" in log
    assert "is new to this spool: it starts at the oldest spooled record" in log and "?name=" in log


def test_a_permanent_sink_error_says_what_to_do_and_loses_nothing(tmp_path, controlled, caplog):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], ["test://down"])
    controlled.append(c)
    (sink,) = ControlledSink.instances
    sink.set_mode("refuse")
    with caplog.at_level(logging.ERROR, logger="nvsiem.collector"):
        with socket.create_connection(("127.0.0.1", c.sources[0].port)) as s:
            s.sendall(b"".join(frames(0, 50)))
        wait_until(lambda: sink.attempts >= 2, 20, "two refused attempts")
    lines = [r.getMessage() for r in caplog.records if "test://down" in r.getMessage()]
    assert len(lines) == 1  # the same error is not logged again on every retry
    assert "until its configuration is fixed" in lines[0] and "rejects the token" in lines[0]
    assert "transient" not in lines[0] and "retrying" not in lines[0]
    sink.set_mode("ok")
    wait_until(lambda: len(sink.seqs) == 50, 20, "the 50 records once the sink accepts")


class WindowSink(FileSink):
    """A file sink whose destination confirms late and out of order, as HEC with acks does.

    ``submit`` writes at once; a batch is confirmed only when the test says
    so (``release``), in any order; ``confirmed`` reports the oldest run.
    """

    window = 3
    max_batch = 10
    made = []

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches, self.released, self.reported = [], set(), 0
        WindowSink.made.append(self)

    def submit(self, batch) -> None:
        self.send(batch)
        self.batches.append(len(batch))

    def confirmed(self, wait: float) -> int:
        time.sleep(min(wait, 0.05))
        done = 0
        while self.reported + done in self.released:
            done += 1
        self.reported += done
        return done


def test_the_cursor_moves_over_the_confirmed_prefix_only(tmp_path, monkeypatch):
    from nvsiem.sinks import SINKS

    monkeypatch.setitem(SINKS, "window", "test_listen_delivery:WindowSink")
    WindowSink.made.clear()
    out = tmp_path / "out.jsonl"
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0"], ["window://%s" % out])
    try:
        port = c.sources[0].port
        send_tcp(port, frames(0, 50))
        sink = WindowSink.made[0]
        wait_until(lambda: len(sink.batches) == 3, 10, "three batches in flight")  # the window: no fourth yet
        time.sleep(0.3)
        assert len(sink.batches) == 3
        worker = c.workers[0]
        backlog = worker.reader.backlog_bytes
        sink.released.update({1, 2})  # the second and third confirmed, the first still waiting
        time.sleep(0.3)
        assert worker.reader.backlog_bytes == backlog  # the cursor has not moved
        assert len(sink.batches) == 3  # nothing confirmed from the front: the window stays full
        sink.released.add(0)
        wait_until(lambda: len(sink.batches) >= 5, 10, "the window moving on")
        sink.released.update(range(3, 5))
        wait_until(lambda: worker.reader.backlog_bytes == 0, 10, "the cursor past all five batches")
    finally:
        c.stop()
    assert sum(sink.batches) == 50
