"""``nvsiem listen`` refuses bad settings at start, says what is wrong, and answers webhooks in time."""
import http.client
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from argparse import Namespace

import pytest

from helpers.listen_harness import ControlledSink, frames, numbered, sample, start_collector
from helpers.loopback import wait_until
from nvsiem import config
from nvsiem.collector import Collector
from nvsiem.sinks import split_collector_options


def listen(tmp_path, *args, timeout=20):
    """``nvsiem listen`` with a start that must fail: (exit status, stderr)."""
    argv = [sys.executable, "-m", "nvsiem", "listen", "--spool", str(tmp_path / "spool"), "--metrics", "off",
            "--listen", "tcp://127.0.0.1:0", "--to", "file://%s" % (tmp_path / "out.jsonl"), "--log-format", "text",
            *args]
    done = subprocess.run(argv, capture_output=True, cwd=tmp_path, timeout=timeout)
    return done.returncode, done.stderr.decode()


# -- settings ---------------------------------------------------------------

BAD_SETTINGS = [
    (["--idle-flush", "0"], "setting idle_flush: must be more than 0, not 0"),  # closed every connection at once
    (["--idle-flush", "-1"], "setting idle_flush: must be more than 0, not -1"),
    (["--idle-flush", "nan"], "setting idle_flush: nan is not a number"),
    (["--spool-quota", "0"], "setting spool_quota: must be more than 0, not 0"),
    (["--spool-segment", "0"], "setting spool_segment: must be more than 0"),
    (["--fsync-interval", "-1"], "setting fsync_interval: must be 0 or more, not -1"),
    (["--drain-timeout", "-1"], "setting drain_timeout: must be 0 or more, not -1"),
    (["--retry-max", "0"], "setting retry_max: must be more than 0"),
    (["--max-frame", "0"], "setting max_frame: must be more than 0"),
    (["--udp-rcvbuf", "0"], "setting udp_rcvbuf: must be more than 0"),
    (["--webhook-max-body", "0"], "setting webhook_max_body: must be more than 0"),
    (["--log-level", "bogus"], "setting log_level: 'bogus' is not one of debug, info, warning, error"),
    (["--log-format", "xml"], "setting log_format: 'xml' is not one of json, text"),
]


@pytest.mark.parametrize("args, says", BAD_SETTINGS, ids=[" ".join(args) for args, _ in BAD_SETTINGS])
def test_bad_settings_are_usage_errors(tmp_path, args, says):
    status, stderr = listen(tmp_path, *args)
    assert status == 2 and stderr.startswith("nvsiem listen: %s" % says) and stderr.count("\n") == 1, stderr


def test_good_edge_values_are_kept():
    cfg = config.resolve(Namespace(fsync_interval="0", drain_timeout="0", log_level="WARNING", log_format="text"),
                         environ={})
    assert (cfg.fsync_interval, cfg.drain_timeout, cfg.log_level, cfg.log_format) == (0.0, 0.0, "warning", "text")
    with pytest.raises(ValueError, match="spool_quota: must be more than 0, not -5"):
        config.resolve(Namespace(spool_quota=-5), environ={})  # an int, as from a JSON config file


# -- sinks ------------------------------------------------------------------

def test_an_unknown_notification_type_in_a_filter_is_refused(tmp_path):
    with pytest.raises(ValueError) as refused:
        split_collector_options("file:///x.jsonl?types=violations,threat&token=s3cr3t")
    message = str(refused.value)
    assert "unknown notification type(s) violations" in message
    assert "violation, threat, incident, event, activity, audit" in message
    assert "s3cr3t" not in message
    every = "violation,threat,incident,event,activity,audit"
    assert split_collector_options("file:///x.jsonl?types=" + every)[1] == set(every.split(","))

    status, stderr = listen(tmp_path, "--to", "file://%s?types=violations" % (tmp_path / "v.jsonl"))
    assert status == 2 and "cannot start: " in stderr and "unknown notification type(s) violations" in stderr


@pytest.mark.parametrize("first, second, masked", [
    ("file://{0}/nv.jsonl", "file://{0}/nv.jsonl", "file://{0}/nv.jsonl"),
    # One cursor: a secret's value does not name a sink (a rotated token keeps its cursor).
    ("splunk-hec://127.0.0.1:1?token=a", "splunk-hec://127.0.0.1:1?token=b", "splunk-hec://127.0.0.1:1?token=***"),
], ids=["same URL", "differing in a secret"])
def test_a_sink_given_twice_is_refused_before_any_reader_is_made(tmp_path, monkeypatch, first, second, masked):
    first, second, masked = (u.format(tmp_path) for u in (first, second, masked))
    cfg = config.resolve(Namespace(spool=str(tmp_path / "spool"), metrics="off"), environ={})
    collector = Collector(cfg)
    made, reader = [], collector.spool.reader
    monkeypatch.setattr(collector.spool, "reader", lambda *a, **k: made.append(a) or reader(*a, **k))
    try:
        with pytest.raises(ValueError) as refused:
            collector.open_sinks([first, second])
    finally:
        collector.stop()
    assert str(refused.value) == ("sink given twice: --to %s and --to %s (URLs that differ only in secrets are one "
                                  "sink)" % (masked, masked))
    assert made == [] and collector.workers == []


def test_a_sink_given_twice_stops_the_start(tmp_path):
    out = "file://%s" % (tmp_path / "out.jsonl")
    status, stderr = listen(tmp_path, "--to", out)  # the helper gives the same --to once already
    assert status == 2 and "cannot start: sink given twice: --to %s and --to %s" % (out, out) in stderr


# -- messages that name the file or address ----------------------------------

