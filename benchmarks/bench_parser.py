"""How fast the parser turns NeuVector syslog into records, against a floor.

    .venv/bin/python benchmarks/bench_parser.py [--records 100000] [--rounds 5]

Each round measures, on the same file and pinned to one core:

* ``floor``: reading the file line by line doing nothing (``for line in f``);
* ``text mode`` / ``JSON mode``: ``Parser.feed`` over the file in 1 MiB
  chunks, every frame to a typed record;
* ``…, 64 KiB feeds``: the same fed as the collector feeds it: fewer records
  alive per call, so they are still in the CPU cache;
* ``JSON mode, 64 KiB feeds, stdlib json``: without orjson (it is optional;
  the Splunk app runs so);
* ``text mode, pure Python``: 64 KiB feeds without the C accelerator
  (``nvparser._speedups``, optional), as the Splunk app runs it;
* ``text mode, RFC 3164 headers``: 64 KiB feeds of the same records as a
  relay (rsyslog) forwards them;
* ``text mode + json_dumps``: records serialised too, as a sink would;
* ``nvsiem parse``: the whole command as a user runs it (start-up, 64 KiB
  reads, every record written as a JSON line), text and JSON mode.

Rows print records/s and the cost relative to the floor of the same round
(medians over rounds). A final check replays a 200 MB ``nc -o`` capture
(the bundled one, repeated) with ``nvsiem replay`` and reports its time and
peak memory, which stay bounded whatever the capture's size.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import corpus  # noqa: E402
from nvparser import Parser, _codec, _fast, json_dumps  # noqa: E402
from helpers.twins import python_twins  # noqa: E402

CHUNK = 1 << 20


def floor(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb") as f:
        for _ in f:
            pass
    return time.perf_counter() - start


def parse(path: Path, serialise: bool = False, chunk_size: int = CHUNK) -> float:
    parser = Parser()
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            events = parser.feed(chunk)
            n += len(events)
            if serialise:
                for event in events:
                    json_dumps(event.data)
    n += len(parser.close())
    return time.perf_counter() - start


def stdlib_json(path: Path) -> float:
    """JSON mode as it runs where orjson is not installed (and in the Splunk app)."""
    saved = _fast.json_loads_from
    _fast.json_loads_from = _codec.loads_from_std
    try:
        return parse(path, chunk_size=1 << 16)
    finally:
        _fast.json_loads_from = saved


def pure_python(path: Path) -> float:
    """Text mode where the C accelerator was not built (and in the Splunk app)."""
    with python_twins():
        return parse(path, chunk_size=1 << 16)


def cli(path: Path) -> float:
    """The whole ``nvsiem parse`` process, start-up included, writing every record as a JSON line."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nvsiem", "parse", str(path), "--out", os.devnull, "--quiet"],
                   cwd=REPO, check=True)
    return time.perf_counter() - start


def replay_capture(work: Path, megabytes: int) -> None:
    """``nvsiem replay`` of a capture of ``megabytes`` MB: the time, and its peak memory."""
    dump = (REPO / "examples" / "syslog-dump.hex").read_bytes()
    big = work / "big.hex"
    repeat = max(1, megabytes * (1 << 20) // len(dump))
    with open(big, "wb") as out:
        for _ in range(repeat):  # each copy restarts nc's offsets: a new connection
            out.write(dump)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nvsiem", "replay", str(big), "--out", os.devnull],
                          stderr=subprocess.PIPE, cwd=REPO, check=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("\nnvsiem replay of a %d MB nc capture: %.1f s, peak RSS %.0f MiB, exit %d\n  %s"
          % (big.stat().st_size >> 20, seconds, peak, done.returncode, done.stderr.decode().splitlines()[0]))
    big.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=200, help="size of the capture replayed in bounded memory (0 to skip)")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    work = Path(tempfile.mkdtemp(prefix="nvsiem-bench-"))
    text, js, relayed = work / "text.log", work / "json.log", work / "rfc3164.log"
    size_text = corpus.write(text, args.records, "text")
    size_json = corpus.write(js, args.records, "json")
    corpus.write(relayed, args.records, "rfc3164")
    rows = {"floor (read lines, text file)": [], "text mode": [], "text mode, 64 KiB feeds": [],
            "text mode, 64 KiB feeds, pure Python": [], "text mode, RFC 3164 headers, 64 KiB feeds": [],
            "JSON mode": [],
            "JSON mode, 64 KiB feeds": [],
            "JSON mode, 64 KiB feeds, stdlib json": [], "text mode + json_dumps": [],
            "nvsiem parse (the whole CLI), text mode": [], "nvsiem parse (the whole CLI), JSON mode": []}
    ratios = {k: [] for k in rows}
    for _ in range(args.rounds):
        base = floor(text)
        timings = {
            "floor (read lines, text file)": base,
            "text mode": parse(text),
            "text mode, 64 KiB feeds": parse(text, chunk_size=1 << 16),
            "text mode, 64 KiB feeds, pure Python": pure_python(text),
            "text mode, RFC 3164 headers, 64 KiB feeds": parse(relayed, chunk_size=1 << 16),
            "JSON mode": parse(js),
            "JSON mode, 64 KiB feeds": parse(js, chunk_size=1 << 16),
            "JSON mode, 64 KiB feeds, stdlib json": stdlib_json(js),
            "text mode + json_dumps": parse(text, serialise=True),
            "nvsiem parse (the whole CLI), text mode": cli(text),
            "nvsiem parse (the whole CLI), JSON mode": cli(js),
        }
        for name, seconds in timings.items():
            rows[name].append(args.records / seconds)
            ratios[name].append(seconds / base)
    print("parser, %d records, %.0f B/record text, %.0f B/record JSON, median of %d rounds, one core"
          % (args.records, size_text / args.records, size_json / args.records, args.rounds))
    print("| path | records/s | × floor cost |")
    print("|---|---:|---:|")
    for name in rows:
        print("| %s | %s | %.1f |" % (name, format(int(statistics.median(rows[name])), ","),
                                      statistics.median(ratios[name])))
    if args.big_mb:
        replay_capture(work, args.big_mb)
    for f in (text, js, relayed):
        f.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
