#!/usr/bin/env bash
# The whole pipeline on the bundled real capture, as `make run` shows it:
# nvsiem listen (TCP source, spool, the default file sink) receives the
# capture's original syslog bytes from nvsiem replay, as it would receive
# them from NeuVector, and writes the records to out/records.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DUMP=${1:-examples/syslog-dump.hex}
OUT=out
rm -rf "$OUT" && mkdir -p "$OUT"

# What the capture holds, straight from the dump: the count to wait for.
"$BIN/nvsiem" replay "$DUMP" --out "$OUT/expected.jsonl" --quiet
expected=$(wc -l < "$OUT/expected.jsonl")

port=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/nvsiem" listen --listen "tcp://127.0.0.1:$port" --spool "$OUT/spool" \
    --to "file://$OUT/records.jsonl" --metrics off --log-format text 2> "$OUT/listen.log" &
listener=$!
trap 'kill $listener 2>/dev/null || true' EXIT

for _ in $(seq 100); do  # up to 10 s for the listener to bind
    "$BIN/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null && break
    sleep 0.1
done
"$BIN/nvsiem" replay "$DUMP" --send "tcp://127.0.0.1:$port" --out /dev/null

for _ in $(seq 100); do  # up to 10 s for every record to reach the file sink
    [ -f "$OUT/records.jsonl" ] && [ "$(wc -l < "$OUT/records.jsonl")" -ge "$expected" ] && break
    sleep 0.1
done
kill -TERM $listener && wait $listener || true
trap - EXIT

delivered=$(wc -l < "$OUT/records.jsonl" 2>/dev/null || echo 0)
echo "nvsiem listen delivered $delivered of the capture's $expected records to $OUT/records.jsonl"
"$BIN/python" - "$OUT/records.jsonl" <<'EOF'
import collections, json, sys
counts = collections.Counter(json.loads(line)["notification"] for line in open(sys.argv[1]))
print("  by notification: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
EOF
[ "$delivered" -ge "$expected" ]
