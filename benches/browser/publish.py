#!/usr/bin/env python3
"""Steady MQTT publisher for benches/browser/dashboard_rate.mjs (paho-mqtt 2.x, QoS 0).

Publishes RATE messages/s for DURATION s, round-robin over TOPICS topics named like RFID tag
reads (site/s1/tags/r1 … site/s10/tags/r20 for 200), each a small JSON object (~110 bytes;
--payload-bytes N pads it with a "pad" string to about N bytes).
Pacing: every TICK_MS it sends what the elapsed time owes, so the rate is steady to within a tick.
Prints JSON lines on stdout: {"ready":true} once connected, {"t":…,"sent":…} every 0.25 s,
{"done":true,"sent":…,"elapsed":…} at the end (after the last publish was written to the socket).
"""
import argparse
import json
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt


def topic_names(n):
    per_site = 20
    return [f"site/s{i // per_site + 1}/tags/r{i % per_site + 1}" for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--tick-ms", type=float, default=5)
    ap.add_argument("--payload-bytes", type=int, default=0)
    a = ap.parse_args()

    topics = topic_names(a.topics)
    connected = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dash-bench-{os.getpid()}")
    c.on_connect = lambda *_: connected.set()
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    if not connected.wait(10):
        print(json.dumps({"error": "no CONNACK within 10 s"}), flush=True)
        sys.exit(1)
    print(json.dumps({"ready": True}), flush=True)

    total = int(a.rate * a.duration)
    sent = 0
    info = None
    t0 = time.monotonic()
    next_report = 0.25
    tick = a.tick_ms / 1000
    pad = f',"pad":"{"x" * max(0, a.payload_bytes - 120)}"' if a.payload_bytes > 120 else ""
    while sent < total:
        now = time.monotonic() - t0
        due = min(total, int(now * a.rate))
        while sent < due:
            payload = (
                f'{{"epc":"3034F8{sent % 100000000:016X}","rssi":{-40 - sent % 37},'
                f'"ant":{1 + sent % 4},"ts":{int(time.time() * 1000)},"n":{sent}{pad}}}'
            )
            info = c.publish(topics[sent % len(topics)], payload, qos=0)
            sent += 1
        if now >= next_report:
            print(json.dumps({"t": round(now, 3), "sent": sent}), flush=True)
            next_report += 0.25
        time.sleep(max(0.0, tick - (time.monotonic() - t0 - now)))
    if info is not None:
        info.wait_for_publish(10)
    elapsed = time.monotonic() - t0
    print(json.dumps({"done": True, "sent": sent, "elapsed": round(elapsed, 3)}), flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
