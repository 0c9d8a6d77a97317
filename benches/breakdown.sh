#!/bin/bash
# Where a message's time goes inside mqws at 10,000 msg/s (benches/RESULTS.md, 2026-12-07 22:10):
# starts BIN on loopback ports 11883/18080, runs mqws-load attached to it (native MQTT
# subscriber, then WebSocket subscriber; extra arguments go to mqws-load), then prints the
# stage summaries from /metrics.
# Usage: benches/breakdown.sh [BIN] [mqws-load args…]   (from the repository root, release build)
set -euo pipefail
BIN=${1:-target/release/mqws}
shift || true
# Default measure window; any arguments given replace it.
EXTRA=("$@")
[ ${#EXTRA[@]} -eq 0 ] && EXTRA=(--duration 10 --warmup 2)
D=$(mktemp -d /tmp/mqws-breakdown.XXXX)
"$BIN" serve --mqtt-listen 127.0.0.1:11883 --http-listen 127.0.0.1:18080 --data-dir "$D/data" > "$D/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2> /dev/null; rm -rf "$D"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/readyz > /dev/null && break; sleep 0.2; done
target/release/mqws-load --http 127.0.0.1:18080 --mqtt 127.0.0.1:11883 --server-pid "$PID" \
  --publishers 1 --qos 0 --payload-bytes 256 --rate 10000 --ws-subscribers 1 --filter '#' \
  --markdown "${EXTRA[@]}" | grep "^| "
curl -s http://127.0.0.1:18080/metrics \
  | grep -E '^mqws_(ingress_wait_seconds|log_append_seconds|fanout_wait_seconds|mqtt_served_wait_seconds|follower_delay_seconds|log_batch_messages)\{quantile="0\.(5|99)"\}'
