#!/usr/bin/env bash
# Benchmark (not a test): the dashboard in headless Chromium at a steady MQTT rate, then the
# same load on a page that only counts messages through /mqws.js (see dashboard_rate.mjs).
# Builds the release binary first (NO_BUILD=1 to skip). Takes the machine for ~2.5 minutes:
# run it under the shared lock.
#
#   flock /tmp/heavy.lock benches/browser/run.sh                  # 5,000 msg/s, 60 s, 200 topics
#   RATE=1000 DURATION=30 PAGES=dashboard flock /tmp/heavy.lock benches/browser/run.sh
#
# Output: stdout and benches/out/browser-dashboard-rate-<UTC time>.{txt,json}.
# Needs: chromium (apt), node 20+, integration/browser's node_modules (playwright-core, imported
# through integration/browser/launch.mjs), python3 with paho-mqtt 2.x.
# Env: RATE (5000), DURATION (60), TOPICS (200), PAYLOAD_BYTES (0: ~110), SAMPLE (5), PAGES (dashboard,plain),
#      MQWS_BIN (<workspace>/target/release/mqws), CHROMIUM (/usr/bin/chromium).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
MQWS_BIN="${MQWS_BIN:-$ROOT/target/release/mqws}"

if [[ -z "${NO_BUILD:-}" ]]; then
  cargo build --release -p mqws
fi
missing=()
[[ -x "$MQWS_BIN" ]] || missing+=("mqws binary at $MQWS_BIN")
[[ -x "${CHROMIUM:-/usr/bin/chromium}" ]] || missing+=("chromium (apt-get install chromium)")
[[ -d "$ROOT/integration/browser/node_modules/playwright-core" ]] || missing+=("playwright-core (npm ci --prefix integration/browser)")
python3 -c 'import paho.mqtt.client' 2>/dev/null || missing+=("paho-mqtt (pip install paho-mqtt)")
if [[ ${#missing[@]} -gt 0 ]]; then
  for m in "${missing[@]}"; do echo "missing: $m" >&2; done
  exit 1
fi

out="$ROOT/benches/out"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
node "$HERE/dashboard_rate.mjs" --mqws-bin "$MQWS_BIN" \
  --rate "${RATE:-5000}" --duration "${DURATION:-60}" --topics "${TOPICS:-200}" --payload-bytes "${PAYLOAD_BYTES:-0}" \
  --sample "${SAMPLE:-5}" --pages "${PAGES:-dashboard,plain}" \
  --json "$out/browser-dashboard-rate-$stamp.json" | tee "$out/browser-dashboard-rate-$stamp.txt"
