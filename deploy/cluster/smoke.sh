#!/usr/bin/env bash
# Smoke check of the demo cluster: starts deploy/cluster/run.sh in the background on free ports,
# then with real clients:
#   1. WebSocket clients on node A and node B subscribe to site/#; mosquitto_pub -q 1 publishes
#      site/r1/tags to node A's MQTT port; both must receive it with the same seq, and their
#      welcomes must carry the same epoch.
#   2. mosquitto_sub on node A's MQTT port subscribes to cmd/#; a WebSocket client on node B
#      publishes cmd/r1 "stop" at QoS 1 and must get its puback; mosquitto_sub must print stop.
# Prints one "smoke OK" line and exits 0, or "smoke FAILED: ..." and exits 1. Always stops
# the cluster; the whole run is bounded (under 90 s: 40 s start, 25 s checks, 20 s stop). Keeps
# the cluster's directory (logs) only on failure.
#
#   MQWS_BIN=target/debug/mqws deploy/cluster/smoke.sh
#
# Env: MQWS_BIN, NATS_SERVER and CLUSTER_* as for run.sh (ports default to free ones here).
# Needs: curl, mosquitto-clients (apt), python3 with websockets (pip).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
START=$SECONDS
WORK="$(mktemp -d)"
RUN=""

fail() { echo "smoke FAILED: $*" >&2; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$RUN" ]]; then
        # run.sh stops its five processes on SIGTERM (within 15 s); it leads its own process
        # group (setsid), so anything it left behind goes with the group.
        kill -TERM "$RUN" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$RUN" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$RUN" 2>/dev/null || true
        wait "$RUN" 2>/dev/null || true
    fi
    if [[ $rc -eq 0 ]]; then
        rm -rf "$WORK"
    else
        echo "run.sh output and the cluster's logs are in $WORK (run.out, cluster/*.log)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for cmd in curl mosquitto_pub mosquitto_sub python3; do
    command -v "$cmd" >/dev/null || fail "$cmd not found (mosquitto-clients: apt-get install mosquitto-clients)"
done
python3 -c 'import websockets' 2>/dev/null || fail "python websockets missing (python3 -m pip install websockets)"

# Free ports: four single ones, and three runs of three consecutive ones for NATS.
read -r p_http_a p_http_b p_mqtt_a p_mqtt_b p_nats p_route p_mon < <(python3 - <<'PY'
import random, socket
taken = set()
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
def pick(n):
    while True:
        base = random.randrange(20000, 60000, 10)
        ports = range(base, base + n)
        if all(p not in taken and free(p) for p in ports):
            taken.update(ports)
            return base
print(*[pick(1) for _ in range(4)], *[pick(3) for _ in range(3)])
PY
)
export CLUSTER_HTTP_A="${CLUSTER_HTTP_A:-$p_http_a}" CLUSTER_HTTP_B="${CLUSTER_HTTP_B:-$p_http_b}"
export CLUSTER_MQTT_A="${CLUSTER_MQTT_A:-$p_mqtt_a}" CLUSTER_MQTT_B="${CLUSTER_MQTT_B:-$p_mqtt_b}"
export CLUSTER_NATS_PORT="${CLUSTER_NATS_PORT:-$p_nats}"
export CLUSTER_NATS_ROUTE_PORT="${CLUSTER_NATS_ROUTE_PORT:-$p_route}"
export CLUSTER_NATS_HTTP_PORT="${CLUSTER_NATS_HTTP_PORT:-$p_mon}"
export CLUSTER_DIR="$WORK/cluster" CLUSTER_READY_TIMEOUT=35

: >"$WORK/run.out"
setsid bash "$HERE/run.sh" >"$WORK/run.out" 2>&1 &
RUN=$!

deadline=$((SECONDS + 40))
until grep -q '^mqws demo cluster ready' "$WORK/run.out"; do
    kill -0 "$RUN" 2>/dev/null || fail "run.sh exited before the cluster was ready:"$'\n'"$(tail -n 8 "$WORK/run.out")"
    ((SECONDS < deadline)) || fail "the cluster was not ready within 40 s"
    sleep 0.5
done

# The checks, bounded to 25 s in all; each wait inside has its own shorter limit.
summary=$(timeout 25 python3 - "$CLUSTER_HTTP_A" "$CLUSTER_HTTP_B" "$CLUSTER_MQTT_A" <<'PY'
import asyncio, json, sys, uuid
import websockets

HTTP_A, HTTP_B, MQTT_A = sys.argv[1:4]

class Fail(Exception):
    pass

async def recv_until(ws, pred, what, limit):
    """The next frame for which pred holds; Fail naming `what` if none comes within limit s."""
    async def loop():
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "error":
                raise Fail(f"{what}: got an error frame {frame}")
            if pred(frame):
                return frame
    try:
        return await asyncio.wait_for(loop(), limit)
    except asyncio.TimeoutError:
        raise Fail(f"{what}: nothing within {limit} s") from None

async def hello(name, port):
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        ws = await websockets.connect(url, subprotocols=["mqws.v1.json"], open_timeout=5)
    except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
        raise Fail(f"cannot open {url} on node {name}: {type(e).__name__} {e}") from None
    await ws.send(json.dumps({"type": "hello", "filters": ["site/#"]}))
    welcome = await recv_until(ws, lambda f: True, f"welcome from node {name} ({url})", 5)
    if welcome.get("type") != "welcome":
        raise Fail(f"node {name} answered hello with {welcome}")
    return ws, welcome["position"]["epoch"]

async def main():
    # 1. MQTT on A -> WebSockets on A and B: same seq, same epoch.
    (ws_a, epoch_a), (ws_b, epoch_b) = await asyncio.gather(hello("A", HTTP_A), hello("B", HTTP_B))
    payload = {"epc": f"smoke-{uuid.uuid4().hex[:8]}"}
    pub = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", MQTT_A, "-q", "1",
        "-t", "site/r1/tags", "-m", json.dumps(payload),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(pub.communicate(), 10)
    except asyncio.TimeoutError:
        pub.kill()
        raise Fail(f"mosquitto_pub -q 1 to node A's MQTT port {MQTT_A} did not finish within 10 s") from None
    if pub.returncode != 0:
        raise Fail(f"mosquitto_pub to node A's MQTT port {MQTT_A} failed: {out.decode().strip()}")
    is_ours = lambda f: f.get("type") == "message" and f.get("topic") == "site/r1/tags" and f.get("payload") == payload
    seqs = {}
    for name, ws, epoch in (("A", ws_a, epoch_a), ("B", ws_b, epoch_b)):
        what = f"site/r1/tags (MQTT on A) on node {name}'s WebSocket (welcome epochs A={epoch_a} B={epoch_b})"
        seqs[name] = (await recv_until(ws, is_ours, what, 10))["seq"]
    if seqs["A"] != seqs["B"] or epoch_a != epoch_b:
        raise Fail(f"nodes disagree: node A seq {seqs['A']} epoch {epoch_a}, node B seq {seqs['B']} epoch {epoch_b}")

    # 2. WebSocket publish on B -> mosquitto_sub on A (subscribed first: wait for its SUBACK).
    sub = await asyncio.create_subprocess_exec(  # stdbuf: its debug lines unbuffered in a pipe
        "stdbuf", "-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", MQTT_A, "-C", "1", "-W", "10", "-t", "cmd/#",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        lines = []
        async def until_suback():
            while b"SUBACK" not in (line := await sub.stdout.readline()):
                if not line:
                    raise Fail(f"mosquitto_sub on node A ended before subscribing: {lines}")
                lines.append(line.decode().strip())
        try:
            await asyncio.wait_for(until_suback(), 5)
        except asyncio.TimeoutError:
            raise Fail(f"mosquitto_sub on node A's MQTT port {MQTT_A}: no SUBACK within 5 s: {lines}") from None
        await ws_b.send(json.dumps({"type": "publish", "id": 1, "topic": "cmd/r1", "payload": "stop", "qos": 1}))
        await recv_until(ws_b, lambda f: f.get("type") == "puback" and f.get("id") == 1,
                         "puback for cmd/r1 published on node B's WebSocket", 5)
        try:
            out, _ = await asyncio.wait_for(sub.communicate(), 12)
        except asyncio.TimeoutError:
            raise Fail("mosquitto_sub on node A did not exit within 12 s (-C 1 -W 10)") from None
        printed = out.decode().splitlines()
        if "stop" not in printed:
            raise Fail(f"mosquitto_sub on node A's MQTT did not print 'stop' (exit {sub.returncode}): {printed}")
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()
    await asyncio.gather(ws_a.close(), ws_b.close())
    print(f"seq {seqs['A']} on A and B, epoch {epoch_a[:8]}…; "
          "cmd/r1 from B's WebSocket (puback) reached mosquitto_sub on A")

try:
    asyncio.run(main())
except Fail as e:
    print(e)
    sys.exit(1)
except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
    print(f"{type(e).__name__}: {e or 'timed out'}")
    sys.exit(1)
PY
) || fail "${summary:-the checks did not finish within 25 s}"

echo "smoke OK in $((SECONDS - START)) s: 2 mqws nodes on a 3-server JetStream cluster; site/r1/tags from A's MQTT: $summary"
