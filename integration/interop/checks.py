#!/usr/bin/env python3
"""Interop checks of a running mqws with real third-party peers.

Each check is one sub-command: it talks to the server with the `websockets` package,
mosquitto_pub/mosquitto_sub and paho-mqtt (v2 callback API), prints one line saying what went
wrong on failure, and exits 0 (pass) or 1 (fail). run.sh starts the server and runs them.

Usage: checks.py CHECK --http HOST:PORT --mqtt HOST:PORT
"""

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
from websockets.asyncio.client import connect

SUBPROTOCOL = "mqws.v1.json"
WAIT = 10.0


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


async def ws_open(http, filters):
    """Connects to /ws, sends hello, returns (ws, welcome)."""
    ws = await connect(f"ws://{http}/ws", subprotocols=[SUBPROTOCOL], open_timeout=WAIT)
    expect(ws.subprotocol == SUBPROTOCOL, f"server selected subprotocol {ws.subprotocol!r}")
    await ws.send(json.dumps({"type": "hello", "filters": filters}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    expect(welcome.get("type") == "welcome", f"reply to hello: {welcome}")
    return ws, welcome


async def next_frame(ws):
    raw = await asyncio.wait_for(ws.recv(), WAIT)
    expect(isinstance(raw, str), f"non-text frame {raw!r}")
    return json.loads(raw)


async def expect_message(ws, topic, enc, payload):
    try:
        m = await next_frame(ws)
    except asyncio.TimeoutError:
        raise CheckFailed(f"no message for {topic} within {WAIT}s")
    expect(m.get("type") == "message", f"expected a message, got {m}")
    expect(m.get("topic") == topic, f"topic {m.get('topic')!r}, expected {topic!r}: {m}")
    expect(m.get("enc") == enc, f"enc {m.get('enc')!r}, expected {enc!r}: {m}")
    expect(m.get("payload") == payload, f"payload {m.get('payload')!r}, expected {payload!r}")
    expect(isinstance(m.get("seq"), int), f"seq missing: {m}")
    return m


def host_port(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


async def mosquitto_pub_to_ws(http, mqtt_addr):
    host, port = host_port(mqtt_addr)
    ws, _ = await ws_open(http, ["site/+/tags/#"])
    try:
        proc = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", host, "-p", str(port), "-q", "1",
            "-t", "site/a/tags/x", "-m", '{"epc":"3034"}',
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
        expect(proc.returncode == 0, f"mosquitto_pub failed ({proc.returncode}): {err!r}")
        await expect_message(ws, "site/a/tags/x", "json", {"epc": "3034"})
    finally:
        await ws.close()


async def ws_publish_to_mosquitto_sub(http, mqtt_addr):
    host, port = host_port(mqtt_addr)
    # -d prints "received SUBACK" once the subscription is in place; -v prints "topic payload".
    # stdbuf: mosquitto_sub's stdout is block-buffered on a pipe.
    sub = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", host, "-p", str(port), "-t", "readers/#", "-C", "1",
         "-v", "-d", "-W", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    got_line = threading.Event()
    subacked = threading.Event()

    def pump():
        for line in sub.stdout:
            lines.append(line.rstrip("\n"))
            if "SUBACK" in line:
                subacked.set()
            if line.startswith("readers/"):
                got_line.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        expect(subacked.wait(WAIT), f"mosquitto_sub never subscribed: {lines}")
        ws, _ = await ws_open(http, [])
        try:
            await ws.send(json.dumps({"type": "publish", "id": 5, "topic": "readers/r1/cmd",
                                      "payload": {"op": "start"}, "qos": 1, "retain": False}))
            ack = await next_frame(ws)
            expect(ack.get("type") == "puback" and ack.get("id") == 5, f"reply: {ack}")
        finally:
            await ws.close()
        expect(await asyncio.to_thread(got_line.wait, WAIT), f"mosquitto_sub got nothing: {lines}")
        printed = [l for l in lines if l.startswith("readers/")]
        expect(printed[0] == 'readers/r1/cmd {"op":"start"}', f"mosquitto_sub printed {printed[0]!r}")
        rc = await asyncio.to_thread(sub.wait, WAIT)
        expect(rc == 0, f"mosquitto_sub exit status {rc}")
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def paho_client(protocol, client_id, host, port):
    """Connects a paho client (v2 callback API) and waits for a successful CONNACK."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    connected = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not connected.wait(WAIT):
        c.loop_stop()
        raise CheckFailed("paho: no CONNACK")
    if result["rc"].is_failure:
        c.loop_stop()
        raise CheckFailed(f"paho: connect refused: {result['rc']}")
    return c


async def paho_pub_to_ws(http, mqtt_addr, protocol, name):
    host, port = host_port(mqtt_addr)
    ws, _ = await ws_open(http, ["paho/#"])
    c = None
    try:
        c = await asyncio.to_thread(paho_client, protocol, f"interop-{name}", host, port)
        topic = f"paho/{name}"
        body = {"from": name, "n": 1}
        info = c.publish(topic, json.dumps(body), qos=1)
        await asyncio.to_thread(info.wait_for_publish, WAIT)
        expect(info.is_published(), f"paho {name}: QoS 1 publish not acknowledged")
        await expect_message(ws, topic, "json", body)
    finally:
        if c is not None:
            c.disconnect()
            c.loop_stop()
        await ws.close()


async def ws_publish_to_paho_sub(http, mqtt_addr, protocol, name):
    host, port = host_port(mqtt_addr)
    c = await asyncio.to_thread(paho_client, protocol, f"interop-sub-{name}", host, port)
    subscribed = threading.Event()
    received = []
    got = threading.Event()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        received.append((msg.topic, bytes(msg.payload)))
        got.set()

    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.subscribe("cmd/#", qos=1)
        expect(await asyncio.to_thread(subscribed.wait, WAIT), "paho: no SUBACK")
        ws, _ = await ws_open(http, [])
        try:
            await ws.send(json.dumps({"type": "publish", "id": 9, "topic": f"cmd/{name}",
                                      "payload": "plain text", "qos": 1}))
            ack = await next_frame(ws)
            expect(ack.get("type") == "puback" and ack.get("id") == 9, f"reply: {ack}")
        finally:
            await ws.close()
        expect(await asyncio.to_thread(got.wait, WAIT), "paho subscriber got nothing")
        expect(received[0] == (f"cmd/{name}", b"plain text"), f"paho got {received[0]!r}")
    finally:
        c.disconnect()
        c.loop_stop()


CHECKS = {
    "mosquitto_pub_to_ws": lambda h, m: mosquitto_pub_to_ws(h, m),
    "ws_publish_to_mosquitto_sub": lambda h, m: ws_publish_to_mosquitto_sub(h, m),
    "paho_v5_qos1_to_ws": lambda h, m: paho_pub_to_ws(h, m, mqtt.MQTTv5, "v5"),
    "paho_v311_qos1_to_ws": lambda h, m: paho_pub_to_ws(h, m, mqtt.MQTTv311, "v311"),
    "ws_publish_to_paho_v5_sub": lambda h, m: ws_publish_to_paho_sub(h, m, mqtt.MQTTv5, "v5"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=sorted(CHECKS) + ["list"])
    ap.add_argument("--http", default="")
    ap.add_argument("--mqtt", default="")
    args = ap.parse_args()
    if args.check == "list":
        print("\n".join(CHECKS))
        return 0
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(CHECKS[args.check](args.http, args.mqtt), 30))
    except CheckFailed as e:
        print(f"{args.check}: {e}")
        return 1
    except Exception as e:  # a crash or timeout of the check is a failure too
        print(f"{args.check}: {type(e).__name__}: {e}")
        return 1
    print(f"{args.check}: ok ({time.monotonic() - started:.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
