#!/usr/bin/env bash
# Interop checks: starts the real mqws binary on free ports with a temporary data directory
# and checks it against real peers (mosquitto_pub/mosquitto_sub, paho-mqtt MQTT 5 and 3.1.1,
# the python `websockets` client) and Eclipse's paho interoperability suite. Prints "N passed, M failed" last; exits 1 on any failure.
#
# Needs: mosquitto-clients (apt), paho-mqtt and websockets (pip).
# Env: MQWS_BIN (default: <workspace>/target/debug/mqws).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MQWS_BIN="${MQWS_BIN:-$ROOT/target/debug/mqws}"
# The server runs from a temporary directory: make the path absolute.
if [[ "$MQWS_BIN" != /* ]]; then MQWS_BIN="$PWD/$MQWS_BIN"; fi
MQWS_BIN_ABS="$MQWS_BIN"
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d)"
PID=""
# A second server for the paho suite's MQTT 3.1.1 half, which runs beside the MQTT 5 half.
PID3=""
stop() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$PID"
    stop "$PID3"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
finish() {
    echo "$passed passed, $failed failed"
    [[ "$failed" -eq 0 ]]
}

missing=()
[[ -x "$MQWS_BIN" ]] || missing+=("mqws binary at $MQWS_BIN (cargo build -p mqws --bin mqws)")
command -v mosquitto_pub >/dev/null || missing+=("mosquitto_pub (apt-get install mosquitto-clients)")
command -v mosquitto_sub >/dev/null || missing+=("mosquitto_sub (apt-get install mosquitto-clients)")
"$PYTHON" -c 'import paho.mqtt, websockets' 2>/dev/null || missing+=("python paho-mqtt and websockets (pip install paho-mqtt websockets)")
if [[ ${#missing[@]} -gt 0 ]]; then
    for m in "${missing[@]}"; do echo "missing: $m" >&2; done
    failed=1
    finish || exit 1
fi

# Other settings come from MQWS_* variables; drop inherited ones so the run is hermetic.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(MQWS_[A-Za-z0-9_]*\)=.*/\1/p' | grep -v '^MQWS_BIN$' || true)

# start NAME: starts mqws with its data dir and output under $WORK/NAME and waits for its
# ready line; sets STARTED_PID, STARTED_HTTP and STARTED_MQTT, or fails the run.
start() {
    local dir="$WORK/$1"
    mkdir -p "$dir"
    (cd "$dir" && unset MQWS_BIN && NO_COLOR=1 exec "$MQWS_BIN_ABS" serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --data-dir "$dir/data") >"$dir/stdout" 2>"$dir/stderr" &
    STARTED_PID=$!
    local ready=""
    for _ in $(seq 300); do
        ready="$(grep -m1 '^mqws ready ' "$dir/stdout" || true)"
        [[ -n "$ready" ]] && break
        kill -0 "$STARTED_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$ready" ]]; then
        echo "FAIL start: mqws did not print its ready line within 30 s; stderr tail:" >&2
        tail -n 50 "$dir/stderr" >&2 || true
        failed=1
        finish || exit 1
    fi
    STARTED_HTTP="$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$ready")"
    STARTED_MQTT="$(sed -n 's/.* mqtt=\([^ ]*\).*/\1/p' <<<"$ready")"
}
start main
PID=$STARTED_PID HTTP=$STARTED_HTTP MQTT=$STARTED_MQTT
echo "mqws ready: http=$HTTP mqtt=$MQTT (pid $PID)"

for check in $("$PYTHON" "$HERE/checks.py" list); do
    if out="$(timeout 60 "$PYTHON" "$HERE/checks.py" "$check" --http "$HTTP" --mqtt "$MQTT" 2>&1)"; then
        echo "PASS $check"
        passed=$((passed + 1))
    else
        echo "FAIL $out"
        failed=$((failed + 1))
    fi
done

# Eclipse's paho.mqtt.testing interoperability suite (a peer's conformance tests, kept in the
# project's shared docs), each test alone with a time limit, compared with Mosquitto's baseline.
PAHO="${PAHO_DIR:-$ROOT/../shared/paho-interop}"
if [[ -f "$PAHO/run_each.py" ]]; then
    # The two halves at once, each against its own server (the suite's client ids and topics
    # are the same in both): the MQTT 5 half alone takes about 5 minutes of mostly waiting.
    start paho-v3
    PID3=$STARTED_PID
    PAHO_PORT="${STARTED_MQTT##*:}" timeout 1800 "$PYTHON" "$PAHO/run_each.py" v3 30 \
        >"$WORK/paho-v3.jsonl" 2>&1 &
    v3_run=$!
    PAHO_PORT="${MQTT##*:}" timeout 1800 "$PYTHON" "$PAHO/run_each.py" v5 30 \
        >"$WORK/paho-v5.jsonl" 2>&1 || true
    wait "$v3_run" || true
    stop "$PID3"
    if out="$(PAHO_DIR="$PAHO" PAHO_PORT="${MQTT##*:}" "$PYTHON" "$HERE/paho_compare.py" "$PAHO/mosquitto-baseline.json" \
        "$HERE/paho-known.txt" "$WORK/paho-v3.jsonl" "$WORK/paho-v5.jsonl" 2>&1)"; then
        echo "PASS paho_interop"
        passed=$((passed + 1))
    else
        echo "FAIL paho_interop"
        failed=$((failed + 1))
    fi
    sed 's/^/  /' <<<"$out"
else
    echo "FAIL paho_interop: the suite is not at $PAHO (set PAHO_DIR)"
    failed=$((failed + 1))
fi

if ! kill -0 "$PID" 2>/dev/null; then
    echo "FAIL server: mqws exited during the checks" >&2
    failed=$((failed + 1))
fi
if [[ "$failed" -gt 0 ]]; then
    echo "---- mqws stderr tail ----" >&2
    tail -n 50 "$WORK/main/stderr" >&2 || true
fi
finish
