"""HecSink against a HEC written from the documented protocol (tests/hec_server.py).

Every delivery test counts records end to end: each record carries a
unique ``id`` and must be in the index exactly once, with the metadata
splunk-notes §4 and the issue prescribe.
"""
import collections
import json
import re
import ssl
import threading
import time

import pytest
import trustme

from helpers.hec_server import HecServer
from nvsiem.sinks.api import SinkError
from nvsiem_splunk_hec.sink import HecSink

TOKEN = "3b1e2f8a-5c7d-4e9f-a0b1-c2d3e4f5a6b7"
TYPES = ("violation", "threat", "incident", "event", "activity", "audit")
FAST = "retry_for=20&backoff_max=0.05&ack_timeout=0.5"


def records(n, start=0):
    """Records shaped like the parser's: NeuVector fields at top level plus a syslog header."""
    out = []
    for i in range(start, start + n):
        out.append({
            "notification": TYPES[i % len(TYPES)],
            "level": "Warning",
            "reported_timestamp": 1741944405 + i,      # reference sample violation-text-1
            "reported_at": "2025-03-14T09:26:45Z",
            "id": f"rec-{i}",
            "message": "Process profile violation, \u00e9 \x01 <b>",
            "syslog": {"hostname": "neuvector-controller-pod-6d8f7c9b5-x2kqp",
                       "timestamp": "2025-03-14T09:26:47Z"},
        })
    return out


def encoded(recs):
    return [json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() for r in recs]


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("NV_HEC_TOKEN", TOKEN)
    return "token_env=NV_HEC_TOKEN"


@pytest.fixture
def hec():
    with HecServer(tokens={TOKEN: {"ack": True}}) as server:
        yield server


def ids(server):
    return sorted(e["event"]["id"] for e in server.indexed if isinstance(e["event"], dict) and "id" in e["event"])


def expect_once(server, n, start=0):
    assert ids(server) == sorted(f"rec-{i}" for i in range(start, start + n))


def test_events_carry_time_sourcetype_and_record(hec, token_env):
    recs = records(6)
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&index=neuvector&source=nv&{FAST}")
    sink.send(encoded(recs))
    sink.close()
    expect_once(hec, 6)
    by_id = {e["event"]["id"]: e for e in hec.indexed}
    for rec in recs:
        event = by_id[rec["id"]]
        assert event["event"] == rec                        # the record object itself, nothing lost
        assert event["time"] == rec["reported_timestamp"]   # event time, not the send time
        assert event["sourcetype"] == "neuvector:" + rec["notification"]
        assert event["index"] == "neuvector" and event["source"] == "nv"
        assert event["host"] == "neuvector-controller-pod-6d8f7c9b5-x2kqp"
    posts = [r for r in hec.log if r["path"] == "/services/collector/event"]
    assert len(posts) == 1 and posts[0]["gzip"]             # one gzip body, concatenated objects
    assert any(r["path"] == "/services/collector/ack" and r["reply"]["acks"] == {"0": True}
               for r in hec.log)


def test_host_option_overrides_and_missing_time_is_left_to_splunk(hec, token_env):
    recs = [{"notification": "event", "name": "User.Login", "id": "rec-0"},
            # no reported_timestamp: reported_at (RFC 3339, the event time) is next
            {"notification": "event", "id": "rec-1", "reported_at": "2025-03-14T09:26:45Z",
             "syslog": {"timestamp": "2025-03-14T09:26:47Z"}},
            # then the syslog header's (send) time
            {"notification": "event", "id": "rec-2", "reported_at": "", "syslog": {"timestamp": "2025-03-14T09:26:47Z"}}]
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&host=nv-collector&gzip=false")
    sink.send(encoded(recs))
    first, second, third = hec.indexed
    assert first["host"] == "nv-collector" and "time" not in first
    assert second["time"] == 1741944405 and third["time"] == 1741944407
    assert not hec.log[0]["gzip"]


def test_busy_server_is_retried_until_indexed(hec, token_env):
    hec.busy = 4
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}")
    sink.send(encoded(records(50)))
    expect_once(hec, 50)
    assert [r["reply"]["code"] for r in hec.log if r["status"] == 503] == [9, 9, 9, 9]


