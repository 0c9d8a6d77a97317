#!/usr/bin/env bash
# Browser checks in Debian's Chromium (driven by playwright-core, which downloads nothing):
# starts the real mqws binary on free ports with a temporary data dir, opens the dashboard at
# `/`, publishes with mosquitto_pub and expects the row in the page's DOM within the wait, then
# publishes from the page's form and expects mosquitto_sub to receive it. Saves a screenshot to
# target/browser/dashboard.png. Then a page using /mqws.js counts messages while mqws is
# restarted with SIGTERM and with kill -9, and two tabs plus a duplicated tab share a browser.
# Pages under integration/browser/pages/ are served by mqws itself (http.static_dir, /app/).
# Exits 1 on any failure.
#
# Needs: chromium and mosquitto-clients (apt), node, `npm ci` in this directory.
# Env: MQWS_BIN (default: <workspace>/target/debug/mqws), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MQWS_BIN="${MQWS_BIN:-$ROOT/target/debug/mqws}"
if [[ "$MQWS_BIN" != /* ]]; then MQWS_BIN="$PWD/$MQWS_BIN"; fi

missing=()
[[ -x "$MQWS_BIN" ]] || missing+=("mqws binary at $MQWS_BIN (cargo build -p mqws)")
[[ -x "${CHROMIUM:-/usr/bin/chromium}" ]] || missing+=("chromium (apt-get install chromium)")
command -v mosquitto_pub >/dev/null || missing+=("mosquitto-clients (apt-get install mosquitto-clients)")
[[ -d "$HERE/node_modules/playwright-core" ]] || missing+=("playwright-core (npm ci --prefix integration/browser)")
if [[ ${#missing[@]} -gt 0 ]]; then
  for m in "${missing[@]}"; do echo "missing: $m" >&2; done
  exit 1
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
  [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port)
HTTP_PORT=$(free_port)
# Starts mqws on the ports above with data dir $1 and waits until /readyz answers 200.
start_mqws() {
  env -u MQWS_CONFIG MQWS_HTTP__STATIC_DIR="$HERE/pages" "$MQWS_BIN" serve --mqtt-listen "127.0.0.1:$MQTT_PORT" \
    --http-listen "127.0.0.1:$HTTP_PORT" --data-dir "$1" >>"$WORK/mqws.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "FAIL: mqws not ready" >&2; tail -20 "$WORK/mqws.log" >&2; exit 1
}
start_mqws "$WORK/data"

mkdir -p "$ROOT/target/browser"
mosquitto_sub -p "$MQTT_PORT" -t dash/cmd -C 1 -W 30 >"$WORK/sub.out" &
SUB=$!
out="$WORK/page.out"
node "$HERE/dashboard.mjs" "http://127.0.0.1:$HTTP_PORT" "$ROOT/target/browser/dashboard.png" >"$out" &
PAGE=$!
for _ in $(seq 300); do grep -q '^\(open\|error\)' "$out" && break; sleep 0.1; done
grep -q '^open' "$out" || { cat "$out" "$WORK/mqws.log" >&2; echo "FAIL: the dashboard never showed state open" >&2; exit 1; }
# The page is open: a reader publishes, the page must show it.
sent_ms=$(date +%s%3N)
mosquitto_pub -p "$MQTT_PORT" -q 1 -t dash/t -m '{"epc":"303400000000000000001234"}'
rc=0
wait "$PAGE" || rc=$?
cat "$out"
[[ $rc -eq 0 ]] && grep -q '^done' "$out" || { echo "FAIL: dashboard steps (exit $rc)" >&2; tail -20 "$WORK/mqws.log" >&2; exit 1; }
grep -q '^row .*dash/t.*303400000000000000001234' "$out" \
  || { echo "FAIL: the row does not show the EPC as published" >&2; exit 1; }
seen_ms=$(sed -n 's/^row \([0-9]*\) .*/\1/p' "$out")
(( seen_ms - sent_ms <= 1000 )) \
  || { echo "FAIL: the row appeared $((seen_ms - sent_ms)) ms after mosquitto_pub started (limit 1000)" >&2; exit 1; }
echo "row shown $((seen_ms - sent_ms)) ms after mosquitto_pub started"
wait "$SUB" || { echo "FAIL: mosquitto_sub got nothing from the page's publish form" >&2; exit 1; }
[[ "$(cat "$WORK/sub.out")" == '{"op":"start"}' ]] \
  || { echo "FAIL: mosquitto_sub got '$(cat "$WORK/sub.out")'" >&2; exit 1; }
echo "browser: dashboard shows a mosquitto_pub message and its form reaches mosquitto_sub; screenshot target/browser/dashboard.png"

# A page using /mqws.js while the server is restarted with SIGTERM and then killed with -9:
# it must end with every seq exactly once, in order, after reconnecting twice.
kill -TERM "$PID"; wait "$PID" || true
start_mqws "$WORK/resume-data"
publish() { for i in $(seq "$1" "$2"); do mosquitto_pub -p "$MQTT_PORT" -q 1 -t "resume/$i" -m "m$i"; done; }
out="$WORK/resume.out"
node "$HERE/resume.mjs" "http://127.0.0.1:$HTTP_PORT" 150 >"$out" &
PAGE=$!
for _ in $(seq 300); do grep -q '^\(open\|error\)' "$out" && break; sleep 0.1; done
grep -q '^open' "$out" || { cat "$out" >&2; echo "FAIL: the resume page never connected" >&2; exit 1; }
publish 1 50
kill -TERM "$PID"; wait "$PID" || true
start_mqws "$WORK/resume-data"
publish 51 100
sleep 0.5
kill -KILL "$PID"; wait "$PID" 2>/dev/null || true
start_mqws "$WORK/resume-data"
publish 101 150
wait "$PAGE" || { cat "$out" >&2; echo "FAIL: resume page" >&2; exit 1; }
python3 - "$out" <<'PY'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
seqs, opens = r["seqs"], r["opens"]
want = list(range(1, 151))
assert seqs == want, f"seqs differ: {len(seqs)} received, first difference at {next((i for i, (a, b) in enumerate(zip(seqs, want)) if a != b), len(seqs))}; gaps {r['gaps']}"
assert opens >= 3, f"the page opened {opens} times; expected a reconnect after each restart"
assert not r["gaps"], f"unexpected gaps {r['gaps']}"
print(f"browser: /mqws.js page received seqs 1..150 exactly once, in order, across a SIGTERM restart and a kill -9 ({opens} opens)")
PY

# Two tabs and a duplicated tab (a copy of the first tab's sessionStorage): all stay connected,
# the duplicate gets its own session, and each receives a message published after.
out="$WORK/tabs.out"
node "$HERE/tabs.mjs" "http://127.0.0.1:$HTTP_PORT" >"$out" &
PAGE=$!
for _ in $(seq 300); do grep -q '^\(open\|error\)' "$out" && break; sleep 0.1; done
grep -q '^open' "$out" || { cat "$out" >&2; echo "FAIL: the tabs never all connected" >&2; exit 1; }
mosquitto_pub -p "$MQTT_PORT" -q 1 -t tabs/x -m hello
wait "$PAGE" || { cat "$out" >&2; echo "FAIL: tabs page" >&2; exit 1; }
python3 - "$out" <<'PY'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
assert "mqws:session" in r["copied"], f"the first tab stored no session to copy: {r['copied']}"
for name in ("first", "duplicate", "second"):
    t = r[name]
    assert t["state"] == "open" and t["opens"] == 1 and not t["errors"], f"{name}: {t}"
    assert len(t["seqs"]) == 1, f"{name} did not receive the message: {t}"
sessions = [r[n]["sessions"][0] for n in ("first", "duplicate", "second")]
assert len(set(sessions)) == 3, f"each tab has its own session: {sessions}"
print("browser: two tabs and a duplicated tab stay connected (one open each, no 4002) with their own sessions, and each receives a new message")
PY
