#!/usr/bin/env bash
# Connection density (issue 11): RSS per idle WebSocket connection and burst time, mqws against
# Mosquitto's WebSocket listener in the same run.
#
# For each server: start it, read its VmRSS, then open N connections all at once from PROCS
# `mqws-density` processes (N/PROCS each, client sockets bound to 127.0.0.2, .3, …, one shared
# start instant), wait until every process reports its connections ready (or failed), wait
# SETTLE s, read VmRSS again, let the connections close, stop the server.
#   mqws:      target/release/mqws serve, MQWS_WS__MAX_CONNECTIONS=20000 (default 10000);
#              each connection: hello on one filter nobody publishes to.
#   mosquitto: /usr/sbin/mosquitto -c conf with `listener PORT 127.0.0.1` + `protocol
#              websockets` (+ allow_anonymous true, persistence false, and an unused MQTT
#              listener that 2.0.11 needs to start at all); each connection: MQTT
#              over WebSocket (subprotocol mqtt), CONNECT + SUBSCRIBE to one topic.
# Build first: cargo build --release -p mqws -p mqws-benches
#   N=15000 PROCS=3 benches/density.sh
set -u
cd "$(dirname "$0")/.."
N=${N:-15000}
PROCS=${PROCS:-3}
SETTLE=${SETTLE:-5}
HOLD=${HOLD:-60}
MOSQUITTO=${MOSQUITTO-/usr/sbin/mosquitto}
SERVERS=${SERVERS:-"mqws mosquitto"}
ulimit -n 20000 || exit 1
OUT=$(mktemp -d /tmp/density.XXXXXX)
PID=""
GENS=()
cleanup() {
  for g in "${GENS[@]}"; do kill "$g" 2>/dev/null; done
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$OUT/log"   # mqws's data dir; the logs and generator outputs stay in $OUT
  true
}
trap cleanup EXIT

echo "date: $(date -u +%FT%TZ)  N=$N PROCS=$PROCS SETTLE=${SETTLE}s  out: $OUT"
echo "ulimit -n: $(ulimit -n) (hard $(ulimit -Hn))"
sysctl net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.tcp_syncookies \
  net.ipv4.ip_local_port_range net.ipv4.tcp_tw_reuse
echo "tcp_rmem: $(cat /proc/sys/net/ipv4/tcp_rmem)  tcp_wmem: $(cat /proc/sys/net/ipv4/tcp_wmem)"

tcpext() { nstat -az 2>/dev/null | awk '$1 ~ /^TcpExt(ListenOverflows|ListenDrops|TCPReqQFullDrop|SyncookiesSent|SyncookiesRecv|TCPSynRetrans)$/ {print $1, $2}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
sockmem() { awk '/^TCP:/ {print "TCP sockets inuse", $3, "orphan", $5, "tw", $7, "alloc", $9, "mem(pages)", $11}' /proc/net/sockstat; }

run_one() { # server-name port path mode
  local name=$1 port=$2 path=$3 mode=$4
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sleep 1.5
  local r0; r0=$(rss_kib "$PID")
  echo "[$name] pid $PID, RSS at start: $r0 KiB; $(sockmem)"
  local c0; c0=$(tcpext)
  local per=$((N / PROCS)) start_at=$(( $(date +%s%3N) + 1500 ))
  GENS=()
  for p in $(seq 1 "$PROCS"); do
    local n=$per
    [ "$p" -eq "$PROCS" ] && n=$((N - per * (PROCS - 1)))
    target/release/mqws-density --mode "$mode" --server "127.0.0.1:$port" --path "$path" \
      --connections "$n" --source "127.0.0.$((p + 1))" --start-at-ms "$start_at" \
      --hold "$HOLD" --id-prefix "$name-$p" --ready-file "$OUT/$name-$p.ready" \
      > "$OUT/$name-$p.out" 2>&1 &
    GENS+=($!)
  done
  # wait until every generator reports (bounded by HOLD)
  local t=0
  while [ "$(ls "$OUT"/"$name"-*.ready 2>/dev/null | wc -l)" -lt "$PROCS" ] && [ $t -lt $((HOLD * 10)) ]; do
    sleep 0.1; t=$((t + 1))
  done
  cat "$OUT"/"$name"-*.ready
  local c1; c1=$(tcpext)
  echo "[$name] kernel counters during the burst (after - before): $(paste -d' ' <(echo "$c0") <(echo "$c1") | awk '{printf "%s %d, ", $1, $4 - $2}')"
  sleep "$SETTLE"
  local r1; r1=$(rss_kib "$PID")
  local ready; ready=$(cat "$OUT"/"$name"-*.ready | sed -n 's/.*"ready":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
  local last; last=$(cat "$OUT"/"$name"-*.ready | sed -n 's/.*"last_ready_ms":\([0-9.]*\).*/\1/p' | sort -n | tail -1)
  local fds; fds=$(ls "/proc/$PID/fd" | wc -l)
  echo "[$name] $(sockmem); server fds $fds; VmHWM $(awk '/VmHWM/ {print $2}' /proc/$PID/status) KiB"
  echo "[$name] RESULT: RSS $((r0 / 1024)) MiB at start ($r0 KiB), $((r1 / 1024)) MiB with $ready idle connections ($r1 KiB): $(( (r1 - r0) * 1024 / (ready > 0 ? ready : 1) )) B per connection; last ready $last ms after the start (N=$N)"
  for g in "${GENS[@]}"; do wait "$g"; done
  GENS=()
  cat "$OUT"/"$name"-*.out | grep closed_by_server
  kill "$PID"; wait "$PID"; echo "[$name] exit status $?"; PID=""
  sleep 2
}

for s in $SERVERS; do
  case $s in
    mqws)
      MQWS_WS__MAX_CONNECTIONS=20000 target/release/mqws serve --http-listen 127.0.0.1:18091 \
        --mqtt-listen 127.0.0.1:11894 --data-dir "$OUT/log" > "$OUT/mqws.log" 2>&1 &
      PID=$!
      echo "[mqws] $(target/release/mqws --version 2>/dev/null), MQWS_WS__MAX_CONNECTIONS=20000"
      run_one mqws 18091 /ws mqws
      echo "[mqws] WARN/ERROR lines in its log: $(grep -c -E 'WARN|ERROR' "$OUT/mqws.log")"
      grep -E 'WARN|ERROR' "$OUT/mqws.log" | head -3
      ;;
    mosquitto)
      # Mosquitto 2.0.11 exits ("Unable to start any listening sockets") when its only
      # listener is a websockets one, so an (unused) MQTT listener comes first.
      printf 'listener 18093 127.0.0.1\nlistener 18092 127.0.0.1\nprotocol websockets\nallow_anonymous true\npersistence false\nlog_dest stderr\n' > "$OUT/mosquitto.conf"
      "$MOSQUITTO" -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 &
      PID=$!
      echo "[mosquitto] $("$MOSQUITTO" -h | head -1); config: $(paste -sd';' "$OUT/mosquitto.conf")"
      run_one mosquitto 18092 /mqtt mosquitto
      echo "[mosquitto] Error/Warning lines in its log: $(grep -c -E 'Error|Warning' "$OUT/mosquitto.log")"
      grep -E 'Error|Warning' "$OUT/mosquitto.log" | head -3
      ;;
  esac
done
