"""Fluentd sink throughput: records/s with acks on, against fluent-logger alone.

    .venv/bin/python benchmarks/bench_fluentd.py [--records 100000] [--rounds 3]

The receiver is tests/helpers/forward_server.py in its own process, discarding: it
unpacks each message and acks its chunk but, like Fluentd's in_forward,
never decodes the packed entries. Both senders start from the same compact
JSON records (about 1 KB each, as the spool holds them) and decode them.

- floor: fluent-logger's FluentSender, one Message-mode emit per record,
  EventTime from reported_timestamp, no ack (it has none); timed until close().
- sink: FluentdSink, batches of 1,000 as PackedForward, every chunk acked
  before send() returns; also with compress=gzip.

Rounds are interleaved; the report gives medians, the per-round ratio of
the sink to the floor, and the sender's CPU time per record (steadier than
wall-clock rates on a shared machine).
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from fluent.sender import EventTime, FluentSender
from nvsiem.sinks.api import decode_record
from nvsiem_fluentd.sink import FluentdSink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    from orjson import dumps as _dumps
except ImportError:
    import json

    def _dumps(obj):
        return json.dumps(obj, separators=(",", ":")).encode()

NOTIFICATIONS = ("violation", "violation", "threat", "incident", "audit", "event")


def make_records(n: int) -> list:
    """Synthetic NeuVector-shaped records, ~1 KB of JSON each, mixed notifications."""
    rng = random.Random(42)
    records = []
    for i in range(n):
        kind = NOTIFICATIONS[i % len(NOTIFICATIONS)]
        records.append(_dumps({
            "notification": kind, "level": rng.choice(["Warning", "Critical", "Info"]),
            "reported_timestamp": 1741944405 + i // 50, "reported_at": "2025-03-14T09:26:45Z",
            "cluster_name": "cluster.local", "host_id": "ip-10-0-1-23:Q7ZK:M2LD:8VXR:HT3N:C0WB:PJ4E:YF6S",
            "host_name": "ip-10-0-1-23", "enforcer_id": "%040x" % rng.getrandbits(160),
            "enforcer_name": "neuvector-enforcer-pod-8x2kq", "id": "%032x" % rng.getrandbits(128),
            "client_id": "%064x" % rng.getrandbits(256), "client_name": "frontend-6d8f7c9b5-x2kqp",
            "client_ip": "10.0.%d.%d" % (rng.randrange(256), rng.randrange(256)),
            "server_id": "external", "server_name": "external", "server_ip": "52.1.2.3",
            "server_port": rng.randrange(1, 65536), "ip_proto": 6, "applications": ["HTTP", "SSL"],
            "servers": [""], "sessions": rng.randrange(1, 100), "policy_action": "violate",
            "policy_id": rng.randrange(1000, 20000), "client_domain": "default",
            "user_roles": {"": "admin"}, "xff": False,
            "message": "Container started, image nginx:1.25\nsecond line with \u00e9 and = and , inside",
            "cmds": ["/bin/sh -c 'curl http://example.com/?limit=50,offset=100'"] * 2,
        }))
    return records


def start_receiver():
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "helpers", "forward_server.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if line[:1] != ["LISTENING"]:
        raise SystemExit(f"receiver did not start: {line}")
    return proc, int(line[1])


def timed(run, records: list):
    """(records/s wall clock, sender CPU µs/record): the CPU figure is what a busy machine hides."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(records)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(records) / wall, cpu / len(records) * 1e6


def run_floor(port: int, records: list) -> None:
    sender = FluentSender("neuvector", host="127.0.0.1", port=port, nanosecond_precision=True)
    for item in records:
        record = decode_record(item)
        if not sender.emit_with_time(record["notification"], EventTime(record["reported_timestamp"], 0), record):
            raise SystemExit(f"fluent-logger failed: {sender.last_error}")
    sender.close()


def run_sink(port: int, records: list, options: str = "") -> None:
    sink = FluentdSink(f"fluentd://127.0.0.1:{port}?batch=1000{options}")
    for i in range(0, len(records), sink.max_batch):
        sink.send(records[i:i + sink.max_batch])
    sink.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    records = make_records(args.records)
    size = sum(map(len, records)) / len(records)
    print(f"{len(records)} records, {size:.0f} B of JSON each on average; {args.rounds} interleaved rounds")

    cpus = sorted(os.sched_getaffinity(0))
    proc, port = start_receiver()
    if len(cpus) > 1:  # the sender under test on one core, the receiver on the other
        os.sched_setaffinity(proc.pid, {cpus[0]})
        os.sched_setaffinity(0, {cpus[-1]})
    variants = {
        "fluent-logger, Message mode, no ack (floor)": lambda r: run_floor(port, r),
        "FluentdSink, PackedForward 1000/msg + ack": lambda r: run_sink(port, r),
        "FluentdSink, gzip + ack": lambda r: run_sink(port, r, "&compress=gzip"),
    }
    results = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            rate, micros = timed(run, records)
            results[name].append(rate)
            cpu[name].append(micros)
    proc.stdin.close()
    summary = proc.stdout.read().strip()
    proc.wait(timeout=10)

    floors = next(iter(results.values()))
    for name, rates in results.items():
        ratios = [rate / floor for rate, floor in zip(rates, floors)]
        print(f"{name:46s} {statistics.median(rates):>10,.0f} records/s   "
              f"x{statistics.median(ratios):.2f} floor   sender CPU {statistics.median(cpu[name]):.1f} µs/record   "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in rates)})")
    expected = args.records * args.rounds * len(variants)
    print(f"receiver: {summary} (expected {expected} records)")
    return 0 if f"RECORDS {expected} " in summary + " " else 1


if __name__ == "__main__":
    sys.exit(main())