def test_a_missing_tls_file_is_named(tmp_path):
    missing = tmp_path / "missing.pem"
    status, stderr = listen(tmp_path, "--listen", "tls://127.0.0.1:0?cert=%s&key=%s" % (missing, missing))
    assert status == 2
    assert "cannot start: tls://127.0.0.1:0: cannot read cert=%s: No such file or directory" % missing in stderr


def test_a_metrics_address_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stderr = listen(tmp_path, "--metrics", "tcp://127.0.0.1:%d" % port)
    assert status == 2 and "cannot start: metrics on 127.0.0.1:%d: Address already in use" % port in stderr


def left_behind(tmp_path):
    """What a failed start left in its working directory (the config file aside)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".json")


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_a_port_in_use_names_the_source_and_leaves_nothing_behind(tmp_path, kind):
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        url = "%s://127.0.0.1:%d" % ("tcp" if kind == socket.SOCK_STREAM else "udp", taken.getsockname()[1])
        status, stderr = listen(tmp_path, "--listen", url)
    assert status == 2 and "cannot start: %s: cannot listen: Address already in use" % url in stderr
    assert left_behind(tmp_path) == []  # neither the spool directory nor the sink's file


def test_a_sink_file_that_cannot_be_created_names_the_sink(tmp_path):
    status, stderr = listen(tmp_path, "--to", "file:///proc/nope/x.jsonl")
    assert status == 2
    assert "cannot start: file:///proc/nope/x.jsonl: cannot create /proc/nope/x.jsonl" in stderr
    assert left_behind(tmp_path) == []


def test_a_config_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "bad.json").write_text("{bad")
    status, stderr = listen(tmp_path, "--config", str(tmp_path / "bad.json"))
    assert status == 2 and "--config %s is not valid JSON: " % (tmp_path / "bad.json") in stderr
    status, stderr = listen(tmp_path, "--config", str(tmp_path / "none.json"))
    assert status == 2 and "--config %s: No such file or directory" % (tmp_path / "none.json") in stderr


def test_a_source_without_a_scheme_gets_a_hint(tmp_path):
    status, stderr = listen(tmp_path, "--listen", "127.0.0.1:25010")
    assert status == 2
    assert "cannot start: 127.0.0.1:25010: a source is a URL with a scheme, e.g. tcp://127.0.0.1:25010" in stderr


@pytest.mark.parametrize("to", ["splunk-hec:", "out.jsonl"])
def test_a_sink_without_a_scheme_gets_a_hint(tmp_path, to):
    status, stderr = listen(tmp_path, "--to", to)
    assert status == 2 and "cannot start: '%s' is not a sink URL: give scheme://" % to in stderr


@pytest.mark.parametrize("argv", [["parse", "--bogus"], ["listen", "--lisen", "x"]])
def test_a_mistyped_flag_prints_the_subcommands_usage(argv):
    done = subprocess.run([sys.executable, "-m", "nvsiem", *argv], capture_output=True, timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode == 2 and stderr.startswith("usage: nvsiem %s " % argv[0])
    assert "nvsiem %s: error: unrecognized arguments: %s" % (argv[0], " ".join(argv[1:])) in stderr


# -- webhooks ---------------------------------------------------------------

@pytest.mark.slow
def test_a_full_spool_answers_webhooks_500_well_within_neuvectors_5_s(tmp_path, controlled):
    c = start_collector(tmp_path, ["tcp://127.0.0.1:0", "webhook://127.0.0.1:0"], ["test://siem"],
                        spool_quota=256 << 10, spool_segment=64 << 10)
    controlled.append(c)
    (sink,) = ControlledSink.instances
    sink.set_mode("fail")
    tcp, webhook = (s.port for s in c.sources)
    threading.Thread(target=lambda: socket.create_connection(("127.0.0.1", tcp)).sendall(b"".join(frames(0, 1000))),
                     daemon=True).start()
    wait_until(lambda: c.spool.full, what="the quota to be reached")
    for n in range(20000, 20050):
        conn = http.client.HTTPConnection("127.0.0.1", webhook, timeout=10)
        started = time.monotonic()
        conn.request("POST", "/", body=numbered(sample("webhook-json-2"), n), headers={"Content-Type": "application/json"})
        status = conn.getresponse().status
        took = time.monotonic() - started
        conn.close()
        if status != 200:
            break
    # NeuVector retries a 500, never a request that timed out (after 5 s): it must have its 500 long before.
    assert status == 500 and took < 2.5


@pytest.mark.slow
def test_a_negative_content_length_gets_400(tmp_path):
    c = start_collector(tmp_path, ["webhook://127.0.0.1:0"])
    try:
        with socket.create_connection(("127.0.0.1", c.sources[0].port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}")
            reply = s.recv(65536)  # the connection stays open: the reply must not wait for the client to close
    finally:
        c.stop()
    assert reply.startswith(b"HTTP/1.1 400 ")


@pytest.mark.slow
def test_a_client_gone_before_its_reply_prints_no_traceback(tmp_path, capfd, caplog):
    c = start_collector(tmp_path, ["webhook://127.0.0.1:0"])
    inside, gone, answered = threading.Event(), threading.Event(), threading.Event()
    accept = c.accept

    def slow_accept(*args, **kwargs):  # holds the reply until the client has reset the connection
        inside.set()
        gone.wait(10)
        try:
            return accept(*args, **kwargs)
        finally:
            answered.set()

    c.accept = slow_accept
    try:
        with caplog.at_level(logging.DEBUG, "nvsiem.sources"):
            s = socket.create_connection(("127.0.0.1", c.sources[0].port), timeout=5)
            body = numbered(sample("webhook-json-2"), 1)
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            assert inside.wait(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            s.close()
            gone.set()
            assert answered.wait(10)
            deadline = time.monotonic() + 3
            while "went away" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        c.stop()
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert "went away" in caplog.text  # logged at debug level, not printed
