#!/usr/bin/env bash
# Slow-client benchmark (issue 9): 900 WebSocket subscribers measured by mqws-load, with and
# without 100 readers throttled to 10% of the publish rate, on one mqws. Build first:
#   cargo build --release -p mqws -p mqws-benches
# Prints one Markdown row per run and the server's catch-up counters at the end.
set -u
cd "$(dirname "$0")/.."
RATE=${RATE:-200}; PAYLOAD=${PAYLOAD:-1024}; SLOW_RATE=$(( RATE / 10 ))
DATA=$(mktemp -d); OUT=$(mktemp -d)
MQWS_WS__SLOW_CONSUMER_TIMEOUT=300s "${MQWS_BIN:-target/release/mqws}" serve --http-listen 127.0.0.1:18080 \
  --mqtt-listen 127.0.0.1:11883 --data-dir "$DATA/log" > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 2
run() {
  timeout 300 target/release/mqws-load --http 127.0.0.1:18080 --mqtt 127.0.0.1:11883 \
    --server-pid $PID --no-baseline --ws-subscribers 900 --rate "$RATE" --publishers 1 --qos 0 \
    --payload-bytes "$PAYLOAD" --duration 20 --filter 'bench/#' --markdown --label "$1" \
    > "$OUT/$1.txt" 2>&1
  grep "^| $1" "$OUT/$1.txt"
}
run none-1
# The slow readers fall behind while an unmeasured run publishes, then one run is measured.
timeout 200 target/release/mqws-slow-readers --http 127.0.0.1:18080 --readers 100 \
  --rate "$SLOW_RATE" --duration 100 > "$OUT/slow-readers.txt" 2>&1 &
SLOW=$!
sleep 1
run warm-slow > /dev/null
run slow100-1
wait $SLOW; cat "$OUT/slow-readers.txt"
run none-2
curl -s 127.0.0.1:18080/metrics | grep -v "^#" \
  | grep -E "logged_total|dispatched_total|fell_behind|slow_consumer|gaps_sent|replay_messages"
echo "outputs in $OUT"