def posted_ids(server):
    """The record ids of each request the HEC accepted with an ackId, in order."""
    return [[e["event"]["id"] for e in events] for events in server.accepted]


def test_only_the_request_whose_ack_never_comes_is_sent_again(hec, token_env):
    hec.lose_requests = {3}    # indexed, but its ackId never turns true
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&max_body=1500")
    sink.send(encoded(records(30)))
    *batch, again = posted_ids(hec)
    assert len(batch) >= 5 and sorted(sum(batch, [])) == sorted(f"rec-{i}" for i in range(30))
    assert again == batch[3]                 # that request alone, once; no confirmed one again
    assert ids(hec) == sorted([f"rec-{i}" for i in range(30)] + batch[3])


def test_a_channel_the_hec_forgot_is_noticed_by_its_next_ackid(hec, token_env, caplog):
    # The HEC forgets its channels after the 3rd request (ackIds 0-2, never indexed): the 4th
    # gets ackId 0 again. Taking it for the old ackId 0 would confirm events never indexed.
    hec.forget_after = 2
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&max_body=1500&ack_timeout=60")
    sink.send(encoded(records(30)))
    expect_once(hec, 30)
    posted = posted_ids(hec)
    assert posted[10:] == posted[:3]         # the 3 forgotten requests again, nothing else
    assert "answered ackId 0 after 2: it restarted and forgot the acks it had not confirmed; " \
           "sending 3 requests (9 records) again" in caplog.text
    assert "not confirmed within" not in caplog.text     # noticed at once, not after ack_timeout


def test_server_restart_between_post_and_ack_loses_nothing(hec, token_env):
    hec.hold_acks = True
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}")
    worker = threading.Thread(target=sink.send, args=(encoded(records(20)),))
    worker.start()
    deadline = time.monotonic() + 10
    while not any(r["path"] == "/services/collector/ack" for r in hec.log):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hec.restart()                 # the unacknowledged request is forgotten, never indexed
    hec.hold_acks = False
    worker.join(20)
    assert not worker.is_alive()
    expect_once(hec, 20)
    assert sum(1 for r in hec.log if r["path"] == "/services/collector/event") == 2


def test_busy_lost_acks_and_a_restart_together_lose_nothing(hec, token_env):
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&max_body=20000")
    hec.busy, hec.drop_acks = 3, 2
    for n in range(5):
        if n == 3:
            hec.restart()
            hec.busy = 2
        sink.send(encoded(records(200, start=200 * n)))
    expect_once(hec, 1000)


def test_load_balances_and_fails_over(token_env):
    with HecServer(tokens={TOKEN: {"ack": True}}) as a, HecServer(tokens={TOKEN: {"ack": True}}) as b:
        sink = HecSink(f"splunk-hec+http://{a.hostport},{b.hostport}?{token_env}&{FAST}&max_body=3000")
        sink.send(encoded(records(40)))
        assert sorted(ids(a) + ids(b)) == sorted(f"rec-{i}" for i in range(40))
        assert ids(a) and ids(b)                      # both indexers took a share
        b.stop()                                      # b goes away: a takes everything
        sink.send(encoded(records(40, start=40)))
        assert sorted(ids(a) + ids(b)) == sorted(f"rec-{i}" for i in range(80))


def test_invalid_event_number_resends_from_that_event_as_dead_letter(hec, token_env):
    recs = records(12)
    hec.reject = lambda event: isinstance(event.get("event"), dict) and event["event"].get("id") == "rec-7"
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}")
    sink.send(encoded(recs))
    assert ids(hec) == sorted(f"rec-{i}" for i in range(12) if i != 7)   # each once
    (dead,) = [e for e in hec.indexed if e["sourcetype"] == "neuvector:deadletter"]
    assert json.loads(dead["event"]["raw"]) == recs[7]
    assert "code 6" in dead["event"]["reason"] and "Invalid data format" in dead["event"]["reason"]


def test_spool_item_that_is_not_json_is_indexed_as_dead_letter(hec, token_env):
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}")
    sink.send([b"\xffnot json", *encoded(records(1))])
    dead = [e for e in hec.indexed if e["sourcetype"] == "neuvector:deadletter"]
    assert len(dead) == 1 and dead[0]["event"]["raw_base64"] == "/25vdCBqc29u"
    expect_once(hec, 1)


