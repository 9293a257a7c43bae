"""``nvsiem listen`` TCP in -> CEF (and LEEF, JSON) over TCP out, against TCP in -> file in the same run.

    .venv/bin/python benchmarks/bench_syslog_sink.py [--records 100000] [--rounds 3]

The records and the collector are bench_listen.py's (``violation-text-1``
numbered, the real command pinned to one CPU, the sender on the other).
Each round measures, one after the other:

* ``listen TCP -> file``: the file sink, as bench_listen.py's row;
* ``listen TCP -> syslog+tcp CEF``: the syslog sink, octet-counted CEF over
  TCP to a receiver that reads and discards (a child process on the
  sender's CPU), timed until the collector counts every record delivered
  (written, and acknowledged by the receiving TCP);
* the same with ``format=leef`` and ``format=json``.

The ratio column is each row's rate over the file row of the same round;
the target for CEF is 0.8.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_listen import CPUS, PIN, Listen, frames, free_port, send, wait_until  # noqa: E402

DISCARD = r"""
import socket, sys, threading
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)

def drain(conn):
    with conn:
        while conn.recv(1 << 20):
            pass

while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


class Discard:
    """A syslog receiver that reads everything and keeps nothing, on the sender's CPU."""

    def __init__(self):
        self.port = free_port()
        pin = ["taskset", "-c", str(CPUS[0])] if len(CPUS) > 1 else []
        self.proc = subprocess.Popen(pin + [sys.executable, "-c", DISCARD, str(self.port)], stdout=subprocess.PIPE)
        self.proc.stdout.readline()

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def listen_rate(data: bytes, n: int, work: Path, to: str) -> float:
    """Records/s from the first byte sent until the collector counts all ``n`` delivered to ``to``."""
    work.mkdir()
    port = free_port()
    collector = Listen(work, "tcp://127.0.0.1:%d" % port, to)
    try:
        start = send(port, data)
        wait_until(lambda: collector.metric("nvsiem_delivered_records_total") >= n, 600, "delivery")
        return n / (time.perf_counter() - start)
    finally:
        collector.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[0]})
    n = args.records
    data = b"".join(frames(0, n))
    file_row = "listen TCP -> file"
    rows = {file_row: [], "listen TCP -> syslog+tcp CEF": [], "listen TCP -> syslog+tcp LEEF": [],
            "listen TCP -> syslog+tcp JSON": []}
    receiver = Discard()
    try:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                floor = listen_rate(data, n, work / "file", "file://%s?max_bytes=0" % (work / "out.jsonl"))
                rows[file_row].append((floor, 1.0))
                for body in ("cef", "leef", "json"):
                    rate = listen_rate(data, n, work / body, "syslog+tcp://127.0.0.1:%d?format=%s" % (
                        receiver.port, body))
                    rows["listen TCP -> syslog+tcp %s" % body.upper()].append((rate, rate / floor))
    finally:
        receiver.stop()
    print("%d records of %d bytes, %d rounds, medians; collector on CPU %s, sender and receiver on CPU %s" % (
        n, len(data) // n, args.rounds, PIN[-1] if PIN else "any", CPUS[0]))
    print("%-40s %14s %10s" % ("", "records/s", "x file"))
    results = {}
    for name, values in rows.items():
        rate = statistics.median(v[0] for v in values)
        ratio = statistics.median(v[1] for v in values)
        results[name] = {"records_per_s": rate, "ratio_to_file": ratio, "rounds": values}
        print("%-40s %14.0f %10.3f" % (name, rate, ratio))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
