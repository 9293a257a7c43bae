"""How fast ``nvsiem listen`` takes NeuVector syslog, against floors measured in the same run.

    .venv/bin/python benchmarks/bench_listen.py [--records 200000] [--rounds 3] [--udp-seconds 10]

Records are the reference sample ``violation-text-1`` (a 1,043-byte text-mode
frame, 40 fields) with a numbered id. The collector runs as the real command
(``python -m nvsiem listen``) in a child process pinned to CPU 1 when there
are two; the sender runs here, pinned to CPU 0. Rows:

* ``floor: TCP recv -> split -> file``: a child process doing only
  ``recv(1 MiB)``, splitting lines and writing the bytes to a file: the
  ingest ceiling of Python here.
* ``parse only``: ``Parser.feed`` over the same bytes in 1 MiB chunks, in
  this process: the parser's share of the budget.
* ``listen TCP -> file``: send all records over one TCP connection, timed
  until the file sink holds every record (received, parsed, spooled, read
  back from the spool and written to the sink file).
* ``listen UDP paced``: datagrams at ``--udp-rate`` per second for
  ``--udp-seconds``, sent in 1 ms bursts; reports records delivered and the
  loss (sent - delivered) and the kernel's receive-buffer drops.
* ``listen, sink down``: the collector's memory (RSS) idle, then after each
  quarter of the same TCP stream is spooled while its only sink (Fluentd,
  at a closed port) fails: the backlog is on disk, so the RSS stays flat.

The ratio column is each row's rate divided by the TCP floor of the same round.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.listen_harness import frames  # noqa: E402
from helpers.loopback import free_port, wait_until  # noqa: E402
from nvparser import Parser  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0))
PIN = ["taskset", "-c", str(CPUS[-1])] if len(CPUS) > 1 else []
FLOOR = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = srv.accept()
with open(sys.argv[2], "wb", buffering=0) as out:
    rest = b""
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        lines = (rest + data).split(b"\n")  # framing, as any line receiver does
        rest = lines.pop()
        out.write(data)
"""


def send(port: int, data: bytes) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        view = memoryview(data)
        for i in range(0, len(data), 256 << 10):
            s.sendall(view[i:i + (256 << 10)])
    return start


