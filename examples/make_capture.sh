#!/bin/sh
# Regenerate the example captures with real netcat-traditional, the way
# NeuVector's docs capture syslog (nc -l -p PORT -o syslog-dump.hex):
#
#   examples/syslog-dump.hex      TCP: one connection, each frame LF-terminated
#                                 and written on its own, as the controller does
#   examples/syslog-dump-udp.hex  UDP: one datagram per frame
#
# The frames are every syslog sample (text and JSON modes) of
# neuvector-samples.txt, in file order. Each send waits until nc has logged
# it, so every frame is one read() of nc's, on any machine.
#
# Usage: examples/make_capture.sh [path/to/neuvector-samples.txt (default: the test fixture)]
# Needs: nc.traditional (apt-get install netcat-traditional), the project
# venv (make test sets it up) for pytest, which the nc helpers import.
set -eu
cd "$(dirname "$0")/.."
samples=${1:-tests/fixtures/neuvector-samples.txt}
python=${PY:-.venv/bin/python}
command -v nc.traditional >/dev/null || { echo "needs nc.traditional (apt-get install netcat-traditional)" >&2; exit 1; }
[ -r "$samples" ] || { echo "cannot read $samples" >&2; exit 1; }

PYTHONPATH=tests "$python" - "$samples" <<'EOF'
import sys
from pathlib import Path

from helpers.nc_capture import nc_capture, syslog_frames
from helpers.nvsamples import load_samples

frames = syslog_frames(load_samples(Path(sys.argv[1])))
nc_capture("examples/syslog-dump.hex", frames)

# nc.traditional reads UDP into an 8192-byte buffer and drops the rest of a
# longer datagram: leave those frames out rather than ship a cut record.
short = [frame for frame in frames if len(frame) <= 8192]
nc_capture("examples/syslog-dump-udp.hex", short, udp=True)
print("%d frames: TCP all, UDP %d (%d longer than 8192 bytes left out)"
      % (len(frames), len(short), len(frames) - len(short)))
EOF
