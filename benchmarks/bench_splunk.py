"""Splunk side throughput: the HEC sink and the neuvector:// modular input.

    .venv/bin/python benchmarks/bench_splunk.py [--records 20000]

- HEC sink: HecSink sends the reference records (about 1.6 KB each as the
  spool holds them) in batches of 1,000, each confirmed by indexer
  acknowledgement before the next, to tests/hec_server.py running in its own
  process (a Python http.server: it decodes every event, so it is the
  slower end). Reported: wall-clock rate and the sink's own CPU time per
  record (steadier on a shared machine), gzip on and off, and bytes on the
  wire per event. Floor: the same events, enveloped beforehand, POSTed by a
  bare requests session to the same server, no gzip, no acknowledgement.
  Then 10,000 records to a HEC whose acks turn true 1 s after each request
  (an indexer's latency), with the default batch (5,000) and with 1,000.
- Modular input: bin/neuvector.py run as splunkd runs it (tests/splunkd_harness.py)
  under each installed Splunk Python (3.9, 3.13; standard-library json, as
  in Splunk), fed one TCP connection of the same records; timed until the
  last event came out of its XML stream. CPU is the input process's own.
  Floor: the same Python receiving the same stream and writing its lines
  out, nothing parsed.

The code under test runs on one core, its peer (server, sender) on the other.
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.loopback import free_port  # noqa: E402
from nvparser import json_dumps  # noqa: E402
from helpers.nvsamples import expected_records, load_samples  # noqa: E402
from nvsiem_splunk_hec.sink import HecSink  # noqa: E402
from helpers.splunkd_harness import PYTHONS, RunningInput, build_app  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0))
CPU, PEER_CPU = CPUS[-1], CPUS[0]

FLOOR = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = server.accept()
lines, left, out = 0, int(sys.argv[2]), open("/dev/null", "wb")
while lines < left:
    data = conn.recv(65536)
    if not data:
        break
    for line in data.split(b"\\n")[:-1] if data.endswith(b"\\n") else data.split(b"\\n"):
        out.write(line)
    lines += data.count(b"\\n")
"""

SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from helpers.hec_server import HecServer
hec = HecServer(tokens={"bench": {"ack": True}, "floor": {"ack": False}}, port=int(sys.argv[2])).start()
hec.ack_delay = float(sys.argv[3])
print("ready", flush=True)
sys.stdin.read()
print(len(hec.indexed), sum(e["bytes"] for e in hec.log if e["path"] == "/services/collector/event"), flush=True)
"""


def hec_server(ack_delay=0.0):
    """(port, process) of a test HEC on the other core; acks turn true ``ack_delay`` s after a request."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT / "tests"), str(port), str(ack_delay)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    os.sched_setaffinity(server.pid, {PEER_CPU})
    assert server.stdout.readline().strip() == "ready"
    return port, server


def hec_done(server, records):
    indexed, wire = map(int, server.communicate("")[0].split())
    assert indexed == len(records), "indexed %d of %d" % (indexed, len(records))
    return wire


def bench_hec_floor(records):
    port, server = hec_server()
    sink = HecSink("splunk-hec+http://127.0.0.1:%d?token_env=NV_BENCH_TOKEN" % port)
    bodies = [b"".join(sink.envelope(r) for r in records[i:i + 1000]) for i in range(0, len(records), 1000)]
    session = requests.Session()
    headers = {"Authorization": "Splunk floor"}
    wall = time.perf_counter()
    for body in bodies:
        session.post("http://127.0.0.1:%d/services/collector/event" % port, data=body,
                     headers=headers).raise_for_status()
    wall = time.perf_counter() - wall
    hec_done(server, records)
    rate = len(records) / wall
    print("floor: requests POST, no gzip, no ack %8.0f records/s" % rate)
    return rate


def bench_hec(records, floor, options="", ack_delay=0.0):
    port, server = hec_server(ack_delay)
    sink = HecSink("splunk-hec+http://127.0.0.1:%d?token_env=NV_BENCH_TOKEN%s" % (port, options))
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(records), sink.max_batch):  # as the collector hands it batches
        sink.send(records[i:i + sink.max_batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sink.close()
    wire = hec_done(server, records)
    what = "HEC sink%s%s" % (options.replace("&", ", "), ", acks after %g s" % ack_delay if ack_delay else "")
    print("%-40s %8.0f records/s  x%.2f floor  %5.1f us CPU/record  %5.0f bytes/event on the wire"
          % (what, len(records) / wall, len(records) / wall / floor, cpu / len(records) * 1e6, wire / len(records)))


def modinput_floor(python, stream, lines):
    """Records/s of ``python`` receiving ``stream`` on TCP and writing its lines to /dev/null."""
    port = free_port()
    floor = subprocess.Popen([python, "-c", FLOOR, str(port), str(lines)], stdout=subprocess.PIPE, text=True)
    os.sched_setaffinity(floor.pid, {CPU})
    assert floor.stdout.readline().strip() == "ready"
    wall = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(stream)
        floor.wait(timeout=600)
    return lines / (time.perf_counter() - wall)


def bench_modinput(stream, count, app, tmp):
    for version, python in sorted(PYTHONS.items()):
        if not python:
            print("modular input, Python %s: not installed" % version)
            continue
        floor = max(modinput_floor(python, stream, stream.count(b"\n")) for _ in range(3))  # short: best of 3
        port = free_port()
        run = RunningInput(python, app, "neuvector", "bench", {"port": str(port), "bind": "127.0.0.1"}, tmp)
        os.sched_setaffinity(run.proc.pid, {CPU})
        run.wait_log("listening")
        wall = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(stream)
            run.take(count, timeout=600)
        wall = time.perf_counter() - wall
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print("modular input, Python %-4s %8.0f records/s  x%.3f floor (%.0f/s)  %5.1f us CPU/record"
              " (the input process)" % (version, count / wall, count / wall / floor, floor, cpu / count * 1e6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    syslog = [s for s in load_samples() if s.mode in ("text", "json")]
    recs = [json_dumps(r) for s in syslog for r in expected_records(s.id)]
    records = [recs[i % len(recs)] for i in range(args.records)]
    os.sched_setaffinity(0, {CPU})  # the sink; servers and senders on the other core
    os.environ["NV_BENCH_TOKEN"] = "bench"
    floor = bench_hec_floor(records)
    for options in ("", "&gzip=false"):
        bench_hec(records, floor, options)
    # An indexer acknowledges seconds after a request: the batch size sets the pace.
    for options in ("", "&batch=1000"):
        bench_hec(records[:10000], floor, options, ack_delay=1.0)
    rounds = max(1, args.records // len(syslog))
    frames = b"".join(s.stream for s in syslog)
    # The last frame waits for the idle flush (1 s): count up to the one before.
    count = sum(len(expected_records(s.id)) for s in syslog) * rounds - 1
    os.sched_setaffinity(0, {PEER_CPU})  # the sender and the XML stream's reader; the input on CPU
    with tempfile.TemporaryDirectory() as tmp:
        bench_modinput(frames * rounds, count, build_app(Path(tmp)), Path(tmp))


if __name__ == "__main__":
    main()
