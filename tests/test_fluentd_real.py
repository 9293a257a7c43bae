"""End to end against the real Fluentd: NeuVector syslog -> ``nvsiem listen`` -> fluentd:// -> in_forward.

Each test counts records where Fluentd wrote them, and compares every one
(fields and JSON types, tag, event time) with what nvparser makes of the
line that was sent. Fluentd comes from ``NVSIEM_FLUENTD`` or the PATH
(``helpers/fluentd_peer.py``); without one these tests skip. The cases a
real Fluentd cannot be made to produce (acks dropped, malformed replies)
are played by the spec-written server in ``test_fluentd_sink.py``.
"""
import datetime
import re
import threading
from pathlib import Path

import pytest
import trustme
import yaml

from helpers.fluentd_peer import (TAG_KEY, TIME_KEY, Fluentd, dry_run, forward_fluentd, json_lines, records_in,
                                  require_fluentd)
from helpers.listen_harness import REPO, CollectorProcess, send_tcp
from helpers.loopback import free_port, wait_until
from helpers.sample_stream import assert_delivered, event_seconds, missing, parsed, sample_lines

pytestmark = pytest.mark.usefixtures("fluentd_command")

SHARED_KEY = "nv-shared-key-4f7a"


@pytest.fixture(scope="module")
def fluentd_command():
    return require_fluentd()


def collector(tmp_path: Path, peers: list, to: str) -> CollectorProcess:
    proc = CollectorProcess(tmp_path / "collector", ["tcp://127.0.0.1:%d" % free_port()], [to])
    proc.workdir.mkdir(parents=True, exist_ok=True)
    peers.append(proc)
    return proc.start()


def listen_port(proc: CollectorProcess) -> int:
    return int(proc.args[proc.args.index("--listen") + 1].rsplit(":", 1)[1])


def send(proc: CollectorProcess, lines) -> None:
    send_tcp(listen_port(proc), [line + b"\n" for line in lines])


def without_injected(records):
    return [{k: v for k, v in r.items() if k not in (TAG_KEY, TIME_KEY)} for r in records]


def assert_tagged_and_timed(records) -> None:
    """Tag ``neuvector.<notification>`` and NeuVector's own event time, as Fluentd holds them."""
    for record in records:
        plain = {k: v for k, v in record.items() if k not in (TAG_KEY, TIME_KEY)}
        assert record[TAG_KEY] == "neuvector." + plain["notification"]
        assert record[TIME_KEY] == event_seconds(plain)


def wait_for_records(out_dir: Path, count: int, timeout: float = 90.0) -> None:
    wait_until(lambda: len(records_in(out_dir)) >= count, timeout, "%d records from Fluentd" % count, interval=0.2)


def wait_written_out(fluentds, lines) -> None:
    """Wait until the Fluentds between them have written the record of every line.

    A count is not enough once records may repeat: the copies sent again reach
    it while chunks Fluentd acknowledged before a ``kill -9`` are still in its
    file buffer. It writes the chunks it resumes only when a flush is asked for.
    """
    def written_out():
        for fluentd in fluentds:
            fluentd.flush()
        return not missing(without_injected([r for f in fluentds for r in records_in(f.workdir / "out")]), lines)
    wait_until(written_out, 90, "every record written out by Fluentd", interval=1)


def deliver_and_stop(proc: CollectorProcess, fluentd: Fluentd, lines, out_dir: Path):
    """Send ``lines``, wait for them at Fluentd, stop both cleanly; what Fluentd wrote."""
    send(proc, lines)
    wait_for_records(out_dir, len(lines))
    assert proc.terminate() == 0
    fluentd.stop()
    return records_in(out_dir)


