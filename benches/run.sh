#!/usr/bin/env bash
# Builds mqws and mqws-load in release mode and runs the product scenarios.
# Outputs (human table, JSON record, Markdown block, server log) go to benches/out/.
# When Mosquitto is installed (/usr/sbin/mosquitto, or MOSQUITTO=PATH), every scenario also runs
# the mosquitto-mqtt and mosquitto-ws phases against it in the same run (MOSQUITTO="" to skip).
#
#   benches/run.sh                 # scenarios a b c d, 10 s measured per phase (default)
#   DURATION=30 benches/run.sh     # longer runs
#   SCENARIOS="a c" benches/run.sh # a subset
#
# Optional catch-up benchmarks (mqws-catchup; minutes each, so off by default):
#   CATCHUP="replay storm retention" benches/run.sh   # after the scenarios
#   SCENARIOS="" CATCHUP=replay benches/run.sh        # only the replay benchmark
#   CATCHUP_ARGS="--messages 200000" CATCHUP=replay benches/run.sh   # extra flags
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/benches/out"
mkdir -p "$out"

duration="${DURATION:-10}"
warmup="${WARMUP:-2}"
scenarios="${SCENARIOS-a b c d}"
catchup="${CATCHUP:-}"
read -r -a catchup_args <<< "${CATCHUP_ARGS:-}"

cargo build --release -p mqws -p mqws-benches

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

status=0
for s in $scenarios; do
    case "$s" in
        # (a) throughput: 1 publisher QoS 0, 256 B, flat out, 1 WS subscriber on '#' vs 1 native.
        a) run a-throughput --publishers 1 --qos 0 --payload-bytes 256 --rate 0 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        # (b) latency: the same at 10,000 msgs/s.
        b) run b-latency --publishers 1 --qos 0 --payload-bytes 256 --rate 10000 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        # (c) fan-out: 1 publisher at 500 msgs/s to 1,000 WS subscribers (500k deliveries/s).
        c) run c-fanout --publishers 1 --qos 0 --payload-bytes 256 --rate 500 \
               --ws-subscribers 1000 --filter 'bench/#' || status=1 ;;
        # (d) acknowledgements: 4 publishers QoS 1, 100 in flight each, flat out, 1 subscriber.
        d) run d-qos1-4pub --publishers 4 --qos 1 --inflight 100 --payload-bytes 256 --rate 0 \
               --ws-subscribers 1 --filter '#' || status=1 ;;
        *) echo "unknown scenario $s (known: a b c d)" >&2; status=2 ;;
    esac
done
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
