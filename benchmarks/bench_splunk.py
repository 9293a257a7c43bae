"""Splunk side throughput: the HEC sink and the neuvector:// modular input.

    .venv/bin/python benchmarks/bench_splunk.py [--records 20000]

- HEC sink: HecSink sends the reference records (about 1.6 KB each as the
  spool holds them) in batches of 1,000, each confirmed by indexer
  acknowledgement before the next, to tests/hec_server.py running in its own
  process (a Python http.server: it decodes every event, so it is the
  slower end). Reported: wall-clock rate and the sink's own CPU time per
  record (steadier on a shared machine), gzip on and off, and bytes on the
  wire per event.
- Modular input: bin/neuvector.py run as splunkd runs it (tests/splunkd_harness.py)
  under each installed Splunk Python (3.9, 3.13; standard-library json, as
  in Splunk), fed one TCP connection of the same records; timed until the
  last event came out of its XML stream. CPU is the input process's own.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / p) for p in ("tests", "parser", "splunk_app", ".")]

from loopback import free_port  # noqa: E402
from nvparser import json_dumps  # noqa: E402
from nvsamples import expected_records, load_samples  # noqa: E402
from nvsiem_splunk.hec import HecSink  # noqa: E402
from splunkd_harness import PYTHONS, RunningInput, build_app  # noqa: E402

SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from hec_server import HecServer
hec = HecServer(tokens={"bench": {"ack": True}}, port=int(sys.argv[2])).start()
print("ready", flush=True)
sys.stdin.read()
print(len(hec.indexed), sum(e["bytes"] for e in hec.log if e["path"] == "/services/collector/event"), flush=True)
"""


def bench_hec(records, gzip):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT / "tests"), str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    os.environ["NV_BENCH_TOKEN"] = "bench"
    sink = HecSink("splunk-hec+http://127.0.0.1:%d?token_env=NV_BENCH_TOKEN&gzip=%s" % (port, gzip))
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(records), 1000):
        sink.send(records[i:i + 1000])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sink.close()
    indexed, wire = map(int, server.communicate("")[0].split())
    assert indexed == len(records), "indexed %d of %d" % (indexed, len(records))
    print("HEC sink, gzip=%-5s %8.0f records/s  %5.1f us CPU/record  %5.0f bytes/event on the wire"
          % (gzip, len(records) / wall, cpu / len(records) * 1e6, wire / len(records)))


def bench_modinput(stream, count, app, tmp):
    for version, python in sorted(PYTHONS.items()):
        if not python:
            print("modular input, Python %s: not installed" % version)
            continue
        port = free_port()
        run = RunningInput(python, app, "neuvector", "bench", {"port": str(port), "bind": "127.0.0.1"}, tmp)
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
        print("modular input, Python %-4s %8.0f records/s  %5.1f us CPU/record (the input process)"
              % (version, count / wall, cpu / count * 1e6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    syslog = [s for s in load_samples() if s.mode in ("text", "json")]
    recs = [json_dumps(r) for s in syslog for r in expected_records(s.id)]
    records = [recs[i % len(recs)] for i in range(args.records)]
    for gzip in ("true", "false"):
        bench_hec(records, gzip)
    rounds = max(1, args.records // len(syslog))
    frames = b"".join(s.stream for s in syslog)
    # The last frame waits for the idle flush (1 s): count up to the one before.
    count = sum(len(expected_records(s.id)) for s in syslog) * rounds - 1
    with tempfile.TemporaryDirectory() as tmp:
        bench_modinput(frames * rounds, count, build_app(Path(tmp)), Path(tmp))


if __name__ == "__main__":
    main()
