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

# Every record of the capture, each exactly once, compared by content.
"$BIN/python" - "$OUT/records.jsonl" "$OUT/expected.jsonl" <<'EOF'
import collections, json, sys
def records(path):
    try:
        return collections.Counter(json.dumps(json.loads(line), sort_keys=True) for line in open(path, "rb"))
    except FileNotFoundError:
        return collections.Counter()
delivered, expected = records(sys.argv[1]), records(sys.argv[2])
print("nvsiem listen delivered %d of the capture's %d records to %s"
      % (sum(delivered.values()), sum(expected.values()), sys.argv[1]))
kinds = collections.Counter(json.loads(r)["notification"] for r in delivered.elements())
print("  by notification: " + ", ".join("%s %d" % kv for kv in sorted(kinds.items())))
missing, extra = expected - delivered, delivered - expected
if missing or extra:
    sys.exit("  %d records of the capture missing, %d not in the capture or duplicated"
             % (sum(missing.values()), sum(extra.values())))
print("  each record of the capture exactly once")
EOF