def wait_size(path: Path, size: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size < size:
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not reach %d bytes" % (path, size))
        time.sleep(0.005)
    return time.perf_counter()


def floor_tcp(data: bytes, work: Path) -> float:
    port, out = free_port(), work / "floor.out"
    child = subprocess.Popen(PIN + [sys.executable, "-c", FLOOR, str(port), str(out)], stdout=subprocess.PIPE)
    child.stdout.readline()
    start = send(port, data)
    end = wait_size(out, len(data))
    child.wait(30)
    out.unlink()
    return end - start


def parse_only(data: bytes) -> float:
    parser = Parser()
    start = time.perf_counter()
    for i in range(0, len(data), 1 << 20):
        parser.feed(data[i:i + (1 << 20)])
    parser.close()
    return time.perf_counter() - start


class Listen:
    def __init__(self, work: Path, listen: str, to: str):
        self.metrics = free_port()
        self.proc = subprocess.Popen(
            PIN + [sys.executable, "-m", "nvsiem", "listen", "--listen", listen, "--to", to,
                   "--spool", str(work / "spool"), "--metrics", "tcp://127.0.0.1:%d" % self.metrics,
                   "--log-level", "warning", "--retry-max", "0.5"],
            cwd=work)
        wait_until(lambda: self.get("/healthz"), 30, "the collector")

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.metrics, path), timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def metric(self, name):
        text = self.get("/metrics") or ""
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    def rss_mib(self) -> float:
        with open("/proc/%d/status" % self.proc.pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def listen_tcp(data: bytes, n: int, work: Path) -> float:
    port, out = free_port(), work / "out.jsonl"
    collector = Listen(work, "tcp://127.0.0.1:%d" % port, "file://%s?max_bytes=0" % out)
    try:
        start = send(port, data)
        wait_until(lambda: collector.metric("nvsiem_delivered_records_total") >= n, 300, "delivery")
        return time.perf_counter() - start
    finally:
        collector.stop()


def kernel_udp_drops() -> int:
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def listen_udp(rate: int, seconds: float, work: Path):
    port, out = free_port(), work / "out.jsonl"
    collector = Listen(work, "udp://127.0.0.1:%d" % port, "file://%s?max_bytes=0" % out)
    datagrams = frames(0, rate // 10)  # reused round robin: the count, not the id, matters here
    try:
        drops = kernel_udp_drops()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        per_ms, sent = max(1, rate // 1000), 0
        start = time.perf_counter()
        total = int(rate * seconds)
        while sent < total:
            for _ in range(min(per_ms, total - sent)):
                sock.sendto(datagrams[sent % len(datagrams)], ("127.0.0.1", port))
                sent += 1
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        send_rate = sent / (time.perf_counter() - start)
        got, elapsed = 0, 0.0
        while True:  # until everything arrived or nothing more arrives for 2 s
            now = collector.metric("nvsiem_delivered_records_total")
            if now > got:
                got, elapsed = now, time.perf_counter() - start
            elif now >= sent or time.perf_counter() - start - elapsed > 2.0:
                break
            time.sleep(0.05)
        return sent, got, send_rate, elapsed, kernel_udp_drops() - drops
    finally:
        collector.stop()


def sink_down_memory(data: bytes, n: int, work: Path, parts: int = 4):
    """RSS after each quarter of the stream is spooled for a sink that is down: flat, not growing."""
    port, dead = free_port(), free_port()
    # A Fluentd sink pointed at a closed port: every batch fails, everything stays spooled.
    collector = Listen(work, "tcp://127.0.0.1:%d" % port, "fluentd://127.0.0.1:%d" % dead)
    step = len(data) // parts
    try:
        rss = [collector.rss_mib()]
        for i in range(parts):
            send(port, data[i * step:(i + 1) * step])
            wait_until(lambda: collector.metric("nvsiem_parsed_records_total") >= n * (i + 1) // parts, 300, "spooling")
            rss.append(collector.rss_mib())
        spooled = float([line for line in collector.get("/metrics").splitlines()
                         if line.startswith("nvsiem_spool_bytes ")][0].split()[1])
        return rss, spooled / (1 << 20)
    finally:
        collector.proc.kill()
        collector.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--udp-rate", type=int, default=50_000)
    ap.add_argument("--udp-seconds", type=float, default=10.0)
    ap.add_argument("--udp-only", action="store_true", help="only the UDP row")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[0]})
    data = b"".join(frames(0, args.records))
    n = args.records
    rows = {"floor: TCP recv -> split -> file": [], "parse only (Parser.feed)": [], "listen TCP -> parse -> spool -> file": []}
    for _ in range(0 if args.udp_only else args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            floor = n / floor_tcp(data, work)
            rows["floor: TCP recv -> split -> file"].append((floor, 1.0))
            rate = n / parse_only(data)
            rows["parse only (Parser.feed)"].append((rate, rate / floor))
            rate = n / listen_tcp(data, n, work)
            rows["listen TCP -> parse -> spool -> file"].append((rate, rate / floor))
    print("%d records of %d bytes, %d rounds, medians; collector on CPU %s, sender on CPU %s" % (
        n, len(data) // n, args.rounds, PIN[-1] if PIN else "any", CPUS[0]))
    print("%-40s %14s %10s" % ("", "records/s", "x floor"))
    results = {}
    for name, values in rows.items():
        if not values:
            continue
        rate = statistics.median(v[0] for v in values)
        ratio = statistics.median(v[1] for v in values)
        results[name] = {"records_per_s": rate, "ratio_to_floor": ratio, "rounds": values}
        print("%-40s %14.0f %10.3f" % (name, rate, ratio))
    with tempfile.TemporaryDirectory() as tmp:
        sent, got, send_rate, elapsed, kdrops = listen_udp(args.udp_rate, args.udp_seconds, Path(tmp))
    loss = (sent - got) / sent
    print("%-40s %14.0f %10s  sent %d at %.0f/s, delivered %d, loss %.3f%%, kernel drops %d" % (
        "listen UDP paced -> file", got / elapsed, "", sent, send_rate, got, 100 * loss, kdrops))
    results["udp"] = {"sent": sent, "send_rate": send_rate, "delivered": got, "loss": loss, "kernel_drops": kdrops}
    if args.udp_only:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rss, spooled = sink_down_memory(data, n, Path(tmp))
    print("%-40s RSS MiB idle, then after each quarter: %s; %.0f MiB spooled for the failing sink" % (
        "listen, sink down", " ".join("%.0f" % r for r in rss), spooled))
    results["sink_down"] = {"rss_mib": rss, "spooled_mib": spooled}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