def test_every_chunk_is_acknowledged_by_a_real_in_forward(tmp_path, peers):
    fluentd = forward_fluentd(tmp_path / "fluentd")
    peers.append(fluentd.start())
    proc = collector(tmp_path, peers, "fluentd://127.0.0.1:%d?batch=50&ack_timeout=10" % fluentd.port)
    lines = sample_lines(600)
    records = deliver_and_stop(proc, fluentd, lines, tmp_path / "fluentd" / "out")
    # Exactly once: an ack missed or late would have had the batch sent again.
    assert_delivered(without_injected(records), lines)
    assert_tagged_and_timed(records)
    assert {r[TAG_KEY] for r in records} == {"neuvector." + n for n in
                                              ("violation", "threat", "incident", "event", "activity", "audit")}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_files(ca: trustme.CA, directory: Path):
    """(CA file, server certificate chain, server key) for localhost / 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert("localhost", "127.0.0.1")
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    server.cert_chain_pems[0].write_to_path(str(paths[1]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths[1]), append=True)
    server.private_key_pem.write_to_path(str(paths[2]))
    return paths


def key_file(directory: Path, key: str) -> Path:
    path = directory / "shared_key"
    path.write_text(key)  # no newline: Fluentd's shared_key is byte for byte
    return path


def test_tls_and_shared_key_with_fluentds_own_transport_and_security(tmp_path, peers, ca):
    ca_file, cert, key = tls_files(ca, tmp_path / "tls")
    fluentd = forward_fluentd(
        tmp_path / "fluentd",
        transport=f"<transport tls>\n cert_path {cert}\n private_key_path {key}\n min_version TLS1_2\n max_version TLS1_3\n</transport>",
        security=f"<security>\n self_hostname aggregator\n shared_key {SHARED_KEY}\n</security>")
    peers.append(fluentd.start())

    # A sender with the wrong key is turned away by Fluentd's handshake, and nothing gets in.
    wrong = collector(tmp_path / "wrong", peers, "fluentd+tls://localhost:%d?ca=%s&shared_key_file=%s"
                      % (fluentd.port, ca_file, key_file(tmp_path, "not-the-key")))
    send(wrong, sample_lines(1))
    wait_until(lambda: wrong.metric("nvsiem_sink_errors_total", kind="permanent") > 0, 30,
               "the collector to report the rejected handshake")
    assert "handshake rejected by the server: shared_key mismatch" in wrong.log.read_text()
    wrong.stop()

    right = tmp_path / "right"
    right.mkdir()
    proc = collector(right, peers, "fluentd+tls://localhost:%d?ca=%s&shared_key_file=%s"
                     % (fluentd.port, ca_file, key_file(right, SHARED_KEY)))
    lines = sample_lines(300)
    records = deliver_and_stop(proc, fluentd, lines, tmp_path / "fluentd" / "out")
    assert_delivered(without_injected(records), lines)
    assert_tagged_and_timed(records)


def test_gzip_compressed_packed_forward(tmp_path, peers):
    fluentd = forward_fluentd(tmp_path / "fluentd")
    peers.append(fluentd.start())
    proc = collector(tmp_path, peers, "fluentd://127.0.0.1:%d?compress=gzip&batch=100" % fluentd.port)
    lines = sample_lines(500)
    records = deliver_and_stop(proc, fluentd, lines, tmp_path / "fluentd" / "out")
    assert_delivered(without_injected(records), lines)
    assert_tagged_and_timed(records)


def stream_in_steps(proc: CollectorProcess, lines, steps: int) -> threading.Thread:
    """Send ``lines`` over ``steps`` connections, each step once the collector has delivered the previous one."""
    def run():
        size = -(-len(lines) // steps)
        for start in range(0, len(lines), size):
            send(proc, lines[start:start + size])
            wait_until(lambda: proc.metric("nvsiem_received_frames_total") >= start + size
                       or proc.metric("nvsiem_received_frames_total") >= len(lines), 60, "frames received")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_failover_between_two_real_fluentds_when_one_is_killed(tmp_path, peers):
    first = forward_fluentd(tmp_path / "first", name="fluentd-first")
    second = forward_fluentd(tmp_path / "second", name="fluentd-second")
    peers += [first.start(), second.start()]
    proc = collector(tmp_path, peers, "fluentd://127.0.0.1:%d,127.0.0.1:%d?batch=50&ack_timeout=5&connect_timeout=2"
                     % (first.port, second.port))
    lines = sample_lines(1500)
    sender = stream_in_steps(proc, lines, 10)
    wait_for_records(tmp_path / "first" / "out", 200)
    first.kill9()
    sender.join(120)
    assert not sender.is_alive()
    # Acknowledged by one Fluentd or the other: some by the first into its file buffer,
    # which it writes out only once it is back.
    wait_until(lambda: proc.metric("nvsiem_delivered_records_total") >= len(lines), 90,
               "every record acknowledged by one Fluentd or the other", interval=0.2)
    assert proc.terminate() == 0
    first.start()
    wait_written_out([first, second], lines)
    first.stop()
    second.stop()
    at_first, at_second = records_in(tmp_path / "first" / "out"), records_in(tmp_path / "second" / "out")
    assert at_first and at_second and len(at_first) < len(lines)
    assert_delivered(without_injected(at_first + at_second), lines, at_least_once=True)
    assert_tagged_and_timed(at_first + at_second)


def test_kill_9_of_fluentd_mid_stream_and_a_restart_lose_nothing(tmp_path, peers):
    fluentd = forward_fluentd(tmp_path / "fluentd")
    peers.append(fluentd.start())
    out = tmp_path / "fluentd" / "out"
    proc = collector(tmp_path, peers, "fluentd://127.0.0.1:%d?batch=50&ack_timeout=5&connect_timeout=2" % fluentd.port)
    lines = sample_lines(2300)
    sender = stream_in_steps(proc, lines, 10)
    wait_for_records(out, 300)
    fluentd.kill9()
    wait_until(lambda: proc.metric("nvsiem_sink_errors_total", kind="transient") > 0, 60,
               "the collector to see Fluentd gone")
    fluentd.start()
    sender.join(120)
    assert not sender.is_alive()
    wait_until(lambda: proc.metric("nvsiem_delivered_records_total") >= len(lines), 90,
               "every record acknowledged", interval=0.2)
    wait_written_out([fluentd], lines)
    assert proc.terminate() == 0
    fluentd.stop()
    records = records_in(out)
    assert_delivered(without_injected(records), lines, at_least_once=True)
    assert_tagged_and_timed(records)


# -- The configs shipped in fluentd/ -------------------------------------------

AGGREGATOR = REPO / "fluentd" / "aggregator" / "fluent.conf"


def sidecar_config() -> str:
    (config_map,) = [d for d in yaml.safe_load_all((REPO / "fluentd" / "k8s" / "configmap-fluentd.yaml").read_text())
                     if d and d["kind"] == "ConfigMap"]
    return config_map["data"]["fluent.conf"]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, "expected %r once in the config" % old
    return text.replace(old, new)


def installed_aggregator(root: Path, port: int) -> str:
    """The aggregator config as a user installs it outside its image: its /fluentd/ paths under ``root``, another port."""
    text = AGGREGATOR.read_text().replace("/fluentd/", "%s/" % root)
    text = replace_once(text, "bind 0.0.0.0", "bind 127.0.0.1")
    return replace_once(text, "port 24224", "port %d" % port)


def installed_sidecar(root: Path, port: int, aggregator_port: int) -> str:
    text = sidecar_config().replace("/fluentd/", "%s/" % root)
    text = replace_once(text, "bind 127.0.0.1\n  port 24224", "bind 127.0.0.1\n  port %d" % port)
    return replace_once(text, "\n    port 24224", "\n    port %d" % aggregator_port)


def aggregator_env() -> dict:
    return {"FLUENTD_SHARED_KEY": SHARED_KEY, "FLUENTD_HOSTNAME": "aggregator"}


def test_the_shipped_configs_load_in_fluentd(tmp_path, ca):
    """``--dry-run``: every plugin, parameter and value is one Fluentd accepts (it reads the certificates too)."""
    tls_files(ca, tmp_path / "tls")
    aggregator, sidecar = tmp_path / "aggregator.conf", tmp_path / "sidecar.conf"
    aggregator.write_text(installed_aggregator(tmp_path, 24224))
    sidecar.write_text(installed_sidecar(tmp_path, 24224, 24225))
    assert "in_nvsiem" in dry_run(aggregator, aggregator_env())
    assert "out_aggregator" in dry_run(sidecar, sidecar_env())


def sidecar_env() -> dict:
    return {"FLUENTD_SHARED_KEY": SHARED_KEY, "POD_NAME": "nvsiem-0", "FLUENTD_AGGREGATOR_HOST": "localhost"}


def aggregated(root: Path):
    """Records the aggregator wrote, each with the tag taken from its path (log/neuvector/<tag>/...)."""
    records = []
    for tag_dir in sorted((root / "log" / "neuvector").glob("*")):
        for record in json_lines(tag_dir.glob("*")):
            records.append((tag_dir.name, record))
    return records


def start_aggregator(tmp_path: Path, peers: list, ca) -> tuple:
    root = tmp_path / "aggregator"
    ca_file, _, _ = tls_files(ca, root / "tls")
    port = free_port()
    aggregator = Fluentd(root, installed_aggregator(root, port), port, aggregator_env(), name="aggregator")
    peers.append(aggregator.start())
    return aggregator, root, ca_file


def wait_aggregated(aggregator: Fluentd, root: Path, count: int) -> None:
    # The aggregator flushes every 5 s; SIGUSR1 has it write now rather than wait on the interval.
    def arrived():
        aggregator.flush()
        return len(aggregated(root)) >= count
    wait_until(arrived, 90, "%d records at the aggregator" % count, interval=1)


def assert_aggregated(records, lines) -> None:
    """The aggregator's output: the records, tagged by path, with NeuVector's time as ``event_time``."""
    assert_delivered([{k: v for k, v in r.items() if k != "event_time"} for _, r in records], lines)
    for tag, record in records:
        assert tag == "neuvector." + record["notification"]
        plain = {k: v for k, v in record.items() if k != "event_time"}
        assert record["event_time"] == _utc(event_seconds(plain))


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_aggregator_config_receives_from_the_sink_over_tls_with_the_shared_key(tmp_path, peers, ca):
    aggregator, root, ca_file = start_aggregator(tmp_path, peers, ca)
    proc = collector(tmp_path, peers, "fluentd+tls://localhost:%d?ca=%s&shared_key_file=%s"
                     % (aggregator.port, ca_file, key_file(tmp_path, SHARED_KEY)))
    lines = sample_lines(400)
    send(proc, lines)
    wait_aggregated(aggregator, root, len(lines))
    assert proc.terminate() == 0
    aggregator.stop()
    assert_aggregated(aggregated(root), lines)
    assert list((root / "buffer").glob("neuvector/*")) == []  # the file buffer held them, and let go once written


def test_the_sidecar_config_relays_from_the_collector_to_the_aggregator(tmp_path, peers, ca):
    aggregator, root, ca_file = start_aggregator(tmp_path, peers, ca)
    sidecar_root = tmp_path / "sidecar"
    tls_files(ca, sidecar_root / "tls")  # the sidecar reads the CA from its tls/ca.crt
    port = free_port()
    sidecar = Fluentd(sidecar_root, installed_sidecar(sidecar_root, port, aggregator.port), port,
                      sidecar_env(), name="sidecar")
    peers.append(sidecar.start())
    # The collector's URL as the collector ConfigMap sets it, at this sidecar's port.
    proc = collector(tmp_path, peers, re.sub(r":24224\b", ":%d" % port, collector_to()))
    lines = sample_lines(400)
    send(proc, lines)
    wait_aggregated(aggregator, root, len(lines))
    assert proc.terminate() == 0
    sidecar.stop()
    aggregator.stop()
    assert_aggregated(aggregated(root), lines)


def collector_to() -> str:
    for doc in yaml.safe_load_all((REPO / "fluentd" / "k8s" / "configmap-collector.yaml").read_text()):
        if doc and doc["kind"] == "ConfigMap":
            return doc["data"]["NVSIEM_TO"]
    raise AssertionError("no NVSIEM_TO in configmap-collector.yaml")


def test_records_match_the_parser_field_for_field():
    """The comparison the tests above rest on does see a changed value or type."""
    line = sample_lines(1)[0]
    record = parsed(line)
    assert_delivered([record], [line])
    changed = dict(record, sessions=float(record["sessions"]))
    with pytest.raises(AssertionError):
        assert_delivered([changed], [line])
