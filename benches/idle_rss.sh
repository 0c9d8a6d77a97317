#!/usr/bin/env bash
# RSS of mqws with N idle WebSocket connections (each sends hello on a filter nobody publishes
# to, then reads nothing). Build first: cargo build --release -p mqws -p mqws-benches
set -u
cd "$(dirname "$0")/.."
N=${N:-2000}
DATA=$(mktemp -d)
target/release/mqws serve --http-listen 127.0.0.1:18081 --mqtt-listen 127.0.0.1:11884 \
  --data-dir "$DATA/log" > "$DATA/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1.5
r0=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
timeout 60 target/release/mqws-slow-readers --http 127.0.0.1:18081 --readers "$N" --rate 1 \
  --duration 12 --filter 'idle/#' > /dev/null 2>&1 &
READERS=$!
sleep 9
r1=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
echo "mqws RSS: $((r0 / 1024)) MiB at start, $((r1 / 1024)) MiB with $N idle connections ($(( (r1 - r0) * 10 / N )) tenths of a KiB each)"
wait $READERS