@pytest.mark.parametrize("setup, code, text", [
    (lambda hec: hec.tokens.clear(), 4, "Invalid token"),
    (lambda hec: hec.tokens[TOKEN].update(disabled=True), 1, "Token disabled"),
    (lambda hec: hec.indexes.discard("neuvector"), 7, "Incorrect index"),
])
def test_configuration_errors_are_permanent_and_name_the_hec_code(hec, token_env, setup, code, text):
    setup(hec)
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&index=neuvector&{FAST}")
    with pytest.raises(SinkError) as err:
        sink.send(encoded(records(3)))
    assert err.value.permanent
    assert f"code {code}" in str(err.value) and text in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in sink.describe()
    assert not hec.indexed


def test_unreachable_servers_give_a_transient_error_after_retry_for(token_env):
    with HecServer() as gone:
        url = f"splunk-hec+http://{gone.hostport}?{token_env}&retry_for=0.5&backoff_max=0.05"
    with pytest.raises(SinkError) as err:
        HecSink(url).send(encoded(records(1)))
    assert not err.value.permanent and "ConnectionError" in str(err.value)


def test_token_from_file_and_no_ack_token(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    with HecServer(tokens={TOKEN: {"ack": False}}) as hec:
        sink = HecSink(f"splunk-hec+http://{hec.hostport}?token_file={tmp_path / 'token'}&{FAST}")
        sink.send(encoded(records(5)))
        expect_once(hec, 5)
        assert not any(r["path"] == "/services/collector/ack" for r in hec.log)


def test_a_body_over_the_indexers_limit_is_sent_in_halves(hec, token_env):
    hec.max_content_length = 3000  # the indexer's limits.conf [http_input] max_content_length
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&gzip=false")
    sink.send(encoded(records(30)))
    expect_once(hec, 30)
    assert any(r["status"] == 413 for r in hec.log)
    refused = sum(1 for r in hec.log if r["status"] == 413)
    sink.send(encoded(records(30, start=30)))  # the next batch starts with bodies that fit
    assert sum(1 for r in hec.log if r["status"] == 413) == refused
    expect_once(hec, 60)


def test_one_event_over_the_indexers_limit_is_a_permanent_error_naming_the_setting(hec, token_env):
    hec.max_content_length = 100
    with pytest.raises(SinkError) as err:
        HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&gzip=false").send(encoded(records(1)))
    assert err.value.permanent and "max_content_length" in str(err.value)


def test_waiting_for_slow_acks_does_not_count_against_retry_for(hec, token_env):
    # retry_for bounds a HEC that takes nothing; an indexer that confirms slowly is waited for
    # (up to ack_timeout), not handed back with the batch, which would send it all again.
    hec.ack_delay = 1.0
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&retry_for=0.2&backoff_max=0.05&ack_timeout=10")
    sink.send(encoded(records(20)))
    expect_once(hec, 20)
    assert sum(1 for r in hec.log if r["path"] == "/services/collector/event") == 1


def test_bad_options_are_refused_up_front(token_env, monkeypatch):
    with pytest.raises(ValueError, match="unknown option"):
        HecSink(f"splunk-hec://h:8088?{token_env}&tokn=x")
    with pytest.raises(ValueError, match="token_file=PATH or token_env=VAR"):
        HecSink("splunk-hec://h:8088")
    monkeypatch.setenv("NV_HEC_TOKEN", "")
    with pytest.raises(ValueError, match="token_file=PATH or token_env=VAR"):
        HecSink(f"splunk-hec://h:8088?{token_env}")
    monkeypatch.delenv("NV_HEC_TOKEN")
    with pytest.raises(ValueError, match="NV_HEC_TOKEN .* not set"):
        HecSink(f"splunk-hec://h:8088?{token_env}")


def test_a_whole_batch_is_posted_before_its_acks_are_awaited(hec, token_env, tmp_path):
    # Throughput is batch / ack latency: the collector must hand the sink its whole batch
    # (here 3,000 records, ~5 MiB: more than other sinks' 4 MiB) and the sink post all of it.
    from nvsiem.collector import SinkWorker
    from nvsiem.metrics import Metrics
    from nvsiem.spool import Spool

    hec.ack_delay = 0.2
    spool = Spool(str(tmp_path), fsync_interval=0)
    reader = spool.reader("hec")
    big = [dict(r, padding="x" * 1700) for r in records(3000)]
    spool.append(encoded(big))
    sink = HecSink(f"splunk-hec+http://{hec.hostport}?{token_env}&{FAST}&batch=3000")
    assert sink.max_batch == 3000 and HecSink(f"splunk-hec://h?{token_env}").max_batch == 5000
    worker = SinkWorker(sink, reader, Metrics(), retry_max=0.2)
    worker.drain(time.monotonic() + 30)
    worker.run()
    expect_once(hec, 3000)
    paths = [r["path"] for r in hec.log]
    first_ack = paths.index("/services/collector/ack")
    assert paths[first_ack:].count("/services/collector/event") == 0  # one batch: every post came first
    assert paths[:first_ack].count("/services/collector/event") >= 5  # max_body 1M: several requests
    spool.close()


@pytest.mark.parametrize("option", ["batch=0", "batch=-5", "batch=many", "batch=0.5", "batch=2.5", "batch=inf",
                                    "timeout=0", "timeout=nan", "retry_for=inf", "backoff_max=x"])
def test_numbers_that_are_not_positive_and_finite_are_refused_naming_the_option(token_env, option):
    with pytest.raises(ValueError, match="^%s: " % re.escape(option.replace("=", "='", 1) + "'")):
        HecSink(f"splunk-hec://h:8088?{token_env}&{option}")


def test_collector_builds_it_from_a_url_with_the_token_resolved(hec, token_env):
    from nvsiem.sinks import open_sink
    sink = open_sink(f"splunk-hec+http://{hec.hostport}?{token_env}&types=violation&{FAST}")
    assert isinstance(sink, HecSink) and TOKEN not in sink.describe()
    sink.send(encoded(records(2)))
    expect_once(hec, 2)


def seq_counts(events):
    """How many times each numbered record (``seq-…``, see listen_harness) is among ``events``."""
    from helpers.listen_harness import seq_of
    return collections.Counter(seq_of(e["event"]) for e in events if str(e["event"].get("id", "")).startswith("seq-"))


def hec_collector(tmp_path, hec, options=""):
    """``nvsiem listen`` (a real subprocess) from TCP syslog to ``hec``; returns (process, port)."""
    from helpers.listen_harness import CollectorProcess
    from helpers.loopback import free_port

    port = free_port()
    proc = CollectorProcess(tmp_path, [f"tcp://127.0.0.1:{port}"],
                            [f"splunk-hec+http://{hec.hostport}?token_env=NV_HEC_TOKEN&index=neuvector{options}"],
                            env={"NV_HEC_TOKEN": TOKEN})
    return proc.start(), port


def confirmed_all(proc, hec, total):
    """Every record 0..total-1 indexed, and the sink's cursor past all of them (each batch confirmed)."""
    with hec.lock:
        indexed = set(seq_counts(hec.indexed))
    health = proc.health()
    return len(indexed) == total and health is not None and \
        all(sink["backlog_bytes"] == 0 for sink in health["sinks"].values())


@pytest.fixture(scope="module")
def tls():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    return ca, cert


def test_tls_is_verified_against_the_given_ca(tls, tmp_path, token_env):
    ca, cert = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with HecServer(tokens={TOKEN: {"ack": True}}, ssl_context=ctx) as hec:
        HecSink(f"splunk-hec://{hec.hostport}?{token_env}&ca={ca_file}&{FAST}").send(encoded(records(3)))
        expect_once(hec, 3)
        with pytest.raises(SinkError) as err:   # the system CAs do not know this one
            HecSink(f"splunk-hec://{hec.hostport}?{token_env}&{FAST}").send(encoded(records(1, 3)))
        assert err.value.permanent and "ca=" in str(err.value)


def test_collector_delivers_every_record_through_a_busy_and_a_stopped_hec(tmp_path):
    """NeuVector syslog over TCP -> ``nvsiem listen`` (a real subprocess) -> splunk-hec -> HEC."""
    from helpers.listen_harness import frames, send_tcp
    from helpers.loopback import wait_until
    from helpers.nvsamples import _typed, expected_records

    def seqs():
        return seq_counts(hec.indexed)

    with HecServer(tokens={TOKEN: {"ack": True}}) as hec:
        hec.busy = 2
        proc, port = hec_collector(tmp_path, hec, "&backoff_max=0.2")
        try:
            send_tcp(port, frames(0, 300))
            wait_until(lambda: set(seqs()) == set(range(300)), 30, "the first 300 records at HEC")
            hec.stop()                     # HEC down: the collector keeps spooling
            send_tcp(port, frames(300, 600))
            hec.start()
            wait_until(lambda: set(seqs()) == set(range(600)), 60, "every record at HEC after its restart")
            assert max(seqs().values()) == 1          # and none twice
            event = next(e for e in hec.indexed if e["event"].get("id") == "seq-00000000")
            (reference,) = expected_records("violation-text-1")
            assert event["sourcetype"] == "neuvector:violation" and event["index"] == "neuvector"
            assert event["time"] == reference["reported_timestamp"]
            assert _typed({k: v for k, v in event["event"].items() if k != "id"}) == \
                _typed({k: v for k, v in reference.items() if k != "id"})
            assert TOKEN not in proc.log.read_text()
            assert proc.terminate() == 0
        finally:
            proc.stop()


def test_collector_through_lost_acks_sends_again_only_unconfirmed_requests(tmp_path, capsys):
    """30% of the HEC's acks never come, though their events are indexed (an indexer that lost
    its ack statuses): every record is indexed, and a record is posted once more for each
    request of it that went unconfirmed, never for a confirmed one."""
    from helpers.listen_harness import frames, send_tcp
    from helpers.loopback import wait_until

    total = 20000
    with HecServer(tokens={TOKEN: {"ack": True}}) as hec:
        hec.lose_acks = 0.3
        # A short ack_timeout and small requests keep the test short: each lost ack holds
        # back its own request for ack_timeout, and the spool's cursor behind it.
        proc, port = hec_collector(tmp_path, hec, "&ack_timeout=1&max_body=16K&backoff_max=0.2")
        try:
            started = time.monotonic()
            send_tcp(port, frames(0, total))
            wait_until(lambda: confirmed_all(proc, hec, total), 180, "every record indexed and confirmed")
            elapsed = time.monotonic() - started
            assert proc.terminate() == 0
        finally:
            proc.stop()
    posted = seq_counts(e for events in hec.accepted for e in events)
    unconfirmed = seq_counts(e for events in hec.unconfirmed for e in events)
    assert posted == {seq: unconfirmed[seq] + 1 for seq in range(total)}
    indexed = seq_counts(hec.indexed)
    duplicates = sum(indexed.values()) - total
    with capsys.disabled():
        print(f"\n30% of acks lost: {len(indexed)} of {total} records indexed, {duplicates} duplicates, "
              f"{sum(posted.values()) - total} records sent again, {elapsed:.1f} s")
    assert set(indexed) == set(range(total))
    assert duplicates < total // 2


def test_collector_through_a_hec_that_restarts_and_forgets_its_acks(tmp_path):
    """The HEC goes down with requests awaiting their acks, indexes them, and comes back
    without their acks: nothing is lost, and only those requests are sent again, at once."""
    from helpers.listen_harness import frames, send_tcp
    from helpers.loopback import wait_until

    total = 4000
    with HecServer(tokens={TOKEN: {"ack": True}}) as hec:
        hec.hold_acks = True
        # A long ack_timeout: only noticing the restart gets this done in time.
        proc, port = hec_collector(tmp_path, hec, "&ack_timeout=300&backoff_max=0.2")
        try:
            send_tcp(port, frames(0, total // 2))
            wait_until(lambda: hec.pending_acks, 30, "requests awaiting their acks")
            hec.restart(down_for=1.0, flush=True)
            hec.hold_acks = False
            send_tcp(port, frames(total // 2, total))
            wait_until(lambda: confirmed_all(proc, hec, total), 60, "every record indexed and confirmed")
            assert proc.terminate() == 0
        finally:
            proc.stop()
    in_flight = sum(map(len, hec.unconfirmed))       # records whose acks the restart forgot
    indexed = seq_counts(hec.indexed)
    assert set(indexed) == set(range(total)) and in_flight > 0
    assert sum(indexed.values()) - total <= in_flight
    log = proc.log.read_text()
    assert "refused the connection: it restarted and forgot the acks it had not confirmed" in log
    assert "not confirmed within" not in log
