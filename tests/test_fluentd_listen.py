"""End to end: NeuVector syslog over TCP -> ``nvsiem listen`` (a real subprocess) -> fluentd:// -> Forward peer."""
import collections
import socket
import threading
import time

from helpers.forward_server import EventTime, ForwardServer
from helpers.listen_harness import CollectorProcess, frames, sample, send_tcp, seq_of, start_collector
from helpers.loopback import free_port, wait_until
from helpers.nvsamples import _typed, expected_records


def test_listen_delivers_typed_tagged_records_to_fluentd_across_a_fluentd_restart(tmp_path):
    port = free_port()
    with ForwardServer() as fluentd:
        proc = CollectorProcess(tmp_path, [f"tcp://127.0.0.1:{port}"],
                                [f"fluentd://127.0.0.1:{fluentd.port}?ack_timeout=5&batch=100"]).start()
        try:
            send_tcp(port, [sample("violation-json-3") + b"\n"] + frames(0, 300))
            assert fluentd.wait_for(lambda s: len(s.events) >= 301, 30)
            first = fluentd.events[0]
            (expected,) = expected_records("violation-json-3")
            assert _typed(first.record) == _typed(expected)
            assert first.tag == "neuvector.violation"
            assert first.time == EventTime(expected["reported_timestamp"], 0)

            fluentd.kill()  # Fluentd down: the collector keeps accepting into its spool
            send_tcp(port, frames(300, 600))
            wait_until(lambda: proc.metric("nvsiem_sink_errors_total", kind="transient") > 0, 30,
                       "the collector to see Fluentd down")
            fluentd.start()
            wait_until(lambda: {seq_of(e.record) for e in fluentd.events[1:]} >= set(range(600)), 60,
                       "every record at Fluentd after its restart")
            counts = collections.Counter(seq_of(e.record) for e in fluentd.events[1:])
            assert set(counts) == set(range(600))
            assert proc.terminate() == 0
        finally:
            proc.stop()


def test_stop_is_not_held_up_by_a_sink_waiting_for_an_ack(tmp_path):
    """The drain deadline bounds the stop, even when an ack timeout is longer."""
    with ForwardServer() as fluentd:
        fluentd.behaviour = "stall"  # reads nothing, acks nothing
        c = start_collector(tmp_path, ["tcp://127.0.0.1:0"],
                            ["fluentd://127.0.0.1:%d?ack_timeout=60" % fluentd.port], drain_timeout=1)
        with socket.create_connection(("127.0.0.1", c.sources[0].port)) as conn:
            conn.sendall(b"".join(frames(0, 10)))
        wait_until(lambda: c.workers[0].reader.backlog_bytes, what="records spooled")
        time.sleep(0.5)  # the sink is inside send(), waiting for the ack
        stopper = threading.Thread(target=c.stop)
        stopper.start()
        stopper.join(20)  # drain 1 s + 5 s of grace; not the 60 s ack timeout
        assert not stopper.is_alive()
        fluentd.behaviour = "ok"
