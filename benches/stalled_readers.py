#!/usr/bin/env python3
"""Stalled WebSocket readers against a running mqws: what their queues and RSS come to.

Opens N raw WebSocket connections (4 KiB receive buffers by default) that send `hello` on
`burst/#` and then read nothing, publishes 100 messages of 64 KiB (by default) with
`mosquitto_pub -q 1`, and prints the server's RSS and queue metrics every 2 s for 12 s.

    benches/stalled_readers.py --pid PID [--clients 1000] [--http 18080] [--mqtt 11883]
        [--payload nul|text] [--messages 100] [--size 65536] [--rcvbuf 4096] [--hold S]

`nul`: NUL bytes (valid UTF-8, so sent as a JSON string with every byte escaped: 64 KiB make
a 384 KiB frame); `text`: base64 text (a frame of about the payload's size). With a receive
buffer large enough for what is published, the clients take everything without reading and the
server's queues empty: what RSS keeps then is per-connection state. Needs `ulimit -n` above N.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return None


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return next((l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")), "?")


def stalled_client(port, rcvbuf):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: mqws.v1.json\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    hello = json.dumps({"type": "hello", "filters": ["burst/#"]}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(hello))
    s.sendall(bytes([0x81, 0x80 | len(hello)]) + mask + masked)
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--http", type=int, default=18080)
    p.add_argument("--mqtt", type=int, default=11883)
    p.add_argument("--payload", choices=["nul", "text"], default="nul")
    p.add_argument("--hold", type=int, default=0, help="seconds to keep the clients open after")
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--size", type=int, default=64 * 1024, help="payload bytes")
    p.add_argument("--rcvbuf", type=int, default=4096, help="each client's socket receive buffer")
    a = p.parse_args()
    clients = [stalled_client(a.http, a.rcvbuf) for _ in range(a.clients)]
    time.sleep(2)
    print(f"{len(clients)} stalled clients, RSS {rss_mib(a.pid)} MiB", flush=True)
    body = bytes(a.size) if a.payload == "nul" else base64.b64encode(os.urandom(a.size))[: a.size]
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        for i in range(a.messages):
            subprocess.run(
                ["mosquitto_pub", "-p", str(a.mqtt), "-q", "1", "-t", f"burst/{i}", "-f", f.name],
                check=True,
            )
    for t in range(0, 12, 2):
        time.sleep(2)
        print(
            f"t={t}s RSS {rss_mib(a.pid)} MiB, pending bytes {metric(a.http, 'mqws_ws_pending_bytes')}, "
            f"fell behind {metric(a.http, 'mqws_ws_fell_behind_total')}, "
            f"replayed {metric(a.http, 'mqws_replay_messages_total')}",
            flush=True,
        )
    time.sleep(a.hold)
    print(f"after {a.hold} s more: RSS {rss_mib(a.pid)} MiB", flush=True)


if __name__ == "__main__":
    main()
