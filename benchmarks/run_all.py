"""Run every benchmark in turn and print their tables (``make bench``).

Each benchmark measures its own floor in the same run and prints
records/s with the ratio to it. Run on a quiet machine: the figures are
only as steady as the cores they get.
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench_fluentd_real.py needs a real Fluentd (NVSIEM_FLUENTD or fluentd on the PATH); without one
# it says so and is skipped.
BENCHMARKS = ["bench_parser.py", "bench_listen.py", "bench_syslog_sink.py", "bench_rest.py", "bench_fluentd.py",
              "bench_fluentd_real.py", "bench_splunk.py"]


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print("\n### %s\n" % name, flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
